"""The exported int8 TFLite files on the microcontroller kernels (TFLite Micro) and the Ethos-U compiler."""

from __future__ import annotations

import numpy as np
import pytest

from converters.quantize import QuantizeInt8
from converters.tflite import export_tflite
from edge.data.registry import load_dataset
from edge.errors import EngineError
from edge.summary import summarize
from runtimes.litert_session import LiteRTSession
from runtimes.tflm_session import TFLMSession, minimum_arena_bytes
from runtimes.vela import compile_for_npu


@pytest.fixture(scope="module")
def fully_int8(reference):
    calibration = load_dataset(reference.meta.extra["calibration_data"], reference.meta).x
    return QuantizeInt8(exclude=[])(reference, calibration)


@pytest.fixture(scope="module")
def trials(reference):
    return load_dataset("synthetic-ssvep:subjects=31-31,blocks=1,seed=0", reference.meta).x


def test_tflite_micro_matches_litert_reference_kernels_bit_for_bit(fully_int8, trials) -> None:
    data = export_tflite(fully_int8)
    micro = TFLMSession(data).run({"eeg": trials})[0]
    reference_kernels = LiteRTSession(data, kernels="reference").run({"eeg": trials})[0]
    np.testing.assert_array_equal(micro, reference_kernels)
    assert micro.shape == (40, 40)


def test_minimum_arena_is_found_by_bisection(fully_int8, trials) -> None:
    data = export_tflite(fully_int8)
    arena = minimum_arena_bytes(data, trials[0])
    assert 1_000 < arena < 16 * len(data)
    TFLMSession(data, arena_bytes=arena).run({"x": trials[:1]})
    with pytest.raises(EngineError):
        TFLMSession(data, arena_bytes=arena - 64).run({"x": trials[:1]})


def test_fully_int8_ssvep_network_compiles_entirely_onto_the_npu(fully_int8) -> None:
    compiled, summary = compile_for_npu(export_tflite(fully_int8, io="int8"), "ethos-u55-128")
    assert summary["all_on_npu"], summary
    assert summary["npu_operators"] >= 4 and summary["cpu_operators"] == 0
    assert summary["macs"] == summarize(fully_int8.model).macs == 8_990_700  # Vela and our count agree
    assert compiled[4:8] == b"TFL3"


def test_float_edges_stay_on_the_cpu_and_bad_configs_are_refused(reference) -> None:
    _, summary = compile_for_npu(export_tflite(reference), "ethos-u55-128")
    assert summary["cpu_operators"] > 0 and not summary["all_on_npu"]
    with pytest.raises(EngineError, match="unknown Ethos-U configuration 'ethos-u99'"):
        compile_for_npu(b"", "ethos-u99")

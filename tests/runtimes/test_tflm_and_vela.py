"""The exported int8 TFLite files on the microcontroller kernels (TFLite Micro) and the Ethos-U compiler."""

from __future__ import annotations

import numpy as np
import pytest

from converters.tflite import export_tflite
from edge.errors import EngineError
from edge.summary import summarize
from runtimes.litert_session import LiteRTSession
from runtimes.tflm_session import TFLMSession, minimum_arena_bytes
from runtimes.vela import compile_for_npu


def test_tflite_micro_matches_litert_reference_kernels_bit_for_bit(ssvep_int8, ssvep_trials) -> None:
    data = export_tflite(ssvep_int8)
    micro = TFLMSession(data).run({"eeg": ssvep_trials})[0]
    reference_kernels = LiteRTSession(data, kernels="reference").run({"eeg": ssvep_trials})[0]
    np.testing.assert_array_equal(micro, reference_kernels)
    assert micro.shape == (40, 40)


def test_minimum_arena_is_found_by_bisection(ssvep_int8, ssvep_trials) -> None:
    data = export_tflite(ssvep_int8)
    arena = minimum_arena_bytes(data, ssvep_trials[0])
    assert 1_000 < arena < 16 * len(data)
    TFLMSession(data, arena_bytes=arena).run({"x": ssvep_trials[:1]})
    with pytest.raises(EngineError):
        TFLMSession(data, arena_bytes=arena - 64).run({"x": ssvep_trials[:1]})


def test_fully_int8_ssvep_network_compiles_entirely_onto_the_npu(ssvep_int8) -> None:
    compiled, summary = compile_for_npu(export_tflite(ssvep_int8, io="int8"), "ethos-u55-128")
    assert summary["all_on_npu"], summary
    assert summary["npu_operators"] >= 4 and summary["cpu_operators"] == 0
    assert summary["macs"] == summarize(ssvep_int8.model).macs == 8_990_700  # Vela and our count agree
    assert compiled[4:8] == b"TFL3"


def test_float_edges_stay_on_the_cpu_and_bad_configs_are_refused(reference) -> None:
    _, summary = compile_for_npu(export_tflite(reference), "ethos-u55-128")
    assert summary["cpu_operators"] > 0 and not summary["all_on_npu"]
    with pytest.raises(EngineError, match="unknown Ethos-U configuration 'ethos-u99'"):
        compile_for_npu(b"", "ethos-u99")

"""The shipped reference spiking network: its NIR file, its card, and its int8 TFLite export on TFLite Micro."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.nir_import import read_nir
from converters.snn_quantize import QuantizeSpiking
from converters.tflite import export_tflite
from edge.data.spiking import load_spike_dataset
from edge.families.snn.runner import run_sequence, scores
from edge.families.snn.simulate import simulate
from edge.models import resolve_model
from runtimes.litert_session import LiteRTSession
from runtimes.onnxruntime_session import OnnxRuntimeSession
from runtimes.tflm_session import TFLMSession

ZOO = Path(__file__).resolve().parents[2] / "edge" / "zoo"


@pytest.fixture(scope="module")
def reference():
    return resolve_model("snn-ssvep-delta")[1]


@pytest.fixture(scope="module")
def heldout(reference):
    return load_spike_dataset("synthetic-ssvep:subjects=31-31,seed=0", reference.meta)


def test_card_reports_the_shipped_network(reference) -> None:
    card = (ZOO / "SNN_MODEL_CARD.md").read_text()
    assert "make reference-snn" in card
    assert f"{100 * reference.meta.extra['heldout_accuracy']:.1f}" in card
    assert reference.meta.task["encoding"]["encoder"] == "delta"


def test_shipped_nir_file_is_the_network(reference, heldout) -> None:
    """The NIR file beside the model imports to a network that fires and decides as the step graph does (sums of
    float weights are added in another order by onnxruntime's Gemm, so the readout agrees to float rounding)."""
    graph = read_nir(ZOO / "snn_ssvep_delta.nir")
    assert graph.dt == reference.meta.task["dt"]
    x = heldout.x[:24]
    ours = simulate(graph, x)
    onnx = run_sequence(OnnxRuntimeSession(reference).run_named, reference.meta, x)
    for node, spikes in ours.spikes.items():
        assert np.mean(onnx.outputs[f"spikes.{node}"] == spikes) > 0.9999
    np.testing.assert_allclose(onnx.y, ours.y, atol=1e-3)
    np.testing.assert_array_equal(scores(onnx).argmax(1), ours.y.mean(axis=1).argmax(1))


def test_int8_tflite_keeps_accuracy_and_runs_on_tflite_micro(reference, heldout) -> None:
    calibration = load_spike_dataset(reference.meta.extra["calibration_data"], reference.meta).x
    int8 = QuantizeSpiking()(reference, calibration)
    data = export_tflite(int8, io="float32")
    fp32_pred = scores(run_sequence(OnnxRuntimeSession(reference).run_named, reference.meta, heldout.x)).argmax(1)
    int8_pred = scores(run_sequence(LiteRTSession(data, kernels="reference").run_named, reference.meta,
                                    heldout.x)).argmax(1)
    fp32_acc, int8_acc = np.mean(fp32_pred == heldout.y), np.mean(int8_pred == heldout.y)
    assert fp32_acc > 0.3  # 40 classes: chance is 2.5 %
    assert abs(int8_acc - fp32_acc) <= 0.03  # 240 trials of one subject; the benchmark measures all 1,200
    micro = run_sequence(TFLMSession(data).run_named, reference.meta, heldout.x[:12], batch=1)
    np.testing.assert_array_equal(scores(micro).argmax(1), int8_pred[:12])  # the same kernels on the MCU runtime

"""Every target runs fixed-batch models on any number of trials and feeds int8 data to an int8 input as is."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge.artifact import Artifact
from edge.cli import main
from edge.evaluate import predict
from edge.faults import FaultModel
from edge.faults.engine import WeightFaultEngine, rebuild_and_run
from edge.feeds import quantize
from edge.tflite_model import TfliteModel
from feed_models import conv_gemm, conv_gemm_tflite, quantized_conv_gemm, trials
from runtimes.litert_session import LiteRTSession

TFLITE_TARGETS = ["cpu", "mcu:tflm", "npu:ethos-u55-128", "sim"]


@pytest.fixture(scope="module")
def quantized() -> Artifact:
    return quantized_conv_gemm()


@pytest.fixture(scope="module")
def reference(quantized) -> np.ndarray:
    """LiteRT's reference kernels on the resizable file, all 10 trials at once: what every target must give."""
    return LiteRTSession(conv_gemm_tflite(None, quantized=quantized), kernels="reference").run({"x": trials()})[0]


@pytest.mark.parametrize("batch", [1, 4])
def test_fixed_batch_onnx_on_cpu_and_in_the_fault_engine(batch) -> None:
    x = trials(10)
    want = predict(Artifact.from_model(conv_gemm("N", reshape=False)), x, "cpu")
    fixed = conv_gemm(batch)
    np.testing.assert_allclose(predict(Artifact.from_model(fixed), x, "cpu"), want, rtol=1e-5, atol=1e-5)
    engine = WeightFaultEngine(fixed, FaultModel(), batch_size=3)
    np.testing.assert_allclose(engine.run(x), want, rtol=1e-5, atol=1e-5)
    fault_map = engine.sample(1e-2, 0)
    np.testing.assert_array_equal(engine.run_map(fault_map, x), rebuild_and_run(fixed, fault_map, x))


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("device", TFLITE_TARGETS)
def test_fixed_batch_int8_tflite_on_every_target(device, batch, quantized, reference) -> None:
    model = TfliteModel.from_bytes(conv_gemm_tflite(batch, quantized=quantized))
    fmt = LiteRTSession(model.data).input_formats["x"]
    assert fmt.batch == batch and fmt.dtype == np.int8
    x = trials(10)
    np.testing.assert_array_equal(predict(model, x, device, batch_size=7), reference)
    # int8 data fed as is gives exactly what the equivalent float data give
    data = quantize(x, fmt)
    equivalent = (data.astype(np.float32) - fmt.zero_point) * np.float32(fmt.scale)
    np.testing.assert_array_equal(predict(model, data, device), predict(model, equivalent, device))


def test_cli_scores_an_int8_input_tflite_on_int8_data(tmp_path, quantized, reference) -> None:
    data = conv_gemm_tflite(None, quantized=quantized)
    (tmp_path / "int8_input.tflite").write_bytes(data)
    fmt = LiteRTSession(data).input_formats["x"]
    labels = reference.argmax(1)
    np.savez(tmp_path / "int8.npz", x=quantize(trials(), fmt), y=labels)
    for device in ("cpu", "mcu:tflm"):
        result = CliRunner().invoke(main, ["eval", str(tmp_path / "int8_input.tflite"), "--data",
                                           str(tmp_path / "int8.npz"), "--device", device, "--runs", "2",
                                           "--no-memory", "--json", "--out-dir", str(tmp_path / "runs")])
        assert result.exit_code == 0, result.output
        document = json.loads(result.output[result.output.index("{"):])
        assert document["metrics"]["accuracy"]["value"] == 1.0
        assert any("int8 data fed as is" in note for note in document["device"]["io"])
    # the old path, int8 values cast to float and quantized again, scores something else
    wrong = predict(TfliteModel.from_bytes(data), quantize(trials(), fmt).astype(np.float32), "cpu").argmax(1)
    assert np.mean(wrong == labels) < 1.0


def test_cli_refuses_uint8_data_for_an_int8_input_in_one_line(tmp_path, quantized) -> None:
    (tmp_path / "m.tflite").write_bytes(conv_gemm_tflite(None, quantized=quantized))
    np.savez(tmp_path / "u8.npz", x=np.zeros((3, 2, 1, 8), np.uint8), y=np.zeros(3, np.int64))
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "m.tflite"), "--data", str(tmp_path / "u8.npz"),
                                       "--runs", "1", "--no-memory", "--out-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "is int8 (scale" in result.output and "but the data are uint8" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("batch", [1, 4])
def test_gpu_target_host_side_chunks_a_fixed_batch(batch) -> None:
    """The gpu target's own feeding and chunking, run here on a CPU onnxruntime session (no GPU on this machine)."""
    import onnxruntime as ort

    from devices.gpu import GpuTarget
    from edge.feeds import onnx_formats

    fixed = conv_gemm(batch)
    target = GpuTarget("gpu")
    target._session = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    target._formats = onnx_formats(fixed)
    want = predict(Artifact.from_model(conv_gemm("N", reshape=False)), trials(10), "cpu")
    np.testing.assert_allclose(target.run(trials(10)), want, rtol=1e-5, atol=1e-5)
    assert "float32 data fed as is" in target.notes["x"]


def test_int8_data_reach_the_float_onnx_reference_beside_an_int8_input_tflite(tmp_path, quantized, reference) -> None:
    from edge.artifact import write_artifact

    (tmp_path / "m.tflite").write_bytes(conv_gemm_tflite(None, quantized=quantized))
    write_artifact(quantized, tmp_path / "m.onnx")  # the float-input QDQ model it was exported from
    fmt = LiteRTSession((tmp_path / "m.tflite").read_bytes()).input_formats["x"]
    np.savez(tmp_path / "int8.npz", x=quantize(trials(), fmt), y=reference.argmax(1))
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "m.tflite"), "--data", str(tmp_path / "int8.npz"),
                                       "--device", "mcu:tflm", "--runs", "2", "--no-memory", "--json",
                                       "--out-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    fidelity = json.loads(result.output[result.output.index("{"):])["metrics"]["fidelity"]
    assert fidelity["reference"].startswith("m.onnx") and fidelity["top1_agreement"] == 1.0


def test_cli_shows_the_engine_error_whole_after_one_line(tmp_path) -> None:
    import onnx

    model = conv_gemm(1)  # a free time axis the data check lets through, but Reshape(1, 18) fixes it at 1
    dim = model.graph.input[0].type.tensor_type.shape.dim[2]
    dim.Clear()
    dim.dim_param = "T"
    onnx.save(model, tmp_path / "t.onnx")
    np.savez(tmp_path / "t.npz", x=np.zeros((3, 2, 2, 8), np.float32), y=np.zeros(3, np.int64))
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "t.onnx"), "--data", str(tmp_path / "t.npz"),
                                       "--runs", "1", "--no-memory", "--out-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "Error: onnxruntime could not run the model on 'x' float32 (1, 2, 2, 8). The engine said:"
    assert "requested shape:{1,18}" in lines[-1] and lines[-1].startswith("    ")


def test_activation_faults_refuse_a_fixed_batch_model_in_one_sentence() -> None:
    from edge.errors import PassError
    from edge.faults.activations import instrument_activations

    with pytest.raises(PassError, match="batch dimension is free; this one fixes it at 4"):
        instrument_activations(conv_gemm(4), trials(4))


def test_cli_evaluates_a_fixed_batch_4_onnx_model_on_ten_trials(tmp_path) -> None:
    import onnx

    onnx.save(conv_gemm(4), tmp_path / "b4.onnx")
    labels = predict(Artifact.from_model(conv_gemm("N", reshape=False)), trials(), "cpu").argmax(1)
    np.savez(tmp_path / "f.npz", x=trials().astype(np.float64), y=labels)  # float64 on disk: float32 when read
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "b4.onnx"), "--data", str(tmp_path / "f.npz"),
                                       "--runs", "2", "--no-memory", "--json", "--out-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output[result.output.index("{"):])["metrics"]
    assert metrics["accuracy"]["value"] == 1.0 and metrics["latency_ms"]["batch"] == 4


def test_spike_counts_stored_as_integers_reach_a_float_spiking_model_as_floats() -> None:
    """Spike counts are exact numbers, not quantized codes, so the spiking loader may make them float."""
    from edge.artifact import Meta
    from edge.data.registry import Dataset
    from edge.data.spiking import _dense_or_spikes

    counts = np.random.default_rng(0).integers(0, 2, size=(2, 5, 3)).astype(np.uint8)
    loaded = _dense_or_spikes(Dataset("spikes", counts, np.zeros(2, np.int64), np.array([])), Meta(), (3,))
    assert loaded.x.dtype == np.float32 and np.array_equal(loaded.x, counts)

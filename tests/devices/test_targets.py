"""Target registry and specs, the cpu and mcu:tflm targets, TFLite files as models, and campaigns on targets."""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from click.testing import CliRunner

from devices import describe_targets, get_target
from devices.base import TargetFaultEngine, TargetSpec
from edge.cli import main
from edge.errors import ModelReadError, TargetError
from edge.faults import FaultModel, run_campaign, sample_fault_map
from edge.tflite_model import TfliteModel, read_tflite
from runtimes.litert_session import LiteRTSession
from runtimes.tflm_session import TFLMSession

pytestmark = pytest.mark.timeout(300)


def _without_metadata(data: bytes) -> bytes:
    """The same flatbuffer with every metadata entry removed: a plain TFLite file as other tools write it."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    model.metadata = []
    builder = flatbuffers.Builder(len(data))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_spec_strings_parse_and_refuse_typos() -> None:
    spec = TargetSpec.parse("mcu:tflm?arena=64")
    assert (spec.name, spec.argument, spec.options) == ("mcu", "tflm", {"arena": "64"})
    assert spec.option("arena", None, float) == 64.0
    with pytest.raises(TargetError, match="unknown option 'arna'; this target takes: arena"):
        get_target("mcu:tflm?arna=64")
    with pytest.raises(TargetError, match="unknown device 'mcx'.*Did you mean 'mcu'"):
        get_target("mcx:tflm")
    with pytest.raises(TargetError, match="'arena=big' .* is not a valid float"):
        get_target("mcu?arena=big")
    with pytest.raises(TargetError, match="unknown microcontroller engine 'cmsis'"):
        get_target("mcu:cmsis")


def test_every_builtin_target_is_listed_with_whether_it_is_usable() -> None:
    rows = {row["name"]: row for row in describe_targets()}
    assert {"cpu", "gpu", "npu", "mcu", "serial", "sim"} <= set(rows)
    assert rows["cpu"]["usable"] and rows["mcu"]["usable"]
    assert all(row["usable"] or row["why"] for row in rows.values())
    result = CliRunner().invoke(main, ["targets"])
    assert result.exit_code == 0, result.output
    assert "mcu:tflm?arena=64" in result.output and "npu:ethos-u55-128" in result.output


def test_weight_buffers_point_at_the_bytes_litert_reads(tiny_tflite, tiny_trials) -> None:
    from ai_edge_litert import schema_py_generated as schema

    model = TfliteModel.from_bytes(tiny_tflite)
    parsed = schema.ModelT.InitFromPackedBuf(bytearray(tiny_tflite), 0)
    tensors = {t.name.decode(): t for t in parsed.subgraphs[0].tensors}
    buffers = model.weight_buffers()
    assert [b.name for b in buffers] == ["w_quantized", "b_quantized", "fc_quantized", "fc_b_quantized"]
    for buffer in buffers:
        stored = bytes(bytearray(parsed.buffers[tensors[buffer.name].buffer].data))
        assert tiny_tflite[buffer.offset : buffer.offset + buffer.nbytes] == stored
    arrays = model.weights()
    arrays["fc_quantized"][:] = 0
    patched = model.with_weights(arrays)
    assert len(patched) == len(tiny_tflite) and patched != tiny_tflite
    out = LiteRTSession(patched).run({"x": tiny_trials})[0]
    assert np.allclose(out, out[:1])  # zero fully connected weights: every trial gets the bias alone


def test_a_plain_tflite_file_gets_its_specs_from_the_flatbuffer(tiny_tflite, tiny_tflite_int8_io, tmp_path) -> None:
    plain = _without_metadata(tiny_tflite_int8_io)
    path = tmp_path / "plain.bin"  # recognised by its identifier, whatever the suffix
    path.write_bytes(plain)
    model = read_tflite(path)
    assert not model.embedded_meta and TfliteModel.from_bytes(tiny_tflite).embedded_meta
    (spec,) = model.meta.inputs
    assert spec.shape == ["N", 2, 1, 8] and spec.dtype == "float32"
    assert spec.quantization["dtype"] == "int8" and spec.quantization["scale"] > 0
    with pytest.raises(ModelReadError, match="not a TFLite file"):
        TfliteModel.from_bytes(b"\x00" * 64)
    with pytest.raises(ModelReadError, match="damaged"):
        TfliteModel.from_bytes(plain[:200])


@pytest.mark.parametrize("spec", ["cpu", "cpu?kernels=reference", "mcu:tflm"])
def test_tflite_targets_match_their_engines_and_take_faults(spec, tiny_tflite, tiny_trials) -> None:
    model = TfliteModel.from_bytes(tiny_tflite)
    target = get_target(spec)
    target.deploy(model)
    clean = target.run(tiny_trials)
    engine = TFLMSession(tiny_tflite) if spec == "mcu:tflm" else LiteRTSession(
        tiny_tflite, kernels=target.kernels)
    np.testing.assert_array_equal(clean, engine.run({"x": tiny_trials})[0])
    fault_map = sample_fault_map(target.fault_targets(FaultModel()), 0.02, seed=3)
    target.inject(fault_map)
    faulty = target.run(tiny_trials)
    arrays = model.weights()
    from edge.faults import apply_fault_map

    apply_fault_map(arrays, fault_map)
    patched = model.with_weights(arrays)
    expected = TFLMSession(patched) if spec == "mcu:tflm" else LiteRTSession(patched, kernels=target.kernels)
    np.testing.assert_array_equal(faulty, expected.run({"x": tiny_trials})[0])
    assert not np.array_equal(faulty, clean)
    target.restore()
    np.testing.assert_array_equal(target.run(tiny_trials), clean)
    assert target.latency(tiny_trials[0], runs=5, warmup=1).shape == (5,)


def test_mcu_reports_the_smallest_arena_and_refuses_one_too_small(tiny_tflite, tiny_trials) -> None:
    target = get_target("mcu:tflm")
    target.deploy(TfliteModel.from_bytes(tiny_tflite))
    memory = target.memory(tiny_trials[0])
    assert 0 < memory["arena_bytes"] < 64 * 1024 and memory["flash_bytes"] == len(tiny_tflite)
    fixed = get_target(f"mcu:tflm?arena={memory['arena_bytes'] / 1024}")
    fixed.deploy(TfliteModel.from_bytes(tiny_tflite))
    np.testing.assert_array_equal(fixed.run(tiny_trials), target.run(tiny_trials))
    with pytest.raises(TargetError, match="does not fit a 1.2 KiB arena"):
        get_target("mcu:tflm?arena=1.2").deploy(TfliteModel.from_bytes(tiny_tflite))
    for kib in (0.1, 1.87):  # 1.87 KiB crashes TFLite Micro's allocator in-process; the probe runs in a child
        with pytest.raises(TargetError, match=f"does not fit a {kib} KiB arena"):
            get_target(f"mcu:tflm?arena={kib}").deploy(TfliteModel.from_bytes(tiny_tflite))


def test_the_same_seed_gives_the_same_maps_and_curve_on_every_tflite_target(tiny_tflite, tiny_trials) -> None:
    model = TfliteModel.from_bytes(tiny_tflite)
    labels = TFLMSession(tiny_tflite).run({"x": tiny_trials})[0].argmax(1)
    curves = {}
    for spec in ("cpu?kernels=reference", "mcu:tflm"):
        target = get_target(spec)
        target.deploy(model)
        engine = TargetFaultEngine(target, FaultModel())
        result = run_campaign(model, tiny_trials, labels, bers=(1e-3, 3e-2), maps=6, seed=1, engine=engine)
        curves[spec] = [o.row() for o in result.outcomes]
        assert result.clean()["accuracy"] == 1.0
    assert curves["cpu?kernels=reference"] == curves["mcu:tflm"]
    assert any(row[3] < len(tiny_trials) for row in curves["mcu:tflm"])  # faults did cost accuracy somewhere


def test_an_onnx_model_is_exported_for_tflite_targets(reference, ssvep_trials) -> None:
    from edge.deploy import deploy
    from edge.evaluate import predict

    target, deployed, report = deploy(reference, "mcu:tflm")  # fp32: TFLite Micro's float kernels
    assert report["format"] == "tflite" and isinstance(deployed, TfliteModel)
    np.testing.assert_allclose(target.run(ssvep_trials[:4]), predict(reference, ssvep_trials[:4]), atol=1e-3)


def test_eval_on_the_mcu_with_faults_and_flash(tiny_int8, tiny_trials, tmp_path: Path) -> None:
    from edge.artifact import write_artifact

    onnx_path = write_artifact(tiny_int8, tmp_path / "tiny_int8.onnx")
    labels = TFLMSession(__import__("converters.tflite", fromlist=["x"]).export_tflite(tiny_int8)).run(
        {"x": tiny_trials})[0].argmax(1)
    np.savez(tmp_path / "d.npz", x=tiny_trials, y=labels)
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(onnx_path), "--data", str(tmp_path / "d.npz"), "--device", "mcu:tflm",
                                  "--runs", "5", "--faults", "--ber", "1e-3,3e-2", "--maps", "4",
                                  "--out-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "fidelity to host: top-1 agreement %" in result.output and "tensor arena KiB" in result.output
    assert "3e-02" in result.output and "on mcu:tflm" in result.output
    assert list((tmp_path / "runs").glob("*/resilience.png"))
    out = tmp_path / "deployed.tflite"
    result = runner.invoke(main, ["flash", str(onnx_path), "--device", "mcu:tflm", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "arena_bytes" in result.output and read_tflite(out).sha256
    result = runner.invoke(main, ["flash", str(onnx_path), "--device", "mcu:tflm?arena=1.2"])
    assert result.exit_code == 1 and "Traceback" not in result.output and "1.2 KiB arena" in result.output

"""TFLite files the toolkit did not make, on every target: a file LiteRT refuses, the arena search, flash, faults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from devices import get_target
from edge.cli import main
from edge.errors import EngineError, TargetError
from edge.tflite_model import TfliteModel, read_tflite
from runtimes.tflite_support import litert_refusal
from runtimes.tflm_session import DEFAULT_ARENA_CAP, TFLMSession, minimum_arena_bytes
from tests.tflite_files import relu_model, single_zero_point, trials

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def files(tiny_tflite, tiny_trials, tmp_path: Path) -> dict[str, Path]:
    """The tiny int8 file, the same file with one zero point per per-channel tensor, and labelled trials."""
    paths = {"tiny": tmp_path / "tiny.tflite", "refused": tmp_path / "refused.tflite", "data": tmp_path / "trials.npz"}
    paths["tiny"].write_bytes(tiny_tflite)
    paths["refused"].write_bytes(single_zero_point(tiny_tflite))
    labels = TFLMSession(tiny_tflite).run({"x": tiny_trials})[0].argmax(1)
    np.savez(paths["data"], x=tiny_trials, y=labels)
    return paths


def test_tflite_micro_runs_a_file_litert_refuses_bit_for_bit(files, tiny_tflite, tiny_trials) -> None:
    refused = files["refused"].read_bytes()
    assert litert_refusal(tiny_tflite) is None
    assert "1 zero_point values and 3 scale values" in litert_refusal(refused)
    expected = TFLMSession(tiny_tflite).run({"x": tiny_trials})[0]
    assert np.array_equal(TFLMSession(refused).run({"x": tiny_trials})[0], expected)


def test_eval_of_a_file_litert_refuses_on_the_mcu_names_the_engine_and_the_missing_reference(files, tmp_path) -> None:
    result = CliRunner().invoke(main, ["eval", str(files["refused"]), "--data", str(files["data"]), "--device",
                                       "mcu:tflm", "--runs", "3", "--out-dir", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["device"]["deploy"]["engine"] == "tflite-micro" and doc["device"]["engine"].startswith("tflite-micro")
    assert doc["metrics"]["accuracy"]["value"] == 1.0  # the labels are the unmodified file's TFLite Micro outputs
    assert "fidelity" not in doc["metrics"]
    assert "LiteRT cannot load the file" in doc["metrics"]["fidelity_unavailable"]
    text = CliRunner().invoke(main, ["eval", str(files["refused"]), "--data", str(files["data"]), "--device",
                                     "mcu:tflm", "--runs", "3", "--out-dir", str(tmp_path / "runs")]).output
    assert "no host reference: LiteRT cannot load the file" in text


def test_the_cpu_refuses_it_in_one_sentence_naming_litert_and_suggesting_the_mcu(files, tmp_path) -> None:
    result = CliRunner().invoke(main, ["eval", str(files["refused"]), "--data", str(files["data"]), "--device", "cpu",
                                       "--runs", "3", "--out-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1
    assert "LiteRT, which cannot load this one (QuantizationParam has 1 zero_point values" in line
    assert "--device mcu:tflm" in line


def test_the_arena_search_is_not_bound_to_the_file_size() -> None:
    data = relu_model((1, 128, 128, 4))  # 300 bytes of file, 2 x 256 KiB of activations
    assert len(data) < 1024
    arena = minimum_arena_bytes(data, trials((1, 128, 128, 4))[0])
    assert 2 * 128 * 128 * 4 * 4 <= arena < 2 * 128 * 128 * 4 * 4 + 8192


def test_the_arena_error_names_the_size_tried_and_the_options() -> None:
    big = relu_model((1, 1024, 1024, 3))  # 24 MiB of activations, more than the default limit
    with pytest.raises(EngineError, match=rf"does not run in a {DEFAULT_ARENA_CAP // 1024} KiB tensor arena .*"
                                          r"mcu:tflm\?ram=KB.*mcu:tflm\?arena=KB"):
        minimum_arena_bytes(big, None)
    model = TfliteModel.from_bytes(relu_model((1, 64, 64, 4)))  # 2 x 64 KiB
    with pytest.raises(TargetError, match=r"does not run in a 100 KiB tensor arena \(the RAM given with \?ram=\)"):
        get_target("mcu:tflm?ram=100").deploy(model)
    target = get_target("mcu:tflm?ram=256")
    report = target.deploy(model)
    assert 128 * 1024 < report["arena_bytes"] < 256 * 1024 and report["ram_bytes"] == 256 * 1024
    with pytest.raises(TargetError, match="does not fit in 64 KiB of RAM"):
        get_target("mcu:tflm?ram=64&arena=128")


@pytest.mark.parametrize("device", ["mcu:tflm", "npu:ethos-u55-128", "sim"])
def test_flash_takes_a_tflite_file(files, device: str, tmp_path: Path) -> None:
    out = tmp_path / "deployed.tflite"
    result = CliRunner().invoke(main, ["flash", str(files["refused"]), "--device", device, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["deploy"]["format"] == "tflite" and doc["deploy"]["sha256"] == read_tflite(files["refused"]).sha256
    if device == "mcu:tflm":
        assert doc["deploy"]["arena_bytes"] == minimum_arena_bytes(files["refused"].read_bytes(), None)
        assert out.read_bytes() == files["refused"].read_bytes()
    if device == "npu:ethos-u55-128":
        assert doc["deploy"]["npu_operators"] == 4 and "CUSTOM:ethos-u" in read_tflite(out).operators()


def test_resilience_of_tflite_files_degrades_at_high_ber_on_the_mcu_and_the_cpu(files, tiny_int8, tmp_path) -> None:
    onnx_path = tmp_path / "tiny_int8.onnx"
    onnx_path.write_bytes(tiny_int8.to_bytes())
    common = ["--data", str(files["data"]), "--ber", "1e-4,5e-2", "--maps", "8", "--out-dir", str(tmp_path / "runs"),
              "--json"]
    result = CliRunner().invoke(main, ["resilience", str(files["refused"]), "--device", "mcu:tflm", *common])
    assert result.exit_code == 0, result.output
    curve = json.loads(result.output)["models"][str(files["refused"])]
    assert curve["clean_accuracy"] == 1.0 and curve["engine"].startswith("tflite-micro")
    assert curve["points"][-1]["accuracy"] < 0.8 < curve["points"][0]["accuracy"]
    # on the cpu: LiteRT for the TFLite file, onnxruntime's fault engine for the ONNX model it came from
    result = CliRunner().invoke(main, ["resilience", str(files["tiny"]), "--compare", str(onnx_path), *common])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    tflite_curve, onnx_curve = doc["models"][str(files["tiny"])], doc["models"][str(onnx_path)]
    assert tflite_curve["engine"].startswith("LiteRT") and onnx_curve["engine"].startswith("onnxruntime")
    assert tflite_curve["points"][-1]["accuracy"] < 0.8 and onnx_curve["points"][-1]["accuracy"] < 0.8
    folder = next((tmp_path / "runs").glob("*-resilience*"))
    assert (folder / "resilience.png").stat().st_size > 0
    refused = CliRunner().invoke(main, ["resilience", str(files["refused"]), *common])
    assert refused.exit_code == 1 and "--device mcu:tflm" in refused.output


def test_a_missing_kernel_is_not_blamed_on_the_arena() -> None:
    gelu = relu_model((1, 8), op="GELU")  # LiteRT has GELU, this TFLite Micro build does not
    for spec in ("mcu:tflm", "mcu:tflm?arena=64"):
        with pytest.raises(TargetError, match="TFLite Micro cannot run this model: Didn't find op for builtin opcode "
                                              "'GELU'"):
            get_target(spec).deploy(TfliteModel.from_bytes(gelu))
    with pytest.raises(EngineError, match="cannot run the model: Didn't find op .*'GELU'"):
        minimum_arena_bytes(gelu, None)

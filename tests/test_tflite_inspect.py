"""`edge inspect` on TFLite files: operators, tensors and their quantization, MACs by hand, arena, target support."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from edge.cli import main
from edge.inspection import describe
from runtimes.tflm_session import minimum_arena_bytes
from tests.tflite_files import depthwise_and_batch_matmul_model, relu_model, single_zero_point

pytestmark = pytest.mark.timeout(300)


def _inspect(path: Path, *extra: str) -> dict:
    result = CliRunner().invoke(main, ["inspect", str(path), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_inspect_a_per_channel_int8_conv_file(tiny_tflite, tiny_int8, tmp_path: Path) -> None:
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tiny_tflite)
    doc = _inspect(path)
    summary = doc["summary"]
    assert doc["format"] == "tflite" and doc["has_edge_metadata"] and summary["file_bytes"] == len(tiny_tflite)
    assert summary["operator_counts"] == {"QUANTIZE": 1, "TRANSPOSE": 1, "CONV_2D": 1, "RESHAPE": 1,
                                          "FULLY_CONNECTED": 1, "DEQUANTIZE": 1}
    # by hand: the conv gives 1x6 positions x 3 filters = 18 outputs, each 1x3 taps x 2 channels = 6 MACs;
    # the fully connected layer gives 4 outputs of 18 inputs each
    assert summary["macs"]["by_type"] == {"CONV_2D": 18 * 6, "FULLY_CONNECTED": 4 * 18}
    assert summary["macs"]["total"] == 180
    assert summary["parameters"] == 3 * 2 * 3 + 3 + 4 * 18 + 4  # weights and biases of both layers
    tensors = {t["name"]: t for t in summary["tensors"]}
    weight = tensors["w_quantized"]
    assert weight["dtype"] == "int8" and weight["shape"] == [3, 1, 3, 2] and weight["constant"]
    assert weight["quantization"]["granularity"] == "per-channel"
    assert weight["quantization"]["quantized_dimension"] == 0 and weight["quantization"]["zero_points"] == [0, 0, 0]
    onnx_scales = {t.name: numpy_helper.to_array(t) for t in tiny_int8.model.graph.initializer}["w_scale"]
    assert np.allclose(weight["quantization"]["scales"], onnx_scales, rtol=1e-6)
    assert tensors["x"]["shape_signature"] == [-1, 2, 1, 8] and tensors["x"]["quantization"] is None
    # every engine loads it, and Vela keeps the float QUANTIZE/DEQUANTIZE edges on the CPU, saying why
    targets = doc["targets"]
    assert targets["litert"]["loads"] and targets["tflite-micro"]["loads"]
    assert set(targets["litert"]["operators"].values()) == {None}
    npu = targets["npu"]["operators"]
    assert npu["CONV_2D"] == "npu" and npu["FULLY_CONNECTED"] == "npu"
    assert npu["QUANTIZE"].startswith("cpu: ") and "Float32" in npu["QUANTIZE"]
    # the arena estimate is not below what TFLite Micro really needs
    arena = summary["arena_estimate"]
    assert arena["estimate_bytes"] >= minimum_arena_bytes(tiny_tflite, None) > arena["activation_plan_bytes"] > 0


def test_inspect_text_names_what_it_shows(tiny_tflite, tmp_path: Path) -> None:
    path = tmp_path / "model.bin"  # a TFLite file is recognised by its identifier, not its name
    path.write_bytes(tiny_tflite)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "MACs       180 per inference (CONV_2D 108, FULLY_CONNECTED 72)" in text
    assert "per-channel (dim 0) 3 scales" in text and "arena      about" in text and "(estimate" in text
    assert "LiteRT loads it" in text and "CPU: QUANTIZE" in text


def test_depthwise_and_batch_matmul_macs_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "dw.tflite"
    path.write_bytes(depthwise_and_batch_matmul_model())
    summary = describe(path, targets=False)["summary"]
    assert summary["macs"]["by_type"] == {"DEPTHWISE_CONV_2D": 2 * 2 * 2 * 9, "BATCH_MATMUL": 2 * 5 * 4}
    assert summary["tensors"][1]["quantization"] is None and summary["parameters"] == 18 + 2 + 20


def test_an_operator_tflite_micro_lacks_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gelu.tflite"
    path.write_bytes(relu_model((1, 8), op="GELU"))
    targets = _inspect(path, "--npu", "ethos-u85-256")["targets"]
    assert targets["litert"]["loads"] and targets["litert"]["operators"] == {"GELU": None}
    assert not targets["tflite-micro"]["loads"] and "GELU" in targets["tflite-micro"]["reason"]
    assert targets["tflite-micro"]["operators"]["GELU"].startswith("not in TFLite Micro's kernels")
    assert targets["npu"]["accelerator"] == "ethos-u85-256" and targets["npu"]["operators"]["GELU"].startswith("cpu")


def test_a_file_litert_refuses_says_so_and_why(tiny_tflite, tmp_path: Path) -> None:
    path = tmp_path / "one_zero_point.tflite"
    path.write_bytes(single_zero_point(tiny_tflite))
    doc = _inspect(path)
    assert not doc["targets"]["litert"]["loads"] and doc["targets"]["tflite-micro"]["loads"]
    assert "1 zero_point values and 3 scale values" in doc["targets"]["litert"]["reason"]
    weight = {t["name"]: t for t in doc["summary"]["tensors"]}["w_quantized"]
    assert weight["quantization"]["zero_points"] == [0] and len(weight["quantization"]["scales"]) == 3
    text = CliRunner().invoke(main, ["inspect", str(path), "--no-targets"]).output
    assert "one value for every channel" in text and "engines" not in text


def test_a_damaged_tflite_file_is_one_sentence(tiny_tflite, tmp_path: Path) -> None:
    path = tmp_path / "cut.tflite"
    path.write_bytes(tiny_tflite[:200])
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1 and "damaged" in result.output and "Traceback" not in result.output


def test_what_is_not_a_tflite_file_is_told_apart(tiny_tflite, tmp_path: Path) -> None:
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"not a flatbuffer at all")
    for command in (["inspect", str(fake)], ["convert", str(fake), "-o", str(tmp_path / "x.onnx")]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1 and "no TFL3 identifier" in result.output, result.output
    real = tmp_path / "real.tflite"
    real.write_bytes(tiny_tflite)
    result = CliRunner().invoke(main, ["convert", str(real), "-o", str(tmp_path / "x.onnx"), "--quantize", "int8"])
    assert result.exit_code == 1 and "needs the ONNX model it was exported from" in result.output


def test_the_supported_operator_lists_come_from_the_engines_themselves() -> None:
    from runtimes.tflite_support import registered_builtins

    micro, litert = registered_builtins("tflite-micro"), registered_builtins("litert")
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "SOFTMAX"} <= set(micro)
    assert "GELU" not in micro and "GELU" in litert and len(litert) > len(micro)


def test_a_vela_compiled_file_is_recognised(tiny_tflite_int8_io, tmp_path: Path) -> None:
    from runtimes.vela import compile_for_npu

    path = tmp_path / "vela.tflite"
    path.write_bytes(compile_for_npu(tiny_tflite_int8_io, "ethos-u55-128")[0])
    doc = _inspect(path)
    targets = doc["targets"]
    assert targets["npu"]["already_compiled"] and targets["npu"]["operators"]["CUSTOM:ethos-u"].startswith("npu")
    for engine in ("litert", "tflite-micro"):  # neither host engine has the NPU's custom operator
        assert not targets[engine]["loads"] and targets[engine]["operators"]["CUSTOM:ethos-u"] is not None
    assert "already compiled by Vela" in CliRunner().invoke(main, ["inspect", str(path)]).output


def test_a_misspelt_npu_is_one_sentence_with_the_nearest_name(tiny_tflite, tmp_path: Path) -> None:
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tiny_tflite)
    result = CliRunner().invoke(main, ["inspect", str(path), "--npu", "ethos-u55-12"])
    assert result.exit_code == 1 and "Did you mean 'ethos-u55-128'?" in result.output

"""Input dtype and quantization read from the model, any batch dimension, engine errors shown whole (edge.feeds)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.artifact import Artifact
from edge.errors import EngineError
from edge.feeds import TensorFormat, quantize, to_input
from feed_models import conv_gemm, conv_gemm_tflite, trials
from runtimes import open_session
from runtimes.litert_session import LiteRTSession
from runtimes.tflm_session import TFLMSession

INT8 = TensorFormat("x", np.dtype("int8"), 0.5, -3)


@pytest.fixture(scope="module")
def int8_io_tflite() -> bytes:
    """The conv/gemm network quantized to int8 with int8 input and output (scale read from the file)."""
    return conv_gemm_tflite(None)


def test_quantize_rounds_as_each_engine_does() -> None:
    x = np.array([0.25, 0.75, 1.25, -0.25, -0.75], np.float32)  # exactly k + 0.5 steps of 0.5
    tflite = TensorFormat("x", np.dtype("int8"), 0.5, 0, rounding="half-away")
    onnx_ = TensorFormat("x", np.dtype("int8"), 0.5, 0, rounding="half-even")
    assert quantize(x, tflite).tolist() == [1, 2, 3, -1, -2]  # std::round, as TFLite's QUANTIZE kernel
    assert quantize(x, onnx_).tolist() == [0, 2, 2, 0, -2]  # QuantizeLinear: half to even
    assert quantize(np.array([1e6, -1e6]), tflite).tolist() == [127, -128]


def test_integer_data_of_the_inputs_own_type_pass_unchanged() -> None:
    x = np.arange(-128, 128, dtype=np.int8)
    assert to_input(x, INT8) is not None and np.array_equal(to_input(x, INT8), x)
    assert to_input((x.astype(np.float64) + 3) * 0.5, INT8).tolist() == x.tolist()  # float quantized once
    ids = TensorFormat("ids", np.dtype("int64"))
    assert to_input(np.array([3, 4], np.int32), ids).dtype == np.int64  # unquantized ids widen losslessly


@pytest.mark.parametrize(("data", "fmt", "message"), [
    (np.zeros(3, np.uint8), INT8, r"input 'x' is int8 \(scale 0.5, zero point -3\) but the data are uint8"),
    (np.zeros(3, np.int16), INT8, r"is int8 \(scale 0.5, zero point -3\) but the data are int16"),
    (np.zeros(3, np.float32), TensorFormat("x", np.dtype("int8")),
     r"int8 \(no scale\) and has no scale to quantize float32"),
    (np.zeros(3, np.int8), TensorFormat("x", np.dtype("float32")), "is float32 but the data are int8"),
    (np.zeros(3, np.int64), TensorFormat("ids", np.dtype("int32")), "int32 cannot hold without changing values"),
])
def test_mismatches_are_refused_with_one_sentence_naming_both(data, fmt, message) -> None:
    with pytest.raises(EngineError, match=message) as info:
        to_input(data, fmt)
    assert "\n" not in str(info.value)


def test_int8_input_tflite_takes_int8_data_as_is_on_litert_and_tflite_micro(int8_io_tflite) -> None:
    litert = LiteRTSession(int8_io_tflite, kernels="reference")
    fmt = litert.input_formats["x"]
    assert fmt.dtype == np.int8 and fmt.quantized
    data = quantize(trials(), fmt)  # int8 data as a dataset would store it
    equivalent = (data.astype(np.float32) - fmt.zero_point) * np.float32(fmt.scale)
    for session in (litert, TFLMSession(int8_io_tflite)):
        (from_int8,) = session.run({"x": data})
        assert "int8 data fed as is" in session.notes["x"]
        assert "dequantized" in session.notes["y"] and from_int8.dtype == np.float32
        np.testing.assert_array_equal(from_int8, session.run({"x": equivalent})[0])
        # the old bug: int8 values taken as float and quantized again give other outputs
        assert not np.array_equal(from_int8, session.run({"x": data.astype(np.float32)})[0])


def test_uint8_data_for_an_int8_tflite_input_is_refused(int8_io_tflite) -> None:
    with pytest.raises(EngineError, match="is int8 .* but the data are uint8"):
        LiteRTSession(int8_io_tflite).run({"x": np.zeros((2, 2, 1, 8), np.uint8)})


def uint8_input_model() -> onnx.ModelProto:
    """x uint8 (N, 4) -> DequantizeLinear(0.1, 128) -> MatMul -> QuantizeLinear(0.05, 0) -> int8 y: a QOperator-era
    model with integer I/O, as other tools write them."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "xs"),
             numpy_helper.from_array(np.array(128, np.uint8), "xz"),
             numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
             numpy_helper.from_array(np.array(0, np.int8), "yz")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
             helper.make_node("MatMul", ["xf", "w"], ["m"]),
             helper.make_node("QuantizeLinear", ["m", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "u8", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 10
    return model


def test_onnx_model_with_uint8_input_and_int8_output() -> None:
    session = open_session(Artifact.from_model(uint8_input_model()))
    assert session.input_formats["x"].describe() == "uint8 (scale 0.1, zero point 128)"
    data = np.array([[128, 138, 148, 255], [0, 128, 129, 130]], np.uint8)
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    expected = np.clip(np.rint(((data.astype(np.float32) - 128) * 0.1) @ w / 0.05), -128, 127) * 0.05
    (y,) = session.run({"x": data})
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert y.dtype == np.float32 and "dequantized" in session.notes["y"]
    (from_float,) = session.run({"x": (data.astype(np.float32) - 128) * np.float32(0.1)})
    np.testing.assert_array_equal(from_float, y)  # float data quantized once with the model's own scale
    with pytest.raises(EngineError, match="is uint8 .* but the data are int8"):
        session.run({"x": data.view(np.int8)})


@pytest.mark.parametrize("batch", [1, 4])
def test_fixed_batch_onnx_runs_any_number_of_trials(batch) -> None:
    x = trials(10)
    (want,) = open_session(Artifact.from_model(conv_gemm("N", reshape=False))).run({"x": x})
    session = open_session(Artifact.from_model(conv_gemm(batch)))
    assert session.input_formats["x"].batch == batch
    (got,) = session.run({"x": x})
    assert got.shape == (10, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_onnxruntime_error_is_shown_whole_after_one_line() -> None:
    session = open_session(Artifact.from_model(conv_gemm(1)))
    with pytest.raises(EngineError) as info:
        session.run({"x": np.zeros((1, 3, 1, 8), np.float32)})
    first, *rest = str(info.value).splitlines()
    assert first.startswith("onnxruntime could not run the model on 'x' float32 (1, 3, 1, 8)")
    assert any("Got: 3 Expected: 2" in line for line in rest)  # the engine's own lines, not cut
    assert all(line.startswith("    ") for line in rest) and "Traceback" not in str(info.value)


def test_litert_error_is_shown_whole(int8_io_tflite) -> None:
    with pytest.raises(EngineError) as info:
        LiteRTSession(int8_io_tflite).run({"x": np.zeros((2, 3, 1, 8), np.int8)})
    first, *rest = str(info.value).splitlines()
    assert first.startswith("LiteRT could not run the model on 'x' int8 (2, 3, 1, 8)") and rest


def test_batch_one_model_that_squeezes_its_output_gets_a_row_per_trial() -> None:
    model = conv_gemm(1)
    model.graph.node[-1].output[0] = "y1"
    model.graph.initializer.append(numpy_helper.from_array(np.array([4], np.int64), "flat"))
    model.graph.node.append(helper.make_node("Reshape", ["y1", "flat"], ["y"]))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [4]))
    (want,) = open_session(Artifact.from_model(conv_gemm("N", reshape=False))).run({"x": trials(3)})
    session = open_session(Artifact.from_model(model))
    np.testing.assert_allclose(session.run({"x": trials(3)})[0], want, rtol=1e-5, atol=1e-5)
    assert session.run({"x": trials(1)})[0].shape == (1, 4)


def test_no_trials_is_one_clear_error() -> None:
    with pytest.raises(EngineError, match="no trials to run"):
        open_session(Artifact.from_model(conv_gemm(1))).run({"x": np.zeros((0, 2, 1, 8), np.float32)})


def test_qlinear_model_scales_are_read_from_the_ops_that_use_them() -> None:
    """QOperator graphs (QLinearMatMul) carry the input and output scales as the op's own inputs."""
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
             numpy_helper.from_array(np.array(10, np.uint8), "xz"),
             numpy_helper.from_array(np.arange(12, dtype=np.uint8).reshape(4, 3), "w"),
             numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
             numpy_helper.from_array(np.array(0, np.uint8), "wz"),
             numpy_helper.from_array(np.array(0.25, np.float32), "ys"),
             numpy_helper.from_array(np.array(3, np.uint8), "yz")]
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    graph = helper.make_graph([node], "qlinear", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = open_session(Artifact.from_model(model))
    assert session.input_formats["x"].describe() == "uint8 (scale 0.02, zero point 10)"
    assert session.output_formats["y"].describe() == "uint8 (scale 0.25, zero point 3)"
    data = np.random.default_rng(0).integers(0, 256, size=(5, 4)).astype(np.uint8)
    (y,) = session.run({"x": data})  # batch fixed at 1: five trials run one at a time
    real = ((data.astype(np.float64) - 10) * 0.02) @ (np.arange(12).reshape(4, 3) * 0.01)
    expected = (np.clip(np.rint(real / 0.25) + 3, 0, 255) - 3) * 0.25
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_vela_error_is_shown_whole_without_a_traceback() -> None:
    from runtimes.vela import compile_for_npu

    with pytest.raises(EngineError) as info:
        compile_for_npu(b"\x00" * 64, "ethos-u55-128")
    first, *rest = str(info.value).splitlines()
    assert first.startswith("Vela could not compile the model: ") and rest
    assert "Traceback" not in str(info.value) and 'File "' not in str(info.value)

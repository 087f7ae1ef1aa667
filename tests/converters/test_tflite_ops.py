"""TFLite lowering of Softmax, Sigmoid, Tanh, Clip, GlobalAveragePool / ReduceMean, Transpose, Concat and Pad.

Each op sits in a tiny Conv network quantized by ``QuantizeInt8``; the TFLite file is run in LiteRT's builtin
kernels and in TFLite Micro and compared with onnxruntime on the QDQ model, in steps of the output scale.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_tflite import output_step, run_onnx, run_tflite, schema, tflite_ops

from converters.quantize import QuantizeInt8
from converters.tflite import export_tflite
from edge.artifact import Artifact
from edge.errors import PassError
from runtimes.tflm_session import TFLMSession

X = np.random.default_rng(0).normal(size=(64, 2, 4, 6)).astype(np.float32)


def _model(nodes: list[onnx.NodeProto], **constants: np.ndarray) -> onnx.ModelProto:
    """x (N, 2, 4, 6) -> Conv 3x3 SAME, 4 filters -> ``c`` (N, 4, 4, 6) -> ``nodes`` -> y."""
    rng = np.random.default_rng(1)
    constants = {"w": rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32),
                 **constants}
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1])
    graph = helper.make_graph([conv, *nodes], "ops",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _classifier(nodes: list[onnx.NodeProto], features: int, **constants: np.ndarray) -> onnx.ModelProto:
    """``_model`` whose ``nodes`` end in ``h``, followed by Flatten -> Gemm(5) -> y."""
    fc = np.random.default_rng(2).normal(size=(5, features)).astype(np.float32)
    head = [helper.make_node("Flatten", ["h"], ["f"], name="flatten"),
            helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1)]
    return _model([*nodes, *head], fc=fc, **constants)


def _probed(nodes: list[onnx.NodeProto], rank: int, **constants: np.ndarray) -> onnx.ModelProto:
    """``_model`` with ``nodes`` ending in ``h``, read by a Pad without padding: ``QuantizeInt8`` leaves Softmax,
    Sigmoid, Tanh, means and Concat in float, and a Pad (unlike Flatten) quantizes its input, so ``h`` gets the
    QuantizeLinear that makes the op int8 and is the output compared."""
    probe = helper.make_node("Pad", ["h", "no_pads"], ["y"], name="probe")
    return _model([*nodes, probe], no_pads=np.zeros(2 * rank, np.int64), **constants)


def _steps(artifact: Artifact, data: bytes, top1: bool = False) -> tuple[float, float]:
    """Largest distance, in output steps, of LiteRT and of TFLite Micro from onnxruntime on ``X``."""
    want, step = run_onnx(artifact, X), output_step(artifact)
    results = []
    for got in (run_tflite(data, X), TFLMSession(data).run({"x": X})[0]):
        assert got.shape == want.shape
        if top1:
            assert np.array_equal(got.argmax(1), want.argmax(1))
        results.append(float(np.abs(got - want).max() / step))
    return results[0], results[1]


def _int8(model: onnx.ModelProto, **kwargs: object) -> Artifact:
    return QuantizeInt8(**kwargs)(Artifact.from_model(model), X)


def _check_float(model: onnx.ModelProto, op: str) -> None:
    artifact = Artifact.from_model(model)
    data = export_tflite(artifact)
    assert op in tflite_ops(data)
    want = run_onnx(artifact, X)  # float kernels sum in another order: 1e-5 of the output's magnitude
    np.testing.assert_allclose(run_tflite(data, X), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def _attr_ints(node: onnx.NodeProto, name: str) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == name), None)


def _set_quantization(artifact: Artifact, tensor: str, scale: float, zero_point: int) -> Artifact:
    """A copy in which ``tensor``, and whatever shares its quantization, uses ``scale`` and ``zero_point``."""
    model = onnx.ModelProto()
    model.CopyFrom(artifact.model)
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    for init in model.graph.initializer:
        if init.name == q.input[1]:
            init.CopyFrom(numpy_helper.from_array(np.float32(scale), init.name))
        elif init.name == q.input[2]:
            init.CopyFrom(numpy_helper.from_array(np.int8(zero_point), init.name))
    return artifact.derive(model, "fixed-output-scale", {})


def _share_quantization(artifact: Artifact, source: str, tensor: str) -> Artifact:
    """A copy in which ``tensor``, and whatever shares its quantization, uses the scale and zero point of ``source``."""
    model = onnx.ModelProto()
    model.CopyFrom(artifact.model)
    q_source, q = (next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == name)
                   for name in (source, tensor))
    renamed = {q.input[1]: q_source.input[1], q.input[2]: q_source.input[2]}
    for node in model.graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    return artifact.derive(model, "shared-scale", {})


# -- Softmax, Sigmoid, Tanh ------------------------------------------------------------------------------

BOUNDED = [("Softmax", "SOFTMAX", 1 / 256, -128), ("Sigmoid", "LOGISTIC", 1 / 256, -128), ("Tanh", "TANH", 1 / 128, 0)]


def _bounded_model(op: str) -> onnx.ModelProto:
    """Softmax over the 5 logits of a classifier; Sigmoid / Tanh on the conv output."""
    if op == "Softmax":
        fc = np.random.default_rng(2).normal(size=(5, 96)).astype(np.float32)
        return _probed([helper.make_node("Flatten", ["c"], ["f"], name="flatten"),
                        helper.make_node("Gemm", ["f", "fc"], ["l"], name="fc", transB=1),
                        helper.make_node("Softmax", ["l"], ["h"], name="op")], 2, fc=fc)
    return _probed([helper.make_node(op, ["c"], ["h"], name="op")], 4)


@pytest.mark.parametrize(("op", "code", "scale", "zero_point"), BOUNDED)
def test_bounded_activation_is_int8_with_tflites_output_scale(op, code, scale, zero_point) -> None:
    """QuantizeInt8 puts the op's output on TFLite's fixed grid, so the op is int8 (measured: the same int8
    values as onnxruntime)."""
    int8 = _int8(_bounded_model(op))
    q = next(n for n in int8.model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "h")
    values = {t.name: numpy_helper.to_array(t) for t in int8.model.graph.initializer}
    assert (float(values[q.input[1]]), int(values[q.input[2]])) == (np.float32(scale), zero_point)
    data = export_tflite(int8)
    assert code in tflite_ops(data) and "DEQUANTIZE" not in tflite_ops(data)[:-1]
    litert, tflm = _steps(int8, data, top1=op == "Softmax")
    assert litert <= 1.0001 and tflm <= 1.0001


@pytest.mark.parametrize(("op", "code", "scale", "zero_point"), BOUNDED)
def test_bounded_activation_with_a_calibrated_output_scale_is_refused(op, code, scale, zero_point) -> None:
    """A QDQ model from elsewhere may calibrate these outputs (onnxruntime alone: Softmax max / 255, zero point
    -128), which TFLite cannot write."""
    calibrated = _set_quantization(_int8(_bounded_model(op)), "h", 1 / 255, -128)
    with pytest.raises(PassError, match=rf"{op} node 'op' cannot be lowered to TFLite: TFLite's int8 {code} "
                                        rf"writes scale 1/{round(1 / scale)} and zero point {zero_point}"):
        export_tflite(calibrated)


@pytest.mark.parametrize(("op", "code"), [("Sigmoid", "LOGISTIC"), ("Tanh", "TANH"), ("Softmax", "SOFTMAX")])
def test_bounded_activation_on_a_float_output(op, code) -> None:
    """Left in float by the quantizer: DEQUANTIZE, then the float op (Softmax: over the channels)."""
    model = _model([helper.make_node(op, ["c"], ["y"], name="op", **({"axis": 1} if op == "Softmax" else {}))])
    int8 = _int8(model, exclude=["op"])
    data = export_tflite(int8)
    assert tflite_ops(data)[-3:-1] == ["DEQUANTIZE", code]
    np.testing.assert_allclose(run_tflite(data, X), run_onnx(int8, X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(TFLMSession(data).run({"x": X})[0], run_onnx(int8, X), rtol=1e-5, atol=1e-5)
    _check_float(model, code)


def test_softmax_over_a_middle_axis_is_refused() -> None:
    model = _model([helper.make_node("Softmax", ["c"], ["y"], name="op", axis=2)])
    with pytest.raises(PassError, match=r"Softmax node 'op' cannot be lowered to TFLite: TFLite SOFTMAX normalises"):
        export_tflite(Artifact.from_model(model))


# -- Clip ------------------------------------------------------------------------------------------------

def _clip(low: float | None, high: float | None, source: str = "c", out: str = "h") -> tuple[list, dict]:
    names, constants = [source, "", ""], {}
    for i, (name, value) in enumerate((("low", low), ("high", high)), 1):
        if value is not None:
            names[i], constants[name] = name, np.float32(value)
    return [helper.make_node("Clip", names, [out], name="clip")], constants


@pytest.mark.parametrize(("low", "high", "fused"), [(0, 6, "RELU6"), (-1, 1, "RELU_N1_TO_1"), (0, None, "RELU"),
                                                    (-0.5, 0.7, None)])
def test_float_clip_is_fused_or_a_maximum_and_minimum(low, high, fused) -> None:
    nodes, constants = _clip(low, high)
    model = _classifier(nodes, 96, **constants)
    data = export_tflite(Artifact.from_model(model))
    conv = schema.ModelT.InitFromPackedBuf(bytearray(data), 0).subgraphs[0].operators[1]
    assert tflite_ops(data)[1] == "CONV_2D"
    activation = conv.builtinOptions.fusedActivationFunction
    assert activation == getattr(schema.ActivationFunctionType, fused or "NONE")
    assert ("MAXIMUM" in tflite_ops(data)) == (fused is None)
    _check_float(model, "FULLY_CONNECTED")


def test_clip_folded_away_by_the_quantizer_leaves_nothing_to_lower() -> None:
    """With the conv as its only reader onnxruntime drops the Clip: its range is the QuantizeLinear's."""
    nodes, constants = _clip(0, 6)
    int8 = _int8(_classifier(nodes, 96, **constants))
    assert "Clip" not in {n.op_type for n in int8.model.graph.node}
    data = export_tflite(int8)
    assert tflite_ops(data) == ["QUANTIZE", "TRANSPOSE", "CONV_2D", "RESHAPE", "FULLY_CONNECTED", "DEQUANTIZE"]
    assert max(_steps(int8, data, top1=True)) <= 1.0001


@pytest.mark.parametrize("on_the_conv_grid", [False, True])
def test_int8_clip_read_beside_its_input(on_the_conv_grid) -> None:
    """The conv output also feeds the Concat, so onnxruntime keeps the Clip. On its calibrated grid the clip is
    the int8 range itself (a requantize); on the wider grid of the conv output a MAXIMUM and a MINIMUM."""
    nodes, constants = _clip(-0.5, 0.7, out="k")
    nodes.append(helper.make_node("Concat", ["c", "k"], ["h"], name="concat", axis=1))
    int8 = _int8(_probed(nodes, 4, **constants))
    if on_the_conv_grid:
        int8 = _share_quantization(int8, "c", "k")
    data = export_tflite(int8)
    ops = tflite_ops(data)
    assert "CONCATENATION" in ops and ops.count("DEQUANTIZE") == 1
    assert ({"MAXIMUM", "MINIMUM"} <= set(ops)) == on_the_conv_grid
    litert, tflm = _steps(int8, data)
    assert litert <= 1.0001 and tflm <= 1.0001


@pytest.mark.parametrize("on_the_conv_grid", [False, True])
def test_int8_clip_left_in_float_by_the_quantizer(on_the_conv_grid) -> None:
    """Excluded from quantization, Clip(0, 6) reads the conv's int8 output and its reader quantizes the result.
    On the conv's grid it is a fused RELU6; on its calibrated grid a requantize."""
    nodes, constants = _clip(0, 6)
    int8 = _int8(_probed(nodes, 4, **constants), exclude=["clip"])
    if on_the_conv_grid:
        int8 = _share_quantization(int8, "c", "h")
    data = export_tflite(int8)
    ops = ["QUANTIZE", "TRANSPOSE", "CONV_2D", "PAD", "TRANSPOSE", "DEQUANTIZE"]
    assert tflite_ops(data) == (ops if on_the_conv_grid else ops[:3] + ["QUANTIZE"] + ops[3:])
    conv = schema.ModelT.InitFromPackedBuf(bytearray(data), 0).subgraphs[0].operators[2]
    assert (conv.builtinOptions.fusedActivationFunction == schema.ActivationFunctionType.RELU6) == on_the_conv_grid
    litert, tflm = _steps(int8, data)
    assert litert <= 1.0001 and tflm <= 1.0001


# -- GlobalAveragePool, ReduceMean -------------------------------------------------------------------

MEANS = [
    (helper.make_node("GlobalAveragePool", ["c"], ["h"], name="mean"), 4),
    (helper.make_node("ReduceMean", ["c"], ["h"], name="mean", axes=[2, 3], keepdims=0), 2),
    (helper.make_node("ReduceMean", ["c"], ["h"], name="mean", axes=[-1], keepdims=1), 4),
    (helper.make_node("ReduceMean", ["c"], ["h"], name="mean", axes=[2], keepdims=0), 3),
]


@pytest.mark.parametrize(("node", "rank"), MEANS, ids=["global-average-pool", "spatial", "width-keepdims", "height"])
def test_mean_int8_and_float(node, rank) -> None:
    """An int8 MEAN rescales with fixed-point multipliers, onnxruntime in float (measured: one step apart over
    both spatial axes, equal over one axis)."""
    model = _probed([node], rank)
    int8 = _int8(model)
    data = export_tflite(int8)
    # a rescaling int8 mean over both spatial axes (kept or not) is a depthwise convolution (one rounding)
    spatial = node.op_type == "GlobalAveragePool" or _attr_ints(node, "axes") == [2, 3]
    assert ("DEPTHWISE_CONV_2D" if spatial else "MEAN") in tflite_ops(data)
    assert tflite_ops(data).count("DEQUANTIZE") == 1
    litert, tflm = _steps(int8, data)
    assert litert <= 1.0001 and tflm <= 1.0001
    _check_float(model, "MEAN")


# -- Transpose, Concat, Pad --------------------------------------------------------------------------

@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 1, 3, 2], [0, 3, 2, 1]])
def test_transpose_int8_and_float(perm) -> None:
    model = _model([helper.make_node("Transpose", ["c"], ["y"], name="transpose", perm=perm)])
    int8 = _int8(model)
    data = export_tflite(int8)
    # NCHW -> NHWC of the conv output is the TFLite tensor's own order: no TRANSPOSE is written for it
    relabel = list(perm) == [0, 2, 3, 1]
    assert tflite_ops(data) == ["QUANTIZE", "TRANSPOSE", "CONV_2D", *([] if relabel else ["TRANSPOSE"]), "DEQUANTIZE"]
    litert, tflm = _steps(int8, data)
    assert litert <= 1e-3 and tflm <= 1e-3  # the same int8 values
    _check_float(model, "TRANSPOSE")


def test_transpose_moving_the_batch_axis_is_refused() -> None:
    model = _model([helper.make_node("Transpose", ["c"], ["y"], name="transpose", perm=[1, 0, 2, 3])])
    with pytest.raises(PassError, match=r"Transpose node 'transpose' cannot be lowered to TFLite: perm \[1, 0, 2, 3\] "
                                        r"moves the batch axis"):
        export_tflite(Artifact.from_model(model))


@pytest.mark.parametrize("axis", [1, 3, -2])
def test_int8_concat_of_branches_with_their_own_scales(axis) -> None:
    """The conv output and its Relu (kept: the conv output has two readers) have different scales; a 1x1 Conv
    reads the Concat, so its output is quantized."""
    w2 = np.random.default_rng(3).normal(size=(3, 8 if axis == 1 else 4, 1, 1)).astype(np.float32)
    out = {1: (3, 4, 6), 3: (3, 4, 12), -2: (3, 8, 6)}[axis]
    nodes = [helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Concat", ["c", "r"], ["k"], name="concat", axis=axis),
             helper.make_node("Conv", ["k", "w2"], ["h"], name="conv2")]
    model = _classifier(nodes, int(np.prod(out)), w2=w2)
    int8 = _int8(model)
    data = export_tflite(int8)
    ops = tflite_ops(data)
    assert "CONCATENATION" in ops and ops.count("DEQUANTIZE") == 1 and ops.count("TRANSPOSE") == 1
    assert max(_steps(int8, data, top1=True)) <= 1.0001
    _check_float(model, "CONCATENATION")


def test_pad_int8_and_float() -> None:
    pads = np.array([0, 0, 1, 2, 0, 0, 2, 0], np.int64)  # H: 1 before, 2 after; W: 2 before
    nodes = [helper.make_node("Pad", ["c", "pads", "zero"], ["p"], name="pad"),
             helper.make_node("Conv", ["p", "w2"], ["h"], name="conv2", strides=[2, 2])]
    w2 = np.random.default_rng(3).normal(size=(3, 4, 3, 3)).astype(np.float32)
    model = _classifier(nodes, 3 * 3 * 3, pads=pads, zero=np.float32(0), w2=w2)
    int8 = _int8(model)
    data = export_tflite(int8)
    assert tflite_ops(data) == ["QUANTIZE", "TRANSPOSE", "CONV_2D", "PAD", "CONV_2D", "RESHAPE", "FULLY_CONNECTED",
                                "DEQUANTIZE"]
    assert max(_steps(int8, data, top1=True)) <= 1.0001
    _check_float(model, "PAD")


@pytest.mark.parametrize(("attributes", "value", "reason"), [
    ({"mode": "reflect"}, None, "mode 'reflect' has no TFLite PAD equivalent"),
    ({}, 1.5, "it pads with 1.5; only 0"),
])
def test_pad_refusals_name_the_node(attributes, value, reason) -> None:
    pads = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    inputs = ["c", "pads"] + (["value"] if value is not None else [])
    constants = {"pads": pads, **({"value": np.float32(value)} if value is not None else {})}
    model = _model([helper.make_node("Pad", inputs, ["y"], name="/block/Pad", **attributes)], **constants)
    with pytest.raises(PassError, match=rf"Pad node '/block/Pad' cannot be lowered to TFLite: {reason}"):
        export_tflite(Artifact.from_model(model))


def test_network_of_bounded_activations_is_fully_int8_and_exact() -> None:
    """Conv -> Sigmoid -> Flatten -> Gemm -> Tanh -> Gemm -> Softmax, quantized by QuantizeInt8 alone: every op is
    int8 in the file (nothing between the edge QUANTIZE and DEQUANTIZE is float) and the output is onnxruntime's."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Sigmoid", ["c"], ["s"], name="sigmoid"),
             helper.make_node("Flatten", ["s"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc1"], ["g"], name="fc1", transB=1),
             helper.make_node("Tanh", ["g"], ["t"], name="tanh"),
             helper.make_node("Gemm", ["t", "fc2"], ["l"], name="fc2", transB=1),
             helper.make_node("Softmax", ["l"], ["y"], name="softmax")]
    model = _model(nodes, fc1=rng.normal(size=(8, 96)).astype(np.float32),
                   fc2=rng.normal(size=(5, 8)).astype(np.float32))
    int8 = _int8(model)
    data = export_tflite(int8)
    ops = tflite_ops(data)
    assert ops.count("QUANTIZE") == ops.count("DEQUANTIZE") == 1 and ops[-2:] == ["SOFTMAX", "DEQUANTIZE"]
    assert {"LOGISTIC", "TANH"} <= set(ops)
    litert, tflm = _steps(int8, data, top1=True)
    assert litert <= 1.0001 and tflm <= 1.0001

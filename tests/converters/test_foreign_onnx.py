"""Foreign ONNX graphs (old opsets, other exporters' patterns) quantize to int8 and export to TFLite.

Each test builds a tiny model inline in the form another exporter writes, quantizes it with ``QuantizeInt8``,
exports it and runs it in LiteRT's reference kernels and in TFLite Micro against onnxruntime on the QDQ model:
at most one output step apart, the same top-1 class, TFLite Micro bit-exact with LiteRT, onnx.checker clean.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.normalize import normalize_graph
from converters.quantize import QuantizeInt8
from converters.tflite import export_tflite
from edge.artifact import Artifact
from edge.errors import PassError
from runtimes.litert_session import LiteRTSession
from runtimes.tflm_session import TFLMSession

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
RNG = np.random.default_rng(0)


def tflite_ops(data: bytes) -> list[str]:
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [names[c.builtinCode] for c in model.operatorCodes]
    return [codes[op.opcodeIndex] for op in model.subgraphs[0].operators]


def run_onnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """onnxruntime, one trial at a time (foreign models often fix the batch at 1)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.ir_version = min(copy.ir_version, 10)
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: t[None]})[0] for t in x])


def output_step(model: onnx.ModelProto) -> float:
    graph = model.graph
    last = next(n for n in graph.node if n.output[0] == graph.output[0].name)
    assert last.op_type == "DequantizeLinear"
    return float(numpy_helper.to_array(next(t for t in graph.initializer if t.name == last.input[1])))


def graph_model(nodes: list[onnx.NodeProto], x_shape: list, y_shape: list | None, opset: int,
                inputs_too: bool = False, **constants: np.ndarray) -> onnx.ModelProto:
    """A model x -> ``nodes`` -> y; ``inputs_too`` lists the initializers as graph inputs (old exporters)."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    if inputs_too:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "foreign", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3 if opset < 9 else 7
    if y_shape is None:  # the output's shape as ONNX infers it, so the checker accepts the graph
        inferred = onnx.shape_inference.infer_shapes(model).graph.output[0]
        model.graph.output[0].CopyFrom(inferred)
    if model.graph.output[0].type.tensor_type.HasField("shape"):
        onnx.checker.check_model(model)
    return model


def check_int8(model: onnx.ModelProto, x: np.ndarray, expected: tuple[str, ...] = (),
               max_steps: float = 1.0) -> list[str]:
    """Quantize, export, and compare TFLite (LiteRT reference, TFLite Micro) with the ONNX QDQ model."""
    int8 = QuantizeInt8()(Artifact.from_model(model), x)
    onnx.checker.check_model(int8.model)
    data = export_tflite(int8)
    ops = tflite_ops(data)
    inner = ops[1:-1]
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE" and "DEQUANTIZE" not in inner, ops  # fully int8
    for op in expected:
        assert op in ops, ops
    want = run_onnx(int8.model, x)
    reference = LiteRTSession(data, kernels="reference")
    litert = np.concatenate([reference.run({"x": t[None]})[0] for t in x])
    # per trial, like the two above: a graph that folds the batch axis (Flatten axis=2) has no batch axis to stack on
    micro = TFLMSession(data).run({"x": x})[0].reshape(litert.shape)
    step = output_step(int8.model)
    assert litert.shape == want.shape
    assert np.abs(litert - want).max() <= max_steps * step * 1.0001
    assert np.array_equal(micro, litert)  # TFLite Micro bit-exact with LiteRT's reference kernels
    if want.ndim == 2 and want.shape[1] > 1:
        assert np.mean(litert.argmax(1) == want.argmax(1)) >= 0.97
    return ops


# -- the opset-8 CNN --------------------------------------------------------------------------
def opset8_cnn() -> onnx.ModelProto:
    """Conv -> Relu -> MaxPool -> Reshape -> MatMul -> Add, opset 8, initializers listed as inputs, batch 1."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "shape"], ["f"], name="reshape"),
             helper.make_node("MatMul", ["f", "fc"], ["m"], name="matmul"),
             helper.make_node("Add", ["m", "fcb"], ["y"], name="add")]
    return graph_model(nodes, [1, 1, 8, 8], [1, 10], 8, inputs_too=True,
                       w=RNG.normal(size=(4, 1, 3, 3)).astype(np.float32), b=RNG.normal(size=4).astype(np.float32),
                       shape=np.array([1, 64], np.int64), fc=(0.2 * RNG.normal(size=(64, 10))).astype(np.float32),
                       fcb=RNG.normal(size=(1, 10)).astype(np.float32))  # a (1, N) row: the quantizer's 'ambiguous'


X8 = RNG.normal(size=(32, 1, 8, 8)).astype(np.float32)


def test_opset8_cnn_quantizes_and_exports_fully_int8() -> None:
    ops = check_int8(opset8_cnn(), X8, ("CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"))
    assert ops.count("FULLY_CONNECTED") == 1  # MatMul + Add is one layer with a bias


def test_opset8_cnn_through_the_cli_is_fully_int8(tmp_path) -> None:
    """The issue's model: `edge convert` quantizes and exports it fully int8 and checks it in both TFLite engines."""
    from click.testing import CliRunner

    from edge.cli import main

    model_path, calib, out = tmp_path / "cnn8.onnx", tmp_path / "calib.npz", tmp_path / "cnn8_int8.onnx"
    onnx.save(opset8_cnn(), model_path)
    np.savez(calib, x=X8)
    result = CliRunner().invoke(main, ["convert", str(model_path), "--quantize", "int8", "--calib", str(calib),
                                       "--export", "tflite", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    for engine in ("LiteRT", "TFLite Micro"):
        line = next(line for line in result.output.splitlines() if line.startswith(f"tflite ({engine}):"))
        assert float(line.split("top-1 agreement")[1].split("%")[0]) >= 99.0
    ops = tflite_ops((tmp_path / "cnn8_int8.tflite").read_bytes())
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE" and "DEQUANTIZE" not in ops[1:-1], ops
    assert {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"} <= set(ops)


def test_opset8_cnn_exports_in_float() -> None:
    model = opset8_cnn()
    data = export_tflite(Artifact.from_model(model))
    got = np.concatenate([LiteRTSession(data, kernels="reference").run({"x": t[None]})[0] for t in X8])
    np.testing.assert_allclose(got, run_onnx(model, X8), rtol=1e-4, atol=1e-4)


def test_normalisation_keeps_the_function_and_passes_the_checker() -> None:
    model = opset8_cnn()
    normalized, notes = normalize_graph(model)
    onnx.checker.check_model(normalized)
    assert [o.version for o in normalized.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert [i.name for i in normalized.graph.input] == ["x"]
    assert any("graph inputs" in n for n in notes) and any("opset 8" in n for n in notes)
    np.testing.assert_allclose(run_onnx(normalized, X8), run_onnx(model, X8), rtol=1e-5, atol=1e-5)


def test_normalisation_of_a_modern_graph_changes_nothing() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    model = graph_model(nodes, ["N", 1, 4, 4], None, 17, w=np.ones((2, 1, 1, 1), np.float32))
    normalized, notes = normalize_graph(model)
    assert notes == [] and [n.op_type for n in normalized.graph.node] == ["Conv"]


# -- exporters' patterns --------------------------------------------------------------------------------
torch = pytest.importorskip("torch")


class _TorchNet(torch.nn.Module):
    """Conv -> BatchNorm -> LeakyReLU -> MaxPool with padding -> flatten -> Linear -> BatchNorm1d -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 5 * 5, 16)
        self.bn1 = torch.nn.BatchNorm1d(16)
        self.out = torch.nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2, padding=1)
        return self.out(torch.relu(self.bn1(self.fc(x.flatten(1)))))


def _torch_model(module: torch.nn.Module, x: np.ndarray, opset: int, tmp_path, **kwargs) -> onnx.ModelProto:
    torch.manual_seed(0)
    for m in module.modules():  # non-trivial running statistics, so folding them matters
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    module.eval()
    path = tmp_path / f"m{opset}.onnx"
    torch.onnx.export(module, torch.from_numpy(x[:1]), str(path), opset_version=opset, dynamo=False,
                      input_names=["x"], output_names=["y"], **kwargs)
    return onnx.load(str(path))


@pytest.mark.parametrize("opset, as_inputs", [(8, True), (11, False), (13, True), (18, False)])
def test_torch_legacy_exports_quantize_and_export(opset: int, as_inputs: bool, tmp_path) -> None:
    x = RNG.normal(size=(32, 1, 8, 8)).astype(np.float32)
    torch.manual_seed(opset)
    model = _torch_model(_TorchNet(), x, opset, tmp_path, keep_initializers_as_inputs=as_inputs)
    check_int8(model, x, ("CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"))


def _gemm(**attributes: float) -> onnx.ModelProto:
    b = RNG.normal(size=(4, 6) if attributes.get("transB", 0) else (6, 4)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "b", "c"], ["y"], name="gemm", **attributes)]
    return graph_model(nodes, ["N", 6], None, 11, b=b, c=RNG.normal(size=4).astype(np.float32))


@pytest.mark.parametrize("attributes", [{"transB": 1}, {"alpha": 0.5, "beta": 2.0}, {"alpha": 3.0, "transB": 1}])
def test_gemm_attributes(attributes: dict) -> None:
    check_int8(_gemm(**attributes), RNG.normal(size=(32, 6)).astype(np.float32), ("FULLY_CONNECTED",))


def test_gemm_with_a_row_bias() -> None:
    """A (1, N) bias made onnxruntime's quantizer fail with 'truth value of an array is ambiguous'."""
    nodes = [helper.make_node("Gemm", ["x", "b", "c"], ["y"], name="gemm")]
    model = graph_model(nodes, ["N", 6], None, 11, b=RNG.normal(size=(6, 4)).astype(np.float32),
                        c=RNG.normal(size=(1, 4)).astype(np.float32))
    check_int8(model, RNG.normal(size=(32, 6)).astype(np.float32), ("FULLY_CONNECTED",))


def test_gemm_trans_a_becomes_a_transpose() -> None:
    nodes = [helper.make_node("Gemm", ["x", "b"], ["y"], name="gemm", transA=1, alpha=0.5)]
    model = graph_model(nodes, [6, 1], None, 11, b=RNG.normal(size=(6, 4)).astype(np.float32))
    normalized, _ = normalize_graph(model)
    assert [n.op_type for n in normalized.graph.node] == ["Transpose", "Gemm"]
    x = RNG.normal(size=(6, 1)).astype(np.float32)
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (model, normalized)]
    want, got = (s.run(None, {"x": x})[0] for s in sessions)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_matmul_add_over_a_sequence_is_one_fully_connected_per_step() -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
             helper.make_node("Add", ["m", "b"], ["y"], name="add")]
    model = graph_model(nodes, ["N", 3, 6], None, 13, w=RNG.normal(size=(6, 4)).astype(np.float32),
                        b=RNG.normal(size=4).astype(np.float32))
    x = RNG.normal(size=(32, 3, 6)).astype(np.float32)
    check_int8(model, x, ("FULLY_CONNECTED",))


def test_reshape_with_zero_and_minus_one() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Reshape", ["c", "shape"], ["f"], name="reshape"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1)]
    model = graph_model(nodes, ["N", 2, 3, 3], None, 13, w=RNG.normal(size=(4, 2, 1, 1)).astype(np.float32),
                        shape=np.array([0, -1], np.int64), fc=RNG.normal(size=(5, 36)).astype(np.float32))
    check_int8(model, RNG.normal(size=(32, 2, 3, 3)).astype(np.float32), ("CONV_2D", "FULLY_CONNECTED"))


def test_recurrent_cells_of_dynamic_length_stay_float_and_their_export_is_refused_in_one_sentence() -> None:
    hidden = 4
    w = RNG.normal(size=(1, 4 * hidden, 3)).astype(np.float32)
    r = RNG.normal(size=(1, 4 * hidden, hidden)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="time_major", perm=[1, 0, 2]),  # as PyTorch writes it
             helper.make_node("LSTM", ["t", "w", "r"], ["", "h"], name="lstm", hidden_size=hidden),
             helper.make_node("Transpose", ["h"], ["hb"], name="batch_major", perm=[1, 0, 2]),
             helper.make_node("Flatten", ["hb"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc")]
    model = graph_model(nodes, ["N", "T", 3], None, 14, w=w, r=r, fc=RNG.normal(size=(4, 3)).astype(np.float32))
    x = RNG.normal(size=(8, 5, 3)).astype(np.float32)
    int8 = QuantizeInt8()(Artifact.from_model(model), x)
    assert [n.op_type for n in int8.model.graph.node].count("LSTM") == 1
    np.testing.assert_allclose(run_onnx(int8.model, x), run_onnx(model, x), atol=0.1)  # the Gemm is int8
    for artifact in (Artifact.from_model(model), int8):
        with pytest.raises(PassError, match=r"LSTM node 'lstm' cannot be lowered to TFLite yet; recurrent cells .*"
                                            r"its sequence length is not fixed"):
            export_tflite(artifact)


# -- single ops after a convolution, as helper-built graphs ---------------------------------------------
XC = RNG.normal(size=(32, 2, 4, 6)).astype(np.float32)


def conv_then(nodes: list[onnx.NodeProto], opset: int = 13, **constants: np.ndarray) -> onnx.ModelProto:
    """x (N, 2, 4, 6) -> Conv 3x3 SAME, 4 filters -> ``c`` -> ``nodes`` -> y."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1])
    return graph_model([conv, *nodes], ["N", 2, 4, 6], None, opset,
                       w=RNG.normal(size=(4, 2, 3, 3)).astype(np.float32), b=RNG.normal(size=4).astype(np.float32),
                       **constants)


SLOPE = np.array([0.1, -0.2, 0.3, 0.05], np.float32).reshape(4, 1, 1)
OP_CASES = {
    "leaky_relu": ([helper.make_node("LeakyRelu", ["c"], ["y"], name="op", alpha=0.1)], {}, "LEAKY_RELU", 13),
    "prelu": ([helper.make_node("PRelu", ["c", "slope"], ["y"], name="op")], {"slope": SLOPE}, "PRELU", 13),
    "hard_swish": ([helper.make_node("HardSwish", ["c"], ["y"], name="op")], {}, "HARD_SWISH", 14),
    "hard_sigmoid": ([helper.make_node("HardSigmoid", ["c"], ["y"], name="op", alpha=0.2, beta=0.5)], {}, "ADD",
                     13),  # onnxruntime folds the Mul into the Conv before quantizing
    "sub_div": ([helper.make_node("Sub", ["c", "mean"], ["s"], name="sub"),
                 helper.make_node("Div", ["s", "std"], ["y"], name="div")],
                {"mean": np.float32(0.5), "std": np.float32(2.0)}, "ADD", 11),
    "squeeze_unsqueeze": ([helper.make_node("Unsqueeze", ["c"], ["u"], name="unsqueeze", axes=[2]),
                           helper.make_node("Squeeze", ["u"], ["y"], name="squeeze", axes=[2])], {}, "RESHAPE", 11),
    "split": ([helper.make_node("Split", ["c"], ["s1", "s2"], name="split", axis=1, split=[1, 3]),
               helper.make_node("Mul", ["s1", "s2"], ["y"], name="mul")], {}, "SPLIT_V", 11),
    "slice_channels": ([helper.make_node("Slice", ["c", "starts", "ends", "axes"], ["y"], name="op")],
                       {"starts": np.array([1, 1], np.int64), "ends": np.array([3, 5], np.int64),
                        "axes": np.array([1, 3], np.int64)}, "STRIDED_SLICE", 13),
    "resize_nearest": ([helper.make_node("Resize", ["c", "", "scales"], ["y"], name="op", mode="nearest",
                                         coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
                       {"scales": np.array([1, 1, 2, 2], np.float32)}, "RESIZE_NEAREST_NEIGHBOR", 13),
    "resize_half_pixel_nearest": ([helper.make_node("Resize", ["c", "", "scales"], ["y"], name="op", mode="nearest")],
                                  {"scales": np.array([1, 1, 2, 3], np.float32)}, "RESIZE_NEAREST_NEIGHBOR", 13),
    "resize_bilinear": ([helper.make_node("Resize", ["c", "", "scales"], ["y"], name="op", mode="linear",
                                          coordinate_transformation_mode="half_pixel")],
                        {"scales": np.array([1, 1, 2, 2], np.float32)}, "RESIZE_BILINEAR", 13),
    "resize_align_corners": ([helper.make_node("Resize", ["c", "", "", "sizes"], ["y"], name="op", mode="linear",
                                               coordinate_transformation_mode="align_corners")],
                             {"sizes": np.array([1, 4, 7, 11], np.int64)}, "RESIZE_BILINEAR", 13),
    "conv_transpose": ([helper.make_node("ConvTranspose", ["c", "wt", "bt"], ["y"], name="op", strides=[2, 2],
                                         pads=[1, 1, 1, 1], kernel_shape=[4, 4])],
                       {"wt": RNG.normal(size=(4, 3, 4, 4)).astype(np.float32),
                        "bt": RNG.normal(size=3).astype(np.float32)}, "TRANSPOSE_CONV", 13),
    "conv_transpose_valid": ([helper.make_node("ConvTranspose", ["c", "wt"], ["y"], name="op", strides=[2, 2])],
                             {"wt": RNG.normal(size=(4, 2, 3, 3)).astype(np.float32)}, "TRANSPOSE_CONV", 13),
    "conv_transpose_output_padding": ([helper.make_node("ConvTranspose", ["c", "wt"], ["y"], name="op",
                                                        strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])],
                                      {"wt": RNG.normal(size=(4, 2, 3, 3)).astype(np.float32)}, "STRIDED_SLICE", 13),
    "flatten_axis2": ([helper.make_node("Flatten", ["c"], ["f"], name="op", axis=2),
                       helper.make_node("MatMul", ["f", "fw"], ["y"], name="mm")],
                      {"fw": RNG.normal(size=(24, 3)).astype(np.float32)}, "RESHAPE", 13),
    "batch_norm_alone": ([helper.make_node("Relu", ["c"], ["r"], name="relu"),
                          helper.make_node("BatchNormalization", ["r", "g", "beta", "m", "v"], ["y"], name="bn")],
                         {"g": RNG.uniform(0.5, 2, 4).astype(np.float32), "beta": RNG.normal(size=4).astype(np.float32),
                          "m": RNG.normal(size=4).astype(np.float32), "v": RNG.uniform(0.5, 2, 4).astype(np.float32)},
                         "MUL", 13),
    "maxpool_ceil": ([helper.make_node("MaxPool", ["c"], ["y"], name="op", kernel_shape=[3, 3], strides=[2, 2],
                                       ceil_mode=1)], {}, "MAX_POOL_2D", 13),
}


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_exports_fully_int8_within_one_step(case: str) -> None:
    nodes, constants, code, opset = OP_CASES[case]
    check_int8(conv_then(nodes, opset, **constants), XC, (code,))


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_exports_in_float(case: str) -> None:
    nodes, constants, code, opset = OP_CASES[case]
    model = conv_then(nodes, opset, **constants)
    data = export_tflite(Artifact.from_model(model))
    assert code in tflite_ops(data)
    session = LiteRTSession(data, kernels="reference")
    got = np.concatenate([session.run({"x": t[None]})[0] for t in XC])  # TRANSPOSE_CONV fixes the batch at 1
    want = run_onnx(model, XC)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("node, reason", [
    (helper.make_node("Resize", ["c", "", "scales"], ["y"], name="op", mode="cubic"), "mode 'cubic'"),
    (helper.make_node("Resize", ["c", "", "scales"], ["y"], name="op", mode="nearest",
                      coordinate_transformation_mode="align_corners"), "nearest resizing with"),
    (helper.make_node("Squeeze", ["c"], ["y"], name="op"), "without axes"),
])
def test_inexpressible_attributes_are_refused_in_one_sentence(node: onnx.NodeProto, reason: str) -> None:
    model = conv_then([node], 11 if node.op_type == "Squeeze" else 13, scales=np.array([1, 1, 2, 2], np.float32))
    with pytest.raises(PassError, match=rf"{node.op_type} node 'op' cannot be lowered to TFLite: {reason}"):
        export_tflite(Artifact.from_model(model))


def test_tf2onnx_style_nhwc_input_with_transpose() -> None:
    """Keras through tf2onnx: an NHWC input transposed to NCHW before the first Conv, Squeeze before the head."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="to_nchw", perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Squeeze", ["g", "axes"], ["s"], name="squeeze"),
             helper.make_node("MatMul", ["s", "fc"], ["m"], name="dense"),
             helper.make_node("Add", ["m", "fcb"], ["y"], name="dense_bias")]
    model = graph_model(nodes, ["unk__1", 5, 5, 3], None, 13, w=RNG.normal(size=(6, 3, 3, 3)).astype(np.float32),
                        b=RNG.normal(size=6).astype(np.float32), axes=np.array([2, 3], np.int64),
                        fc=RNG.normal(size=(6, 4)).astype(np.float32), fcb=RNG.normal(size=4).astype(np.float32))
    ops = check_int8(model, RNG.normal(size=(32, 5, 5, 3)).astype(np.float32), ("CONV_2D", "FULLY_CONNECTED"))
    assert "TRANSPOSE" not in ops  # the input is NHWC already; the (N, C, 1, 1) mean is reshaped, not transposed


def test_mlp_with_an_onnx_ml_head_is_refused_naming_the_op() -> None:
    """skl2onnx-style: MatMul/Add/Relu layers and a ZipMap from the ai.onnx.ml domain, which TFLite lacks."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="layer1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
             helper.make_node("Relu", ["hb"], ["y"], name="relu1"),
             helper.make_node("Normalizer", ["y"], ["z"], name="normalizer", domain="ai.onnx.ml", norm="L1")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 8])],
                              [numpy_helper.from_array(RNG.normal(size=(4, 8)).astype(np.float32), "w1"),
                               numpy_helper.from_array(RNG.normal(size=8).astype(np.float32), "b1")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9), helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 7
    with pytest.raises(PassError, match=r"Normalizer \(domain 'ai.onnx.ml'\) node 'normalizer' cannot be lowered"):
        export_tflite(Artifact.from_model(model))


def test_integer_or_multiple_inputs_are_refused_by_the_quantizer() -> None:
    ids = graph_model([helper.make_node("Cast", ["x"], ["y"], name="cast", to=TensorProto.FLOAT)], ["N", 4],
                      ["N", 4], 13)
    ids.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(PassError, match=r"float input; the input 'x' is int64"):
        QuantizeInt8()(Artifact.from_model(ids), np.zeros((4, 4), np.int64))
    passthrough = graph_model([helper.make_node("Identity", ["x"], ["y"], name="same")], ["N", 4], ["N", 4], 13)
    for spec in (passthrough.graph.input[0], passthrough.graph.output[0]):
        spec.type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(PassError, match=r"the model input 'x' is int64; the TFLite exporter takes float32"):
        export_tflite(Artifact.from_model(passthrough))
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("x", "x2")]
    two = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "x2"], ["y"], name="add")], "two", inputs,
                                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])]),
                            opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(PassError, match=r"calibrates models with one input; this one has 2 \(x, x2\)"):
        QuantizeInt8()(Artifact.from_model(two), np.zeros((4, 4), np.float32))


def test_fixed_batch_of_four_calibrates_four_trials_at_a_time() -> None:
    model = graph_model([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], [4, 6], [4, 3], 13,
                        w=RNG.normal(size=(6, 3)).astype(np.float32))
    int8 = QuantizeInt8()(Artifact.from_model(model), RNG.normal(size=(32, 6)).astype(np.float32))
    assert "QuantizeLinear" in [n.op_type for n in int8.model.graph.node]
    with pytest.raises(PassError, match=r"batches of exactly 4 trials; the calibration data has 2"):
        QuantizeInt8()(Artifact.from_model(model), RNG.normal(size=(2, 6)).astype(np.float32))
    with pytest.raises(PassError, match=r"trials have shape \(5,\) each; the model input 'x' takes \(4, 6\)"):
        QuantizeInt8()(Artifact.from_model(model), RNG.normal(size=(8, 5)).astype(np.float32))


def opset7_cnn() -> onnx.ModelProto:
    """CNTK-era graph: BatchNormalization with 'spatial', Upsample, Dropout, Flatten -> MatMul, Softmax, opset 7."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["n"], name="bn", spatial=1),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("Upsample", ["r"], ["u"], name="up", scales=[1.0, 1.0, 2.0, 2.0], mode="nearest"),
             helper.make_node("Dropout", ["u"], ["d"], name="drop"),
             helper.make_node("Flatten", ["d"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "fc"], ["logits"], name="fc"),
             helper.make_node("Softmax", ["logits"], ["y"], name="softmax")]
    return graph_model(nodes, [1, 2, 4, 6], [1, 5], 7, inputs_too=True,
                       w=RNG.normal(size=(4, 2, 3, 3)).astype(np.float32), g=RNG.uniform(0.5, 2, 4).astype(np.float32),
                       beta=RNG.normal(size=4).astype(np.float32), m=RNG.normal(size=4).astype(np.float32),
                       v=RNG.uniform(0.5, 2, 4).astype(np.float32),
                       fc=(0.1 * RNG.normal(size=(4 * 8 * 12, 5))).astype(np.float32))


def test_opset7_cnn_with_upsample_and_batch_norm() -> None:
    model = opset7_cnn()
    normalized, notes = normalize_graph(model)
    assert [n.op_type for n in normalized.graph.node] == ["Conv", "Relu", "Resize", "Flatten", "MatMul", "Softmax"]
    np.testing.assert_allclose(run_onnx(normalized, XC[:8]), run_onnx(model, XC[:8]), rtol=1e-5, atol=1e-6)
    ops = check_int8(model, XC, ("CONV_2D", "RESIZE_NEAREST_NEIGHBOR", "FULLY_CONNECTED", "SOFTMAX"))
    assert "TRANSPOSE" not in ops[3:]  # the flattened NHWC tensor feeds the fully connected layer as it is


def test_opset21_graph() -> None:
    nodes = [helper.make_node("LeakyRelu", ["c"], ["h"], name="act", alpha=0.2),
             helper.make_node("Resize", ["h", "", "scales"], ["y"], name="up", mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
    check_int8(conv_then(nodes, 21, scales=np.array([1, 1, 2, 2], np.float32)), XC,
               ("LEAKY_RELU", "RESIZE_NEAREST_NEIGHBOR"))


def test_transpose_conv_declares_a_fixed_batch_of_one() -> None:
    nodes, constants, _, opset = OP_CASES["conv_transpose"]
    data = export_tflite(QuantizeInt8()(Artifact.from_model(conv_then(nodes, opset, **constants)), XC))
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    graph = model.subgraphs[0]
    assert [list(graph.tensors[i].shapeSignature)[0] for i in (*graph.inputs, *graph.outputs)] == [1, 1]
    nodes, constants, _, opset = OP_CASES["leaky_relu"]
    data = export_tflite(Artifact.from_model(conv_then(nodes, opset, **constants)))
    graph = schema.ModelT.InitFromPackedBuf(bytearray(data), 0).subgraphs[0]
    assert list(graph.tensors[graph.inputs[0]].shapeSignature)[0] == -1  # other files keep the batch free


def test_dynamic_quantization_of_an_old_graph() -> None:
    from converters.quantize import QuantizeDynamicInt8

    model = opset8_cnn()
    child = QuantizeDynamicInt8()(Artifact.from_model(model), None)
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger") for n in child.model.graph.node)
    want = run_onnx(model, X8)
    np.testing.assert_allclose(run_onnx(child.model, X8), want, atol=0.05 * np.abs(want).max())


@pytest.mark.parametrize("node", [helper.make_node("GlobalAveragePool", ["c"], ["y"], name="gap"),
                                  helper.make_node("ReduceMean", ["c"], ["y"], name="gap", axes=[2, 3], keepdims=1)])
def test_rescaling_spatial_mean_is_one_rounding_and_exact(node: onnx.NodeProto) -> None:
    """TFLite's int8 MEAN rounds twice (28 % of outputs one step off onnxruntime, measured); as a depthwise
    convolution with weights 1/(H*W) it rounds once and matches onnxruntime exactly."""
    x = 2 * RNG.normal(size=(64, 2, 4, 6)).astype(np.float32)
    int8 = QuantizeInt8()(Artifact.from_model(conv_then([node], 13)), x)
    data = export_tflite(int8)
    assert "DEPTHWISE_CONV_2D" in tflite_ops(data) and "MEAN" not in tflite_ops(data)
    want = run_onnx(int8.model, x)
    session = LiteRTSession(data, kernels="reference")
    litert = np.concatenate([session.run({"x": t[None]})[0] for t in x])
    np.testing.assert_array_equal(litert, want)
    np.testing.assert_array_equal(TFLMSession(data).run({"x": x})[0], want)


def test_a_recurrent_cell_is_named_before_other_unsupported_ops() -> None:
    hidden = 2
    nodes = [helper.make_node("Einsum", ["x"], ["t"], name="to_time_major", equation="btf->tbf"),
             helper.make_node("GRU", ["t", "w", "r"], ["", "y"], name="gru", hidden_size=hidden)]
    model = graph_model(nodes, ["N", "T", 3], None, 13, w=RNG.normal(size=(1, 3 * hidden, 3)).astype(np.float32),
                        r=RNG.normal(size=(1, 3 * hidden, hidden)).astype(np.float32))
    with pytest.raises(PassError, match=r"^GRU node 'gru' cannot be lowered to TFLite yet; recurrent cells"):
        export_tflite(Artifact.from_model(model))


def test_every_listed_op_has_a_lowering_and_every_lowering_is_listed() -> None:
    from converters.tflite import SUPPORTED_OPS, _Exporter

    lowered = {name[len("_lower_"):] for name in dir(_Exporter) if name.startswith("_lower_")}
    assert lowered == set(SUPPORTED_OPS)


def test_keras_through_tf2onnx_flattens_in_nhwc_order_without_transposes() -> None:
    """Keras Conv2D -> Flatten -> Dense -> softmax as tf2onnx writes it: NCHW only around the Conv."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="to_nchw", perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w", "b"], ["c"], name="conv2d", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Transpose", ["r"], ["h"], name="to_nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["h", "shape"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "fc"], ["m"], name="dense"),
             helper.make_node("Add", ["m", "fcb"], ["logits"], name="dense_bias"),
             helper.make_node("Softmax", ["logits"], ["y"], name="softmax")]
    model = graph_model(nodes, ["unk__1", 4, 6, 2], None, 13, w=RNG.normal(size=(3, 2, 3, 3)).astype(np.float32),
                        b=RNG.normal(size=3).astype(np.float32), shape=np.array([-1, 72], np.int64),
                        fc=(0.3 * RNG.normal(size=(72, 5))).astype(np.float32),
                        fcb=RNG.normal(size=5).astype(np.float32))
    ops = check_int8(model, RNG.normal(size=(32, 4, 6, 2)).astype(np.float32), ("CONV_2D", "FULLY_CONNECTED"))
    assert "TRANSPOSE" not in ops, ops

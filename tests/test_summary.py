"""Tests of edge.summary: op histogram, parameter counts and MACs, with numbers worked out by hand."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.summary import ModelSummary, format_summary, summarize

F = TensorProto.FLOAT


def _init(name: str, shape: tuple[int, ...], dtype: type = np.float32, seed: int = 0) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(dtype), name)


def _model(nodes, inputs, outputs, initializers=(), value_info=(), opset=17, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers), value_info=list(value_info))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return model


def _vi(name: str, shape, elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def test_conv_macs_and_parameters_exact():
    # X 1x3x32x32, 16 filters 3x3, stride 2, pad 1 -> Y 1x16x16x16 = 4096 outputs, each 3*3*3 = 27 MACs.
    model = _model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
            helper.make_node("Relu", ["y"], ["z"], name="relu"),
        ],
        [_vi("x", [1, 3, 32, 32])],
        [_vi("z", None)],
        [_init("w", (16, 3, 3, 3)), _init("b", (16,))],
    )
    s = summarize(model, file_bytes=3 * 2**19)
    assert s.macs == 110_592
    assert s.macs_by_op == {"conv": 110_592}
    assert s.parameters == 16 * 27 + 16 == 448
    assert s.parameter_bytes == 448 * 4
    assert s.op_histogram == {"Conv": 1, "Relu": 1}
    assert s.file_bytes == 1_572_864
    assert format_summary(s).splitlines() == [
        "parameters  448 (1.8 KiB)",
        "MACs        110.59 k",
        "file size   1.5 MiB",
        "ops",
        "  Conv  1",
        "  Relu  1",
    ]
    assert json.loads(json.dumps(s.to_dict())) == {
        "op_histogram": {"Conv": 1, "Relu": 1},
        "parameters": 448,
        "parameter_bytes": 1792,
        "macs": 110_592,
        "macs_by_op": {"conv": 110_592},
        "file_bytes": 1_572_864,
    }
    assert isinstance(s, ModelSummary)


@pytest.mark.parametrize(
    ("w_shape", "group", "macs", "params"),
    [
        # depthwise: 8 channels, one 3x3 filter each; Y 1x8x8x8 = 512 outputs x 9 MACs
        ((8, 1, 3, 3), 8, 512 * 9, 72),
        # 2 groups of 4 input channels, 4 filters: Y 1x4x8x8 = 256 outputs x 4*9 MACs
        ((4, 4, 3, 3), 2, 256 * 36, 144),
    ],
)
def test_grouped_and_depthwise_conv(w_shape, group, macs, params):
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=group)],
        [_vi("x", [1, 8, 10, 10])],
        [_vi("y", None)],
        [_init("w", w_shape)],
    )
    s = summarize(model)
    assert s.macs == macs
    assert s.parameters == params
    assert s.parameter_bytes == params * 4


def test_gemm():
    # A 1x64, B 32x64 transposed, C 32: 1*32 outputs x 64 MACs.
    model = _model(
        [helper.make_node("Gemm", ["a", "w", "c"], ["y"], name="fc", transB=1)],
        [_vi("a", [1, 64])],
        [_vi("y", None)],
        [_init("w", (32, 64)), _init("c", (32,))],
    )
    s = summarize(model)
    assert s.macs == 2048
    assert s.macs_by_op == {"fc": 2048}
    assert s.parameters == 32 * 64 + 32 == 2080
    assert s.parameter_bytes == 8320


def test_matmul_with_batch_dims_and_bias_add():
    # x 2x3x4x5 @ w 5x6 -> 2x3x4x6 = 144 outputs x 5 = 720; + bias 6 (the Add after a MatMul).
    # then (2x3x4x6) @ y 3x6x7 -> 2x3x4x7 = 168 outputs x 6 = 1008; y is an activation, not a parameter.
    model = _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"),
            helper.make_node("Add", ["h", "b"], ["h2"], name="bias"),
            helper.make_node("MatMul", ["h2", "y"], ["z"], name="mm2"),
        ],
        [_vi("x", [2, 3, 4, 5]), _vi("y", [3, 6, 7])],
        [_vi("z", None)],
        [_init("w", (5, 6)), _init("b", (6,))],
    )
    s = summarize(model)
    assert s.macs_by_op == {"mm1": 720, "mm2": 1008}
    assert s.macs == 1728
    assert s.parameters == 36
    assert s.parameter_bytes == 144


@pytest.mark.parametrize("batch", ["N", None])
def test_dynamic_batch_counts_at_batch_one(batch):
    # Conv 1x1 3->4 on 8x8: 256 outputs x 3 = 768; Flatten 1x256, Gemm to 10: 10 x 256 = 2560.
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
            helper.make_node("Flatten", ["y"], ["f"], name="flat"),
            helper.make_node("Gemm", ["f", "fw"], ["z"], name="fc", transB=1),
        ],
        [_vi("x", [batch, 3, 8, 8])],
        [_vi("z", [batch, 10])],
        [_init("w", (4, 3, 1, 1)), _init("fw", (10, 256))],
    )
    s = summarize(model)
    assert s.macs_by_op == {"conv": 768, "fc": 2560}
    assert s.macs == 3328
    assert s.parameters == 12 + 2560
    # the caller's model is left as it was
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 0


def test_conv_transpose_and_conv_integer():
    # ConvTranspose: 1x4x5x5 = 100 inputs, each scattered onto 2 outputs x 3x3 kernel = 1800.
    # ConvInteger: uint8 1x3x8x8, 4 filters 3x3 -> 1x4x6x6 = 144 outputs x 27 = 3888.
    model = _model(
        [
            helper.make_node("ConvTranspose", ["x", "wt"], ["y"], name="up"),
            helper.make_node("ConvInteger", ["q", "wq"], ["r"], name="qconv"),
        ],
        [_vi("x", [1, 4, 5, 5]), _vi("q", [1, 3, 8, 8], TensorProto.UINT8)],
        [_vi("y", None), _vi("r", None, TensorProto.INT32)],
        [_init("wt", (4, 2, 3, 3)), numpy_helper.from_array(np.ones((4, 3, 3, 3), np.uint8), "wq")],
    )
    s = summarize(model)
    assert s.macs_by_op == {"up": 1800, "qconv": 3888}
    assert s.parameters == 72 + 108
    assert s.parameter_bytes == 72 * 4 + 108


def test_matmul_nbits():
    # 4-bit weight N=8 x K=64 in blocks of 32: B uint8 8x2x16 = 256 bytes; A 1x4x64 -> 4*8 outputs x 64.
    model = _model(
        [
            helper.make_node(
                "MatMulNBits", ["a", "b", "s"], ["y"], name="q4", domain="com.microsoft",
                K=64, N=8, bits=4, block_size=32,
            )
        ],
        [_vi("a", [1, 4, 64])],
        [_vi("y", None)],
        [numpy_helper.from_array(np.zeros((8, 2, 16), np.uint8), "b"), _init("s", (16,))],
        domains=["com.microsoft"],
    )
    s = summarize(model)
    assert s.macs == 2048
    assert s.parameters == 512
    assert s.parameter_bytes == 256
    assert s.op_histogram == {"com.microsoft.MatMulNBits": 1}


class _RandomReader:
    """Calibration data: a few seeded random batches."""

    def __init__(self, name: str, shape: tuple[int, ...], n: int = 4) -> None:
        rng = np.random.default_rng(0)
        self._batches = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self) -> None:
        pass


def test_qdq_int8_has_same_parameters_as_float(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    # conv1 16->16 3x3 pad 1 on 8x8: 64*16 outputs x 144 = 147456; conv2 16->8 1x1: 64*8 x 16 = 8192.
    model = _model(
        [
            helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["y1"], ["r1"], name="relu"),
            helper.make_node("Conv", ["r1", "w2", "b2"], ["y2"], name="conv2"),
        ],
        [_vi("x", [1, 16, 8, 8])],
        [_vi("y2", [1, 8, 8, 8])],
        [_init("w1", (16, 16, 3, 3), seed=1), _init("b1", (16,), seed=2),
         _init("w2", (8, 16, 1, 1), seed=3), _init("b2", (8,), seed=4)],
    )
    onnx.checker.check_model(model)
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(model, src)

    class Reader(_RandomReader, CalibrationDataReader):
        pass

    quantize_static(
        str(src), str(dst), Reader("x", (1, 16, 8, 8)),
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )
    qmodel = onnx.load(dst)
    f, q = summarize(model), summarize(qmodel, file_bytes=dst.stat().st_size)

    assert "DequantizeLinear" in q.op_histogram and "QuantizeLinear" in q.op_histogram
    int8_weights = [t for t in qmodel.graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) == 4]
    assert sorted(tuple(t.dims) for t in int8_weights) == [(8, 16, 1, 1), (16, 16, 3, 3)]

    assert f.parameters == q.parameters == 2304 + 16 + 128 + 8 == 2456
    assert f.parameter_bytes == 2456 * 4
    assert q.parameter_bytes == 2304 + 128 + (16 + 8) * 4  # int8 weights, int32 biases
    assert abs(q.parameter_bytes / f.parameter_bytes - 0.25) < 0.01
    assert f.macs == q.macs == 147_456 + 8_192
    assert f.macs_by_op == q.macs_by_op == {"conv1": 147_456, "conv2": 8_192}


def test_op_histogram_sorted_by_count_then_name():
    model = _model(
        [
            helper.make_node("Sigmoid", ["x"], ["a"]),
            helper.make_node("Relu", ["a"], ["b"]),
            helper.make_node("Add", ["b", "x"], ["c"]),
            helper.make_node("Relu", ["c"], ["d"]),
            helper.make_node("Sigmoid", ["d"], ["e"]),
            helper.make_node("Relu", ["e"], ["f"]),
            helper.make_node("Abs", ["f"], ["g"]),
            helper.make_node("QLinearConv", ["g"], ["h"], domain="com.microsoft"),
            helper.make_node("Add", ["h", "x"], ["i"]),
        ],
        [_vi("x", [1, 4])],
        [_vi("i", None)],
        domains=["com.microsoft"],
    )
    hist = summarize(model).op_histogram
    assert list(hist.items()) == [
        ("Relu", 3), ("Add", 2), ("Sigmoid", 2), ("Abs", 1), ("com.microsoft.QLinearConv", 1),
    ]


def test_unknown_custom_op_counts_what_it_can():
    # conv1 3->4 3x3 pad 1 on 8x8: 256 outputs x 27 = 6912; after the custom op shapes are unknown.
    model = _model(
        [
            helper.make_node("Conv", ["x", "w1"], ["y"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Mystery", ["y"], ["m"], name="mystery", domain="my.ops"),
            helper.make_node("Conv", ["m", "w2"], ["z"], name="conv2"),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("z", None)],
        [_init("w1", (4, 3, 3, 3)), _init("w2", (2, 4, 1, 1))],
        domains=["my.ops"],
    )
    s = summarize(model)
    assert s.macs_by_op == {"conv1": 6912}
    assert s.parameters == 108 + 8
    assert s.op_histogram == {"Conv": 2, "my.ops.Mystery": 1}


def test_failed_shape_inference_falls_back_to_attributes():
    # Without an opset import onnx's inference raises; Conv's output is then worked out from its
    # attributes: 5x5, kernel 3, stride 2, pad 1 -> 3x3, so 1x3x3x3 = 27 outputs x 2*3*3 = 486.
    # The MatMul after the Flatten has no known input shape and is skipped.
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], name="conv", strides=[2, 2], pads=[1, 1, 1, 1]),
            helper.make_node("Flatten", ["y"], ["f"], name="flat"),
            helper.make_node("MatMul", ["f", "m"], ["z"], name="mm"),
        ],
        [_vi("x", [1, 2, 5, 5])],
        [_vi("z", None)],
        [_init("w", (3, 2, 3, 3)), _init("m", (27, 4))],
    )
    del model.opset_import[:]
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    s = summarize(model)
    assert s.macs_by_op == {"conv": 486}
    assert s.parameters == 54 + 108


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_torch_conv2d_same_padding_is_7_2_mega_macs():
    import torch

    conv = torch.nn.Conv2d(120, 120, (1, 10), padding="same")
    buffer = io.BytesIO()
    torch.onnx.export(conv, (torch.zeros(1, 120, 1, 50),), buffer, dynamo=False, opset_version=17)
    s = summarize(onnx.load_from_string(buffer.getvalue()))
    assert s.macs == 120 * 120 * 10 * 50 == 7_200_000
    assert s.parameters == 120 * 120 * 10 + 120
    assert "MACs        7.20 M" in format_summary(s)

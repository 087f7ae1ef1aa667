"""Static summary of an ONNX model: op histogram, parameter count and size, multiply-accumulates.

Parameters are the weight and bias tensors of compute ops (convolutions, matrix products, their
quantized forms, normalisations and recurrent cells), found by walking back from the op's input
through ``DequantizeLinear``, ``QuantizeLinear``, ``Cast``, ``Transpose``, ``Reshape`` and the like to an
initializer or a ``Constant`` node. A QDQ-quantized model therefore reports the same ``parameters``
as its float parent (the int8 weight and int32 bias are counted once, their scales and zero points
never) while ``parameter_bytes`` shrinks with the element size.

MACs are counted at batch 1 (a symbolic or unknown leading dimension of each graph input is set to
1 before shape inference). Ops whose shapes cannot be found are skipped, never raised on. Only the
main graph is summarised, not the bodies of ``If``/``Loop``/``Scan`` nor model-local functions.

>>> import onnx
>>> from edge.summary import summarize, format_summary
>>> s = summarize(onnx.load("model.onnx"))  # doctest: +SKIP
>>> print(format_summary(s))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

__all__ = ["ModelSummary", "format_summary", "summarize"]

logger = logging.getLogger("edge.summary")

_Shape = tuple[int | None, ...]

# (domain, op_type) -> input slots that hold weights or biases.
_PARAM_SLOTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("", "Conv"): (1, 2),
    ("", "ConvTranspose"): (1, 2),
    ("", "Gemm"): (0, 1, 2),
    ("", "MatMul"): (0, 1),
    ("", "QLinearConv"): (3, 8),
    ("", "ConvInteger"): (1,),
    ("", "QLinearMatMul"): (0, 3),
    ("", "MatMulInteger"): (0, 1),
    ("", "BatchNormalization"): (1, 2),
    ("", "InstanceNormalization"): (1, 2),
    ("", "LayerNormalization"): (1, 2),
    ("", "GroupNormalization"): (1, 2),
    ("", "RNN"): (1, 2, 3),
    ("", "GRU"): (1, 2, 3),
    ("", "LSTM"): (1, 2, 3),
    ("com.microsoft", "QLinearConv"): (3, 8),
    ("com.microsoft", "FusedConv"): (1, 2),
    ("com.microsoft", "MatMulNBits"): (1, 5),
}

# Ops whose output is a plain product that a following Add may give a bias to (MatMul + Add).
_BIASABLE = {
    ("", "MatMul"),
    ("", "MatMulInteger"),
    ("", "QLinearMatMul"),
    ("", "Gemm"),
    ("", "Conv"),
    ("", "ConvTranspose"),
    ("com.microsoft", "MatMulNBits"),
}

# Ops that carry a constant through unchanged in value count (walked back from a weight slot).
_PASS_THROUGH = {
    ("", "DequantizeLinear"),
    ("", "QuantizeLinear"),
    ("com.microsoft", "DequantizeLinear"),
    ("com.microsoft", "QuantizeLinear"),
    ("", "Identity"),
    ("", "Cast"),
    ("", "Transpose"),
    ("", "Reshape"),
    ("", "Squeeze"),
    ("", "Unsqueeze"),
    ("", "Flatten"),
}

_QDQ = {
    ("", "DequantizeLinear"),
    ("", "QuantizeLinear"),
    ("com.microsoft", "DequantizeLinear"),
    ("com.microsoft", "QuantizeLinear"),
    ("", "Identity"),
}

# Element types narrower than a byte, packed in the file.
_SUB_BYTE_BITS = {
    getattr(TensorProto, name): bits
    for name, bits in [
        ("INT4", 4),
        ("UINT4", 4),
        ("FLOAT4E2M1", 4),
        ("INT2", 2),
        ("UINT2", 2),
        ("FLOAT6E2M3", 6),
        ("FLOAT6E3M2", 6),
    ]
    if hasattr(TensorProto, name)
}


@dataclass(frozen=True)
class ModelSummary:
    """What a model holds and costs: ops, parameters, their bytes, MACs per inference at batch 1."""

    op_histogram: dict[str, int]
    parameters: int
    parameter_bytes: int
    macs: int
    macs_by_op: dict[str, int] = field(default_factory=dict)
    file_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as a JSON-ready dict."""
        return {
            "op_histogram": dict(self.op_histogram),
            "parameters": self.parameters,
            "parameter_bytes": self.parameter_bytes,
            "macs": self.macs,
            "macs_by_op": dict(self.macs_by_op),
            "file_bytes": self.file_bytes,
        }


def summarize(model: onnx.ModelProto, file_bytes: int | None = None) -> ModelSummary:
    """Summarise an ONNX model's ops, parameters and multiply-accumulates at batch 1."""
    parameters, parameter_bytes = _parameters(model.graph)
    macs_by_op = _macs_by_node(model)
    return ModelSummary(
        op_histogram=_op_histogram(model.graph),
        parameters=parameters,
        parameter_bytes=parameter_bytes,
        macs=sum(macs_by_op.values()),
        macs_by_op=macs_by_op,
        file_bytes=file_bytes,
    )


def format_summary(summary: ModelSummary) -> str:
    """Render a summary as a short human-readable text, one fact per line."""
    lines = [
        f"parameters  {summary.parameters:,} ({_human_bytes(summary.parameter_bytes)})",
        f"MACs        {_human_count(summary.macs)}",
    ]
    if summary.file_bytes is not None:
        lines.append(f"file size   {_human_bytes(summary.file_bytes)}")
    lines.append("ops")
    width = max((len(name) for name in summary.op_histogram), default=0)
    lines += [f"  {name:<{width}}  {count}" for name, count in summary.op_histogram.items()]
    return "\n".join(lines)


# --- op histogram -------------------------------------------------------------------------------


def _domain(node: onnx.NodeProto) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def _key(node: onnx.NodeProto) -> tuple[str, str]:
    return _domain(node), node.op_type


def _op_histogram(graph: onnx.GraphProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph.node:
        name = f"{_domain(node)}.{node.op_type}" if _domain(node) else node.op_type
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# --- parameters ---------------------------------------------------------------------------------


def _tensor_bytes(dims: list[int] | tuple[int, ...], data_type: int) -> int:
    n = math.prod(dims)
    if data_type in _SUB_BYTE_BITS:
        return (n * _SUB_BYTE_BITS[data_type] + 7) // 8
    if data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return 0
    return n * np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize


def _constant_tensor(node: onnx.NodeProto) -> tuple[tuple[int, ...], int] | None:
    """Return (dims, data_type) of a Constant node's value, or None when it has none we count."""
    for attr in node.attribute:
        if attr.name == "value":
            return tuple(attr.t.dims), attr.t.data_type
        if attr.name == "value_float":
            return (), TensorProto.FLOAT
        if attr.name == "value_floats":
            return (len(attr.floats),), TensorProto.FLOAT
        if attr.name == "value_int":
            return (), TensorProto.INT64
        if attr.name == "value_ints":
            return (len(attr.ints),), TensorProto.INT64
    return None


class _Graph:
    """Lookup tables over one graph: producers and constant tensors."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.constants: dict[str, tuple[tuple[int, ...], int]] = {
            init.name: (tuple(init.dims), init.data_type) for init in graph.initializer
        }
        for node in graph.node:
            if _key(node) == ("", "Constant") and node.output:
                value = _constant_tensor(node)
                if value is not None:
                    self.constants.setdefault(node.output[0], value)

    def source(self, name: str, through: set[tuple[str, str]]) -> str | None:
        """Walk back from a tensor through ``through`` ops to a constant's name, or None."""
        seen: set[str] = set()
        while name and name not in seen:
            seen.add(name)
            if name in self.constants:
                return name
            node = self.producer.get(name)
            if node is None or _key(node) not in through or not node.input:
                return None
            name = node.input[0]
        return None

    def producer_of(self, name: str) -> onnx.NodeProto | None:
        """Return the node behind a tensor, looking through Q/DQ pairs and Identity."""
        seen: set[str] = set()
        node = self.producer.get(name)
        while node is not None and _key(node) in _QDQ and node.input and node.input[0] not in seen:
            seen.add(node.input[0])
            node = self.producer.get(node.input[0])
        return node


def _parameters(graph: onnx.GraphProto) -> tuple[int, int]:
    g = _Graph(graph)
    counted: dict[str, tuple[int, int]] = {}

    def count(name: str, node: onnx.NodeProto, slot: int) -> None:
        source = g.source(name, _PASS_THROUGH)
        if source is None or source in counted:
            return
        dims, data_type = g.constants[source]
        elements = math.prod(dims)
        if _key(node) == ("com.microsoft", "MatMulNBits") and slot == 1:
            # B is packed into uint8 blocks; the logical weight is N x K.
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            elements = int(attrs.get("N", 0)) * int(attrs.get("K", 0)) or elements
        counted[source] = (elements, _tensor_bytes(dims, data_type))

    for node in graph.node:
        for slot in _PARAM_SLOTS.get(_key(node), ()):
            if slot < len(node.input) and node.input[slot]:
                count(node.input[slot], node, slot)
        if _key(node) == ("", "Add") and len(node.input) == 2:
            # A bias added after a matrix product (how torch exports Linear on 3-D inputs).
            for this, other in (node.input, node.input[::-1]):
                producer = g.producer_of(other)
                if producer is not None and _key(producer) in _BIASABLE:
                    count(this, node, -1)
    return sum(e for e, _ in counted.values()), sum(b for _, b in counted.values())


# --- shapes -------------------------------------------------------------------------------------


def _batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy whose graph inputs have a leading dimension of 1 where it was symbolic or unknown."""
    model = copy.deepcopy(model)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    batch_names: set[str] = set()
    for vi in graph.input:
        if vi.name in initializers or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            if dims[0].HasField("dim_param"):
                batch_names.add(dims[0].dim_param)
            dims[0].dim_value = 1
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.tensor_type.HasField("shape"):
            for dim in vi.type.tensor_type.shape.dim:
                if dim.HasField("dim_param") and dim.dim_param in batch_names:
                    dim.dim_value = 1
    return model


def _shape_table(graph: onnx.GraphProto) -> dict[str, _Shape]:
    shapes: dict[str, _Shape] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor_type = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tensor_type.HasField("shape"):
            shapes[vi.name] = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
                for d in tensor_type.shape.dim
            )
    for name, (dims, _) in _Graph(graph).constants.items():
        shapes[name] = tuple(dims)
    return shapes


def _known(shape: _Shape | None) -> bool:
    return shape is not None and all(d is not None for d in shape)


def _prod(shape: _Shape | None) -> int | None:
    return math.prod(shape) if _known(shape) else None  # type: ignore[arg-type]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _auto_pad(attrs: dict[str, Any]) -> str:
    value = attrs.get("auto_pad", b"NOTSET")
    return value.decode() if isinstance(value, bytes) else str(value)


# --- MACs ---------------------------------------------------------------------------------------


def _conv_out_elems(node: onnx.NodeProto, x: _Shape | None, w: _Shape) -> int | None:
    """Output elements of a convolution from its input shape and attributes."""
    if not _known(x) or not _known(w):
        return None
    attrs = _attrs(node)
    channels_last = bool(attrs.get("channels_last", 0))
    spatial = x[1:-1] if channels_last else x[2:]  # type: ignore[index]
    nsp = len(spatial)
    kernel = list(attrs.get("kernel_shape", w[2:]))
    strides = list(attrs.get("strides", [1] * nsp))
    dilations = list(attrs.get("dilations", [1] * nsp))
    pads = list(attrs.get("pads", [0] * 2 * nsp))
    auto_pad = _auto_pad(attrs)
    if len(kernel) != nsp or len(strides) != nsp or len(dilations) != nsp or len(pads) != 2 * nsp:
        return None
    out = []
    for i, size in enumerate(spatial):
        span = dilations[i] * (kernel[i] - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-size // strides[i]))
        elif auto_pad == "VALID":
            out.append((size - span) // strides[i] + 1)
        else:
            out.append((size + pads[i] + pads[i + nsp] - span) // strides[i] + 1)
    return x[0] * w[0] * math.prod(out)  # type: ignore[operator]


def _conv_macs(node: onnx.NodeProto, shapes: dict[str, _Shape], x_slot: int, w_slot: int) -> int | None:
    w = shapes.get(node.input[w_slot]) if w_slot < len(node.input) else None
    if not _known(w) or len(w) < 3:  # type: ignore[arg-type]
        return None
    out = _prod(shapes.get(node.output[0]))
    if out is None:
        out = _conv_out_elems(node, shapes.get(node.input[x_slot]), w)  # type: ignore[arg-type]
    return None if out is None else out * math.prod(w[1:])  # type: ignore[index]


def _conv_transpose_macs(node: onnx.NodeProto, shapes: dict[str, _Shape]) -> int | None:
    # Each input element is scattered onto (M / group) * prod(kernel) outputs.
    x = _prod(shapes.get(node.input[0]))
    w = shapes.get(node.input[1])
    if x is None or not _known(w) or len(w) < 3:  # type: ignore[arg-type]
        return None
    return x * math.prod(w[1:])  # type: ignore[index]


def _matmul_macs(node: onnx.NodeProto, shapes: dict[str, _Shape], a_slot: int, b_slot: int) -> int | None:
    a = shapes.get(node.input[a_slot])
    b = shapes.get(node.input[b_slot])
    k = None
    if a is not None and len(a) >= 1 and a[-1] is not None:
        k = a[-1]
    elif b is not None and len(b) >= 1:
        k = b[0] if len(b) == 1 else b[-2]
    if k is None:
        return None
    out = _prod(shapes.get(node.output[0]))
    if out is None and _known(a) and _known(b) and a and b:
        a_m = a[:-1] if len(a) >= 2 else ()  # type: ignore[index]
        b_n = (b[-1],) if len(b) >= 2 else ()  # type: ignore[index]
        batch_a = a[:-2] if len(a) > 2 else ()  # type: ignore[index]
        batch_b = b[:-2] if len(b) > 2 else ()  # type: ignore[index]
        try:
            batch = np.broadcast_shapes(tuple(batch_a), tuple(batch_b))
        except ValueError:
            return None
        out = math.prod(batch) * math.prod(a_m[-1:]) * math.prod(b_n)
    return None if out is None else out * k


def _gemm_macs(node: onnx.NodeProto, shapes: dict[str, _Shape]) -> int | None:
    attrs = _attrs(node)
    a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
    m = n = k = None
    if a is not None and len(a) == 2:
        m, k = (a[1], a[0]) if attrs.get("transA", 0) else (a[0], a[1])
    if b is not None and len(b) == 2:
        k_b, n = (b[1], b[0]) if attrs.get("transB", 0) else (b[0], b[1])
        k = k if k is not None else k_b
    out = _prod(shapes.get(node.output[0]))
    if out is None and m is not None and n is not None:
        out = m * n
    return None if out is None or k is None else out * k


def _matmul_nbits_macs(node: onnx.NodeProto, shapes: dict[str, _Shape]) -> int | None:
    attrs = _attrs(node)
    n, k = attrs.get("N"), attrs.get("K")
    if not n or not k:
        return None
    a = shapes.get(node.input[0])
    rows = _prod(a[:-1]) if a else None
    if rows is None:
        out = _prod(shapes.get(node.output[0]))
        return None if out is None else out * k
    return rows * n * k


def _rnn_macs(node: onnx.NodeProto, shapes: dict[str, _Shape]) -> int | None:
    # seq * batch steps, each multiplying the input by W and the hidden state by R.
    x, w, r = (shapes.get(node.input[i]) if i < len(node.input) else None for i in range(3))
    if not _known(x) or not _known(w) or not _known(r) or len(x) != 3:  # type: ignore[arg-type]
        return None
    return x[0] * x[1] * (math.prod(w) + math.prod(r))  # type: ignore[index, arg-type, operator]


def _node_macs(node: onnx.NodeProto, shapes: dict[str, _Shape]) -> int | None:
    key = _key(node)
    if key in (("", "Conv"), ("com.microsoft", "FusedConv")):
        return _conv_macs(node, shapes, 0, 1)
    if key in (("", "QLinearConv"), ("com.microsoft", "QLinearConv")):
        return _conv_macs(node, shapes, 0, 3)
    if key == ("", "ConvInteger"):
        return _conv_macs(node, shapes, 0, 1)
    if key == ("", "ConvTranspose"):
        return _conv_transpose_macs(node, shapes)
    if key == ("", "Gemm"):
        return _gemm_macs(node, shapes)
    if key in (("", "MatMul"), ("", "MatMulInteger")):
        return _matmul_macs(node, shapes, 0, 1)
    if key == ("", "QLinearMatMul"):
        return _matmul_macs(node, shapes, 0, 3)
    if key == ("com.microsoft", "MatMulNBits"):
        return _matmul_nbits_macs(node, shapes)
    if key in (("", "RNN"), ("", "GRU"), ("", "LSTM")):
        return _rnn_macs(node, shapes)
    return None


def _inferred_graph(model: onnx.ModelProto) -> onnx.GraphProto:
    """Return the batch-1 graph with inferred shapes, or as declared when inference fails."""
    batch1 = _batch_one(model)
    try:
        return onnx.shape_inference.infer_shapes(batch1, strict_mode=False, data_prop=True).graph
    except Exception as exc:  # noqa: BLE001 - any inference failure leaves the declared shapes
        logger.debug("shape inference failed, using declared shapes: %s", exc)
        return batch1.graph


def _macs_by_node(model: onnx.ModelProto) -> dict[str, int]:
    graph = _inferred_graph(model)
    shapes = _shape_table(graph)
    result: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        if _key(node) not in _PARAM_SLOTS:
            continue
        try:
            macs = _node_macs(node, shapes)
        except (TypeError, ValueError, IndexError) as exc:
            logger.debug("MACs of %s %r skipped: %s", node.op_type, node.name, exc)
            macs = None
        if macs is None:
            logger.debug("MACs of %s %r skipped: shapes unknown", node.op_type, node.name)
            continue
        name = node.name or f"{node.op_type}_{index}"
        while name in result:
            name = f"{name}_{index}"
        result[name] = int(macs)
    return result


# --- formatting ---------------------------------------------------------------------------------


def _human_count(n: int) -> str:
    for factor, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= factor:
            return f"{n / factor:.2f} {suffix}"
    return str(n)


def _human_bytes(n: int) -> str:
    for factor, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= factor:
            return f"{n / factor:.1f} {suffix}"
    return f"{n} B"


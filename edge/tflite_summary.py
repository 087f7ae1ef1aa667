"""Static summary of a TFLite file: operators, tensors with their quantization, parameters, MACs and arena.

MACs are counted at the stored shapes (batch 1 for the files this toolkit writes; an unknown dimension
counts 1) for the operators whose cost is a product of weights and activations: CONV_2D (output elements x kernel height x width x input channels
per group), DEPTHWISE_CONV_2D (output elements x kernel height x width), FULLY_CONNECTED (output elements x
input features), BATCH_MATMUL (output elements x the contracted dimension), TRANSPOSE_CONV (input elements x
kernel height x width x output channels) and CONV_3D. Every other operator counts 0 and is listed as such.

Parameters are the weights and biases of the weight operators (the tensors weight faults hit, as in
:meth:`edge.tflite_model.TfliteModel.weight_buffers`); ``constant_bytes`` is every constant buffer.

The arena estimate lays the activation tensors out as TFLite Micro's greedy memory planner does (largest
first, each at the lowest offset free during its lifetime, 16-byte aligned) and adds an allowance for the
bookkeeping TFLite Micro keeps in the same arena (tensor and node structures, quantization arrays), sized to
stay above the measured minimum; it is labelled an estimate, and ``edge flash --device mcu:tflm`` measures the
real minimum by bisection.

>>> summary = summarize_tflite(read_tflite("model.tflite"))  # doctest: +SKIP
>>> summary["macs"]["total"], summary["arena_estimate"]["estimate_bytes"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from edge.tflite_model import TfliteModel, tensor_type_names

ALIGNMENT = 16
#: TFLite Micro's own structures in the arena, bounded from above: measured minimum arenas exceeded the greedy plan
#: by 0.8 KiB (one RELU, 2 tensors), 2.4 KiB (13 tensors, 6 operators) and 5.5 KiB (the int8 SSVEP network,
#: 22 tensors, 9 operators) on a 64-bit host with tflite-micro 0.dev20261023.
BOOKKEEPING_BASE, BOOKKEEPING_PER_TENSOR, BOOKKEEPING_PER_OPERATOR, BOOKKEEPING_PER_CHANNEL = 1024, 128, 256, 16
#: Operators whose MACs are counted; the others do no multiply-accumulates worth counting.
MAC_OPERATORS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D")
_ITEM_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "FLOAT64": 8, "INT32": 4, "UINT32": 4, "INT64": 8, "UINT64": 8,
               "INT16": 2, "UINT16": 2, "INT8": 1, "UINT8": 1, "BOOL": 1, "INT4": 0.5, "COMPLEX64": 8}


def summarize_tflite(model: TfliteModel) -> dict[str, Any]:
    """Operators, tensors, parameters, MACs per operator type and an arena estimate of the main subgraph."""
    flat = model.flatbuffer
    graph = flat.subgraphs[0]
    types = tensor_type_names()
    constant = [_is_constant(flat, t) for t in graph.tensors]
    tensors = [_tensor_row(i, t, types, constant[i]) for i, t in enumerate(graph.tensors)]
    kinds = model.operators()
    operators = []
    for index, (op, kind) in enumerate(zip(graph.operators or [], kinds, strict=True)):
        inputs = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        outputs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
        operators.append({"index": index, "op": kind,
                          "inputs": [tensors[i]["name"] if i >= 0 else None for i in inputs],
                          "outputs": [tensors[i]["name"] for i in outputs],
                          "macs": operator_macs(kind, op, graph.tensors)})
    macs_by_type: dict[str, int] = {}
    for row in operators:
        if row["op"] in MAC_OPERATORS:
            macs_by_type[row["op"]] = macs_by_type.get(row["op"], 0) + row["macs"]
    weights = model.weight_buffers()
    return {
        "subgraphs": len(flat.subgraphs),
        "operator_counts": dict(Counter(kinds)),
        "operators": operators,
        "tensors": tensors,
        "parameters": sum(w.count for w in weights),
        "parameter_bytes": sum(w.nbytes for w in weights),
        "constant_bytes": sum(t["bytes"] for t in tensors if t["constant"]),
        "macs": {"by_type": macs_by_type, "total": sum(macs_by_type.values()),
                 "counted": list(MAC_OPERATORS), "batch": "as stored (1 for batch-1 files)"},
        "file_bytes": len(model.data),
        "arena_estimate": arena_estimate(model),
    }


def operator_macs(kind: str, op: Any, tensors: list[Any]) -> int:
    """Multiply-accumulates of one operator at its stored shapes (0 for operators not in MAC_OPERATORS)."""
    if kind not in MAC_OPERATORS or op.inputs is None or op.outputs is None:
        return 0

    def shape(position: int, of: Any = None) -> list[int]:
        indices = op.inputs if of is None else of
        if position >= len(indices) or indices[position] < 0:
            return []
        dims = tensors[int(indices[position])].shape
        return [max(int(d), 1) for d in (dims if dims is not None else [])]  # unknown (-1) dims count as 1

    out = shape(0, op.outputs)
    out_elements = math.prod(out) if out else 0
    weights = shape(1)
    if kind == "CONV_2D" and len(weights) == 4:  # filter [out channels, height, width, in channels per group]
        return out_elements * weights[1] * weights[2] * weights[3]
    if kind == "DEPTHWISE_CONV_2D" and len(weights) == 4:  # filter [1, height, width, out channels]
        return out_elements * weights[1] * weights[2]
    if kind == "FULLY_CONNECTED" and len(weights) == 2:  # weights [units, input features]
        return out_elements * weights[1]
    if kind == "CONV_3D" and len(weights) == 5:  # filter [depth, height, width, in channels, out channels]
        return out_elements * weights[0] * weights[1] * weights[2] * weights[3]
    if kind == "TRANSPOSE_CONV" and len(weights) == 4:  # inputs: output shape, filter [out, h, w, in], input
        data = shape(2)
        return (math.prod(data) if data else 0) * weights[0] * weights[1] * weights[2]
    if kind == "BATCH_MATMUL":
        lhs = shape(0)
        if len(lhs) < 2:
            return 0
        adjoint = bool(getattr(op.builtinOptions, "adjX", False))
        return out_elements * (lhs[-2] if adjoint else lhs[-1])
    return 0


def arena_estimate(model: TfliteModel) -> dict[str, Any]:
    """Activation memory of the main subgraph: the peak of tensors alive at once (a lower bound) and the layout of
    TFLite Micro's greedy planner over the tensor lifetimes (what its tensors take in the arena)."""
    flat = model.flatbuffer
    graph = flat.subgraphs[0]
    types = tensor_type_names()
    operators = graph.operators or []
    last = max(len(operators) - 1, 0)
    first_use: dict[int, int] = {int(i): 0 for i in (graph.inputs if graph.inputs is not None else [])}
    last_use: dict[int, int] = {int(i): last for i in (graph.outputs if graph.outputs is not None else [])}
    for step, op in enumerate(operators):
        for i in (op.outputs if op.outputs is not None else []):
            first_use.setdefault(int(i), step)
        for i in (op.inputs if op.inputs is not None else []):
            if i >= 0:
                last_use[int(i)] = max(last_use.get(int(i), step), step)
                first_use.setdefault(int(i), 0)
    buffers = []
    for index, tensor in enumerate(graph.tensors):
        if _is_constant(flat, tensor) or tensor.isVariable or index not in first_use:
            continue
        size = _aligned(_tensor_bytes(tensor, types))
        buffers.append((size, first_use[index], last_use.get(index, first_use[index]), index))
    peak = max((sum(size for size, start, end, _ in buffers if start <= step <= end)
                for step in range(len(operators) or 1)), default=0)
    plan = _greedy_plan(buffers)
    channels = sum(len(t.quantization.scale) for t in graph.tensors
                   if t.quantization is not None and t.quantization.scale is not None)
    allowance = (BOOKKEEPING_BASE + BOOKKEEPING_PER_TENSOR * len(graph.tensors)
                 + BOOKKEEPING_PER_OPERATOR * len(operators) + BOOKKEEPING_PER_CHANNEL * channels)
    return {"estimate_bytes": plan + allowance, "activation_plan_bytes": plan, "activation_peak_bytes": peak,
            "all_activations_bytes": sum(size for size, *_ in buffers), "bookkeeping_allowance_bytes": allowance,
            "note": "estimate, not a measurement: TFLite Micro's greedy plan of the activations over their lifetimes "
                    "plus an allowance for its bookkeeping on a 64-bit host (above the measured minimum on every "
                    "model tried); edge flash --device mcu:tflm measures the real minimum."}


def _greedy_plan(buffers: list[tuple[int, int, int, int]]) -> int:
    """Bytes of the layout TFLite Micro's GreedyMemoryPlanner makes: largest buffer first, lowest free offset."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    for size, start, end, _ in sorted(buffers, key=lambda b: (-b[0], b[3])):
        offset = 0
        for other_offset, other_size, other_start, other_end in sorted(placed):
            overlaps_in_time = not (end < other_start or other_end < start)
            if overlaps_in_time and offset < other_offset + other_size and other_offset < offset + size:
                offset = other_offset + other_size
        placed.append((offset, size, start, end))
    return max((offset + size for offset, size, *_ in placed), default=0)


def _tensor_row(index: int, tensor: Any, types: dict[int, str], constant: bool) -> dict[str, Any]:
    """A tensor as inspect shows it: name, type, shape, signature, whether constant, bytes and quantization."""
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    signature = [int(d) for d in tensor.shapeSignature] if tensor.shapeSignature is not None else shape
    return {"index": index, "name": name, "dtype": types.get(tensor.type, str(tensor.type)).lower(), "shape": shape,
            "shape_signature": signature, "constant": constant,
            "bytes": int(math.ceil(_tensor_bytes(tensor, types))), "quantization": _quantization(tensor)}


def _quantization(tensor: Any) -> dict[str, Any] | None:
    """Scales, zero points and the quantized dimension, or None for a tensor without scales."""
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    scales = [float(s) for s in np.asarray(q.scale, dtype=np.float32)]
    zero_points = [int(z) for z in (q.zeroPoint if q.zeroPoint is not None else [])]
    return {"granularity": "per-channel" if len(scales) > 1 else "per-tensor", "scales": scales,
            "zero_points": zero_points, "quantized_dimension": int(q.quantizedDimension)}


def _tensor_bytes(tensor: Any, types: dict[int, str]) -> float:
    shape = [max(int(d), 1) for d in (tensor.shape if tensor.shape is not None else [])]
    return math.prod(shape) * _ITEM_BYTES.get(types.get(tensor.type, ""), 4)


def _aligned(size: float) -> int:
    return int(math.ceil(size / ALIGNMENT) * ALIGNMENT)


def _is_constant(flat: Any, tensor: Any) -> bool:
    """Whether the tensor's values are stored in the file (inline data or an offset past the flatbuffer)."""
    if tensor.buffer <= 0 or tensor.buffer >= len(flat.buffers):
        return False
    buffer = flat.buffers[tensor.buffer]
    return (buffer.data is not None and len(buffer.data) > 0) or int(getattr(buffer, "offset", 0) or 0) > 1

"""Average-pooling output scales that let integer engines reproduce the ONNX QDQ model.

onnxruntime computes a QDQ graph in float and rounds once, half to even; TFLite, TFLite Micro and the
Ethos-U round in integer arithmetic, half away from zero. Average pooling keeps its input scale in
onnxruntime's QDQ scheme, so the mean of k int8 values lands exactly halfway between two steps in a
fixed share of windows (a quarter of them for k = 4, rounded apart every time): EEGNet's logits drifted
by 2-3 steps between the ONNX and the TFLite file. Widening the pool's output scale by 1/32 makes an
exact tie impossible (for k not a multiple of 64) and keeps every mean at least 1/(66 k) of a step away
from one, farther than the integer kernel's rounding error, so both round the same way. The calibrated
range is only widened, never narrowed. The TFLite exporter lowers such a rescaling pool as a depthwise
convolution with weights 1/k, which rounds once.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

#: Widening of the average-pooling output scale: 1 + 1/POOL_TIE_BREAK.
POOL_TIE_BREAK = 32
#: Ops onnxruntime quantizes with their input's scale; after a widened pool they take the new scale too.
SCALE_PRESERVING = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool")


def _quantization(node: onnx.NodeProto, init: dict[str, onnx.TensorProto]) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor int8 Q or DQ node, else None."""
    if len(node.input) < 3 or node.input[1] not in init or node.input[2] not in init:
        return None
    zp = init[node.input[2]]
    if zp.data_type != onnx.TensorProto.INT8:
        return None
    scale, zero = numpy_helper.to_array(init[node.input[1]]), numpy_helper.to_array(zp)
    if scale.size != 1:
        return None
    return float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0])


def tie_free_average_pools(model: onnx.ModelProto) -> list[str]:
    """Widen, in place, the output scale of every int8 AveragePool that keeps its input scale; returns their names."""
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    init = {t.name: t for t in model.graph.initializer}
    changed = []
    for node in model.graph.node:
        if node.op_type != "AveragePool":
            continue
        dq, after = producer.get(node.input[0]), readers.get(node.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        q = after[0]
        x_q, y_q = _quantization(dq, init), _quantization(q, init)
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [1])
        window = int(np.prod(kernel))
        if x_q is None or y_q != x_q or window <= 1 or window % (2 * POOL_TIE_BREAK) == 0:
            continue
        scale = numpy_helper.from_array(np.array(x_q[0] * (1 + 1 / POOL_TIE_BREAK), np.float32),
                                        f"{q.output[0]}_scale_tie_free")
        zero_point = numpy_helper.from_array(np.array(x_q[1], np.int8), f"{q.output[0]}_zero_point_tie_free")
        model.graph.initializer.extend([scale, zero_point])
        pending = [q]
        while pending:  # the pool's Q, then the Q of every scale-preserving op downstream that shared its scale
            current = pending.pop()
            current.input[1], current.input[2] = scale.name, zero_point.name
            for dq_after in [r for r in readers.get(current.output[0], []) if r.op_type == "DequantizeLinear"]:
                dq_after.input[1], dq_after.input[2] = scale.name, zero_point.name
                for user in readers.get(dq_after.output[0], []):
                    outs = readers.get(user.output[0], []) if user.op_type in SCALE_PRESERVING else []
                    if len(outs) == 1 and outs[0].op_type == "QuantizeLinear" and _quantization(outs[0], init) == y_q:
                        pending.append(outs[0])
        changed.append(node.name)
    return changed

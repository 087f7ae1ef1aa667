"""Output scales and weight grids that let integer engines reproduce the ONNX QDQ model bit for bit.

onnxruntime computes a QDQ graph with a float requantization multiplier and rounds once, half to even;
TFLite, TFLite Micro and the Ethos-U multiply by a 31-bit fixed-point multiplier and round twice, the
second time half away from zero. Two problems follow, and each has a fix here.

Average pooling keeps its input scale in onnxruntime's QDQ scheme, so the mean of k int8 values lands
exactly halfway between two steps in a fixed share of windows (a quarter of them for k = 4, rounded apart
every time): EEGNet's logits drifted by 2-3 steps between the ONNX and the TFLite file. Widening the pool's
output scale by 1/32 (:func:`tie_free_average_pools`) makes an exact tie impossible (for k not a multiple
of 64) and keeps every mean at least 1/(66 k) of a step away from one, farther than the integer kernel's
rounding error, so both round the same way. The calibrated range is only widened, never narrowed. The
TFLite exporter lowers such a rescaling pool as a depthwise convolution with weights 1/k, which rounds once.

Convolutions and fully connected layers (:func:`exact_requantization`): with a multiplier
M = s_in * s_w / s_out in [2^-(R+1), 2^-R), the fixed-point kernel first rounds acc * M to 1/2^R of a
step, then to a step, so an accumulator whose exact product lies less than 2^-(R+1) below a half step
goes up where onnxruntime goes down: 0.3-1.5 % of the outputs of the reference SSVEP network's first
layers, amplified by the 120-channel convolutions into 13 of 1,200 different decisions. Here every weight
is rounded to an even integer (7 bits of resolution in the int8 range, the price) and every channel's
weight scale is set so that M = 1/(2q) with q odd. Then acc * M = (acc / 2) / q is never a tie and never
closer to one than 1/(2q) = M > 2^-(R+1): both roundings give round(acc * M), in every engine. A channel
keeps onnxruntime's own scale when no such q lies within 25 % of its own multiplier (M > 1/2, where
every engine rounds once, and M between 1/6 and 2/5), or when the float32 scales cannot hold M that
precisely (multipliers below about 3e-5).

Mul of two int8 activations (:func:`exact_activation_products`): TFLite's MUL rounds the product
P = (q1 - z1)(q2 - z2) twice, onnxruntime's fused QLinearMul once, and with P any integer no output scale
makes the two agree everywhere by construction (the first rounding carries every P within 2^-(R+1) of a
step below a tie up to the tie, unless the exact products keep away from ties). But x * sigmoid(x) (SiLU) and x * constant see at most 256 products per constant, so the
output scale is the smallest one, widened by at most 1/32, on which the engines' arithmetic, written out
here and checked against the real engines on all 65,536 int8 pairs, agrees on all of them. For the rest
(x * gate in squeeze-excite blocks) the multiplier is set just above 1/q, q even (:func:`even_tie_scale`):
the ties then round away from zero in every engine and every other product is far enough from one;
measured on the real engines, 6-42 of the 65,536 int8 pairs still differ from onnxruntime by one step
(0.2-0.7 % with the calibrated scale), and TFLite Micro (multiplier in double) gives LiteRT's reference
kernels' outputs (in float32); where no such q is found, the scale only makes those two multipliers equal.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

#: Widening of the average-pooling output scale: 1 + 1/POOL_TIE_BREAK.
POOL_TIE_BREAK = 32
#: Ops onnxruntime quantizes with their input's scale; after a widened pool they take the new scale too.
SCALE_PRESERVING = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool")
#: Ops whose int8 requantization :func:`exact_requantization` makes exact.
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
#: Largest even int8 weight.
EVEN_WEIGHT_LIMIT = 126
#: Relative error of onnxruntime's float32 multiplier (scale arithmetic and the product), bounded generously.
FLOAT_MULTIPLIER_ERROR = 2.0**-22
#: Largest widening of a channel's weight scale (over max|w| / 126) accepted for an exact multiplier.
MAX_WIDENING = 1.25


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


def _graph_maps(model: onnx.ModelProto) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    """(producer of each tensor, readers of each tensor)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return producer, readers


def tie_free_average_pools(model: onnx.ModelProto) -> list[str]:
    """Widen, in place, the output scale of every int8 AveragePool that keeps its input scale; returns their names."""
    producer, readers = _graph_maps(model)
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
        _requantize_output(q, scale.name, zero_point.name, y_q, readers, init)
        changed.append(node.name)
    return changed


def _requantize_output(q: onnx.NodeProto, scale: str, zero_point: str, old: tuple[float, int],
                       readers: dict[str, list[onnx.NodeProto]], init: dict[str, onnx.TensorProto]) -> None:
    """Point ``q``, the DQs reading it and the Q of every scale-preserving op downstream that shared its
    quantization ``old`` at the initializers ``scale`` and ``zero_point``."""
    pending = [q]
    while pending:
        current = pending.pop()
        current.input[1], current.input[2] = scale, zero_point
        for dq_after in [r for r in readers.get(current.output[0], []) if r.op_type == "DequantizeLinear"]:
            dq_after.input[1], dq_after.input[2] = scale, zero_point
            for user in readers.get(dq_after.output[0], []):
                outs = readers.get(user.output[0], []) if user.op_type in SCALE_PRESERVING else []
                if len(outs) == 1 and outs[0].op_type == "QuantizeLinear" and _quantization(outs[0], init) == old:
                    pending.append(outs[0])


def tflite_multiplier(m: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: (q, shift) with m = q * 2**(shift - 31) and q in [2**30, 2**31)."""
    if m <= 0:
        return 0, 0
    fraction, shift = math.frexp(m)
    q = round(fraction * 2**31)
    if q == 2**31:
        q, shift = q // 2, shift + 1
    return q, shift


def rounds_exactly(q: int, multiplier: float, v_max: float) -> bool:
    """Whether an int8 engine and onnxruntime both give round(acc / (2 q)) for every even accumulator.

    ``multiplier`` is s_in * s_w / s_out from the float32 scales as stored; ``v_max`` bounds |acc * M| over
    the outputs that do not saturate. TFLite's first rounding must not carry a value across a half step:
    the gap M - 2^-(R+1) has to exceed the error of its fixed-point multiplier over the range; onnxruntime's
    float32 multiplier has to stay closer than M to the exact product.
    """
    ideal = 1 / (2 * q)
    fixed, shift = tflite_multiplier(multiplier)
    right_shift = -shift
    if right_shift <= 0:
        return True
    fixed_error = abs(fixed / 2.0 ** (31 + right_shift) - ideal) / ideal
    float_error = abs(multiplier - ideal) / ideal + FLOAT_MULTIPLIER_ERROR
    return ideal - 2.0 ** -(right_shift + 1) > v_max * fixed_error and ideal > v_max * float_error


def exact_channel_scale(s_in: float, s_out: float, weight_range: float, v_max: float) -> np.float32 | None:
    """The smallest float32 weight scale >= ``weight_range`` / 126 giving M = 1/(2q), q odd, that rounds
    exactly (:func:`rounds_exactly`; q = 1 is M = 1/2, which rounds once); None when there is none within
    ``MAX_WIDENING`` of it (M > 1/2, or a multiplier too small for float32 scales to pin down)."""
    if not weight_range > 0:
        return None  # an all-zero channel: nothing to round
    s_min = weight_range / EVEN_WEIGHT_LIMIT
    # the largest odd q whose scale is at least s_min, and below which onnxruntime's float32 multiplier is exact
    q = min(math.floor(s_out / (2 * s_in * s_min)), math.floor(1 / (2 * v_max * FLOAT_MULTIPLIER_ERROR)))
    q -= 1 - q % 2
    smallest_q = s_out / (2 * s_in * s_min * MAX_WIDENING)
    while q >= max(1, smallest_q):
        scale = np.float32(s_out / (2 * q * s_in))
        if scale < s_min:
            scale = np.nextafter(scale, np.float32(np.inf))
        if rounds_exactly(q, float(np.float32(s_in)) * float(scale) / float(np.float32(s_out)), v_max):
            return scale
        q -= 2
    return None


def exact_requantization(model: onnx.ModelProto, float_weights: dict[str, np.ndarray]) -> list[str]:
    """Make, in place, the int8 requantization of every QDQ Conv/Gemm/MatMul exact in integer engines.

    ``float_weights`` holds the float initializers the quantizer started from (weights and biases, by
    name; onnxruntime names their int8 copies ``<name>_quantized``): the even grid is rounded from them,
    not from the int8 values. Layers with int16 activations, float inputs or outputs, weights with a zero
    point or shared with another node are left alone. Returns the names of the layers changed.
    """
    producer, readers = _graph_maps(model)
    init = {t.name: t for t in model.graph.initializer}
    changed = []
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        x_dq, w_dq, after = producer.get(node.input[0]), producer.get(node.input[1]), readers.get(node.output[0], [])
        if (x_dq is None or w_dq is None or x_dq.op_type != "DequantizeLinear" or w_dq.op_type != "DequantizeLinear"
                or len(after) != 1 or after[0].op_type != "QuantizeLinear"):
            continue
        x_q, y_q = _quantization(x_dq, init), _quantization(after[0], init)
        w_name = w_dq.input[0]
        source = float_weights.get(w_name.removesuffix("_quantized"))
        if (x_q is None or y_q is None or source is None or w_name not in init or len(w_dq.input) < 2
                or len(readers.get(w_name, [])) != 1 or len(readers.get(w_dq.output[0], [])) != 1):
            continue
        if len(w_dq.input) > 2 and np.any(numpy_helper.to_array(init[w_dq.input[2]])):
            continue
        bias_dq = producer.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        bias = None
        if bias_dq is not None:
            bias = float_weights.get(bias_dq.input[0].removesuffix("_quantized"))
            # a bias shared by several layers (onnxruntime's optimizer merges equal small constants) has one scale
            if (bias_dq.op_type != "DequantizeLinear" or bias is None or bias_dq.input[0] not in init
                    or len(readers.get(bias_dq.output[0], [])) != 1):
                continue
        old = numpy_helper.to_array(init[w_dq.input[1]])
        scales, exact = _exact_scales(old, source, w_dq, x_q, y_q)
        if not exact.any():
            continue
        shape = [1] * source.ndim
        if old.size > 1:
            shape[_axis(w_dq, source.ndim)] = -1
        weights = _round_to_grid(source.astype(np.float64) / scales.astype(np.float64).reshape(shape),
                                 exact.reshape(shape))
        _replace(init, w_name, np.clip(weights, -127, 127).astype(np.int8))
        _replace(init, w_dq.input[1], scales.reshape(old.shape))
        if bias_dq is not None:
            bias_scales = (np.float32(x_q[0]) * scales).astype(np.float32)
            steps = _round_to_grid(bias.astype(np.float64).reshape(-1) / bias_scales, exact)
            _replace(init, bias_dq.input[0], np.clip(steps, -2**31, 2**31 - 2).astype(np.int32))
            _replace(init, bias_dq.input[1], bias_scales.reshape(numpy_helper.to_array(init[bias_dq.input[1]]).shape))
        changed.append(node.name)
    return changed


def _axis(dq: onnx.NodeProto, rank: int) -> int:
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    return axis % rank


def _round_to_grid(steps: np.ndarray, even: np.ndarray) -> np.ndarray:
    """``steps`` rounded to the nearest even integer where ``even``, to the nearest integer elsewhere."""
    return np.where(even, 2 * np.round(steps / 2), np.round(steps))


def _exact_scales(old: np.ndarray, source: np.ndarray, w_dq: onnx.NodeProto, x_q: tuple[float, int],
                  y_q: tuple[float, int]) -> tuple[np.ndarray, np.ndarray]:
    """(weight scale per channel, whether the channel is exact): onnxruntime's scale where it cannot be."""
    source = source.astype(np.float64)
    if old.size > 1:
        ranges = np.abs(np.moveaxis(source, _axis(w_dq, source.ndim), 0)).reshape(old.size, -1).max(axis=1)
    else:
        ranges = np.array([np.abs(source).max()])
    v_max = 129 + abs(y_q[1])
    scales = [exact_channel_scale(x_q[0], y_q[0], float(r), v_max) for r in ranges]
    exact = np.array([s is not None for s in scales])
    return np.array([old.reshape(-1)[i] if s is None else s for i, s in enumerate(scales)], np.float32), exact


def _replace(init: dict[str, onnx.TensorProto], name: str, value: np.ndarray) -> None:
    init[name].CopyFrom(numpy_helper.from_array(value, name))


# --- int8 Mul of two activations ---------------------------------------------------------------------------
# The kernels, as measured on every pair of int8 inputs (tests/converters/test_integer_mul.py): TFLite
# Micro's MUL takes the multiplier s1 * s2 / s_out in double, LiteRT's reference MUL in float32, and both
# round P = (q1 - z1) * (q2 - z2) twice (fixed point, then half away from zero); onnxruntime fuses
# DQ -> Mul -> Q into QLinearMul, which multiplies float32(P) by float32(float32(s1 * s2) / s_out) and
# rounds half to even. No output scale makes those agree on every P (an exact product within 2^-(R+1) of a
# step below a tie always reaches the tie after the first rounding), so the search below is over what one
# input can actually bring: the other factor is a constant or a function (Sigmoid) of the same int8 tensor.

#: Ops whose output, multiplied by their own input (x * sigmoid(x), SiLU), leaves a Mul with 256 products.
GATES = ("Sigmoid",)
#: Largest widening of a Mul's calibrated output scale searched for a multiplier the engines agree on.
MUL_WIDENING = 1 / 32
#: Relative step between the output scales tried.
MUL_SCALE_STEP = 2.0**-16


def tflite_mul_multiplier(s1: float, s2: float, s_out: float, engine: str) -> tuple[int, int]:
    """The (multiplier, shift) pair a MUL kernel derives from float32 scales: 'tflm' in double, 'litert' in float32."""
    if engine == "tflm":
        m = float(np.float32(s1)) * float(np.float32(s2)) / float(np.float32(s_out))
    else:
        m = float(np.float32(np.float32(s1) * np.float32(s2)) / np.float32(s_out))
    return tflite_multiplier(m)


def fixed_point_requantize(acc: np.ndarray, fixed: int, shift: int) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier on int64 numbers: a rounding doubling high multiply, then a
    rounding right shift, both half away from zero."""
    acc = acc.astype(np.int64) * (1 << max(shift, 0))
    product = acc * fixed
    high = (product + (1 << 30)) >> 31  # C++ truncation of (product + nudge) / 2^31: half up, as the kernel does
    right = max(-shift, 0)
    if right == 0:
        return high
    return np.sign(high) * ((np.abs(high) + (1 << (right - 1))) >> right)


def onnxruntime_mul(p: np.ndarray, s1: float, s2: float, s_out: float) -> np.ndarray:
    """onnxruntime's QLinearMul on the products ``p`` (before the zero point): float32, half to even."""
    f32 = np.float32
    multiplier = f32(f32(s1) * f32(s2)) / f32(s_out)
    return np.rint(p.astype(f32) * multiplier).astype(np.int64)


def _float_orders(a: np.ndarray, b: np.ndarray, x_q: tuple[float, int], y_q: tuple[float, int],
                  s_out: float) -> list[np.ndarray]:
    """onnxruntime's Mul of int8 steps ``a`` * ``b`` (zero points taken off) rounded half to even, with the float32
    operations in every order it might use: where they all agree, the order does not matter."""
    f32 = np.float32
    fa, fb, inv = a.astype(f32) * f32(x_q[0]), b.astype(f32) * f32(y_q[0]), f32(1) / f32(s_out)
    p = (a * b).astype(f32)
    return [np.rint(p * (f32(f32(x_q[0]) * f32(y_q[0])) / f32(s_out))), np.rint((fa * fb) * inv),
            np.rint(fa * (fb * inv)), np.rint((fa * fb) / f32(s_out)), np.rint(fa * (fb / f32(s_out))),
            np.rint((fa / f32(s_out)) * fb)]


def even_tie_scale(x_q: tuple[float, int], y_q: tuple[float, int], out: tuple[float, int]) -> np.float32 | None:
    """An output scale for a Mul of two independent int8 activations that leaves almost no product to chance.

    With M just above 1/q, q even, an exact product P / q is either a tie (P = (k + 1/2) q), which TFLite
    rounds away from zero and a multiplier a few float32 ulps above 1/q makes onnxruntime round the same way,
    or at least 1/q (more than the fixed-point kernel's first rounding error) from one. Checked on every
    product with both TFLite kernels and onnxruntime's float32 arithmetic in every order; measured on the
    real engines, onnxruntime still rounds the two smallest ties (P = +-q/2) down: 4-6 of 65,536 pairs.
    """
    a, b = np.meshgrid(np.arange(-128, 128) - x_q[1], np.arange(-128, 128) - y_q[1])
    a, b = a.ravel(), b.ravel()
    p = a * b
    s_in = float(np.float32(x_q[0])) * float(np.float32(y_q[0]))
    q = 2 * math.ceil(float(np.float32(out[0])) / s_in / 2)
    while q <= float(np.float32(out[0])) / s_in * (1 + MUL_WIDENING):
        for ulps in (2, 4, 8):  # relative steps of 2^-20 below s_in * q: the multiplier above 1/q
            scale = np.float32(s_in * q * (1 - ulps * 2.0**-20))
            if scale < np.float32(out[0]):
                continue
            tflite = fixed_point_requantize(p, *tflite_mul_multiplier(x_q[0], y_q[0], float(scale), "tflm"))
            others = [fixed_point_requantize(p, *tflite_mul_multiplier(x_q[0], y_q[0], float(scale), "litert"))]
            others += _float_orders(a, b, x_q, y_q, float(scale))
            want = np.clip(tflite + out[1], -128, 127)
            if all(np.array_equal(want, np.clip(o + out[1], -128, 127)) for o in others):
                return scale
        q += 2
    return None


def mul_outputs_agree(a: np.ndarray, b: np.ndarray, x_q: tuple[float, int], y_q: tuple[float, int],
                      out: tuple[float, int]) -> bool:
    """Whether onnxruntime, LiteRT's reference kernels and TFLite Micro give the same int8 output of a QDQ Mul
    on every pair of int8 inputs (``a[i]``, ``b[i]``) with quantizations ``x_q`` and ``y_q``."""
    f32 = np.float32
    p = (a.astype(np.int64) - x_q[1]) * (b.astype(np.int64) - y_q[1])
    tflm, litert = (fixed_point_requantize(p, *tflite_mul_multiplier(x_q[0], y_q[0], out[0], engine))
                    for engine in ("tflm", "litert"))
    fused = onnxruntime_mul(p, x_q[0], y_q[0], out[0])
    # onnxruntime without graph optimisation: DQ in float32, a float32 Mul, then QuantizeLinear
    values = ((a.astype(np.int64) - x_q[1]).astype(f32) * f32(x_q[0])) * ((b.astype(np.int64) - y_q[1]).astype(f32)
                                                                          * f32(y_q[0]))
    plain = np.rint(values / f32(out[0])).astype(np.int64)
    clip = [np.clip(v + out[1], -128, 127) for v in (tflm, litert, fused, plain)]
    return all(np.array_equal(clip[0], other) for other in clip[1:])


def exact_mul_scale(a: np.ndarray | None, b: np.ndarray | None, x_q: tuple[float, int], y_q: tuple[float, int],
                    out: tuple[float, int]) -> np.float32 | None:
    """The smallest float32 output scale, not below ``out``'s and within ``MUL_WIDENING`` of it, on which the
    engines agree: on the pairs (``a``, ``b``) when given, else only on the multiplier (TFLite Micro ==
    LiteRT); None when there is none."""
    start = np.float32(out[0])
    if a is None or b is None:
        even = even_tie_scale(x_q, y_q, out)
        if even is not None:
            return even
    for k in range(int(MUL_WIDENING / MUL_SCALE_STEP) + 1):
        scale = np.float32(start * (1 + k * MUL_SCALE_STEP))
        if scale < start:
            continue
        if a is None or b is None:
            engines = {tflite_mul_multiplier(x_q[0], y_q[0], float(scale), e) for e in ("tflm", "litert")}
            if len(engines) == 1:
                return scale
        elif mul_outputs_agree(a, b, x_q, y_q, (float(scale), out[1])):
            return scale
    return None


def _gate_values(gate: onnx.NodeProto, gate_q: tuple[float, int], x_q: tuple[float, int]) -> np.ndarray:
    """The int8 output of ``gate`` (Q(Sigmoid(DQ(x)))) for every int8 x (3 rows: within float32 error)."""
    x = ((np.arange(-128, 128) - x_q[1]).astype(np.float32) * np.float32(x_q[0])).astype(np.float64)
    y = 1 / (1 + np.exp(-x))
    # both neighbours of a value that lands within float32 error of a rounding boundary, for either engine
    steps = [np.rint(np.float32(y * (1 + e)) / np.float32(gate_q[0])) for e in (-1e-5, 0.0, 1e-5)]
    return np.clip(np.stack(steps) + gate_q[1], -128, 127).astype(np.int64)


def _mul_pairs(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto], init: dict[str, onnx.TensorProto]
               ) -> tuple[tuple[float, int], tuple[float, int], np.ndarray | None, np.ndarray | None] | None:
    """(x quantization, y quantization, the int8 pairs one Mul can see or None, None) for an int8 QDQ Mul."""
    dqs = [producer.get(name) for name in node.input]
    if len(dqs) != 2 or any(dq is None or dq.op_type != "DequantizeLinear" for dq in dqs):
        return None
    quants = [_quantization(dq, init) for dq in dqs]
    if None in quants:
        return None
    every = np.arange(-128, 128)
    for i in (0, 1):
        x_dq, y_dq = dqs[i], dqs[1 - i]
        x_q, y_q = quants[i], quants[1 - i]
        if y_dq.input[0] in init:  # a constant factor: 256 values per distinct constant
            constants = np.unique(numpy_helper.to_array(init[y_dq.input[0]]).astype(np.int64))
            a, b = np.repeat(every, len(constants)), np.tile(constants, len(every))
            return (x_q, y_q, a, b) if i == 0 else (y_q, x_q, b, a)
        gate_q = producer.get(y_dq.input[0])
        gate = producer.get(gate_q.input[0]) if gate_q is not None and gate_q.op_type == "QuantizeLinear" else None
        gate_dq = producer.get(gate.input[0]) if gate is not None and gate.op_type in GATES else None
        if (gate_dq is not None and gate_dq.op_type == "DequantizeLinear" and gate_dq.input[0] == x_dq.input[0]
                and _quantization(gate_dq, init) == x_q and _quantization(gate_q, init) == y_q):
            pairs = np.unique(np.stack([np.tile(every, 3), _gate_values(gate, y_q, x_q).reshape(-1)]), axis=1)
            a, b = pairs
            return (x_q, y_q, a, b) if i == 0 else (y_q, x_q, b, a)
    return quants[0], quants[1], None, None


def exact_activation_products(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Widen, in place, the output scale of every int8 QDQ Mul so the engines agree where they can.

    A Mul of x by a constant or by sigmoid(x) sees at most 256 pairs per constant: its output scale becomes the
    smallest one (within ``MUL_WIDENING``) on which onnxruntime, LiteRT and TFLite Micro agree on all of
    them. Any other Mul (two independent activations) gets the smallest scale on which TFLite Micro and
    LiteRT derive the same multiplier; onnxruntime still parts from both by one step on about 2^-(R+1) of
    its products. Returns (names of the exact Muls, names of the Muls only the TFLite engines agree on).
    """
    producer, readers = _graph_maps(model)
    init = {t.name: t for t in model.graph.initializer}
    exact, engines_only = [], []
    for node in model.graph.node:
        after = readers.get(node.output[0], [])
        if node.op_type != "Mul" or len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        q = after[0]
        pairs, out = _mul_pairs(node, producer, init), _quantization(q, init)
        if pairs is None or out is None:
            continue
        x_q, y_q, a, b = pairs
        scale = exact_mul_scale(a, b, x_q, y_q, out)
        if scale is None:
            continue
        (exact if a is not None else engines_only).append(node.name)
        if scale == np.float32(out[0]):
            continue
        name = f"{q.output[0]}_scale_exact_mul"
        model.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), name),
                                        numpy_helper.from_array(np.array(out[1], np.int8), f"{name}_zero_point")])
        _requantize_output(q, name, f"{name}_zero_point", out, readers, init)
    return exact, engines_only

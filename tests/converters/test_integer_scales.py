"""The even weight grid of converters.integer_scales: TFLite's two roundings give onnxruntime's one.

``tflite_requantize`` is TFLite's MultiplyByQuantizedMultiplier (gemmlowp's saturating rounding doubling
high multiply, then a rounding right shift, half away from zero) written out in integers; the engines
themselves are checked on real models in test_tflite.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from converters.integer_scales import exact_channel_scale, exact_requantization, tflite_multiplier
from converters.quantize import QuantizeInt8
from edge.artifact import Artifact


def tflite_requantize(acc: np.ndarray, multiplier: float) -> np.ndarray:
    fixed, shift = tflite_multiplier(multiplier)
    acc = acc.astype(np.int64) << max(shift, 0)
    product = acc * fixed
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    high = (product + nudge) // (1 << 31)
    high = np.where((product + nudge < 0) & ((product + nudge) % (1 << 31) != 0), high + 1, high)  # C++ truncation
    right = max(-shift, 0)
    if right == 0:
        return high
    mask = (1 << right) - 1
    remainder, threshold = high & mask, (mask >> 1) + (high < 0)
    return (high >> right) + (remainder > threshold)


def onnxruntime_requantize(acc: np.ndarray, s_in: float, s_w: float, s_out: float) -> np.ndarray:
    scale = np.float32(np.float32(s_in) * np.float32(s_w)) / np.float32(s_out)
    return np.rint(acc.astype(np.float32) * np.float32(scale)).astype(np.int64)


def test_tflite_requantize_matches_known_values() -> None:
    """gemmlowp's examples: 0.5 of 3 -> 2 (one rounding), 0.25 of 1 -> 1 (two roundings carry .25 up)."""
    assert tflite_requantize(np.array([3, -3, 5]), 0.5).tolist() == [2, -1, 3]
    assert tflite_requantize(np.array([1]), 0.25).tolist() == [1]  # exact 0.25 rounds to 0; TFLite says 1
    assert tflite_multiplier(0.75) == (3 << 29, 0)


@pytest.mark.parametrize("target", [4e-5, 1e-4, 7e-4, 3e-3, 0.011, 0.04, 0.09, 0.45])  # right shifts 14 ... 0
def test_even_grid_rounds_the_same_in_both_engines(target: float) -> None:
    rng = np.random.default_rng(int(target * 1e6))
    s_in, s_out = rng.uniform(0.01, 1.0), rng.uniform(0.01, 1.0)
    weight_range = s_out / s_in * 126 * target
    scale = exact_channel_scale(s_in, s_out, weight_range, v_max=129)
    assert scale is not None and scale * 126 >= weight_range
    multiplier = float(np.float32(s_in)) * float(scale) / float(np.float32(s_out))
    reach = int(129 / multiplier) // 2
    acc = np.arange(-reach, reach + 1) * 2  # even weights: even accumulators; |acc * M| <= 129 (no saturation)
    tflite, ort = tflite_requantize(acc, multiplier), onnxruntime_requantize(acc, s_in, scale, s_out)
    assert np.array_equal(tflite, ort)
    # the plain scale (any integer weight) parts ways somewhere in the same range
    plain = float(np.float32(weight_range / 127))
    plain_multiplier = float(np.float32(s_in)) * plain / float(np.float32(s_out))
    acc = np.arange(-int(130 / plain_multiplier), int(130 / plain_multiplier) + 1)
    if target > 0.4:
        return  # one rounding in TFLite too
    assert not np.array_equal(tflite_requantize(acc, plain_multiplier),
                              onnxruntime_requantize(acc, s_in, plain, s_out))


def test_no_exact_scale_above_one_half_or_for_tiny_multipliers() -> None:
    """M >= 0.5 rounds once everywhere, and below ~1e-5 float32 scales cannot pin M down: such a channel keeps
    onnxruntime's scale rather than coarsening its weights."""
    assert exact_channel_scale(1.0, 1.0, 126 * 0.6, v_max=129) is None
    assert exact_channel_scale(1.0, 1.0, 126 * 0.25, v_max=129) is None  # 1/6 too fine, 1/2 too coarse
    assert exact_channel_scale(1.0, 1.0, 126 * 1e-6, v_max=129) is None
    assert exact_channel_scale(1.0, 1.0, 0.0, v_max=129) is None  # an all-zero channel
    assert exact_channel_scale(1.0, 1.0, 126 * 1e-3, v_max=129) is not None


def _conv_relu_fc() -> onnx.ModelProto:
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(6, 2, 1, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "b")
    fc = numpy_helper.from_array(rng.normal(size=(4, 36)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w, b, fc])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("per_channel", [True, False])
def test_quantizer_puts_weights_and_biases_on_the_even_grid(per_channel: bool) -> None:
    x = np.random.default_rng(1).normal(size=(64, 2, 1, 8)).astype(np.float32)
    artifact = Artifact.from_model(_conv_relu_fc())
    exact = QuantizeInt8(per_channel=per_channel)(artifact, x)
    plain = QuantizeInt8(per_channel=per_channel, integer_exact=False)(artifact, x)
    assert exact.meta.provenance[-1].params["integer_exact"] is True
    for art, even in ((exact, True), (plain, False)):
        values = {t.name: numpy_helper.to_array(t) for t in art.model.graph.initializer}
        for name in ("w_quantized", "b_quantized", "fc_quantized"):
            assert np.all(values[name] % 2 == 0) == even, name
    # the float models they stand for stay close: one bit of weight resolution
    from edge.evaluate import predict

    reference = predict(artifact, x)
    for art in (exact, plain):
        assert np.corrcoef(predict(art, x).ravel(), reference.ravel())[0, 1] > 0.99


def test_layers_without_int8_activations_are_left_alone() -> None:
    x = np.random.default_rng(1).normal(size=(64, 2, 1, 8)).astype(np.float32)
    artifact = Artifact.from_model(_conv_relu_fc())
    int16 = QuantizeInt8(activations="int16")(artifact, x)
    values = {t.name: numpy_helper.to_array(t) for t in int16.model.graph.initializer}
    assert np.any(values["w_quantized"] % 2 == 1)
    assert exact_requantization(int16.model, {}) == []

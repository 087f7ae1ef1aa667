"""Quantization schemes: per-channel vs per-tensor, calibration methods, int16 activations, dynamic, int4."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import tiny_conv_model
from converters.quantize import QuantizeDynamicInt8, QuantizeInt4Weights, QuantizeInt8
from edge.artifact import Artifact
from edge.errors import PassError
from edge.evaluate import drift, predict


def matmul_model() -> onnx.ModelProto:
    """(N, 64) -> MatMul(64x32) -> Add -> Relu -> Gemm(32x8): a small MLP with one MatMul and one Gemm."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(size=(64, 32)).astype(np.float32) / 8, "w1"),
        numpy_helper.from_array(rng.normal(size=32).astype(np.float32) / 8, "b1"),
        numpy_helper.from_array(rng.normal(size=(32, 8)).astype(np.float32) / 4, "w2"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def sqnr(reference: np.ndarray, test: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - test) ** 2)))


@pytest.fixture(scope="module")
def tiny() -> tuple[Artifact, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(64, 2, 1, 8)).astype(np.float32)
    return Artifact.from_model(tiny_conv_model()), x


@pytest.fixture(scope="module")
def mlp() -> tuple[Artifact, np.ndarray]:
    x = np.random.default_rng(2).normal(size=(64, 64)).astype(np.float32)
    return Artifact.from_model(matmul_model()), x


def _scales(child: Artifact) -> dict[str, int]:
    return {t.name: int(np.prod(t.dims)) for t in child.model.graph.initializer if t.name.endswith("_scale")}


def test_per_channel_has_one_scale_per_filter_per_tensor_has_one(tiny) -> None:
    parent, x = tiny
    per_channel = _scales(QuantizeInt8(per_channel=True)(parent, x))
    per_tensor = _scales(QuantizeInt8(per_channel=False)(parent, x))
    assert per_channel["w_scale"] == 3  # three Conv filters
    assert per_tensor["w_scale"] == 1
    assert all(size == 1 for size in per_tensor.values())


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_each_calibration_method_runs_and_stays_close(tiny, method) -> None:
    parent, x = tiny
    child = QuantizeInt8(calibrate=method)(parent, x)
    onnx.checker.check_model(child.model)
    assert child.meta.provenance[-1].params["calibrate"] == method
    assert drift(parent, child, x).cosine_similarity > 0.98


def test_distribution_calibration_is_refused_as_float8_only() -> None:
    with pytest.raises(PassError, match=r"'calibrate' parameter of quantize-int8 must be one of .*got 'distribution'.*float8"):
        QuantizeInt8(calibrate="distribution")
    with pytest.raises(PassError, match="'activations' parameter of quantize-int8 must be one of int8, int16; got 'int4'"):
        QuantizeInt8(activations="int4")


def test_int16_activations_are_16_bit_and_closer_to_float(tiny) -> None:
    parent, x = tiny
    int8 = QuantizeInt8()(parent, x)
    int16 = QuantizeInt8(activations="int16")(parent, x)
    onnx.checker.check_model(int16.model)
    zero_points = {t.name: t.data_type for t in int16.model.graph.initializer if t.name.endswith("_zero_point")}
    assert zero_points["x_zero_point"] == TensorProto.INT16  # activation
    assert zero_points["w_zero_point"] == TensorProto.INT8  # weights stay int8
    assert next(t for t in int16.model.graph.initializer if t.name == "w_quantized").data_type == TensorProto.INT8
    assert int16.meta.provenance[-1].params["activations"] == "int16"
    reference = predict(parent, x)
    assert sqnr(reference, predict(int16, x)) > sqnr(reference, predict(int8, x)) + 3
    assert drift(parent, int16, x).cosine_similarity >= drift(parent, int8, x).cosine_similarity


def test_dynamic_int8_quantizes_matmul_and_gemm_weights(mlp) -> None:
    parent, x = mlp
    child = QuantizeDynamicInt8()(parent, None)
    ops = Counter(n.op_type for n in child.model.graph.node)
    assert ops["MatMulInteger"] == 2 and ops["DynamicQuantizeLinear"] >= 1 and ops["MatMul"] == 0
    assert child.meta.provenance[-1].name == "quantize-dynamic-int8"
    assert sqnr(predict(parent, x), predict(child, x)) > 25
    assert len(child.to_bytes()) < 0.5 * len(parent.to_bytes())


def test_int4_weights_become_matmulnbits_and_stay_close(mlp) -> None:
    parent, x = mlp
    child = QuantizeInt4Weights(block_size=32)(parent)
    ops = {(n.domain, n.op_type) for n in child.model.graph.node}
    assert ("com.microsoft", "MatMulNBits") in ops and ("", "MatMul") not in ops
    assert ("", "Gemm") in ops  # weight-only int4 touches MatMul only
    record = child.meta.provenance[-1]
    assert record.name == "quantize-int4-weights" and record.params["fired"] is True and record.params["block_size"] == 32
    assert drift(parent, child, x).cosine_similarity > 0.99
    assert sqnr(predict(parent, x), predict(child, x)) > 15


def test_int4_weights_do_not_fire_without_matmul(tiny, caplog) -> None:
    parent, x = tiny
    with caplog.at_level("INFO", logger="edge"):
        child = QuantizeInt4Weights()(parent)
    assert [n.op_type for n in child.model.graph.node] == [n.op_type for n in parent.model.graph.node]
    record = child.meta.provenance[-1]
    assert record.params["fired"] is False and "no MatMul" in record.params["reason"]
    assert "did not fire" in caplog.text
    np.testing.assert_array_equal(predict(child, x), predict(parent, x))
    with pytest.raises(PassError, match="'block_size' parameter of quantize-int4-weights must be a power of two"):
        QuantizeInt4Weights(block_size=24)

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx
import pytest
from conftest import tiny_conv_model
from onnx import TensorProto, helper, numpy_helper

from converters.quantize import QuantizeInt8
from converters.sparsify import (
    PruneMagnitude,
    PruneNM,
    format_sparsity_report,
    sparsity_report,
)
from edge.artifact import Artifact
from edge.errors import PassError
from edge.evaluate import predict
from edge.summary import summarize


def dense_model(trans_b: int) -> onnx.ModelProto:
    """(N, 2, 1, 8) -> Conv(4 filters, 2x1x4 = 8 inputs each) -> Flatten -> Gemm(20 -> 3) -> MatMul(3 -> 8)."""
    rng = np.random.default_rng(1)
    conv = rng.normal(size=(4, 2, 1, 4)).astype(np.float32)
    fc = rng.normal(size=(3, 20) if trans_b else (20, 3)).astype(np.float32)
    mm = rng.normal(size=(3, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Flatten", ["c"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc"], ["g"], name="fc", transB=trans_b),
        helper.make_node("MatMul", ["g", "mm"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes, "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(conv, "w"), numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(mm, "mm")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def weights(artifact: Artifact) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in artifact.model.graph.initializer}


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
def test_layer_scope_gives_exact_sparsity_in_every_layer(reference, sparsity) -> None:
    child = PruneMagnitude(sparsity=sparsity, scope="layer")(reference)
    rows = {r["name"]: r for r in sparsity_report(child.model)}
    for name in ("channel.weight", "time1.weight", "time2.weight", "fc.weight"):
        assert rows[name]["zeros"] == round(sparsity * rows[name]["elements"])
    assert rows["sub_band.weight"]["zeros"] == 0  # 3 weights: below min_elements, left dense
    # The largest weights survive untouched.
    before, after = weights(reference), weights(child)
    kept = after["time2.weight"] != 0
    assert np.array_equal(after["time2.weight"][kept], before["time2.weight"][kept])
    assert np.abs(before["time2.weight"][~kept]).max() <= np.abs(before["time2.weight"][kept]).min()
    assert child.meta.provenance[-1].name == "prune-magnitude"
    assert Counter(n.op_type for n in child.model.graph.node) == Counter(n.op_type for n in reference.model.graph.node)
    assert summarize(child.model).macs == summarize(reference.model).macs  # same shapes: no MACs saved


def test_global_scope_uses_one_threshold(reference) -> None:
    child = PruneMagnitude(sparsity=0.5, scope="global")(reference)
    rows = [r for r in sparsity_report(child.model) if r["name"] != "sub_band.weight"]
    total = sum(r["elements"] for r in rows)
    assert sum(r["zeros"] for r in rows) == round(0.5 * total)
    assert len({round(r["sparsity"], 3) for r in rows}) > 1  # layers differ, unlike scope="layer"
    before, after = weights(reference), weights(child)
    pruned = np.concatenate([np.abs(before[r["name"]][after[r["name"]] == 0]) for r in rows])
    kept = np.concatenate([np.abs(before[r["name"]][after[r["name"]] != 0]) for r in rows])
    assert pruned.max() <= kept.min()
    assert "total" in format_sparsity_report(sparsity_report(child.model))


def test_zero_sparsity_leaves_outputs_unchanged(reference) -> None:
    x = np.random.default_rng(0).normal(size=(8, 3, 9, 100)).astype(np.float32)
    child = PruneMagnitude(sparsity=0.0)(reference)
    assert np.array_equal(predict(child, x), predict(reference, x))


@pytest.mark.parametrize("trans_b", [0, 1])
def test_nm_pattern_holds_in_every_group(trans_b) -> None:
    parent = Artifact.from_model(dense_model(trans_b))
    child = PruneNM(n=2, m=4, min_elements=0)(parent)
    w = weights(child)
    groups = {
        "w": w["w"].reshape(4, -1).reshape(4, -1, 4),       # per filter, over in x kernel
        "fc": (w["fc"] if trans_b else w["fc"].T).reshape(3, -1, 4),  # along K = 20
    }
    for name in ("w", "fc"):
        nonzero = np.count_nonzero(groups[name], axis=-1)
        assert (nonzero == 2).all(), name
    assert np.array_equal(w["mm"], weights(parent)["mm"])  # K=3: left dense
    # Along the wrong axis the 2:4 pattern does not hold, so the axis really follows transB.
    wrong = (w["fc"].T if trans_b else w["fc"]).reshape(-1)[: 3 * 20 // 4 * 4].reshape(-1, 4)
    assert not (np.count_nonzero(wrong, axis=-1) <= 2).all()
    onnx.checker.check_model(child.model)
    x = np.random.default_rng(0).normal(size=(4, 2, 1, 8)).astype(np.float32)
    assert predict(child, x).shape == (4, 8)


def test_nm_on_reference_and_tiny_layers_left_alone(reference, caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger="edge"):
        child = PruneNM()(reference)
    rows = {r["name"]: r for r in sparsity_report(child.model)}
    assert rows["sub_band.weight"]["zeros"] == 0
    assert rows["channel.weight"]["zeros"] == 0  # 9 inputs per filter: not a multiple of 4
    assert rows["time2.weight"]["sparsity"] == 0.5 and rows["fc.weight"]["sparsity"] == 0.5
    assert "sub_band.weight' has 3 elements" in caplog.text
    assert "not a multiple of 4" in caplog.text
    before = weights(reference)["sub_band.weight"]
    assert np.array_equal(weights(child)["sub_band.weight"], before)


def test_refusals(reference) -> None:
    with pytest.raises(PassError, match="'sparsity' parameter of prune-magnitude must be a float in \\[0, 1\\); got 1.5"):
        PruneMagnitude(sparsity=1.5)
    with pytest.raises(PassError, match="'scope' parameter .* got 'net'"):
        PruneMagnitude(scope="net")
    with pytest.raises(PassError, match="0 < n < m; got n=4, m=4"):
        PruneNM(n=4, m=4)
    with pytest.raises(PassError, match="no node named 'conv9' to exclude"):
        PruneMagnitude(exclude=["conv9"])(reference)
    parent = Artifact.from_model(tiny_conv_model(ir_version=10))
    x = np.random.default_rng(0).normal(size=(16, 2, 1, 8)).astype(np.float32)
    int8 = QuantizeInt8()(parent, x)
    with pytest.raises(PassError, match="works on float models; node .* already quantized"):
        PruneMagnitude()(int8)
    with pytest.raises(PassError, match="works on float models"):
        PruneNM()(int8)


def test_excluded_node_stays_dense(reference) -> None:
    child = PruneMagnitude(sparsity=0.5, exclude=["/fc/Gemm"])(reference)
    rows = {r["name"]: r for r in sparsity_report(child.model)}
    assert rows["fc.weight"]["zeros"] == 0 and rows["time2.weight"]["sparsity"] == 0.5

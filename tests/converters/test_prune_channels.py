from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.prune_channels import PruneChannels
from edge.artifact import Artifact
from edge.errors import PassError
from edge.evaluate import predict
from edge.summary import summarize

TIME_CONVS = ["/time1/Conv", "/time2/Conv"]


def two_conv_model(trans_b: int = 1, zero_a: tuple[int, ...] = (), zero_b: tuple[int, ...] = (),
                   group_b: int = 1) -> onnx.ModelProto:
    """(N, 2, 2, 8) -> Conv a(6, 1x3) -> Relu -> Conv b(6, 1x3, pads) -> Identity -> Flatten -> Gemm(72 -> 4).

    Filters listed in ``zero_a`` / ``zero_b`` (weights and bias) are all zeros.
    """
    rng = np.random.default_rng(2)
    wa = rng.normal(size=(6, 2, 1, 3)).astype(np.float32)
    ba = rng.normal(size=6).astype(np.float32)
    wb = rng.normal(size=(6, 6 // group_b, 1, 3)).astype(np.float32)
    bb = rng.normal(size=6).astype(np.float32)
    wa[list(zero_a)] = 0
    ba[list(zero_a)] = 0
    wb[list(zero_b)] = 0
    bb[list(zero_b)] = 0
    fc = rng.normal(size=(4, 72) if trans_b else (72, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="a"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "wb", "bb"], ["b"], name="b", pads=[0, 1, 0, 1], group=group_b),
        helper.make_node("Identity", ["b"], ["i"], name="identity"),
        helper.make_node("Flatten", ["i"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], name="fc", transB=trans_b),
    ]
    initializers = [numpy_helper.from_array(v, n) for n, v in
                    [("wa", wa), ("ba", ba), ("wb", wb), ("bb", bb), ("fc", fc), ("fc_b", np.ones(4, np.float32))]]
    graph = helper.make_graph(
        nodes, "two-conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("trans_b", [0, 1])
def test_removing_zero_filters_keeps_outputs(trans_b) -> None:
    """Zero filters at scattered positions: any slip in the rewiring (C x H x W order, transB) shows."""
    parent = Artifact.from_model(two_conv_model(trans_b, zero_a=(1, 3, 4), zero_b=(0, 2, 5)))
    child = PruneChannels(ratio=0.5, nodes=["a", "b"])(parent)
    w = weights(child.model)
    assert w["wa"].shape == (3, 2, 1, 3) and w["ba"].shape == (3,)
    assert w["wb"].shape == (3, 3, 1, 3) and w["bb"].shape == (3,)
    assert w["fc"].shape == ((4, 36) if trans_b else (36, 4))
    before = weights(parent.model)
    assert np.array_equal(w["wa"], before["wa"][[0, 2, 5]])
    assert np.array_equal(w["wb"], before["wb"][[1, 3, 4]][:, [0, 2, 5]])
    assert Counter(n.op_type for n in child.model.graph.node) == Counter(n.op_type for n in parent.model.graph.node)
    onnx.checker.check_model(child.model, full_check=True)
    x = np.random.default_rng(0).normal(size=(16, 2, 2, 8)).astype(np.float32)
    np.testing.assert_allclose(predict(child, x), predict(parent, x), rtol=0, atol=1e-5)
    # Each conv: out * in * kernel * output positions (2 x 6); the Gemm: features * 4.
    assert summarize(child.model).macs_by_op == {"a": 3 * 2 * 3 * 12, "b": 3 * 3 * 3 * 12, "fc": 36 * 4}
    assert summarize(parent.model).macs == 6 * 2 * 3 * 12 + 6 * 6 * 3 * 12 + 72 * 4


def test_reference_time_convs_halved(reference) -> None:
    child = PruneChannels(ratio=0.5, nodes=TIME_CONVS)(reference)
    w = weights(child.model)
    assert w["time1.weight"].shape == (60, 120, 1, 2) and w["time1.bias"].shape == (60,)
    assert w["time2.weight"].shape == (60, 60, 1, 10) and w["time2.bias"].shape == (60,)
    assert w["fc.weight"].shape == (40, 3000) and w["channel.weight"].shape == (120, 1, 9, 1)
    onnx.checker.check_model(child.model, full_check=True)
    assert Counter(n.op_type for n in child.model.graph.node) == Counter(n.op_type for n in reference.model.graph.node)
    # By hand, batch 1, 50 output positions after the stride-2 time1:
    # sub_band 3*900 + channel 120*9*100 + time1 60*120*2*50 + time2 60*60*10*50 + fc 3000*40.
    s = summarize(child.model)
    assert s.macs_by_op["/time1/Conv"] == 720_000 and s.macs_by_op["/time2/Conv"] == 1_800_000
    assert s.macs_by_op["/fc/Gemm"] == 120_000
    assert s.macs == 2_700 + 108_000 + 720_000 + 1_800_000 + 120_000
    assert summarize(reference.model).macs - s.macs == 6_240_000
    assert child.meta.provenance[-1].name == "prune-channels"
    assert child.meta.provenance[-1].params == {"ratio": 0.5, "nodes": TIME_CONVS, "criterion": "l1"}
    x = np.random.default_rng(0).normal(size=(4, 3, 9, 100)).astype(np.float32)
    assert predict(child, x).shape == (4, 40)


def test_reference_rewiring_exact_with_zero_filters(reference) -> None:
    """The real graph (stride, SAME_UPPER, Flatten -> Gemm transB=1) with half its time filters zeroed."""
    model = onnx.ModelProto()
    model.CopyFrom(reference.model)
    init = {t.name: t for t in model.graph.initializer}
    rng = np.random.default_rng(3)
    for conv in ("time1", "time2"):
        dead = rng.permutation(120)[:60]
        for suffix in ("weight", "bias"):
            values = numpy_helper.to_array(init[f"{conv}.{suffix}"]).copy()
            values[dead] = 0
            init[f"{conv}.{suffix}"].CopyFrom(numpy_helper.from_array(values, f"{conv}.{suffix}"))
    parent = Artifact(model, reference.meta)
    child = PruneChannels(ratio=0.5, nodes=TIME_CONVS)(parent)
    x = np.random.default_rng(0).normal(size=(16, 3, 9, 100)).astype(np.float32)
    np.testing.assert_allclose(predict(child, x), predict(parent, x), rtol=0, atol=1e-5)


def test_parent_is_untouched(reference) -> None:
    before = reference.sha256
    PruneChannels(ratio=0.5, nodes=TIME_CONVS)(reference)
    assert reference.sha256 == before


def add_model() -> onnx.ModelProto:
    """Conv c feeds an Add together with the input: a residual join this pass cannot rewire."""
    w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="c"), helper.make_node("Add", ["c", "x"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 1, 4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_refusals(reference) -> None:
    with pytest.raises(PassError, match="'ratio' parameter of prune-channels must be a float in \\(0, 1\\); got 1.0"):
        PruneChannels(ratio=1.0, nodes=["a"])
    with pytest.raises(PassError, match="'criterion' parameter .* got 'l0'"):
        PruneChannels(nodes=["a"], criterion="l0")
    with pytest.raises(PassError, match="'nodes' parameter .* at least one Conv"):
        PruneChannels()
    with pytest.raises(PassError, match="no node named '/time3/Conv'"):
        PruneChannels(nodes=["/time3/Conv"])(reference)
    with pytest.raises(PassError, match="node '/fc/Gemm' is a Gemm; only Conv filters"):
        PruneChannels(nodes=["/fc/Gemm"])(reference)
    with pytest.raises(PassError, match="node '/sub_band/Conv' has 1 filters; ratio 0.5 would remove 0"):
        PruneChannels(nodes=["/sub_band/Conv"])(reference)
    grouped = Artifact.from_model(two_conv_model(group_b=2))
    with pytest.raises(PassError, match="node 'a' feeds grouped Conv 'b'"):
        PruneChannels(nodes=["a"])(grouped)
    with pytest.raises(PassError, match="node 'b' is a grouped Conv \\(group=2\\)"):
        PruneChannels(nodes=["b"])(grouped)
    with pytest.raises(PassError, match="node 'c' feeds Add 'add' \\(input 0\\), which this pass cannot rewire"):
        PruneChannels(nodes=["c"])(Artifact.from_model(add_model()))


def test_finetune_keeps_pruned_widths_and_trains(reference) -> None:
    pytest.importorskip("torch")
    from converters.prune_channels import finetune_pruned_ssvep
    from edge.data.registry import load_dataset

    pruned = PruneChannels(ratio=0.5, nodes=TIME_CONVS)(reference)
    data = "synthetic-ssvep:subjects=1,seed=0,blocks=2"
    train = load_dataset(data, reference.meta)
    before = float(np.mean(predict(pruned, train.x).argmax(1) == train.y))
    tuned = finetune_pruned_ssvep(pruned, data, epochs=3, lr=1e-3, threads=1)
    w = weights(tuned.model)
    assert w["time1.weight"].shape == (60, 120, 1, 2) and w["time2.weight"].shape == (60, 60, 1, 10)
    assert w["fc.weight"].shape == (40, 3000)
    assert [n.name for n in tuned.model.graph.node] == [n.name for n in reference.model.graph.node]
    assert tuned.meta.provenance[-1].name == "finetune-ssvep" and tuned.meta.provenance[-2].name == "prune-channels"
    assert not np.array_equal(w["time2.weight"], weights(pruned.model)["time2.weight"])
    assert float(np.mean(predict(tuned, train.x).argmax(1) == train.y)) > before  # it learned its data


def test_finetune_refuses_other_graphs() -> None:
    pytest.importorskip("torch")
    from converters.prune_channels import finetune_pruned_ssvep

    with pytest.raises(PassError, match="fine-tunes SSVEP networks; this artifact's family is 'unknown'"):
        finetune_pruned_ssvep(Artifact.from_model(two_conv_model()))


def depthwise_model(zero: tuple[int, ...]) -> onnx.ModelProto:
    """EEGNet's shape in small: Conv(4) -> BatchNorm -> depthwise Conv(group 4, 2 filters each) -> Elu ->
    AveragePool -> depthwise Conv(group 8) -> Conv(8 -> 3) -> Flatten -> Gemm. Filters in ``zero`` of the
    first Conv, and every channel they feed, are zeros (the BatchNorm passes them on as zeros)."""
    rng = np.random.default_rng(4)
    values = {
        "w1": rng.normal(size=(4, 1, 1, 5)), "b1": rng.normal(size=4),
        "scale": rng.uniform(0.5, 2, 4), "shift": rng.normal(size=4), "mean": rng.normal(size=4),
        "var": rng.uniform(0.5, 2, 4), "w2": rng.normal(size=(8, 1, 2, 1)), "b2": rng.normal(size=8),
        "w3": rng.normal(size=(8, 1, 1, 3)), "w4": rng.normal(size=(3, 8, 1, 1)), "fc": rng.normal(size=(2, 3 * 4)),
    }
    values = {k: v.astype(np.float32) for k, v in values.items()}
    for c in zero:
        values["w1"][c] = values["b1"][c] = 0
        values["shift"][c], values["mean"][c] = 0, 0
        values["w2"][2 * c : 2 * c + 2] = values["b2"][2 * c : 2 * c + 2] = 0
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="temporal", pads=[0, 2, 0, 2]),
        helper.make_node("BatchNormalization", ["c1", "scale", "shift", "mean", "var"], ["n1"], name="bn"),
        helper.make_node("Conv", ["n1", "w2", "b2"], ["c2"], name="spatial", group=4),
        helper.make_node("Elu", ["c2"], ["e"], name="elu"),
        helper.make_node("AveragePool", ["e"], ["p"], name="pool", kernel_shape=[1, 2], strides=[1, 2]),
        helper.make_node("Conv", ["p", "w3"], ["c3"], name="depth", group=8, pads=[0, 1, 0, 1]),
        helper.make_node("Conv", ["c3", "w4"], ["c4"], name="point"),
        helper.make_node("Flatten", ["c4"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "depthwise",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(v, k) for k, v in values.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def test_depthwise_groups_follow_their_input_channel() -> None:
    parent = Artifact.from_model(depthwise_model(zero=(0, 2)))
    child = PruneChannels(ratio=0.5, nodes=["temporal"])(parent)
    w, before = weights(child.model), weights(parent.model)
    assert w["w1"].shape == (2, 1, 1, 5) and w["scale"].shape == w["var"].shape == (2,)
    assert np.array_equal(w["w2"], before["w2"][[2, 3, 6, 7]]) and np.array_equal(w["b2"], before["b2"][[2, 3, 6, 7]])
    assert np.array_equal(w["w3"], before["w3"][[2, 3, 6, 7]])
    assert np.array_equal(w["w4"], before["w4"][:, [2, 3, 6, 7]])
    groups = {n.name: next(a.i for a in n.attribute if a.name == "group") for n in child.model.graph.node
              if any(a.name == "group" for a in n.attribute)}
    assert groups == {"spatial": 2, "depth": 4}
    x = np.random.default_rng(0).normal(size=(16, 1, 2, 8)).astype(np.float32)
    np.testing.assert_allclose(predict(child, x), predict(parent, x), rtol=0, atol=1e-5)
    assert summarize(child.model).macs < 0.6 * summarize(parent.model).macs


def test_eegnet_temporal_and_separable_filters_can_go() -> None:
    from edge import read_artifact, zoo_path

    eegnet = read_artifact(zoo_path("eegnet-mmi-s001"))
    child = PruneChannels(ratio=0.5, nodes=["/temporal/Conv", "/separable_point/Conv"])(eegnet)
    shapes = {t.name: tuple(t.dims) for t in child.model.graph.initializer}
    weight = {n.name: shapes[n.input[1]] for n in child.model.graph.node if n.op_type == "Conv"}
    assert weight == {"/temporal/Conv": (4, 1, 1, 80), "/spatial/Conv": (8, 1, 21, 1),
                      "/separable_depth/Conv": (8, 1, 1, 16), "/separable_point/Conv": (8, 8, 1, 1)}
    x = np.random.default_rng(0).normal(size=(2, *eegnet.meta.inputs[0].shape[1:])).astype(np.float32)
    assert predict(child, x).shape == (2, 2)
    assert summarize(child.model).macs < 0.55 * summarize(eegnet.model).macs

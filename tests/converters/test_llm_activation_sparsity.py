"""Training-free activation sparsity (TEAL, WINA, CHESS) on the tiny char LLaMA."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import tiny_conv_model
from onnx import numpy_helper

from converters.llm_activation_sparsity import SparsifyActivations, measure_activation_sparsity
from edge.artifact import Artifact
from edge.errors import PassError
from edge.families.llm.calibration import capture, projection_nodes
from edge.families.llm.runner import LanguageModel, perplexity

SPARSITIES = (0.25, 0.7)


@pytest.fixture(scope="module")
def children(tiny_llm, tiny_llm_windows) -> dict[tuple[str, float], Artifact]:
    """Every method at 25 % and 70 %, and TEAL at 0 %."""
    calibration, _ = tiny_llm_windows
    out = {("teal", 0.0): SparsifyActivations("teal", 0.0)(tiny_llm, calibration)}
    for method in ("teal", "wina", "chess"):
        for s in SPARSITIES:
            out[(method, s)] = SparsifyActivations(method, s)(tiny_llm, calibration)
    return out


@pytest.fixture(scope="module")
def ppl(children, tiny_llm, tiny_llm_windows) -> dict[object, float]:
    _, evaluation = tiny_llm_windows
    result = {"dense": perplexity(LanguageModel(tiny_llm), evaluation)["perplexity"]}
    for key, child in children.items():
        result[key] = perplexity(LanguageModel(child), evaluation)["perplexity"]
    return result


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


@pytest.mark.parametrize("method", ["teal", "wina"])
def test_each_tensor_reaches_the_target_on_calibration_and_held_out_text(children, tiny_llm_windows, method):
    _, evaluation = tiny_llm_windows
    for s in SPARSITIES:
        params = children[(method, s)].meta.provenance[-1].params
        per_tensor = params["calibration_sparsity_per_tensor"]
        assert len(per_tensor) == 8  # 2 layers x (qkv input, o input, gate/up input, down input)
        assert all(abs(v - s) < 0.02 for v in per_tensor.values()), per_tensor
        assert abs(params["calibration_sparsity"] - s) < 0.02
        # every projection reads its input through a sparsifier: ~s of all weight rows skippable
        assert abs(params["weight_reads_saved"] - s) < 0.02
        held_out = measure_activation_sparsity(children[(method, s)], evaluation)
        assert all(abs(v - s) < 0.05 for v in held_out["per_tensor"].values()), held_out["per_tensor"]


def test_zero_sparsity_leaves_the_logits_unchanged(children, tiny_llm, tiny_llm_windows):
    _, evaluation = tiny_llm_windows
    dense, _ = LanguageModel(tiny_llm).forward(evaluation[:8])
    sparse, _ = LanguageModel(children[("teal", 0.0)]).forward(evaluation[:8])
    np.testing.assert_allclose(sparse, dense, atol=1e-6)
    assert children[("teal", 0.0)].meta.provenance[-1].params["calibration_sparsity"] == 0.0


def test_perplexity_rises_with_sparsity_and_chess_degrades_least(ppl):
    assert all(np.isfinite(v) for v in ppl.values())
    assert abs(ppl[("teal", 0.0)] - ppl["dense"]) < 1e-6 * ppl["dense"]
    for method in ("teal", "wina", "chess"):
        low, high = ppl[(method, 0.25)], ppl[(method, 0.7)]
        assert ppl["dense"] * 0.995 < low < high, (method, low, high)
        assert low < ppl["dense"] * 1.03  # 25 % is nearly free
    # CHESS thresholds fewer tensors, with importance weighting: the smallest loss at 70 %
    assert ppl[("chess", 0.7)] < min(ppl[("teal", 0.7)], ppl[("wina", 0.7)])


def test_teal_graph_has_one_sparsifier_per_shared_input(children, tiny_llm):
    model = children[("teal", 0.7)].model
    nodes = {n.name: n for n in model.graph.node}
    projections = projection_nodes(model)
    for i in range(2):
        for site, fed in [("attn/q_proj", ("q_proj", "k_proj", "v_proj")), ("attn/o_proj", ("o_proj",)),
                          ("mlp/gate_proj", ("gate_proj", "up_proj")), ("mlp/down_proj", ("down_proj",))]:
            prefix = f"/model/layers.{i}/{site}/sparsify"
            assert [nodes[f"{prefix}/{op}"].op_type for op in ("Abs", "Less", "Where")] == ["Abs", "Less", "Where"]
            assert _initializer(model, f"{prefix}/threshold").shape == ()  # one scalar per tensor
            for p in fed:
                assert projections[(i, p)].input[0] == nodes[f"{prefix}/Where"].output[0]
    assert not any("k_proj/sparsify" in n or "up_proj/sparsify" in n for n in nodes)
    onnx.checker.check_model(model)
    # the input artifact is untouched
    assert not any("/sparsify/" in n.name for n in tiny_llm.model.graph.node)
    assert len(tiny_llm.meta.provenance) == len(children[("teal", 0.7)].meta.provenance) - 1


def test_wina_thresholds_are_per_channel_and_pick_other_entries_than_teal(children, tiny_llm_windows):
    calibration, _ = tiny_llm_windows
    wina, teal = children[("wina", 0.7)].model, children[("teal", 0.7)].model
    weights = {t.name: numpy_helper.to_array(t) for t in wina.graph.initializer}
    threshold = weights["/model/layers.0/attn/q_proj/sparsify/threshold"]
    assert threshold.shape == (64,)
    norms = np.sqrt(sum((weights[f"model.layers.0.attn.{p}.weight"] ** 2).sum(axis=1) for p in ("q_proj", "k_proj", "v_proj")))
    scaled = threshold * norms  # a single threshold on |x| * ||W_T[i, :]|| (qkv rows concatenated)
    np.testing.assert_allclose(scaled, scaled[0], rtol=1e-5)
    assert weights["/model/layers.0/mlp/down_proj/sparsify/threshold"].shape == (192,)
    name = "/model/layers.0/attn/q_proj/sparsify/Where/output_0"  # same input in both models: layer 0 sees no zeros before
    zw = capture(wina, calibration[:8], [name])[name] == 0
    zt = capture(teal, calibration[:8], [name])[name] == 0
    assert abs(zw.mean() - zt.mean()) < 0.03
    assert 0.01 < np.mean(zw != zt) < 0.5


def test_chess_keeps_k_v_dense_and_zeroes_the_gate_activation_per_channel(children, tiny_llm, tiny_llm_windows):
    calibration, _ = tiny_llm_windows
    child = children[("chess", 0.7)]
    model = child.model
    nodes = {n.name: n for n in model.graph.node}
    projections = projection_nodes(model)
    for i in range(2):
        normed = nodes[f"/model/layers.{i}/input_layernorm/Mul"].output[0]
        assert projections[(i, "k_proj")].input[0] == normed and projections[(i, "v_proj")].input[0] == normed
        assert projections[(i, "q_proj")].input[0] == f"/model/layers.{i}/attn/q_proj/sparsify/Where/output_0"
        assert projections[(i, "o_proj")].input[0] == f"/model/layers.{i}/attn/o_proj/sparsify/Where/output_0"
        assert projections[(i, "gate_proj")].input[0] == projections[(i, "up_proj")].input[0]  # MLP input dense
        act = f"/model/layers.{i}/mlp/act/sparsify/Where/output_0"
        assert act in nodes[f"/model/layers.{i}/mlp/act_up/Mul"].input
        assert _initializer(model, f"/model/layers.{i}/mlp/act/sparsify/threshold").shape == (192,)
    # k and v read the dense input: layer 0's cache (same block input) equals the dense model's
    dense_cache = LanguageModel(tiny_llm).forward(calibration[:4])[1]
    sparse_cache = LanguageModel(child).forward(calibration[:4])[1]
    for name in ("past_key_values.0.key", "past_key_values.0.value"):
        np.testing.assert_allclose(sparse_cache[name], dense_cache[name], atol=1e-6)
    # per-channel: zero fractions differ across channels, ~70 % overall
    a = capture(model, calibration[:8], ["/model/layers.0/mlp/act/sparsify/Where/output_0"])
    per_channel = (next(iter(a.values())) == 0).mean(axis=0)
    assert abs(per_channel.mean() - 0.7) < 0.05 and per_channel.std() > 0.05
    params = child.meta.provenance[-1].params
    assert params["method"] == "chess" and params["sparsity"] == 0.7
    assert 0.3 < params["weight_reads_saved"] < 0.7  # k, v and gate stay dense


def test_bad_parameters_and_models_raise_pass_errors(tiny_llm, tiny_llm_windows, children):
    calibration, _ = tiny_llm_windows
    with pytest.raises(PassError, match="method"):
        SparsifyActivations(method="cats")
    for bad in (1.0, -0.1):
        with pytest.raises(PassError, match="sparsity"):
            SparsifyActivations(sparsity=bad)
    with pytest.raises(PassError, match="calibration_windows"):
        SparsifyActivations(calibration_windows=0)
    with pytest.raises(PassError, match="calib"):
        SparsifyActivations()(tiny_llm, None)
    with pytest.raises(PassError, match="already"):
        SparsifyActivations()(children[("teal", 0.25)], calibration)
    with pytest.raises(PassError, match="q_proj"):
        SparsifyActivations()(Artifact.from_model(tiny_conv_model()), calibration)
    with pytest.raises(PassError, match="no sparsifier"):
        measure_activation_sparsity(tiny_llm, calibration[:2])

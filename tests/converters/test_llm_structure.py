from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from converters.llm_structure import DropModules, PruneFFN, PruneHeads, module_similarities
from edge.artifact import Artifact
from edge.errors import PassError
from edge.families.llm.config import past_names, present_names, weight_name
from edge.families.llm.runner import CacheLayout, LanguageModel, perplexity

MODULES = ["attn.0", "mlp.0", "attn.1", "mlp.1"]


def weights(artifact: Artifact) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in artifact.model.graph.initializer}


def with_weight(artifact: Artifact, name: str, values: np.ndarray) -> Artifact:
    """A copy of ``artifact`` with one initializer replaced (the reference models below)."""
    model = onnx.ModelProto()
    model.CopyFrom(artifact.model)
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float32), name))
    return artifact.derive(model, "test-edit", {"weight": name})


def logits(artifact: Artifact, windows: np.ndarray) -> np.ndarray:
    return LanguageModel(artifact).forward(windows[:4])[0]


def assert_decode_matches_full(artifact: Artifact, windows: np.ndarray) -> None:
    """Prompt then single-token decode steps with the KV cache give the full-sequence logits."""
    lm = LanguageModel(artifact)
    ids = windows[:2, :24]
    full, _ = lm.forward(ids)
    prompt, past = lm.forward(ids[:, :20])
    parts = [prompt]
    for k in range(20, 24):
        step, past = lm.forward(ids[:, k : k + 1], past)
        parts.append(step)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=1e-4, rtol=0)


def io_names(artifact: Artifact) -> tuple[set[str], set[str]]:
    graph = artifact.model.graph
    return {i.name for i in graph.input}, {o.name for o in graph.output}


def cache_heads(artifact: Artifact, layer: int) -> list[int]:
    values = {v.name: v for v in list(artifact.model.graph.input) + list(artifact.model.graph.output)}
    return [values[n].type.tensor_type.shape.dim[1].dim_value for n in (*past_names(layer), *present_names(layer))]


@pytest.fixture(scope="module")
def calibration(tiny_llm_windows) -> np.ndarray:
    return tiny_llm_windows[0][:8]


@pytest.fixture(scope="module")
def similarities(tiny_llm, calibration) -> dict[str, float]:
    return module_similarities(tiny_llm, calibration)


def test_similarities_cover_every_module(similarities):
    assert list(similarities) == MODULES
    assert all(-1.0 <= s <= 1.0 for s in similarities.values())
    # A trained module changes the stream, but never turns it around.
    assert all(0.0 < s < 1.0 for s in similarities.values())


def test_drop_top_attention_equals_zeroed_o_proj(tiny_llm, tiny_llm_windows, calibration, similarities):
    before = tiny_llm.sha256
    child = DropModules(target="attn", count=1)(tiny_llm, calibration)
    assert tiny_llm.sha256 == before
    top = max(("attn.0", "attn.1"), key=similarities.get)
    layer = int(top.split(".")[1])
    record = child.meta.provenance[-1]
    assert record.name == "drop-modules" and record.params["dropped"] == [top]
    assert record.params["similarities"] == pytest.approx(similarities)

    # Exactly this layer's cache leaves the I/O; the other layer keeps its own.
    old_in, old_out = io_names(tiny_llm)
    new_in, new_out = io_names(child)
    assert old_in - new_in == set(past_names(layer)) and not new_in - old_in
    assert old_out - new_out == set(present_names(layer)) and not new_out - old_out
    assert CacheLayout.from_model(child.model).layers == [1 - layer]
    names = {n.name for n in child.model.graph.node}
    assert not any(n.startswith(f"/model/layers.{layer}/attn/") for n in names)
    assert f"/model/layers.{layer}/mlp/down_proj/MatMul" in names
    kept = weights(child)
    assert not any(weight_name(layer, p) in kept for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert f"model.layers.{layer}.input_layernorm.weight" not in kept

    # An identity module is a module with zero contribution.
    w_o = weights(tiny_llm)[weight_name(layer, "o_proj")]
    reference = with_weight(tiny_llm, weight_name(layer, "o_proj"), np.zeros_like(w_o))
    eval_windows = tiny_llm_windows[1]
    np.testing.assert_allclose(logits(child, eval_windows), logits(reference, eval_windows), atol=1e-5, rtol=0)
    assert_decode_matches_full(child, eval_windows)


def test_drop_named_mlp_equals_zeroed_down_proj(tiny_llm, tiny_llm_windows):
    child = DropModules(modules=["mlp.0"])(tiny_llm, None)
    assert child.meta.provenance[-1].params["similarities"] is None
    assert io_names(child) == io_names(tiny_llm)  # an MLP holds no cache
    kept = weights(child)
    assert not any(weight_name(0, p) in kept for p in ("gate_proj", "up_proj", "down_proj"))
    w_down = weights(tiny_llm)[weight_name(0, "down_proj")]
    reference = with_weight(tiny_llm, weight_name(0, "down_proj"), np.zeros_like(w_down))
    eval_windows = tiny_llm_windows[1]
    np.testing.assert_allclose(logits(child, eval_windows), logits(reference, eval_windows), atol=1e-5, rtol=0)
    assert_decode_matches_full(child, eval_windows)


def test_iterative_joint_drop_and_all_attention(tiny_llm, tiny_llm_windows, calibration):
    child = DropModules(target="all", count=2, iterative=True)(tiny_llm, calibration)
    params = child.meta.provenance[-1].params
    assert len(params["dropped"]) == 2 and len(params["iterative_similarities"]) == 2
    # Step 2 ranks only what is left, on the model without the first module.
    assert params["dropped"][0] not in params["iterative_similarities"][1]
    assert params["dropped"][1] == max(params["iterative_similarities"][1], key=params["iterative_similarities"][1].get)
    assert_decode_matches_full(child, tiny_llm_windows[1])
    # With every attention module gone there is no cache left at all, and the runner still works.
    bare = DropModules(modules=["attn.0", "attn.1"])(tiny_llm, None)
    assert CacheLayout.from_model(bare.model).layers == []
    assert np.isfinite(logits(bare, tiny_llm_windows[1])).all()


def test_prune_ffn_ratio_zero_is_identity(tiny_llm, tiny_llm_windows, calibration):
    child = PruneFFN(ratio=0.0)(tiny_llm, calibration)
    assert weights(child).keys() == weights(tiny_llm).keys()
    eval_windows = tiny_llm_windows[1]
    np.testing.assert_array_equal(logits(child, eval_windows), logits(tiny_llm, eval_windows))


@pytest.mark.parametrize("score", ["wanda", "magnitude"])
def test_prune_ffn_removes_dead_neurons_first(tiny_llm, tiny_llm_windows, calibration, score):
    rng = np.random.default_rng(0)
    dead = np.sort(rng.choice(192, size=48, replace=False))
    w_down = weights(tiny_llm)[weight_name(0, "down_proj")].copy()
    w_down[dead] = 0
    model = with_weight(tiny_llm, weight_name(0, "down_proj"), w_down)
    child = PruneFFN(ratio=0.25, score=score, layers=[0])(model, calibration)
    alive = np.setdiff1d(np.arange(192), dead)
    old, new = weights(model), weights(child)
    np.testing.assert_array_equal(new[weight_name(0, "gate_proj")], old[weight_name(0, "gate_proj")][:, alive])
    np.testing.assert_array_equal(new[weight_name(0, "up_proj")], old[weight_name(0, "up_proj")][:, alive])
    np.testing.assert_array_equal(new[weight_name(0, "down_proj")], old[weight_name(0, "down_proj")][alive])
    assert new[weight_name(1, "down_proj")].shape == (192, 64)  # layer 1 was not asked for
    eval_windows = tiny_llm_windows[1]
    np.testing.assert_allclose(logits(child, eval_windows), logits(model, eval_windows), atol=1e-5, rtol=0)


def test_prune_ffn_shrinks_and_decodes(tiny_llm, tiny_llm_windows, calibration):
    before = tiny_llm.sha256
    child = PruneFFN(ratio=0.5)(tiny_llm, calibration)
    assert tiny_llm.sha256 == before
    new = weights(child)
    for i in range(2):
        assert new[weight_name(i, "gate_proj")].shape == (64, 96)
        assert new[weight_name(i, "up_proj")].shape == (64, 96)
        assert new[weight_name(i, "down_proj")].shape == (96, 64)
    assert child.meta.provenance[-1].params["hidden"] == {"0": [192, 96], "1": [192, 96]}
    assert_decode_matches_full(child, tiny_llm_windows[1])
    # 192 - round(0.3 * 192) = 134 neurons, rounded up to a multiple of 8.
    rounded = PruneFFN(ratio=0.3, score="magnitude")(tiny_llm, None)
    assert weights(rounded)[weight_name(0, "down_proj")].shape == (136, 64)
    assert weights(PruneFFN(ratio=0.3, score="magnitude", multiple=1)(tiny_llm, None))[
        weight_name(0, "down_proj")].shape == (134, 64)


def test_prune_heads_shrinks_projections_and_cache(tiny_llm, tiny_llm_windows, calibration):
    before = tiny_llm.sha256
    child = PruneHeads(ratio=0.5)(tiny_llm, calibration)
    assert tiny_llm.sha256 == before
    old, new = weights(tiny_llm), weights(child)
    for i in range(2):
        assert new[weight_name(i, "q_proj")].shape == (64, 32)  # 2 of 4 query heads of 16
        assert new[weight_name(i, "k_proj")].shape == (64, 16)  # 1 of 2 kv heads
        assert new[weight_name(i, "v_proj")].shape == (64, 16)
        assert new[weight_name(i, "o_proj")].shape == (32, 64)
        assert cache_heads(child, i) == [1, 1, 1, 1]
        assert new[f"/model/layers.{i}/attn/group_shape"].tolist() == [0, 1, -1, 16]
        assert new[f"/model/layers.{i}/attn/merge_shape"].tolist() == [0, 2, -1, 16]
        # The kept group is a whole block of the original: its q heads, k/v head and o_proj rows together.
        kept = [j for j in range(2) if np.array_equal(new[weight_name(i, "k_proj")],
                                                      old[weight_name(i, "k_proj")][:, 16 * j : 16 * j + 16])]
        assert len(kept) == 1
        rows = slice(32 * kept[0], 32 * kept[0] + 32)
        np.testing.assert_array_equal(new[weight_name(i, "q_proj")], old[weight_name(i, "q_proj")][:, rows])
        np.testing.assert_array_equal(new[weight_name(i, "o_proj")], old[weight_name(i, "o_proj")][rows])
    assert child.meta.provenance[-1].params["kv_groups"] == {"0": [2, 1], "1": [2, 1]}
    halved = CacheLayout.from_model(tiny_llm.model).bytes_per_token() // 2
    assert CacheLayout.from_model(child.model).bytes_per_token() == halved
    assert_decode_matches_full(child, tiny_llm_windows[1])


def test_prune_heads_of_a_zeroed_group_keeps_logits(tiny_llm, tiny_llm_windows, calibration):
    # A group whose o_proj rows are zero contributes nothing, so it is the one removed and nothing changes.
    w_o = weights(tiny_llm)[weight_name(1, "o_proj")].copy()
    w_o[32:] = 0
    model = with_weight(tiny_llm, weight_name(1, "o_proj"), w_o)
    for score in ("context", "magnitude"):
        child = PruneHeads(ratio=0.5, layers=[1], score=score)(model, calibration)
        np.testing.assert_array_equal(weights(child)[weight_name(1, "o_proj")], w_o[:32])
        assert cache_heads(child, 0) == [2, 2, 2, 2]
        eval_windows = tiny_llm_windows[1]
        np.testing.assert_allclose(logits(child, eval_windows), logits(model, eval_windows), atol=1e-5, rtol=0)


def test_passes_compose_and_perplexity_stays_sane(tiny_llm, tiny_llm_windows, calibration):
    eval_windows = tiny_llm_windows[1][:16]
    base = perplexity(LanguageModel(tiny_llm), eval_windows)["perplexity"]
    ffn = PruneFFN(ratio=0.25)(tiny_llm, calibration)
    composed = PruneHeads(ratio=0.5, score="magnitude")(DropModules(modules=["attn.0"])(ffn, None), calibration)
    assert [r.name for r in composed.meta.provenance[-3:]] == ["prune-ffn", "drop-modules", "prune-heads"]
    assert composed.meta.provenance[-1].params["kv_groups"] == {"1": [2, 1]}  # layer 0 has no attention left
    assert_decode_matches_full(composed, eval_windows)
    # Removing a quarter of the FFN neurons by wanda costs little on a trained model.
    assert perplexity(LanguageModel(ffn), eval_windows)["perplexity"] < 1.2 * base


@pytest.mark.parametrize("make", [
    lambda: DropModules(target="both", count=1),
    lambda: DropModules(),
    lambda: DropModules(count=1, modules=["attn.0"]),
    lambda: DropModules(count=0),
    lambda: DropModules(modules=["attention.0"]),
    lambda: PruneFFN(ratio=1.0),
    lambda: PruneFFN(ratio=-0.1),
    lambda: PruneFFN(score="random"),
    lambda: PruneHeads(ratio=1.0),
    lambda: PruneHeads(score="entropy"),
])
def test_bad_parameters(make):
    with pytest.raises(PassError):
        make()


def test_bad_parameters_for_this_model(tiny_llm, calibration):
    with pytest.raises(PassError, match="more than the 2 attn modules"):
        DropModules(target="attn", count=3)(tiny_llm, calibration)
    with pytest.raises(PassError, match="'attn.5' is not in the model"):
        DropModules(modules=["attn.5"])(tiny_llm, None)
    with pytest.raises(PassError, match="calibration"):
        DropModules(count=1)(tiny_llm, None)
    with pytest.raises(PassError, match="layer 4"):
        PruneFFN(layers=[4])(tiny_llm, calibration)
    with pytest.raises(PassError, match="calibration"):
        PruneHeads(ratio=0.5)(tiny_llm, None)
    dropped = DropModules(modules=["attn.1"])(tiny_llm, None)
    with pytest.raises(PassError, match="'attn.1' is not in the model"):
        DropModules(modules=["attn.1"])(dropped, None)
    with pytest.raises(PassError, match="no attention"):
        PruneHeads(ratio=0.5, layers=[1])(dropped, calibration)

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from conftest import tiny_conv_model
from onnx import helper, numpy_helper

from converters.llm_prune import (
    PruneLLM,
    check_nm,
    parse_nm,
    projection_sparsity,
    prune_magnitude,
    prune_sparsegpt,
    prune_wanda,
    sparsegpt_hessian,
)
from edge.artifact import Artifact
from edge.errors import PassError
from edge.families.llm.calibration import capture, projection_nodes
from edge.families.llm.runner import LanguageModel, perplexity

METHODS = ("magnitude", "wanda", "sparsegpt")


def weights(artifact: Artifact) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in artifact.model.graph.initializer}


def projection_weights(artifact: Artifact) -> dict[tuple[int, str], np.ndarray]:
    """(layer, projection) -> W_T (K, N)."""
    values = weights(artifact)
    return {key: values[node.input[1]] for key, node in projection_nodes(artifact.model).items()}


def ppl(artifact: Artifact, windows: np.ndarray) -> float:
    return perplexity(LanguageModel(artifact), windows)["perplexity"]


@pytest.fixture(scope="module")
def pruned(tiny_llm, tiny_llm_windows):
    """pruned(method, nm=None) -> child at 50 % (or N:M), each built once per module."""
    cache: dict[tuple[str, str | None], Artifact] = {}

    def get(method: str, nm: str | None = None) -> Artifact:
        if (method, nm) not in cache:
            cache[(method, nm)] = PruneLLM(method=method, sparsity=0.5, nm=nm)(tiny_llm, tiny_llm_windows[0])
        return cache[(method, nm)]

    return get


# ---- the helpers, on small random matrices ----------------------------------------------------------------------

def test_check_nm_accepts_and_rejects() -> None:
    good = np.arange(1, 33, dtype=np.float32).reshape(8, 4)
    good[[0, 1, 6, 7]] = 0  # two zeros in each group of 4 rows, in every column
    assert check_nm(good, 2, 4)
    assert not check_nm(good, 1, 4)  # 1:4 keeps one of four
    bad = good.copy()
    bad[0, 2] = 1.0
    assert not check_nm(bad, 2, 4)
    assert not check_nm(good[:6], 2, 4)  # K not a multiple of M


def test_nm_keeps_n_of_every_m() -> None:
    assert parse_nm("prune-llm", "2:4") == (2, 4)
    assert parse_nm("prune-llm", "1:4") == (3, 4)  # zeros per group
    w = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    pruned = prune_magnitude(w, 0.5, parse_nm("prune-llm", "1:4"))
    assert check_nm(pruned, 1, 4) and np.count_nonzero(pruned) == 2 * 3


def test_wanda_helper_prunes_per_column_by_activation_norm() -> None:
    weight = np.ones((4, 2), np.float32)
    xnorm = np.array([4.0, 1.0, 3.0, 2.0])  # inputs 1 and 3 are the quietest
    out = prune_wanda(weight, xnorm, 0.5)
    np.testing.assert_array_equal(out[:, 0], [1, 0, 1, 0])
    np.testing.assert_array_equal(out[:, 1], [1, 0, 1, 0])
    # Magnitude alone cannot see the activations: with equal weights it keeps by position.
    assert np.count_nonzero(prune_magnitude(weight, 0.5)) == 4


def test_sparsegpt_helper_beats_magnitude_and_handles_dead_inputs() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 32)) @ rng.normal(size=(32, 32))  # correlated inputs: where OBS updates pay off
    x[:, 5] = 0.0  # a dead input
    weight = rng.normal(size=(32, 16)).astype(np.float32)
    out = prune_sparsegpt(weight, sparsegpt_hessian(x), 0.5, blocksize=8)
    assert np.all(out[5] == 0)
    assert np.count_nonzero(out == 0) == weight.size // 2
    err_sgpt = np.linalg.norm(x @ weight - x @ out)
    err_mag = np.linalg.norm(x @ weight - x @ prune_magnitude(weight, 0.5))
    err_wanda = np.linalg.norm(x @ weight - x @ prune_wanda(weight, np.linalg.norm(x, axis=0), 0.5))
    assert err_sgpt < 0.8 * min(err_mag, err_wanda)
    nm = prune_sparsegpt(weight, sparsegpt_hessian(x), 0.5, nm=(2, 4), blocksize=8)
    assert check_nm(nm, 2, 4)


# ---- the pass on the tiny LLaMA ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_unstructured_half_sparsity_and_nothing_else_touched(tiny_llm, pruned, method) -> None:
    before_sha = tiny_llm.sha256
    before = weights(tiny_llm)
    child = pruned(method)
    after = weights(child)
    assert tiny_llm.sha256 == before_sha  # the input artifact is not mutated
    for (layer, proj), w in projection_weights(child).items():
        dense = projection_weights(tiny_llm)[(layer, proj)]
        if method == "wanda":  # the comparison group is each output column
            assert np.all(np.count_nonzero(w == 0, axis=0) == w.shape[0] // 2), (layer, proj)
        else:
            assert np.count_nonzero(w == 0) == w.size // 2, (layer, proj)
        if method != "sparsegpt":  # no weight update: kept weights are the dense ones
            np.testing.assert_array_equal(w[w != 0], dense[w != 0])
    projection_names = {node.input[1] for node in projection_nodes(tiny_llm.model).values()}
    for name, value in before.items():
        if name not in projection_names:  # embeddings, norms, lm_head, rotary tables
            np.testing.assert_array_equal(after[name], value, err_msg=name)
    record = child.meta.provenance[-1]
    assert record.name == "prune-llm" and record.parent_sha256 == before_sha
    assert record.params["method"] == method and record.params["sparsity"] == 0.5
    assert record.params["measured_sparsity"] == pytest.approx(0.5)
    assert record.params["matrices_pruned"] == 14
    assert projection_sparsity(child.model)["total"] == pytest.approx(0.5)
    onnx.checker.check_model(child.model)


@pytest.mark.parametrize("nm", ["2:4", "4:8"])
@pytest.mark.parametrize("method", METHODS)
def test_nm_pattern_holds_for_every_projection(pruned, method, nm) -> None:
    n, m = map(int, nm.split(":"))
    child = pruned(method, nm)
    for key, w in projection_weights(child).items():
        assert check_nm(w, n, m), key
        assert np.count_nonzero(w == 0) == w.size * n // m, key  # exactly N per group, no extra zeros
    assert child.meta.provenance[-1].params["nm"] == nm
    assert "sparsity" not in child.meta.provenance[-1].params


def test_sparsegpt_reconstructs_block0_better_than_magnitude(tiny_llm, tiny_llm_windows, pruned) -> None:
    # Block 0's inputs (and the dense-block capture its o/down projections see) are the same for every method.
    nodes = {key: n for key, n in projection_nodes(tiny_llm.model).items() if key[0] == 0}
    inputs = capture(tiny_llm, tiny_llm_windows[0], [n.input[0] for n in nodes.values()])
    dense = projection_weights(tiny_llm)
    for nm in (None, "2:4"):
        sgpt, mag = projection_weights(pruned("sparsegpt", nm)), projection_weights(pruned("magnitude", nm))
        for key, node in nodes.items():
            x = inputs[node.input[0]].astype(np.float64)
            err_sgpt = np.linalg.norm(x @ dense[key] - x @ sgpt[key])
            err_mag = np.linalg.norm(x @ dense[key] - x @ mag[key])
            assert err_sgpt < err_mag, (nm, key, err_sgpt, err_mag)


def test_perplexity_after_pruning(tiny_llm, tiny_llm_windows, pruned) -> None:
    eval_windows = tiny_llm_windows[1]
    dense = ppl(tiny_llm, eval_windows)
    table = {(method, nm): ppl(pruned(method, nm), eval_windows) for method in METHODS for nm in (None, "2:4")}
    print(f"\ndense {dense:.3f}")
    for (method, nm), value in table.items():
        print(f"{method:<10} {nm or '50%':<4} {value:.3f}")
    for key, value in table.items():
        assert math.isfinite(value) and value >= 0.99 * dense, key
    assert table[("sparsegpt", "2:4")] <= table[("magnitude", "2:4")]


def test_wanda_is_block_sequential(tiny_llm, tiny_llm_windows, pruned) -> None:
    calib = tiny_llm_windows[0]
    child = pruned("wanda")
    nodes = projection_nodes(tiny_llm.model)
    dense, got = projection_weights(tiny_llm), projection_weights(child)
    # Block 1 statistics from the dense model (one-shot) and from the model with only block 0 pruned (sequential).
    halfway = onnx.ModelProto()
    halfway.CopyFrom(tiny_llm.model)
    for init in halfway.graph.initializer:
        key = next((k for k, n in nodes.items() if n.input[1] == init.name and k[0] == 0), None)
        if key is not None:
            init.CopyFrom(numpy_helper.from_array(got[key], init.name))
    block1 = {key: n for key, n in nodes.items() if key[0] == 1}
    names = [n.input[0] for n in block1.values()]
    one_shot, sequential = capture(tiny_llm, calib, names), capture(halfway, calib, names)
    differs = 0
    for key, node in block1.items():
        norm_seq = np.linalg.norm(sequential[node.input[0]].astype(np.float64), axis=0)
        norm_one = np.linalg.norm(one_shot[node.input[0]].astype(np.float64), axis=0)
        assert not np.allclose(norm_seq, norm_one, rtol=1e-3)  # pruning block 0 moved block 1's statistics
        expected = prune_wanda(dense[key], norm_seq, 0.5)
        np.testing.assert_array_equal(got[key] == 0, expected == 0, err_msg=str(key))
        differs += int(np.count_nonzero((prune_wanda(dense[key], norm_one, 0.5) == 0) != (got[key] == 0)))
    assert differs > 0  # a one-shot Wanda would have chosen other weights in block 1


def test_magnitude_needs_no_calibration(tiny_llm) -> None:
    child = PruneLLM(method="magnitude", nm="2:4")(tiny_llm, None)
    assert projection_sparsity(child.model)["total"] == pytest.approx(0.5)
    assert projection_sparsity(tiny_llm.model)["total"] == 0.0
    assert len(projection_sparsity(tiny_llm.model)) == 15  # 14 projections + total


@pytest.mark.parametrize("kwargs, match", [
    ({"sparsity": 1.5}, "'sparsity' parameter"),
    ({"sparsity": 0.0}, "'sparsity' parameter"),
    ({"nm": "3:2"}, "'nm' parameter"),
    ({"nm": "2-4"}, "'nm' parameter"),
    ({"method": "obs"}, "'method' parameter"),
    ({"nm": "2:4", "blocksize": 6}, "'blocksize' parameter"),
    ({"percdamp": -1.0}, "'percdamp' parameter"),
    ({"calibration_windows": 0}, "'calibration_windows' parameter"),
])
def test_bad_parameters(kwargs, match) -> None:
    with pytest.raises(PassError, match=match):
        PruneLLM(**kwargs)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("calibration", [None, np.zeros((0, 64), np.int64)])
def test_missing_calibration(tiny_llm, method, calibration) -> None:
    with pytest.raises(PassError, match="needs calibration text"):
        PruneLLM(method=method)(tiny_llm, calibration)


def test_refuses_quantized_and_non_llm_models(tiny_llm) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(tiny_llm.model)
    model.graph.node.append(helper.make_node("DequantizeLinear", ["q", "s"], ["dq"], name="/dq"))
    with pytest.raises(PassError, match="already quantized"):
        PruneLLM(method="magnitude")(Artifact(model, tiny_llm.meta), None)
    with pytest.raises(PassError, match="this model has none"):
        PruneLLM(method="magnitude")(Artifact.from_model(tiny_conv_model()), None)

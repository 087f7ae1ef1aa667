"""Range restriction of the MLP activations of the tiny char LLaMA, and what it buys under a weight fault."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import tiny_conv_model
from onnx import numpy_helper

from converters.llm_range_restriction import RestrictRanges, restriction_sites
from edge.artifact import Artifact
from edge.errors import PassError
from edge.families.llm.calibration import capture
from edge.families.llm.runner import LanguageModel, perplexity


@pytest.fixture(scope="module")
def restricted(tiny_llm, tiny_llm_windows) -> Artifact:
    return RestrictRanges()(tiny_llm, tiny_llm_windows[0])


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def _flip(artifact: Artifact, weight: str, index: tuple[int, int], value: float) -> Artifact:
    """A copy with one weight element set to ``value`` (an exponent bit flip makes ~1e30..1e38)."""
    model = onnx.ModelProto()
    model.CopyFrom(artifact.model)
    tensor = next(t for t in model.graph.initializer if t.name == weight)
    values = numpy_helper.to_array(tensor).copy()
    values[index] = value
    tensor.CopyFrom(numpy_helper.from_array(values, weight))
    return artifact.derive(model, "fault", {})


def test_clips_sit_at_the_profiled_bounds(restricted, tiny_llm, tiny_llm_windows):
    model = restricted.model
    clips = [n for n in model.graph.node if n.op_type == "Clip"]
    assert len(clips) == 6  # 2 layers x (gate output, up output, down input)
    sites = restriction_sites(tiny_llm.model)
    profiled = capture(tiny_llm, tiny_llm_windows[0], sites.values())
    bounds = restricted.meta.provenance[-1].params["bounds"]
    nodes = {n.name: n for n in model.graph.node}
    for (layer, label), tensor in sites.items():
        prefix = f"/model/layers.{layer}/mlp/{label}/restrict"
        lo, hi = _initializer(model, f"{prefix}/min"), _initializer(model, f"{prefix}/max")
        assert lo.dtype == np.float32 and lo.shape == () and hi.shape == ()
        assert lo == profiled[tensor].min() and hi == profiled[tensor].max()
        assert bounds[str(layer)][label]["clip"] == [float(lo), float(hi)]
        assert nodes[f"{prefix}/Clip"].input[0] == tensor
        # every former consumer now reads the clipped tensor
        assert not any(tensor in n.input for n in model.graph.node if n.op_type != "Clip")
    onnx.checker.check_model(model)
    assert not any(n.op_type == "Clip" for n in tiny_llm.model.graph.node)  # input untouched


def test_clean_outputs_unchanged(restricted, tiny_llm, tiny_llm_windows):
    calibration, evaluation = tiny_llm_windows
    clean, _ = LanguageModel(tiny_llm).forward(calibration)
    clipped, _ = LanguageModel(restricted).forward(calibration)
    np.testing.assert_allclose(clipped, clean, atol=1e-5)
    dense = perplexity(LanguageModel(tiny_llm), evaluation)["perplexity"]
    assert abs(perplexity(LanguageModel(restricted), evaluation)["perplexity"] - dense) < 0.005 * dense


@pytest.mark.parametrize("weight", ["model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.gate_proj.weight"])
def test_restriction_contains_an_exponent_flip_in_a_gate_weight(restricted, tiny_llm, tiny_llm_windows, weight):
    _, evaluation = tiny_llm_windows
    windows = evaluation[:24]
    clean = perplexity(LanguageModel(tiny_llm), windows)["perplexity"]
    plain = perplexity(LanguageModel(_flip(tiny_llm, weight, (3, 5), 1e30)), windows)["perplexity"]
    safe = perplexity(LanguageModel(_flip(restricted, weight, (3, 5), 1e30)), windows)["perplexity"]
    assert np.isfinite(safe) and abs(safe - clean) < 0.03 * clean
    assert not np.isfinite(plain) or plain - clean > 10 * abs(safe - clean)


def test_margin_and_mlp_down(tiny_llm, tiny_llm_windows):
    calibration = tiny_llm_windows[0][:8]
    child = RestrictRanges(tensors="mlp-down", margin=0.5)(tiny_llm, calibration)
    clips = [n.name for n in child.model.graph.node if n.op_type == "Clip"]
    assert clips == [f"/model/layers.{i}/mlp/act_up/restrict/Clip" for i in range(2)]
    record = child.meta.provenance[-1].params["bounds"]["0"]["act_up"]
    lo, hi = record["profiled"]
    assert record["clip"][0] == pytest.approx(lo - 0.5 * (hi - lo), rel=1e-6)
    assert record["clip"][1] == pytest.approx(hi + 0.5 * (hi - lo), rel=1e-6)


def test_works_after_int4_weight_quantization(tiny_llm, tiny_llm_windows):
    pytest.importorskip("onnx_ir")
    from converters.quantize import QuantizeInt4Weights

    calibration, evaluation = tiny_llm_windows
    quantized = QuantizeInt4Weights()(tiny_llm, calibration)
    assert any(n.op_type == "MatMulNBits" for n in quantized.model.graph.node)
    child = RestrictRanges()(quantized, calibration[:8])
    assert sum(n.op_type == "Clip" for n in child.model.graph.node) == 6
    before = perplexity(LanguageModel(quantized), evaluation[:16])["perplexity"]
    after = perplexity(LanguageModel(child), evaluation[:16])["perplexity"]
    assert abs(after - before) < 0.01 * before


def test_bad_parameters_and_models_raise_pass_errors(tiny_llm, tiny_llm_windows, restricted):
    calibration = tiny_llm_windows[0]
    with pytest.raises(PassError, match="tensors"):
        RestrictRanges(tensors="attn")
    with pytest.raises(PassError, match="margin"):
        RestrictRanges(margin=-0.1)
    with pytest.raises(PassError, match="calibration_windows"):
        RestrictRanges(calibration_windows=0)
    with pytest.raises(PassError, match="calib"):
        RestrictRanges()(tiny_llm, None)
    with pytest.raises(PassError, match="already"):
        RestrictRanges()(restricted, calibration)
    with pytest.raises(PassError, match="gate_proj"):
        RestrictRanges()(Artifact.from_model(tiny_conv_model()), calibration)

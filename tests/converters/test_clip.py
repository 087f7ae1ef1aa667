from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from converters.clip import ClipActivations, ClipActivationsProAct, find_sites
from converters.quantize import QuantizeInt8
from converters.tflite import export_tflite
from edge.data.registry import load_dataset
from edge.errors import PassError
from edge.evaluate import predict


@pytest.fixture(scope="module")
def calibration(reference):
    return load_dataset(reference.meta.extra["calibration_data"], reference.meta)


@pytest.fixture(scope="module")
def heldout(reference):
    return load_dataset("synthetic-ssvep:subjects=31-31,blocks=2,seed=0", reference.meta)


def test_sites_are_every_activation_and_every_unactivated_linear_output(reference) -> None:
    assert find_sites(reference.model) == [("/sub_band/Conv_output_0", False), ("/channel/Conv_output_0", False),
                                           ("/Relu_output_0", True), ("/time2/Conv_output_0", False),
                                           ("logits", False)]


@pytest.mark.parametrize("mode", ["zero", "saturate"])
def test_profiled_bounds_keep_clean_outputs_and_stop_a_corrupted_exponent(reference, calibration, heldout,
                                                                          mode: str) -> None:
    clipped = ClipActivations(mode=mode, search=False)(reference, calibration.x)
    assert [o.name for o in clipped.model.graph.output] == ["logits"]
    np.testing.assert_allclose(predict(clipped, heldout.x), predict(reference, heldout.x), rtol=1e-5, atol=1e-4)
    # bit 30 (the exponent MSB) of one time2 weight: it jumps to ~1e38 and the unprotected logits blow up
    corrupted, protected = _with_exponent_flip(reference), _with_exponent_flip(clipped)
    truth = heldout.y
    bad = (predict(corrupted, heldout.x).argmax(1) == truth).mean()
    good = (predict(protected, heldout.x).argmax(1) == truth).mean()
    clean = (predict(reference, heldout.x).argmax(1) == truth).mean()
    assert bad < 0.5 * clean
    assert good >= clean - 0.1 if mode == "zero" else good > bad


def _with_exponent_flip(artifact):
    """A copy with bit 30 of the largest-fan-out time2 weight flipped (to ~1e38)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(artifact.model)
    conv = next(n for n in model.graph.node if n.name == "/time2/Conv")
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    values = numpy_helper.to_array(weight).copy()
    bits = values.reshape(-1).view(np.uint32)
    bits[0] ^= np.uint32(1 << 30)
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    return artifact.derive(model, "fault", {})


def test_hybrid_granularity_bounds_the_logits_per_class(reference, calibration) -> None:
    proact = ClipActivationsProAct(search=False)(reference, calibration.x)
    high = {t.name: numpy_helper.to_array(t) for t in proact.model.graph.initializer if t.name.endswith("_clip_high")}
    assert high["logits_clip_high"].shape == (1, 40)
    assert high["/Relu_output_0_clip_high"].shape == ()
    assert proact.meta.provenance[-1].name == "clip-proact"


def test_search_scores_candidates_by_fault_injection_and_records_them(reference, calibration) -> None:
    step = ClipActivations(bers=[1e-6, 1e-5], maps=2, iterations=1, calibration_trials=40)
    clipped = step(reference, calibration.x, labels=calibration.y)
    history = clipped.meta.provenance[-1].params["search"]
    assert [h["site"] for h in history] == [t for t, _ in find_sites(reference.model)]
    assert all(0.0 <= h["fraction_of_max"] <= 1.0 and 0.0 <= h["auc"] <= 1.0 for h in history)


def test_saturating_clip_folds_into_the_int8_range_and_exports(reference, calibration) -> None:
    clipped = ClipActivations(mode="saturate", search=False)(reference, calibration.x)
    bounds = {t.name: float(numpy_helper.to_array(t)) for t in clipped.model.graph.initializer
              if t.name.endswith(("_clip_low", "_clip_high"))}
    int8 = QuantizeInt8(exclude=[])(clipped, calibration.x)
    assert "Clip" not in {n.op_type for n in int8.model.graph.node}  # folded: the Q range saturates inside it
    values = {t.name: numpy_helper.to_array(t) for t in int8.model.graph.initializer}
    for node in int8.model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] == "/time2/Conv_output_0_clipped":
            scale, zero = float(values[node.input[1]]), int(values[node.input[2]])
            assert bounds["/time2/Conv_output_0_clip_low"] <= scale * (-128 - zero)
            assert scale * (127 - zero) <= bounds["/time2/Conv_output_0_clip_high"]
    assert export_tflite(int8)[4:8] == b"TFL3"


def test_bad_parameters_and_quantized_input_are_refused(reference, calibration) -> None:
    with pytest.raises(PassError, match="'mode' parameter of clip-ftclipact must be one of saturate, zero"):
        ClipActivations(mode="clamp")
    with pytest.raises(PassError, match="'margin' parameter"):
        ClipActivations(margin=0.5)
    int8 = QuantizeInt8(exclude=[])(reference, calibration.x)
    with pytest.raises(PassError, match="works on float models"):
        ClipActivations(search=False)(int8, calibration.x)
    with pytest.raises(PassError, match="needs labelled calibration data"):
        ClipActivations()(reference, calibration.x)

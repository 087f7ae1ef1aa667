"""Per-layer sensitivity and mixed precision under an accuracy budget, on real onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import tiny_conv_model
from converters.mixed_precision import LayerSensitivity, QuantizeMixed, format_sensitivity_table, sensitivity
from edge.artifact import Artifact
from edge.data.registry import load_dataset
from edge.errors import PassError
from edge.evaluate import predict

EVAL = "synthetic-ssvep:subjects=31-32,seed=0"
LAYERS = ["/sub_band/Conv", "/channel/Conv", "/time1/Conv", "/time2/Conv", "/fc/Gemm"]


@pytest.fixture(scope="module")
def calibration(reference) -> np.ndarray:
    return load_dataset(reference.meta.extra["calibration_data"], reference.meta).x[:128]


@pytest.fixture(scope="module")
def evaluation(reference):
    data = load_dataset(EVAL, reference.meta)
    return data.x, data.y


@pytest.fixture(scope="module")
def rows(reference, calibration, evaluation) -> list[LayerSensitivity]:
    return sensitivity(reference, calibration, *evaluation)


def accuracy(artifact: Artifact, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predict(artifact, x).argmax(1) == y))


def test_sensitivity_has_one_row_per_layer_with_drop_and_sqnr(reference, evaluation, rows) -> None:
    x, y = evaluation
    assert [r.layer for r in rows] == LAYERS
    assert [r.op_type for r in rows] == ["Conv"] * 4 + ["Gemm"]
    fp32 = accuracy(reference, x, y)
    for row in rows:
        assert row.drop_points == pytest.approx(100 * (fp32 - row.accuracy))
        assert 10 < row.sqnr_db < 80  # one int8 layer: close to float, but not identical
        assert abs(row.drop_points) < 5
    table = format_sensitivity_table(rows)
    lines = table.splitlines()
    assert lines[0].split() == ["rank", "layer", "op", "int8", "acc", "%", "drop", "(pts)", "SQNR", "(dB)"]
    assert len(lines) == 2 + len(LAYERS)
    assert all(layer in table for layer in LAYERS)


def test_mixed_meets_half_a_point_budget_measured_independently(reference, calibration, evaluation) -> None:
    x, y = evaluation
    step = QuantizeMixed(max_drop=0.5)
    child = step(reference, calibration, evaluation=(x, y))
    drop = 100 * (accuracy(reference, x, y) - accuracy(child, x, y))
    assert drop <= 0.5
    record = child.meta.provenance[-1]
    assert record.name == "quantize-mixed" and record.parent_sha256 == reference.sha256
    assert record.params["drop_points"] == pytest.approx(drop)
    assert sorted(record.params["precision"]) == sorted(LAYERS)
    assert set(record.params["precision"].values()) <= {"int8", "int16", "float"}
    assert "int8" in record.params["precision"].values()
    assert any(n.op_type == "QuantizeLinear" for n in child.model.graph.node)
    assert [r.layer for r in step.sensitivity_] == LAYERS  # analysed even when int8 meets the budget
    assert [r["layer"] for r in record.params["sensitivity"]] == LAYERS


def test_impossible_budget_names_the_layers(reference, calibration, evaluation) -> None:
    step = QuantizeMixed(max_drop=-10)
    with pytest.raises(PassError, match=r"could not quantize within the budget of -10 points: .*/sub_band/Conv") as info:
        step(reference, calibration, evaluation=evaluation)
    assert all(layer in str(info.value) for layer in LAYERS)
    assert len(step.sensitivity_) == len(LAYERS)  # the table is there to print even when it fails


def test_loop_moves_sensitive_layers_to_float_or_int16() -> None:
    """A conv with an outlier weight, per-tensor scales: int8 everywhere costs more than 1 point."""
    model = tiny_conv_model()
    weight = numpy_helper.to_array(model.graph.initializer[0]).copy()
    weight[0, 0, 0, 0] = 200.0
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight, "w"))
    parent = Artifact.from_model(model)
    x = np.random.default_rng(0).normal(size=(256, 2, 1, 8)).astype(np.float32)
    calibration, held = x[:128], x[128:]
    step = QuantizeMixed(max_drop=1.0, per_channel=False)
    child = step(parent, calibration, evaluation=(held, None))  # no labels: agreement with float
    precision = child.meta.provenance[-1].params["precision"]
    assert precision == {"conv": "float", "fc": "int16"}
    agreement = float(np.mean(predict(parent, held).argmax(1) == predict(child, held).argmax(1)))
    assert 100 * (1 - agreement) <= 1.0
    zero_points = {t.name: t.data_type for t in child.model.graph.initializer if t.name.endswith("_zero_point")}
    assert onnx.TensorProto.INT16 in zero_points.values()
    all_int8 = QuantizeMixed(max_drop=100.0, per_channel=False)(parent, calibration, evaluation=(held, None))
    assert all_int8.meta.provenance[-1].params["drop_points"] > 1.0  # so the loop had work to do
    table = format_sensitivity_table(step.sensitivity_, step.precision_)
    assert table.splitlines()[2].split()[1] == "conv" and table.splitlines()[2].split()[-1] == "float"


def test_mixed_refuses_bad_parameters(reference) -> None:
    with pytest.raises(PassError, match="float8"):
        QuantizeMixed(calibrate="distribution")
    with pytest.raises(PassError, match="'max_drop' parameter of quantize-mixed must be a finite number"):
        QuantizeMixed(max_drop=float("nan"))
    with pytest.raises(PassError, match="needs calibration data"):
        QuantizeMixed()(reference, None)

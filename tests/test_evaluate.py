from __future__ import annotations

import numpy as np
import pytest

from edge.data.registry import Dataset, load_dataset
from edge.evaluate import bootstrap_mean_interval, evaluate, wilson_interval


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-3)


def test_bootstrap_interval_contains_the_mean_and_is_seeded() -> None:
    values = np.random.default_rng(0).normal(100, 10, size=50)
    lo, hi = bootstrap_mean_interval(values)
    assert lo < values.mean() < hi
    assert hi - lo < 10
    assert bootstrap_mean_interval(values) == (lo, hi)


def test_evaluate_reports_every_metric(reference) -> None:
    data = load_dataset("synthetic-ssvep:subjects=32-32,blocks=3", reference.meta)
    results = evaluate(reference, data, latency_runs=200, warmup=5)
    m = results["metrics"]
    assert m["accuracy"]["n"] == 120
    lo, hi = m["accuracy"]["ci95"]
    assert lo <= m["accuracy"]["value"] <= hi
    assert np.sum(m["confusion_matrix"]) == 120
    assert np.trace(m["confusion_matrix"]) == round(m["accuracy"]["value"] * 120)
    itr = m["itr_bits_per_min"]
    assert itr["groups"] == 3 and "T + 0.5" not in itr["convention"] and "gaze shift 0.5 s" in itr["convention"]
    assert 0 <= itr["value"] <= 354.8
    lat = m["latency_ms"]
    assert lat["runs"] == 200 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert m["model_size_bytes"] == len(reference.to_bytes())
    assert m["peak_memory_bytes"] > 0
    assert results["artifact"]["sha256"] == reference.sha256
    assert results["environment"]["onnxruntime"]


def test_labels_outside_the_model_outputs_are_refused(reference) -> None:
    from edge.errors import DataError

    x = np.zeros((2, 3, 9, 100), np.float32)
    with pytest.raises(DataError, match="labels run from 0 to 41 but the model has 40 outputs"):
        evaluate(reference, Dataset("d", x, np.array([0, 41])), latency_runs=1, measure_memory=False)

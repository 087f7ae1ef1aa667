"""On-device evaluation: task metrics with confidence intervals, fidelity, latency, size, memory.

>>> from edge.evaluate import evaluate
>>> results = evaluate(artifact, dataset, device="cpu")
>>> results["metrics"]["accuracy"]["value"]
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge import __version__
from edge.artifact import Artifact
from edge.data.registry import Dataset
from edge.errors import DataError
from edge.families.ssvep.metrics import itr_bits_per_min, itr_per_group
from edge.metrics import balanced_accuracy, cohen_kappa, confusion_matrix, mean_sd

RESULTS_SCHEMA_VERSION = 1


@dataclass
class Drift:
    """How far a converted model's outputs moved from its parent's on the same trials."""

    top1_agreement: float
    cosine_similarity: float
    max_abs_error: float
    trials: int


def drift(parent: Artifact, child: Artifact, x: np.ndarray, device: str = "cpu") -> Drift:
    """Top-1 agreement, mean cosine similarity and max abs error of child vs parent outputs."""
    a = predict(parent, x, device)
    b = predict(child, x, device)
    a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
    norms = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    cosine = np.sum(a2 * b2, axis=1) / np.where(norms == 0, 1.0, norms)
    return Drift(
        top1_agreement=float(np.mean(a2.argmax(1) == b2.argmax(1))),
        cosine_similarity=float(np.mean(cosine)),
        max_abs_error=float(np.max(np.abs(a2 - b2))),
        trials=len(x),
    )


def predict(artifact: Artifact, x: np.ndarray, device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """The model's first output for every trial, run on ``device``."""
    from devices import get_target

    target = get_target(device)
    target.deploy(artifact)
    return np.concatenate([target.run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_mean_interval(values: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of ``values``."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (float(values.mean()), float(values.mean())) if len(values) else (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def environment() -> dict[str, Any]:
    """Versions and machine facts that results depend on."""
    import onnxruntime

    return {
        "edge": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def evaluate(
    artifact: Artifact,
    dataset: Dataset,
    *,
    device: str = "cpu",
    latency_runs: int = 200,
    warmup: int = 20,
    measure_memory: bool = True,
    path: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``dataset`` through ``artifact`` on ``device`` and collect every metric as one document."""
    from devices import get_target

    if latency_runs < 1:
        raise DataError(f"latency_runs must be >= 1; got {latency_runs}.")
    step = progress or (lambda _msg: None)
    target = get_target(device)
    target.deploy(artifact)
    step("predicting")
    outputs = np.concatenate([target.run(x) for x, _ in dataset.batches(64)])
    metrics: dict[str, Any] = {}
    if dataset.y is not None:
        metrics.update(classification_metrics(outputs, dataset, artifact))
    step("timing")
    times_ms = target.latency(dataset.x[0], runs=latency_runs, warmup=warmup) * 1e3
    metrics["latency_ms"] = {
        "p50": float(np.percentile(times_ms, 50)),
        "p90": float(np.percentile(times_ms, 90)),
        "p99": float(np.percentile(times_ms, 99)),
        "mean": float(times_ms.mean()),
        "runs": latency_runs,
        "warmup": warmup,
        "batch": 1,
    }
    model_bytes = artifact.to_bytes()
    metrics["model_size_bytes"] = len(model_bytes)
    if measure_memory:
        step("measuring memory")
        metrics["peak_memory_bytes"] = target.peak_memory(dataset.x[0])
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "artifact": {
            "path": path,
            "sha256": artifact.sha256,
            "family": artifact.meta.family,
            "provenance": [asdict(p) for p in artifact.meta.provenance],
        },
        "data": {"spec": dataset.name, "trials": len(dataset), "groups": int(len(np.unique(dataset.groups)))},
        "device": target.info(),
        "metrics": metrics,
    }


def classification_metrics(outputs: np.ndarray, dataset: Dataset, artifact: Artifact) -> dict[str, Any]:
    """Accuracy with a Wilson interval, balanced accuracy, kappa, confusion, per-subject rows and, for spellers, ITR."""
    y = dataset.y
    if y is None:
        raise DataError("the data have no labels, so accuracy cannot be computed.", where=dataset.name)
    scores = outputs.reshape(len(outputs), -1)
    n_classes = scores.shape[1]
    if y.min() < 0 or y.max() >= n_classes:
        raise DataError(
            f"labels run from {int(y.min())} to {int(y.max())} but the model has {n_classes} outputs.",
            where=dataset.name,
        )
    window_s = artifact.meta.preprocessing.window_s
    speller = artifact.meta.task.get("kind") == "ssvep-speller" and bool(window_s)
    gaze = float(artifact.meta.task.get("gaze_shift_s", 0.5))
    groups = dataset.groups if len(dataset.groups) == len(y) else np.zeros(len(y), dtype=str)
    metrics = label_metrics(y, scores.argmax(axis=1), n_classes, groups,
                            itr_window_s=window_s if speller else None, gaze_shift_s=gaze)
    metrics["labels"] = artifact.meta.labels or [str(i) for i in range(n_classes)]
    return metrics


def label_metrics(
    y: np.ndarray,
    predicted: np.ndarray,
    n_classes: int,
    groups: np.ndarray,
    *,
    itr_window_s: float | None = None,
    gaze_shift_s: float = 0.5,
) -> dict[str, Any]:
    """Every metric of predicted vs true labels; groups are 'S<subject>/B<block>' or any per-trial tag."""
    correct = predicted == y
    confusion = confusion_matrix(y, predicted, n_classes)
    lo, hi = wilson_interval(int(correct.sum()), len(y))
    subjects = np.array([str(g).split("/")[0] for g in groups])
    per_subject = {
        s: {"accuracy": float(correct[subjects == s].mean()), "n": int(np.sum(subjects == s))}
        for s in dict.fromkeys(subjects.tolist())
    }
    metrics: dict[str, Any] = {
        "accuracy": {"value": float(correct.mean()), "ci95": [lo, hi], "n": int(len(y)), "interval": "Wilson"},
        "balanced_accuracy": balanced_accuracy(confusion),
        "kappa": cohen_kappa(confusion),
        "chance": 1.0 / n_classes,
        "confusion_matrix": confusion.tolist(),
        "per_subject": per_subject,
    }
    if len(per_subject) > 1:
        mean, sd = mean_sd([row["accuracy"] for row in per_subject.values()])
        metrics["accuracy_over_subjects"] = {"mean": mean, "sd": sd, "subjects": len(per_subject)}
    if itr_window_s:
        per_group = itr_per_group(correct, groups, n_classes, itr_window_s, gaze_shift_s)
        lo, hi = bootstrap_mean_interval(per_group)
        metrics["itr_bits_per_min"] = {
            "value": float(per_group.mean()),
            "ci95": [lo, hi],
            "of_mean_accuracy": itr_bits_per_min(float(correct.mean()), n_classes, itr_window_s, gaze_shift_s),
            "convention": f"mean of per-(subject, block) ITRs; selection time = window {itr_window_s} s "
                          f"+ gaze shift {gaze_shift_s} s",
            "groups": int(len(per_group)),
            "interval": "bootstrap over groups",
        }
        for s, row in per_subject.items():
            row["itr_bits_per_min"] = itr_bits_per_min(row["accuracy"], n_classes, itr_window_s, gaze_shift_s)
    return metrics


def run_evaluation(
    model: str,
    data_spec: str,
    *,
    device: str = "cpu",
    runs: int = 200,
    reference: str | None = None,
    out_dir: str = "runs",
    measure_memory: bool = True,
) -> tuple[dict[str, Any], Any]:
    """Evaluate a model file or zoo name on a dataset spec and write a run folder; returns (results, folder)."""
    from edge.data.registry import load_dataset
    from edge.models import resolve_model
    from edge.report import new_run_folder, write_results

    path, artifact = resolve_model(model)
    dataset = load_dataset(data_spec, artifact.meta)
    results = evaluate(artifact, dataset, device=device, latency_runs=runs, measure_memory=measure_memory,
                       path=str(path) if path else model)
    if reference is not None:
        _, parent = resolve_model(reference)
        results["metrics"]["agreement_with_reference"] = agreement(parent, artifact, dataset.x, device)
    folder = new_run_folder(out_dir, "eval")
    write_results(folder, results)
    return results, folder


def agreement(reference: Artifact, candidate: Artifact, x: np.ndarray, device: str = "cpu") -> float:
    """Fraction of trials on which both models predict the same class."""
    a = predict(reference, x, device).reshape(len(x), -1).argmax(1)
    b = predict(candidate, x, device).reshape(len(x), -1).argmax(1)
    return float(np.mean(a == b))

"""Metrics papers report: accuracy, balanced accuracy, Cohen's kappa, per-subject summaries; ROC AUC with
DeLong's interval for anomaly scores; MSE, MAE, RMSE and R² for regression."""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(y: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts[true, predicted]."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y), np.asarray(predicted)), 1)
    return matrix


def balanced_accuracy(confusion: np.ndarray) -> float:
    """Mean per-class recall over the classes that occur."""
    support = confusion.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(confusion)[present] / support[present])) if present.any() else 0.0


def cohen_kappa(confusion: np.ndarray) -> float:
    """Agreement beyond chance between labels and predictions (BCI IV 2a's official metric)."""
    total = confusion.sum()
    if total == 0:
        return 0.0
    observed = np.trace(confusion) / total
    expected = float(np.sum(confusion.sum(axis=0) * confusion.sum(axis=1))) / total**2
    return 0.0 if expected == 1.0 else float((observed - expected) / (1.0 - expected))


def mean_sd(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a positive scores above a negative, ties counted as half.

    Computed from average ranks (the Mann-Whitney U statistic), so tied scores get half credit exactly.
    """
    from scipy.stats import rankdata

    scores, positive = np.asarray(scores, np.float64).reshape(-1), np.asarray(positive, bool).reshape(-1)
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        raise ValueError("ROC AUC needs at least one positive and one negative.")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - m * (m + 1) / 2) / (m * n))


def delong_interval(scores: np.ndarray, positive: np.ndarray, z: float = 1.959964) -> tuple[float, float]:
    """95 % interval of the ROC AUC from DeLong's variance (placement values from midranks), clipped to [0, 1]."""
    from scipy.stats import rankdata

    scores, positive = np.asarray(scores, np.float64).reshape(-1), np.asarray(positive, bool).reshape(-1)
    pos, neg = scores[positive], scores[~positive]
    m, n = len(pos), len(neg)
    auc = roc_auc(scores, positive)
    if m < 2 or n < 2:
        return (0.0, 1.0)
    overall = rankdata(np.concatenate([pos, neg]))
    # placement of each positive among the negatives (and each negative among the positives), ties as half
    v10 = (overall[:m] - rankdata(pos)) / n
    v01 = 1.0 - (overall[m:] - rankdata(neg)) / m
    se = math.sqrt(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    return (max(0.0, auc - z * se), min(1.0, auc + z * se))


def regression_errors(predicted: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MSE, MAE, RMSE and R² of predictions against targets (all elements, every trial)."""
    p, t = np.asarray(predicted, np.float64).reshape(-1), np.asarray(target, np.float64).reshape(-1)
    residual = p - t
    mse = float(np.mean(residual**2))
    spread = float(np.sum((t - t.mean()) ** 2))
    return {"mse": mse, "mae": float(np.mean(np.abs(residual))), "rmse": math.sqrt(mse),
            "r2": float(1.0 - np.sum(residual**2) / spread) if spread > 0 else float("nan")}


def bootstrap_regression_intervals(predicted: np.ndarray, target: np.ndarray, seed: int = 0,
                                   resamples: int = 1000) -> dict[str, tuple[float, float]]:
    """95 % percentile bootstrap intervals of MSE, MAE, RMSE and R², resampling whole trials."""
    p = np.asarray(predicted, np.float64).reshape(len(predicted), -1)
    t = np.asarray(target, np.float64).reshape(len(target), -1)
    if len(p) < 2:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"mse": [], "mae": [], "rmse": [], "r2": []}
    for _ in range(resamples):
        pick = rng.integers(0, len(p), len(p))
        for key, value in regression_errors(p[pick], t[pick]).items():
            draws[key].append(value)
    return {k: (float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))) for k, v in draws.items()
            if not np.all(np.isnan(v))}


def bootstrap_mean_interval(values: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of ``values``."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (float(values.mean()), float(values.mean())) if len(values) else (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))

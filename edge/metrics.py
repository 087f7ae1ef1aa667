"""Classification metrics BCI papers report: accuracy, balanced accuracy, Cohen's kappa, per-subject summaries."""

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

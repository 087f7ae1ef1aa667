"""Information transfer rate (Wolpaw) as used by the SSVEP speller literature (bci.md §2)."""

from __future__ import annotations

import math

import numpy as np


def wolpaw_bits(accuracy: float, n_targets: int) -> float:
    """Bits per selection; 0 when accuracy is at or below chance."""
    p, n = float(accuracy), int(n_targets)
    if n < 2:
        raise ValueError(f"ITR needs at least 2 targets, got {n}.")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {p}.")
    if p <= 1.0 / n:
        return 0.0
    bits = math.log2(n) + p * math.log2(p)
    if p < 1.0:
        bits += (1.0 - p) * math.log2((1.0 - p) / (n - 1))
    return bits


def itr_bits_per_min(accuracy: float, n_targets: int, window_s: float, gaze_shift_s: float = 0.5) -> float:
    """Wolpaw ITR in bits/min with selection time = window + gaze shift (Guney: T + 0.5 s)."""
    selection_s = window_s + gaze_shift_s
    if selection_s <= 0:
        raise ValueError(f"selection time must be positive, got {selection_s} s.")
    return wolpaw_bits(accuracy, n_targets) * 60.0 / selection_s


def itr_per_group(
    correct: np.ndarray, groups: np.ndarray, n_targets: int, window_s: float, gaze_shift_s: float = 0.5
) -> np.ndarray:
    """ITR of each (subject, block) group's accuracy, Guney's convention before averaging."""
    correct = np.asarray(correct, dtype=bool)
    groups = np.asarray(groups)
    return np.array([
        itr_bits_per_min(float(correct[groups == g].mean()), n_targets, window_s, gaze_shift_s)
        for g in np.unique(groups)
    ])

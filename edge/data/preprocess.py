"""SSVEP preprocessing as in Guney et al. (``PreProcess.m``): window, channels, filter bank.

The window starts ``latency_s`` after stimulus onset and the Chebyshev-I filter bank is
applied with zero-phase filtering to the short window itself, after slicing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.signal

from edge.data.epochs import round_half_away
from edge.errors import DataError

__all__ = ["GUNEY_BANDS", "filter_bank", "ssvep_epochs", "ssvep_windows"]

GUNEY_BANDS: tuple[tuple[float, float], ...] = ((8.0, 90.0), (16.0, 90.0), (24.0, 90.0))


def filter_bank(
    x: np.ndarray,
    sample_rate: float,
    bands: Sequence[tuple[float, float]] = GUNEY_BANDS,
    ripple_db: float = 1.0,
    order: int = 1,
) -> np.ndarray:
    """Band-pass x (..., C, N) through each band with zero-phase Chebyshev-I filters: (..., bands, C, N)."""
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[-1] == 0:
        raise DataError(f"filter_bank needs an array with samples on its last axis, got shape {x.shape}.")
    if not bands:
        raise DataError("filter_bank needs at least one band.")
    nyquist = sample_rate / 2.0
    out = []
    for band in bands:
        b, a = _bandpass(band, sample_rate, nyquist, ripple_db, order)
        # MATLAB's filtfilt pads 3*(filter length - 1) samples; scipy's default pads 3*length.
        # Matching MATLAB matters on windows as short as 50 samples.
        padlen = 3 * (max(len(a), len(b)) - 1)
        if x.shape[-1] <= padlen:
            raise DataError(
                f"filter_bank needs more than {padlen} samples per window for band {tuple(band)}, "
                f"got {x.shape[-1]}."
            )
        out.append(scipy.signal.filtfilt(b, a, x, axis=-1, padlen=padlen))
    return np.stack(out, axis=-3)


def ssvep_windows(
    data: np.ndarray,
    window_s: float,
    *,
    sample_rate: float = 250,
    onset_sample: int = 125,
    latency_s: float = 0.14,
    channel_idx: Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slice Benchmark-layout data [C, T, targets, blocks] into raw windows (x, y, block), block-major."""
    data = np.asarray(data)
    if data.ndim != 4:
        raise DataError(
            "The 'data' parameter of ssvep_windows must be shaped [channels, samples, targets, blocks]. "
            f"Got shape {data.shape} instead."
        )
    n_ch, n_samples, n_targets, n_blocks = data.shape
    rows = np.asarray(channel_idx, dtype=np.int64).reshape(-1)
    if rows.size == 0:
        raise DataError("The 'channel_idx' parameter of ssvep_windows is empty; give at least one channel.")
    bad = rows[(rows < 0) | (rows >= n_ch)]
    if bad.size:
        raise DataError(
            f"The 'channel_idx' parameter of ssvep_windows must index 0..{n_ch - 1} "
            f"(the data has {n_ch} channels). Got {int(bad[0])} instead."
        )
    start = int(onset_sample) + round_half_away(latency_s * sample_rate)
    n = round_half_away(window_s * sample_rate)
    if n < 1:
        raise DataError(
            "The 'window_s' parameter of ssvep_windows must give at least one sample. "
            f"Got {window_s!r} instead."
        )
    if start < 0 or start + n > n_samples:
        raise DataError(
            f"The window of {window_s} s starting at sample {start} runs past the {n_samples}-sample "
            "epoch; use a shorter window_s or latency_s."
        )
    window = data[rows, start : start + n]  # [C, N, targets, blocks]
    x = window.transpose(3, 2, 0, 1).reshape(n_blocks * n_targets, rows.size, n)
    y = np.tile(np.arange(n_targets, dtype=np.int64), n_blocks)
    block = np.repeat(np.arange(n_blocks, dtype=np.int64), n_targets)
    return x, y, block



def ssvep_epochs(
    data: np.ndarray,
    *,
    sample_rate: float = 250,
    channel_idx: Sequence[int],
    onset_sample: int = 125,
    latency_s: float = 0.14,
    window_s: float = 0.4,
    bands: Sequence[tuple[float, float]] = GUNEY_BANDS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut Benchmark-layout data [C, T, targets, blocks] into filtered trials (x, y, block)."""
    trials, y, block = ssvep_windows(data, window_s, sample_rate=sample_rate, onset_sample=onset_sample,
                                     latency_s=latency_s, channel_idx=channel_idx)
    x = filter_bank(trials.astype(np.float64), sample_rate, bands).astype(np.float32)
    return x, y, block


def _bandpass(
    band: tuple[float, float], sample_rate: float, nyquist: float, ripple_db: float, order: int
) -> tuple[np.ndarray, np.ndarray]:
    low, high = float(band[0]), float(band[1])
    # A band drawn for 250 Hz (upper edge 90 Hz) must still work at lower sample rates.
    high = min(high, 0.999 * nyquist)
    if not 0.0 < low < high:
        raise DataError(
            f"Band {tuple(band)} is not a valid pass band at {sample_rate} Hz "
            f"(need 0 < low < high < {nyquist} Hz)."
        )
    b, a = scipy.signal.cheby1(order, ripple_db, [low, high], btype="bandpass", fs=sample_rate)
    return b, a

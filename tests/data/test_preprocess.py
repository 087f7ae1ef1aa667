from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from edge.data.benchmark import BENCHMARK_CHANNELS, OCCIPITAL_9
from edge.data.preprocess import filter_bank, ssvep_epochs
from edge.errors import DataError

OCC = [BENCHMARK_CHANNELS.index(c) for c in OCCIPITAL_9]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((64, 1500, 40, 2)).astype(np.float32)


def guney_filter(segment: np.ndarray, low: float) -> np.ndarray:
    """Sub-band [low, 90] Hz exactly as written out by hand with scipy (MATLAB filtfilt padding)."""
    b, a = scipy.signal.cheby1(1, 1, [low, 90], btype="bandpass", fs=250)
    return scipy.signal.filtfilt(b, a, segment, axis=-1, padlen=6)


def test_shapes_labels_and_trial_order(data):
    x, y, block = ssvep_epochs(data, channel_idx=OCC)
    assert x.shape == (80, 3, 9, 100) and x.dtype == np.float32
    assert y.dtype == np.int64 and block.dtype == np.int64
    np.testing.assert_array_equal(y, np.tile(np.arange(40), 2))
    np.testing.assert_array_equal(block, np.repeat([0, 1], 40))
    x1, _, _ = ssvep_epochs(data, channel_idx=OCC, window_s=1.0, bands=((8, 90),))
    assert x1.shape == (80, 1, 9, 250)


def test_window_starts_at_sample_160_and_is_filtered_after_slicing(data):
    x, _, _ = ssvep_epochs(data, channel_idx=OCC)
    trial, target, blk = 47, 7, 1  # block-major: trial 47 is block 1, target 7
    for band, low in enumerate((8, 16, 24)):
        expected = guney_filter(data[OCC, 160:260, target, blk].astype(np.float64), low)
        np.testing.assert_allclose(x[trial, band], expected, rtol=1e-5, atol=1e-5)
    shifted = guney_filter(data[OCC, 161:261, target, blk].astype(np.float64), 8)
    assert not np.allclose(x[trial, 0], shifted, atol=1e-3)
    whole_then_sliced = guney_filter(data[OCC, :, target, blk].astype(np.float64), 8)[:, 160:260]
    assert not np.allclose(x[trial, 0], whole_then_sliced, atol=1e-3)


def test_start_follows_onset_and_latency(data):
    # BETA's 0.13 s is 32.5 samples, which MATLAB rounds up: start 158 as in Guney's code.
    x, _, _ = ssvep_epochs(data, channel_idx=[61], latency_s=0.13, bands=((8, 90),))
    expected = guney_filter(data[61, 158:258, 0, 0].astype(np.float64), 8)
    np.testing.assert_allclose(x[0, 0, 0], expected, atol=1e-5)


def sine_gain(freq: float) -> np.ndarray:
    t = np.arange(250) / 250
    x = np.sin(2 * np.pi * freq * t)[None]
    y = filter_bank(x, 250)[:, 0]  # [bands, N]
    middle = slice(50, 200)
    return y[:, middle].std(axis=-1) / x[0, middle].std()


def test_filter_bank_band_edges():
    gain_10, gain_30 = sine_gain(10.0), sine_gain(30.0)
    assert gain_10[0] > 0.8  # 10 Hz sits in band 1 (8-90 Hz)
    assert gain_10[1] < 0.7 * gain_10[0]  # and below band 2 (16-90 Hz)
    assert gain_10[2] < gain_10[1]
    assert np.all(gain_30 > 0.85)  # 30 Hz is inside every band


def test_filter_bank_shapes_and_nyquist_clipping():
    x = np.random.default_rng(1).standard_normal((2, 5, 9, 100))
    assert filter_bank(x, 250).shape == (2, 5, 3, 9, 100)
    # At 128 Hz the 90 Hz edge lies beyond Nyquist (64 Hz) and is clipped just below it.
    clipped = filter_bank(x, 128, bands=((8, 90),))
    b, a = scipy.signal.cheby1(1, 1, [8, 0.999 * 64], btype="bandpass", fs=128)
    np.testing.assert_allclose(clipped[..., 0, :, :], scipy.signal.filtfilt(b, a, x, padlen=6), atol=1e-12)


def test_errors(data):
    with pytest.raises(DataError, match="runs past the 1500-sample epoch"):
        ssvep_epochs(data, channel_idx=OCC, window_s=5.6)
    with pytest.raises(DataError, match="must index 0..63 .* Got 64"):
        ssvep_epochs(data, channel_idx=[0, 64])
    with pytest.raises(DataError, match="shaped \\[channels, samples, targets, blocks\\]"):
        ssvep_epochs(data[..., 0], channel_idx=OCC)
    with pytest.raises(DataError, match="not a valid pass band"):
        filter_bank(np.zeros((1, 100)), 250, bands=((90, 8),))
    with pytest.raises(DataError, match="more than 6 samples"):
        filter_bank(np.zeros((1, 5)), 250)

from __future__ import annotations

import numpy as np
import pytest

from edge.data.spike_encoding import clock_spikes, delta_encode, rate_encode, ssvep_spikes
from edge.errors import DataError

ENCODING = {"encoder": "delta", "band_hz": [6.0, 40.0], "threshold": 0.5, "normalise": "per-trial-std",
            "downsample": 2}


def test_delta_on_a_ramp_sends_one_on_spike_per_threshold_climbed() -> None:
    threshold = np.sqrt(2) / 2  # irrational, so no sample lands exactly on a level
    ramp = np.linspace(0.0, 10.0, 1001)[None, :]
    spikes = delta_encode(ramp, threshold)
    assert spikes.shape == (1001, 2) and spikes.dtype == np.float32
    assert spikes[:, 0].sum() == 14 and spikes[:, 1].sum() == 0  # floor(10 / 0.707)
    falling = delta_encode(-ramp, threshold)
    assert falling[:, 0].sum() == 0 and falling[:, 1].sum() == 14


def test_delta_on_a_sine_counts_on_and_off_spikes() -> None:
    t = np.linspace(0.0, 2.0, 2001)
    spikes = delta_encode(np.sin(2 * np.pi * t)[None, :], 0.3)
    # Up to 1: 3 ON (reference 0.9); down to -1: 6 OFF; up: 6 ON; down: 6 OFF; back up to 0: 2 ON.
    assert spikes[:, 0].sum() == 11 and spikes[:, 1].sum() == 12
    assert not np.any(spikes[:, 0] * spikes[:, 1])  # never ON and OFF at once


def test_delta_tracks_the_signal_within_one_threshold_and_is_vectorised() -> None:
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(scale=0.05, size=(2, 3, 400)), axis=-1)
    spikes = delta_encode(x, 0.2)
    assert spikes.shape == (2, 400, 6)
    on, off = spikes[..., :3], spikes[..., 3:]
    reconstruction = x[..., :1] + 0.2 * np.cumsum(on - off, axis=1).transpose(0, 2, 1)
    assert np.abs(reconstruction - x).max() < 0.2 + 0.05 * 5  # one threshold plus a few samples of lag
    alone = delta_encode(x[1, 2][None, :], 0.2)
    np.testing.assert_array_equal(spikes[1][:, [2, 5]], alone)
    np.testing.assert_array_equal(delta_encode(x.swapaxes(-1, -2), 0.2, axis=-2), spikes)


@pytest.mark.parametrize("threshold", [0.0, -1.0, float("nan")])
def test_delta_refuses_a_threshold_that_is_not_positive(threshold: float) -> None:
    with pytest.raises(DataError, match="threshold > 0"):
        delta_encode(np.zeros((1, 5)), threshold)


def test_rate_code_is_seeded_clipped_and_matches_the_value_on_average() -> None:
    values = np.array([[0.1, 0.5, 0.9, 1.5, -0.2]])
    spikes = rate_encode(values, 4000, seed=3)
    assert spikes.shape == (1, 4000, 5) and spikes.dtype == np.float32
    np.testing.assert_allclose(spikes.mean(axis=1)[0], [0.1, 0.5, 0.9, 1.0, 0.0], atol=0.03)
    np.testing.assert_array_equal(spikes, rate_encode(values, 4000, seed=3))
    assert not np.array_equal(spikes, rate_encode(values, 4000, seed=4))
    np.testing.assert_allclose(rate_encode(values, 4000, gain=0.5).mean(axis=1)[0], [0.05, 0.25, 0.45, 0.75, 0],
                               atol=0.03)
    images = rate_encode(np.full((2, 3, 4), 0.5), 7, feature_axes=2)
    assert images.shape == (2, 7, 3, 4)


def _raw(trials: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(250) / 250.0
    ssvep = 5 * np.sin(2 * np.pi * 10 * t)
    return (ssvep + rng.normal(scale=10.0, size=(trials, 9, 250))).astype(np.float32)


def test_ssvep_spikes_shape_and_determinism() -> None:
    raw = _raw()
    spikes = ssvep_spikes(raw, 250.0, ENCODING)
    assert spikes.shape == (4, 125, 18) and spikes.dtype == np.float32
    assert set(np.unique(spikes)) <= {0.0, 1.0} and 0.01 < spikes.mean() < 0.5
    np.testing.assert_array_equal(spikes, ssvep_spikes(raw.copy(), 250.0, dict(ENCODING)))
    # Each trial is encoded on its own: a trial's spikes do not depend on its neighbours.
    np.testing.assert_array_equal(spikes[2:], ssvep_spikes(raw[2:], 250.0, ENCODING))


def test_ssvep_spikes_scale_invariance_causal_filter_and_rate_encoder() -> None:
    raw = _raw()
    np.testing.assert_array_equal(ssvep_spikes(raw, 250.0, ENCODING), ssvep_spikes(raw * 4, 250.0, ENCODING))
    causal = ssvep_spikes(raw, 250.0, {**ENCODING, "causal": True})
    assert causal.shape == (4, 125, 18) and not np.array_equal(causal, ssvep_spikes(raw, 250.0, ENCODING))
    rate = {"encoder": "rate", "band_hz": [6.0, 40.0], "gain": 0.5, "seed": 1}
    spikes = ssvep_spikes(raw, 250.0, rate)
    assert spikes.shape == (4, 250, 18)
    np.testing.assert_array_equal(spikes, ssvep_spikes(raw, 250.0, rate))
    assert not np.any(spikes[..., :9] * spikes[..., 9:])  # a sample is positive or negative, not both


def test_clock_channels_follow_the_encoded_spikes() -> None:
    spikes = ssvep_spikes(_raw(), 250.0, {**ENCODING, "clock_steps": 5})
    assert spikes.shape == (4, 125, 18 + 25)
    np.testing.assert_array_equal(spikes[1, :, 18:], clock_spikes(125, 5))
    clock = clock_spikes(7, 3)
    np.testing.assert_array_equal(clock.argmax(1), [0, 0, 0, 1, 1, 1, 2])
    assert clock.sum() == 7


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ({"encoder": "delta", "treshold": 0.5}, "unknown spike-encoding key 'treshold'. Did you mean 'threshold'"),
        ({"encoder": "sigma-delta"}, "'encoder' must be one of delta, rate; got 'sigma-delta'"),
        ({"encoder": "delta", "band_hz": [6.0, 70.0], "downsample": 2}, "below|< 62.5 Hz"),
        ({"encoder": "delta", "band_hz": 8.0}, "'band_hz' must be \\[low, high\\]"),
        ({"encoder": "delta", "downsample": 0}, "'downsample' must be an integer >= 1"),
        ({"encoder": "delta", "normalise": "z"}, "'normalise' must be one of"),
        ({"encoder": "delta", "threshold": 0}, "'threshold' must be a number > 0"),
    ],
)
def test_ssvep_spikes_refuses_bad_encodings(encoding: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        ssvep_spikes(_raw(1), 250.0, encoding)


def test_ssvep_spikes_refuses_bad_windows() -> None:
    with pytest.raises(DataError, match=r"\[trials, channels, samples\]"):
        ssvep_spikes(np.zeros((9, 250)), 250.0, ENCODING)
    raw = _raw(1)
    raw[0, 0, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        ssvep_spikes(raw, 250.0, ENCODING)

from __future__ import annotations

import numpy as np
import pytest

from edge.data.benchmark import (
    BENCHMARK_CHANNELS,
    BENCHMARK_FREQS,
    BENCHMARK_PHASES,
    OCCIPITAL_9,
    SAMPLE_RATE,
    read_benchmark_subject,
    read_freq_phase,
)
from edge.data.synthetic_ssvep import generate_subject, write_synthetic_benchmark
from edge.errors import DataError

START = 160  # onset 125 + 0.14 s latency
STEADY = slice(START, START + 1250)  # 5 s: every target frequency falls on an FFT bin


@pytest.fixture(scope="module")
def oz_strong() -> np.ndarray:
    return generate_subject(2, 0, channels=["OZ"], snr=3.0)[0]  # [T, 40, blocks]


@pytest.fixture(scope="module")
def oz_off() -> np.ndarray:
    return generate_subject(2, 0, channels=["OZ"], snr=0.0)[0]


def test_shape_dtype_and_scale():
    data = generate_subject(1, 0, blocks=2)
    assert data.shape == (64, 1500, 40, 2)
    assert data.dtype == np.float32
    rms = data.std(axis=(1, 2, 3))
    assert np.all(np.isfinite(data))
    assert 5.0 < np.median(rms) < 50.0  # tens of microvolts, like EEG
    wide = generate_subject(1, 0, blocks=2, channels=["OZ"], dtype=np.float64)
    assert wide.dtype == np.float64
    np.testing.assert_array_equal(wide[0], data[BENCHMARK_CHANNELS.index("OZ")].astype(np.float64))


def test_same_seed_same_data_other_seed_other_data():
    a = generate_subject(5, 0, blocks=1, channels=["OZ", "O1"])
    b = generate_subject(5, 0, blocks=1, channels=["OZ", "O1"])
    c = generate_subject(5, 1, blocks=1, channels=["OZ", "O1"])
    d = generate_subject(6, 0, blocks=1, channels=["OZ", "O1"])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a, d)


def test_channel_values_do_not_depend_on_the_subset():
    full = generate_subject(7, 3, blocks=1)
    names = ["O2", "FZ", "CB1", "O2"]
    part = generate_subject(7, 3, blocks=1, channels=names)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(part[i], full[BENCHMARK_CHANNELS.index(name)])
    lower = generate_subject(7, 3, blocks=1, channels=["oz"])
    np.testing.assert_array_equal(lower[0], full[BENCHMARK_CHANNELS.index("OZ")])


def test_blocks_do_not_depend_on_how_many_are_asked_for():
    one = generate_subject(4, 0, blocks=1, channels=["OZ"])
    three = generate_subject(4, 0, blocks=3, channels=["OZ"])
    np.testing.assert_array_equal(one[..., 0], three[..., 0])
    assert not np.allclose(three[..., 0], three[..., 1])


def test_ssvep_starts_after_latency_and_sits_over_oz():
    names = ["OZ", "FZ"]
    on = generate_subject(9, 0, blocks=2, channels=names)
    off = generate_subject(9, 0, blocks=2, channels=names, snr=0.0)
    ssvep = on - off
    # Onset 125 + 35 samples latency, minus at most 3 ms (< 1 sample) of jitter.
    np.testing.assert_allclose(ssvep[:, : START - 1], 0.0, atol=1e-4)
    assert np.abs(ssvep[:, START + 5 : START + 50]).max() > 0.1
    rms = ssvep[:, STEADY].std(axis=(1, 2, 3))
    assert rms[0] > 5 * rms[1]


@pytest.mark.parametrize("target", [0, 8, 17, 30, 39])
def test_spectrum_peaks_at_the_target_frequency(oz_strong, target):
    freqs = np.fft.rfftfreq(1250, 1 / SAMPLE_RATE)
    spectrum = np.abs(np.fft.rfft(oz_strong[STEADY, target].mean(axis=-1)))
    band = (freqs >= 6) & (freqs <= 20)
    assert freqs[band][np.argmax(spectrum[band])] == pytest.approx(BENCHMARK_FREQS[target])


def target_to_neighbour_power(oz: np.ndarray) -> float:
    freqs = np.fft.rfftfreq(1250, 1 / SAMPLE_RATE)
    power = np.abs(np.fft.rfft(oz[STEADY].mean(axis=-1), axis=0)) ** 2  # [F, 40]
    at, near = [], []
    for k, f in enumerate(BENCHMARK_FREQS):
        i = int(np.argmin(np.abs(freqs - f)))
        at.append(power[i, k])
        near.append(power[np.r_[i - 5 : i - 1, i + 2 : i + 6], k].mean())
    return float(np.mean(at) / np.mean(near))


def test_no_peak_at_the_target_without_ssvep(oz_strong, oz_off):
    assert target_to_neighbour_power(oz_strong) > 50
    assert target_to_neighbour_power(oz_off) < 2


def test_jfpm_phases_step_by_half_pi(oz_strong):
    # Targets 0, 8, 16, 24 are 8.0, 8.2, 8.4, 8.6 Hz with phases 0, 0.5, 1, 1.5 pi. Measured
    # against a reference that starts at the response onset, the fundamental's phase is
    # the stimulus phase plus a subject constant, so neighbours differ by 0.5 pi.
    t = np.arange(1000) / SAMPLE_RATE
    phases = []
    for k in (0, 8, 16, 24):
        x = oz_strong[START : START + 1000, k].mean(axis=-1)
        phases.append(np.angle(np.sum(x * np.exp(-2j * np.pi * BENCHMARK_FREQS[k] * t))))
    steps = np.angle(np.exp(1j * np.diff(phases)))
    np.testing.assert_allclose(np.diff(BENCHMARK_PHASES[[0, 8, 16, 24]]), 0.5 * np.pi)
    np.testing.assert_allclose(steps, 0.5 * np.pi, atol=0.35)


def cca_accuracy(data: np.ndarray, window_s: float, harmonics: int = 3) -> float:
    """Plain CCA against sine/cosine references; data [C, T, 40, blocks]."""
    n = int(round(window_s * SAMPLE_RATE))
    x = data[:, START : START + n].astype(np.float64)
    c, _, n_targets, n_blocks = x.shape
    trials = x.transpose(3, 2, 1, 0).reshape(n_blocks * n_targets, n, c)
    qx, _ = np.linalg.qr(trials - trials.mean(axis=1, keepdims=True))
    t = np.arange(1, n + 1) / SAMPLE_RATE
    orders = range(1, harmonics + 1)
    refs = np.stack(
        [np.stack([fn(2 * np.pi * h * f * t) for h in orders for fn in (np.sin, np.cos)], 1) for f in BENCHMARK_FREQS]
    )
    qy, _ = np.linalg.qr(refs - refs.mean(axis=1, keepdims=True))
    # The largest singular value of Qx^T Qy is the first canonical correlation.
    corr = np.linalg.svd(np.einsum("inc,knh->ikch", qx, qy), compute_uv=False)[..., 0]
    labels = np.tile(np.arange(n_targets), n_blocks)
    return float(np.mean(corr.argmax(axis=1) == labels))


def test_cca_accuracy_is_realistic():
    data = generate_subject(3, 0, channels=OCCIPITAL_9)
    background = generate_subject(3, 0, channels=OCCIPITAL_9, snr=0.0)
    short, long_ = cca_accuracy(data, 0.2), cca_accuracy(data, 1.0)
    chance = cca_accuracy(background, 1.0)
    assert long_ > 0.3, long_
    assert long_ > short + 0.2, (short, long_)
    assert chance < 0.10, chance


def test_bad_arguments():
    with pytest.raises(DataError, match="Did you mean 'OZ'"):
        generate_subject(1, channels=["OX"])
    with pytest.raises(DataError, match="'subject' parameter"):
        generate_subject(-1)
    with pytest.raises(DataError, match="'blocks' parameter"):
        generate_subject(1, blocks=0)
    with pytest.raises(DataError, match="'snr' parameter"):
        generate_subject(1, snr=-1.0)


def test_write_synthetic_benchmark(tmp_path):
    paths = write_synthetic_benchmark(tmp_path / "bench", [2, 11], seed=4, blocks=1)
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == ["Freq_Phase.mat", "S11.mat", "S2.mat"]
    assert [p.name for p in paths] == ["S2.mat", "S11.mat", "Freq_Phase.mat"]
    np.testing.assert_array_equal(read_benchmark_subject(paths[1]), generate_subject(11, 4, blocks=1))
    freqs, phases = read_freq_phase(paths[2])
    np.testing.assert_allclose(freqs, BENCHMARK_FREQS)
    np.testing.assert_allclose(phases, BENCHMARK_PHASES)

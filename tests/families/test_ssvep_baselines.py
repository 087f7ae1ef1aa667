"""CCA, FBCCA and eTRCA on synthetic Benchmark-format data behave as in the literature (bci.md §4, §6)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.data.benchmark import BENCHMARK_FREQS, OCCIPITAL_9
from edge.data.synthetic_ssvep import generate_subject
from edge.errors import DataError
from edge.families.ssvep.baselines import (
    CCA,
    ETRCA,
    FBCCA,
    filter_bank_weights,
    make_baseline,
    ssvep_windows,
)

# Subject 3 (seed 0) is a middling subject: at 1.0 s CCA gets ~69 %, FBCCA ~77 % and eTRCA ~99 %,
# at 0.3 s all are well below their ceiling, so both the ordering and the trend with window are visible.
SUBJECT = 3
WINDOWS = (0.3, 0.5, 1.0)
RATE = 250
CHANNELS = list(range(len(OCCIPITAL_9)))


def _accuracies(data: np.ndarray, windows: tuple[float, ...]) -> dict[tuple[str, float], float]:
    """Accuracy of each method at each window; eTRCA by leave-one-block-out."""
    acc = {}
    for window in windows:
        x, y, block = ssvep_windows(data, window, channel_idx=CHANNELS)
        acc["cca", window] = CCA(BENCHMARK_FREQS, RATE).fit().score(x, y)
        acc["fbcca", window] = FBCCA(BENCHMARK_FREQS, RATE).fit().score(x, y)
        correct = []
        for held_out in np.unique(block):
            train, test = block != held_out, block == held_out
            model = ETRCA(RATE).fit(x[train], y[train])
            correct.append(model.predict(x[test]) == y[test])
        acc["etrca", window] = float(np.mean(np.concatenate(correct)))
    return acc


@pytest.fixture(scope="module")
def accuracy() -> dict[tuple[str, float], float]:
    return _accuracies(generate_subject(SUBJECT, 0, channels=OCCIPITAL_9), WINDOWS)


@pytest.mark.parametrize("window", [0.3, 0.5])
def test_etrca_beats_fbcca_at_short_windows(accuracy, window: float) -> None:
    assert accuracy["etrca", window] > accuracy["fbcca", window] + 0.2, accuracy


@pytest.mark.parametrize("method", ["cca", "fbcca", "etrca"])
def test_accuracy_rises_with_window_length(accuracy, method: str) -> None:
    curve = [accuracy[method, w] for w in WINDOWS]
    assert curve[0] < curve[1] < curve[2], (method, curve)
    assert curve[2] > 0.5, (method, curve)  # well above chance (2.5 %) at 1 s


def test_without_ssvep_accuracy_is_chance() -> None:
    acc = _accuracies(generate_subject(SUBJECT, 0, snr=0.0, channels=OCCIPITAL_9), (0.5,))
    # 240 trials, 40 targets: chance is 2.5 %, and 10 % is far beyond its binomial spread.
    assert all(value < 0.10 for value in acc.values()), acc


def test_fbcca_weights_follow_chen() -> None:
    model = FBCCA(BENCHMARK_FREQS, RATE).fit()
    expected = [1.25, 0.670448, 0.503279, 0.426777, 0.383748]  # n^-1.25 + 0.25, n = 1..5
    np.testing.assert_allclose(model.weights_, expected, atol=1e-6)
    np.testing.assert_allclose(filter_bank_weights(3, a=2.0, b=0.0), [1.0, 0.25, 1 / 9])
    assert len(model.filters_) == 5


def _ten_hz(harmonic_amps: tuple[float, ...]) -> tuple[np.ndarray, int]:
    """Four 1 s trials of a 10 Hz signal (random phase per channel) plus small noise, and its target."""
    rng = np.random.default_rng(1)
    t = np.arange(RATE) / RATE
    phases = rng.uniform(0, 2 * np.pi, (4, 9, 1))
    x = sum(a * np.sin(2 * np.pi * 10.0 * h * t + h * phases) for h, a in enumerate(harmonic_amps, 1))
    x = x + 0.1 * rng.standard_normal((4, 9, RATE))
    return x, int(np.flatnonzero(BENCHMARK_FREQS == 10.0)[0])


def test_cca_classifies_a_pure_sinusoid_by_its_frequency() -> None:
    x, target = _ten_hz((1.0,))
    model = CCA(BENCHMARK_FREQS, RATE).fit()
    assert model.predict(x).tolist() == [target] * 4
    assert model.decision_function(x).shape == (4, 40)


def test_fbcca_classifies_a_harmonic_signal_by_its_frequency() -> None:
    # Sub-band n of FBCCA passes 8n Hz and up, so sub-bands 2..5 see only harmonics: give it 5 of them.
    x, target = _ten_hz((1.0, 0.5, 0.33, 0.25, 0.2))
    assert FBCCA(BENCHMARK_FREQS, RATE).fit().predict(x).tolist() == [target] * 4


def test_cca_band_pass_keeps_the_target() -> None:
    t = np.arange(RATE) / RATE
    x = np.sin(2 * np.pi * 12.4 * t) * np.ones((2, 3, 1)) + 50 * np.sin(2 * np.pi * 2.0 * t)
    model = CCA(BENCHMARK_FREQS, RATE, harmonics=2, band=(7.0, 90.0)).fit()
    assert BENCHMARK_FREQS[model.predict(x)].tolist() == [12.4, 12.4]


def test_trca_without_ensemble_learns() -> None:
    data = generate_subject(SUBJECT, 0, channels=OCCIPITAL_9, blocks=3)
    x, y, block = ssvep_windows(data, 1.0, channel_idx=CHANNELS)
    model = ETRCA(RATE, sub_bands=2, ensemble=False).fit(x[block < 2], y[block < 2])
    assert model.spatial_filters_.shape == (2, 9, 40)
    assert model.score(x[block == 2], y[block == 2]) > 0.3


def test_ssvep_windows_slices_block_major_without_filtering() -> None:
    data = np.random.default_rng(0).standard_normal((5, 1500, 40, 2)).astype(np.float32)
    x, y, block = ssvep_windows(data, 0.4, channel_idx=[4, 1])
    assert x.shape == (80, 2, 100)
    assert y[:3].tolist() == [0, 1, 2] and block.tolist() == [0] * 40 + [1] * 40
    # Trial 41 is target 1 of block 1; the window starts at onset 125 + 0.14 s * 250 = 160.
    np.testing.assert_array_equal(x[41], data[[4, 1], 160:260, 1, 1])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: CCA(BENCHMARK_FREQS, RATE).fit().predict(np.zeros((9, 250))),
         r"'x' parameter of CCA\.decision_function .* Got shape \(9, 250\)"),
        (lambda: FBCCA(BENCHMARK_FREQS, RATE).fit(np.zeros((2, 9))),
         r"'x' parameter of FBCCA\.fit .* Got shape \(2, 9\)"),
        (lambda: ETRCA(RATE).fit(np.zeros((4, 9, 100)), np.array([0, 0, 1])),
         r"'y' parameter of ETRCA\.fit .* \(4,\).* Got shape \(3,\)"),
        (lambda: ETRCA(RATE).fit(np.ones((4, 2, 100)), np.array([0, 0, 1, 2])),
         r"at least 2 training trials of every class"),
        (lambda: ETRCA(RATE).predict(np.zeros((1, 9, 100))), r"not fitted yet"),
        (lambda: FBCCA(BENCHMARK_FREQS, RATE, sub_bands=11).fit(),
         r"'sub_bands' parameter of FBCCA must be an integer in \[1, 10\]\. Got 11"),
        (lambda: CCA(BENCHMARK_FREQS, RATE, harmonics=8).fit(), r"Nyquist"),
        (lambda: ssvep_windows(np.zeros((9, 1500, 40)), 0.5, channel_idx=[0]),
         r"'data' parameter of ssvep_windows .* Got shape \(9, 1500, 40\)"),
        (lambda: ssvep_windows(np.zeros((9, 1500, 40, 1)), 6.0, channel_idx=[0]), r"runs past"),
    ],
)
def test_bad_input_raises_data_error(call, match: str) -> None:
    with pytest.raises(DataError, match=match):
        call()


def test_etrca_rejects_windows_of_another_length() -> None:
    rng = np.random.default_rng(0)
    model = ETRCA(RATE, sub_bands=1).fit(rng.standard_normal((4, 3, 100)), np.array([0, 0, 1, 1]))
    with pytest.raises(DataError, match=r"\(channels, samples\) = \(3, 100\)\. Got shape \(1, 3, 120\)"):
        model.predict(rng.standard_normal((1, 3, 120)))


def test_make_baseline_builds_and_suggests() -> None:
    model = make_baseline("FBCCA", stim_freqs=BENCHMARK_FREQS, sample_rate=RATE, sub_bands=3)
    assert isinstance(model, FBCCA) and model.sub_bands == 3
    assert isinstance(make_baseline("etrca", sample_rate=RATE), ETRCA)
    with pytest.raises(DataError, match=r"Unknown SSVEP baseline 'fbca'.*Did you mean 'fbcca'\?"):
        make_baseline("fbca")

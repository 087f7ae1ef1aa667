"""Campaign statistics against known answers: Leveugle sample sizes, Wilson, Clopper-Pearson, coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from edge.errors import DataError
from edge.metrics import wilson_interval as evaluate_wilson
from edge.faults.statistics import (
    achieved_margin,
    clopper_pearson_interval,
    mean_interval,
    sample_size,
    two_sided_quantile,
    wilson_interval,
)

# faults.md section 6.1: computed with t rounded to three decimals (1.645, 1.96, 2.576, 3.291) and N = 1e12.
PUBLISHED = {
    (0.90, 0.05): 271, (0.90, 0.01): 6766, (0.90, 0.005): 27061, (0.90, 0.001): 676506,
    (0.95, 0.05): 385, (0.95, 0.01): 9604, (0.95, 0.005): 38416, (0.95, 0.001): 960400,
    (0.99, 0.05): 664, (0.99, 0.01): 16590, (0.99, 0.005): 66358, (0.99, 0.001): 1658942,
    (0.999, 0.05): 1084, (0.999, 0.01): 27077, (0.999, 0.005): 108307, (0.999, 0.001): 2707663,
}


def test_quantile_is_two_sided() -> None:
    assert two_sided_quantile(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert two_sided_quantile(0.99) == pytest.approx(2.575829, abs=1e-6)
    assert two_sided_quantile(0.90) == pytest.approx(1.644854, abs=1e-6)


@pytest.mark.parametrize(("confidence", "margin"), sorted(PUBLISHED))
def test_sample_size_reproduces_the_published_table(confidence: float, margin: float) -> None:
    t = round(two_sided_quantile(confidence), 3)
    assert sample_size(margin, confidence, t=t, population=1e12) == PUBLISHED[(confidence, margin)]


def test_sample_size_with_the_exact_quantile() -> None:
    assert sample_size(0.05, 0.95) == 385
    assert sample_size(0.05, 0.99) == 664  # IterativeFI's one-step figure
    # The exact t = 2.5758 gives 16588; IterativeFI and the table print 16590 because they use t = 2.576.
    assert sample_size(0.01, 0.99) == 16588
    assert sample_size(0.01, 0.99, t=2.576) == 16590
    # The one-sided mistake norm.ppf(0.99) = 2.326 would give 13530.
    assert sample_size(0.01, 0.99) != math.ceil(stats.norm.ppf(0.99) ** 2 * 0.25 / 0.01**2)


def test_finite_population_correction() -> None:
    resnet20_bits = 32 * 270_896
    assert sample_size(0.01, 0.99, t=2.576, population=resnet20_bits) == 16558  # faults.md section 6.1
    assert sample_size(0.05, 0.95, population=100) == 80  # small populations need far fewer injections
    assert sample_size(0.05, 0.95, population=1) == 1


def test_achieved_margin_inverts_the_sample_size() -> None:
    for confidence, margin in [(0.95, 0.05), (0.99, 0.01), (0.9, 0.005)]:
        n = sample_size(margin, confidence)
        assert margin * 0.99 < achieved_margin(n, confidence) <= margin
        n = sample_size(margin, confidence, population=50_000)
        assert achieved_margin(n, confidence, population=50_000) <= margin
    assert achieved_margin(1000, 0.95) == pytest.approx(0.031, abs=5e-4)  # NVBitFI: 1000 runs -> 95 % +- 3.1 %


def test_wilson_reuses_the_evaluate_implementation_and_matches_known_values() -> None:
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10)[1] == pytest.approx(1.959964**2 / (10 + 1.959964**2), abs=1e-6)
    assert wilson_interval(37, 120) == pytest.approx(evaluate_wilson(37, 120), abs=1e-6)
    wider = wilson_interval(37, 120, confidence=0.99)
    assert wider[0] < evaluate_wilson(37, 120)[0] and wider[1] > evaluate_wilson(37, 120)[1]


def test_clopper_pearson_known_values_and_rule_of_three() -> None:
    assert clopper_pearson_interval(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    assert clopper_pearson_interval(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0), abs=1e-9)
    for n in (300, 1000, 10_000):
        # Rule of three: zero failures in n runs -> one-sided 95 % upper bound ~ 3/n (= two-sided 90 %).
        assert clopper_pearson_interval(0, n, confidence=0.90)[1] == pytest.approx(3 / n, rel=0.01)
        assert clopper_pearson_interval(0, n)[1] == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)
    with pytest.raises(DataError, match="0 <= successes <= n"):
        clopper_pearson_interval(11, 10)


@pytest.mark.parametrize("p", [0.02, 0.1, 0.5])
def test_intervals_cover_the_true_proportion_about_95_percent_of_the_time(p: float) -> None:
    rng = np.random.default_rng(1234)
    n, trials = 200, 2000
    hits = rng.binomial(n, p, size=trials)
    wilson = np.array([wilson_interval(k, n) for k in hits])
    exact = np.array([clopper_pearson_interval(k, n) for k in hits])
    wilson_cover = np.mean((wilson[:, 0] <= p) & (p <= wilson[:, 1]))
    exact_cover = np.mean((exact[:, 0] <= p) & (p <= exact[:, 1]))
    assert 0.925 <= wilson_cover <= 0.975
    assert 0.945 <= exact_cover <= 0.995  # conservative by construction


def test_mean_interval_is_the_student_t_interval() -> None:
    values = np.array([0.41, 0.45, 0.02, 0.44, 0.45, 0.30, 0.45, 0.45])
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean_interval(values) == pytest.approx((lo, hi))
    assert mean_interval([0.5]) == (0.0, 1.0)
    assert mean_interval([0.0, 0.0, 0.0]) == (0.0, 0.0)
    assert mean_interval([0.99, 1.0, 1.0])[1] == 1.0  # clipped to the bounds


def test_bad_parameters_are_refused_with_one_sentence() -> None:
    with pytest.raises(DataError, match="margin of error must be in"):
        sample_size(0.0)
    with pytest.raises(DataError, match="confidence level must be in"):
        sample_size(0.05, confidence=95)

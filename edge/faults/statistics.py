"""Statistics of fault-injection campaigns: how many injections, and how sure the rates are (faults.md section 6).

>>> sample_size(margin=0.01, confidence=0.99)            # Leveugle et al., DATE 2009, p = 0.5, huge population
16588
>>> sample_size(margin=0.01, confidence=0.99, t=2.576)   # the published tables round t to three decimals
16590
>>> clopper_pearson_interval(0, 1000)                    # no failure in 1000 runs
(0.0, 0.00368...)

``t`` is always the *two-sided* normal quantile ``norm.ppf(1 - (1 - confidence) / 2)`` (2.576 at 99 %), not
``norm.ppf(confidence)``, which one public implementation uses by mistake.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from edge.errors import DataError
from edge.metrics import wilson_interval as _wilson95


def two_sided_quantile(confidence: float) -> float:
    """The normal quantile ``t`` with ``confidence`` probability between ``-t`` and ``t``."""
    _check_confidence(confidence)
    return float(stats.norm.ppf(1.0 - (1.0 - confidence) / 2.0))


def sample_size(margin: float, confidence: float = 0.95, *, p: float = 0.5, population: float | None = None,
                t: float | None = None) -> int:
    """Injections needed for a failure proportion within ``±margin`` at ``confidence`` (Leveugle et al. 2009).

    ``n = N / (1 + e^2 (N - 1) / (t^2 p (1 - p)))``, rounded up; ``population`` N is the number of possible faults
    (None: infinite, ``n = t^2 p (1 - p) / e^2``); ``p`` the expected failure proportion (0.5 is the worst case);
    ``t`` overrides the exact two-sided quantile (the published tables use 1.645, 1.96, 2.576, 3.291).
    """
    if not 0.0 < margin < 1.0:
        raise DataError(f"The margin of error must be in (0, 1); got {margin!r}.")
    if not 0.0 < p < 1.0:
        raise DataError(f"The expected failure proportion p must be in (0, 1); got {p!r}.")
    t = two_sided_quantile(confidence) if t is None else float(t)
    core = t * t * p * (1.0 - p)
    if population is None or math.isinf(population):
        return math.ceil(core / margin**2)
    if population < 1:
        raise DataError(f"The fault population must be >= 1; got {population!r}.")
    return math.ceil(population / (1.0 + margin**2 * (population - 1.0) / core))


def achieved_margin(n: int, confidence: float = 0.95, *, p: float = 0.5, population: float | None = None) -> float:
    """The margin of error ``e`` that ``n`` injections give (the Leveugle formula solved for ``e``).

    Pass the observed failure proportion as ``p`` for the margin around the estimate, or 0.5 for the worst case.
    """
    if n < 1:
        raise DataError(f"The number of injections must be >= 1; got {n!r}.")
    t = two_sided_quantile(confidence)
    fpc = 1.0 if population is None or math.isinf(population) else max(0.0, (population - n) / (population - 1.0))
    return float(t * math.sqrt(p * (1.0 - p) / n * fpc))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (``edge.evaluate.wilson_interval`` at the given confidence)."""
    return _wilson95(int(successes), int(n), z=two_sided_quantile(confidence))


def clopper_pearson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion: conservative, never below the nominal coverage.

    With no success it gives ``[0, 1 - (alpha/2)^(1/n)]``, about 3.7/n at 95 % (3/n, the "rule of three", is the
    one-sided 95 % bound, i.e. the upper end of the two-sided 90 % interval).
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= successes <= n:
        raise DataError(f"A proportion needs 0 <= successes <= n; got {successes} of {n}.")
    if n == 0:
        return (0.0, 1.0)
    alpha = 1.0 - confidence
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(stats.beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return (lo, hi)


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95,
                  bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """Student-t interval of the mean of independent values (e.g. one accuracy per fault map), clipped to ``bounds``.

    With fewer than two values, nothing is known about the spread and the interval is ``bounds``. With zero spread
    (every map gave the same value) the interval collapses to that value: read the map-level Clopper-Pearson
    interval of "maps that changed anything" to bound how often that is wrong.
    """
    _check_confidence(confidence)
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return bounds
    if np.ptp(values) == 0:
        return (float(values[0]), float(values[0]))
    mean = float(values.mean())
    half = float(stats.t.ppf(1 - (1 - confidence) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return (max(bounds[0], mean - half), min(bounds[1], mean + half))


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise DataError(f"The confidence level must be in (0, 1), e.g. 0.95; got {confidence!r}.")

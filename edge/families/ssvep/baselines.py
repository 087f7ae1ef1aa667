"""Training-free and calibration-based SSVEP baselines: CCA, FBCCA and ensemble TRCA (bci.md §4).

Every classifier takes raw (unfiltered) windows x shaped (trials, channels, samples) that already
start at stimulus onset + visual latency, does its own zero-phase Chebyshev-I filtering, and follows
scikit-learn's conventions: the constructor only stores its arguments, ``fit`` learns attributes
ending in ``_``, ``decision_function`` returns (trials, classes) scores and ``predict`` the argmax.

    data = generate_subject(3, channels=OCCIPITAL_9)           # [9, 1500, 40, 6]
    x, y, block = ssvep_windows(data, 0.5, channel_idx=range(9))
    FBCCA(BENCHMARK_FREQS, 250).fit().predict(x)              # training-free
    ETRCA(250).fit(x[block != 0], y[block != 0]).predict(x[block == 0])
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
import scipy.linalg
import scipy.signal

from edge.data.preprocess import ssvep_windows
from edge.errors import DataError

__all__ = [
    "CCA",
    "CHEN_BANK",
    "ETRCA",
    "FBCCA",
    "NAKANISHI_BANK",
    "filter_bank_weights",
    "make_baseline",
    "ssvep_windows",
]

# (pass low, pass high, stop low, stop high) in Hz for each sub-band.
# Chen et al. 2015 (FBCCA): sub-band n passes [8n, 88] Hz; stop edges 2 Hz below the pass band and
# at 100 Hz, with the Chebyshev-I recipe of SSVEP-Analysis-Toolbox (cheb1ord(Wp, Ws, 3, 40), 0.5 dB).
CHEN_BANK: tuple[tuple[float, float, float, float], ...] = tuple(
    (8.0 * n, 88.0, 8.0 * n - 2.0, 100.0) for n in range(1, 11)
)
# Nakanishi et al. 2018, TRCA-SSVEP:src/filterbank.m.
NAKANISHI_BANK: tuple[tuple[float, float, float, float], ...] = tuple(
    (float(p), 90.0, float(s), 100.0)
    for p, s in zip((6, 14, 22, 30, 38, 46, 54, 62, 70, 78), (4, 10, 16, 24, 32, 40, 48, 56, 64, 72))
)

_GPASS_DB, _GSTOP_DB, _RIPPLE_DB = 3.0, 40.0, 0.5


def filter_bank_weights(sub_bands: int, a: float = 1.25, b: float = 0.25) -> np.ndarray:
    """Sub-band weights w(n) = n^-a + b for n = 1..sub_bands (Chen et al. 2015)."""
    return np.arange(1, sub_bands + 1, dtype=np.float64) ** -float(a) + float(b)


class _Baseline:
    """Shared input checks and prediction for the SSVEP baselines."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class index with the highest score for each trial of x (trials, channels, samples)."""
        self._check_fitted()
        return self.classes_[np.argmax(self.decision_function(x), axis=1)]

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        """Fraction of trials in x whose predicted class equals y."""
        y = self._check_y(y, self._check_x(x, "score").shape[0], "score")
        return float(np.mean(self.predict(x) == y))

    def _check_x(self, x: object, method: str) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float64)
        where = f"{type(self).__name__}.{method}"
        if arr.ndim != 3 or 0 in arr.shape:
            raise DataError(
                f"The 'x' parameter of {where} must be a non-empty array shaped (trials, channels, samples). "
                f"Got shape {np.shape(x)} instead."
            )
        if not np.all(np.isfinite(arr)):
            raise DataError(f"The 'x' parameter of {where} contains NaN or infinite values.")
        return arr

    def _check_y(self, y: object, n_trials: int, method: str) -> np.ndarray:
        arr = np.asarray(y)
        where = f"{type(self).__name__}.{method}"
        if arr.ndim != 1 or arr.shape[0] != n_trials or not np.issubdtype(arr.dtype, np.integer):
            raise DataError(
                f"The 'y' parameter of {where} must be integer labels shaped ({n_trials},), one per trial "
                f"of x. Got shape {arr.shape} and dtype {arr.dtype} instead."
            )
        return arr.astype(np.int64)

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise DataError(f"This {type(self).__name__} is not fitted yet; call fit() before using it.")


class CCA(_Baseline):
    """Standard CCA (Lin et al. 2006): max canonical correlation with sine/cosine references."""

    def __init__(
        self,
        stim_freqs: Sequence[float],
        sample_rate: float,
        harmonics: int = 5,
        band: tuple[float, float] | None = None,
    ) -> None:
        self.stim_freqs = stim_freqs
        self.sample_rate = sample_rate
        self.harmonics = harmonics
        self.band = band

    def fit(self, x: np.ndarray | None = None, y: np.ndarray | None = None) -> CCA:
        """Set up the references (and the optional band-pass); x is only checked and y is ignored."""
        if x is not None:
            self._check_x(x, "fit")
        self.freqs_ = _check_freqs(self, self.stim_freqs, self.sample_rate, self.harmonics)
        self.classes_ = np.arange(self.freqs_.size)
        self.filters_ = [] if self.band is None else [_band_sos(self, self.band, self.sample_rate)]
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Largest canonical correlation of each trial with each frequency's references: (trials, classes)."""
        self._check_fitted()
        x = self._check_x(x, "decision_function")
        if self.filters_:
            x = _zero_phase(self.filters_[0], x)
        return _cca_scores(x, _reference_bases(self.freqs_, self.sample_rate, self.harmonics, x.shape[-1]))


class FBCCA(_Baseline):
    """Filter-bank CCA (Chen et al. 2015): sum over sub-bands of w(n) * rho_n^2."""

    def __init__(
        self,
        stim_freqs: Sequence[float],
        sample_rate: float,
        sub_bands: int = 5,
        harmonics: int = 5,
        a: float = 1.25,
        b: float = 0.25,
    ) -> None:
        self.stim_freqs = stim_freqs
        self.sample_rate = sample_rate
        self.sub_bands = sub_bands
        self.harmonics = harmonics
        self.a = a
        self.b = b

    def fit(self, x: np.ndarray | None = None, y: np.ndarray | None = None) -> FBCCA:
        """Set up references, sub-band filters and weights; x is only checked and y is ignored."""
        if x is not None:
            self._check_x(x, "fit")
        self.freqs_ = _check_freqs(self, self.stim_freqs, self.sample_rate, self.harmonics)
        self.classes_ = np.arange(self.freqs_.size)
        self.filters_ = _bank_sos(self, CHEN_BANK, self.sub_bands, self.sample_rate)
        self.weights_ = filter_bank_weights(self.sub_bands, self.a, self.b)
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Weighted sum of squared sub-band canonical correlations: (trials, classes)."""
        self._check_fitted()
        x = self._check_x(x, "decision_function")
        bases = _reference_bases(self.freqs_, self.sample_rate, self.harmonics, x.shape[-1])
        scores = np.zeros((x.shape[0], self.freqs_.size))
        for weight, sos in zip(self.weights_, self.filters_):
            scores += weight * _cca_scores(_zero_phase(sos, x), bases) ** 2
        return scores


class ETRCA(_Baseline):
    """Ensemble TRCA (Nakanishi et al. 2018) with the Nakanishi filter bank; needs labelled trials."""

    def __init__(
        self,
        sample_rate: float,
        sub_bands: int = 5,
        a: float = 1.25,
        b: float = 0.25,
        ensemble: bool = True,
    ) -> None:
        self.sample_rate = sample_rate
        self.sub_bands = sub_bands
        self.a = a
        self.b = b
        self.ensemble = ensemble

    def fit(self, x: np.ndarray, y: np.ndarray) -> ETRCA:
        """Learn per-class, per-sub-band spatial filters and templates from labelled trials."""
        x = self._check_x(x, "fit")
        y = self._check_y(y, x.shape[0], "fit")
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() < 2:
            raise DataError(
                "ETRCA.fit needs at least 2 training trials of every class (TRCA maximises "
                f"reproducibility across trials). Got 1 trial of class {int(classes[counts.argmin()])}."
            )
        _check_rate(self, self.sample_rate)
        self.filters_ = _bank_sos(self, NAKANISHI_BANK, self.sub_bands, self.sample_rate)
        self.weights_ = filter_bank_weights(self.sub_bands, self.a, self.b)
        n_ch, n = x.shape[1:]
        self.templates_ = np.empty((self.sub_bands, classes.size, n_ch, n))
        self.spatial_filters_ = np.empty((self.sub_bands, n_ch, classes.size))
        for i, sos in enumerate(self.filters_):
            xf = _zero_phase(sos, x)
            for k, c in enumerate(classes):
                trials = xf[y == c]
                self.templates_[i, k] = trials.mean(axis=0)
                self.spatial_filters_[i, :, k] = _trca_filter(trials)
        self.classes_ = classes
        self.n_channels_, self.n_samples_ = n_ch, n
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Weighted sum over sub-bands of the correlation with each class template: (trials, classes)."""
        self._check_fitted()
        x = self._check_x(x, "decision_function")
        if x.shape[1:] != (self.n_channels_, self.n_samples_):
            raise DataError(
                "The 'x' parameter of ETRCA.decision_function must have the fitted (channels, samples) = "
                f"({self.n_channels_}, {self.n_samples_}). Got shape {x.shape} instead."
            )
        scores = np.zeros((x.shape[0], self.classes_.size))
        for i, (weight, sos) in enumerate(zip(self.weights_, self.filters_)):
            xf = _zero_phase(sos, x)
            w = self.spatial_filters_[i]  # (channels, classes)
            if self.ensemble:
                test = _standardise((xf.transpose(0, 2, 1) @ w).reshape(x.shape[0], -1))
                tmpl = (self.templates_[i].transpose(0, 2, 1) @ w).reshape(self.classes_.size, -1)
                scores += weight * (test @ _standardise(tmpl).T)
            else:
                test = _standardise(w.T @ xf)  # (trials, classes, n)
                tmpl = _standardise(np.einsum("kcn,ck->kn", self.templates_[i], w))
                scores += weight * (test * tmpl).sum(axis=-1)
        return scores


_BASELINES = {"cca": CCA, "fbcca": FBCCA, "etrca": ETRCA}


def make_baseline(name: str, **kw) -> CCA | FBCCA | ETRCA:
    """Build a baseline by name ('cca', 'fbcca' or 'etrca') with its constructor arguments."""
    key = str(name).lower()
    if key not in _BASELINES:
        near = difflib.get_close_matches(key, list(_BASELINES), n=1, cutoff=0.5)
        hint = f" Did you mean '{near[0]}'?" if near else ""
        raise DataError(
            f"Unknown SSVEP baseline '{name}'; choose one of {', '.join(_BASELINES)}.{hint}"
        )
    return _BASELINES[key](**kw)


def _check_rate(owner: object, sample_rate: float) -> float:
    rate = float(sample_rate)
    if not np.isfinite(rate) or rate <= 0:
        raise DataError(
            f"The 'sample_rate' parameter of {type(owner).__name__} must be a positive number of Hz. "
            f"Got {sample_rate!r} instead."
        )
    return rate


def _check_freqs(
    owner: object, stim_freqs: Sequence[float], sample_rate: float, harmonics: int
) -> np.ndarray:
    name = type(owner).__name__
    rate = _check_rate(owner, sample_rate)
    if isinstance(harmonics, bool) or not isinstance(harmonics, (int, np.integer)) or harmonics < 1:
        raise DataError(
            f"The 'harmonics' parameter of {name} must be an integer >= 1. Got {harmonics!r} instead."
        )
    freqs = np.asarray(stim_freqs, dtype=np.float64)
    if freqs.ndim != 1 or freqs.size < 2 or not np.all(np.isfinite(freqs)) or np.any(freqs <= 0):
        raise DataError(
            f"The 'stim_freqs' parameter of {name} must be at least 2 positive frequencies in Hz. "
            f"Got {stim_freqs!r} instead."
        )
    if harmonics * freqs.max() >= rate / 2:
        raise DataError(
            f"The 'harmonics' parameter of {name} puts harmonic {harmonics} of {freqs.max()} Hz at or above "
            f"the Nyquist frequency ({rate / 2} Hz); use fewer harmonics. Got {harmonics} instead."
        )
    return freqs


def _design(pass_band: tuple[float, float], stop_band: tuple[float, float], rate: float) -> np.ndarray:
    order, wn = scipy.signal.cheb1ord(pass_band, stop_band, _GPASS_DB, _GSTOP_DB, fs=rate)
    return scipy.signal.cheby1(order, _RIPPLE_DB, wn, btype="bandpass", output="sos", fs=rate)


def _fit_to_rate(edges: tuple[float, float, float, float], rate: float) -> tuple[float, float, float, float]:
    p_lo, p_hi, s_lo, s_hi = edges
    nyquist = rate / 2
    # The banks are drawn for 250 Hz; below ~225 Hz their 100 Hz stop edge is past Nyquist, so the
    # upper edges move down instead of failing.
    if s_hi >= 0.9 * nyquist:
        s_hi, p_hi = 0.9 * nyquist, min(p_hi, 0.8 * nyquist)
    return p_lo, p_hi, s_lo, s_hi


def _bank_sos(
    owner: object, bank: Sequence[tuple[float, float, float, float]], sub_bands: int, sample_rate: float
) -> list[np.ndarray]:
    name = type(owner).__name__
    is_int = isinstance(sub_bands, (int, np.integer)) and not isinstance(sub_bands, bool)
    if not is_int or not 1 <= sub_bands <= len(bank):
        raise DataError(
            f"The 'sub_bands' parameter of {name} must be an integer in [1, {len(bank)}]. "
            f"Got {sub_bands!r} instead."
        )
    rate = _check_rate(owner, sample_rate)
    filters = []
    for n, edges in enumerate(bank[:sub_bands], start=1):
        p_lo, p_hi, s_lo, s_hi = _fit_to_rate(edges, rate)
        if not 0 < s_lo < p_lo < p_hi < s_hi:
            raise DataError(
                f"Sub-band {n} of {name} ({p_lo}-{p_hi} Hz) does not fit below the Nyquist frequency at "
                f"{rate} Hz; use fewer sub_bands. Got sub_bands={sub_bands} instead."
            )
        filters.append(_design((p_lo, p_hi), (s_lo, s_hi), rate))
    return filters


def _band_sos(owner: object, band: tuple[float, float], sample_rate: float) -> np.ndarray:
    rate = _check_rate(owner, sample_rate)
    try:
        lo, hi = (float(v) for v in band)
    except (TypeError, ValueError):
        raise DataError(
            f"The 'band' parameter of {type(owner).__name__} must be a (low, high) pair in Hz or None. "
            f"Got {band!r} instead."
        ) from None
    if not 0 < lo < hi < rate / 2:
        raise DataError(
            f"The 'band' parameter of {type(owner).__name__} must satisfy 0 < low < high < {rate / 2} Hz. "
            f"Got {band!r} instead."
        )
    # Same transition widths as the first Nakanishi sub-band: 2 Hz below, 10 Hz above (or to Nyquist).
    s_hi = min(hi + 10.0, 0.5 * (hi + rate / 2))
    return _design((lo, hi), (max(lo - 2.0, lo / 2), s_hi), rate)


def _zero_phase(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    # MATLAB's filtfilt pads 3*(filter length - 1) samples; capping at the window keeps the
    # high-order sub-bands usable on windows as short as 0.2 s (50 samples).
    padlen = min(3 * 2 * sos.shape[0], x.shape[-1] - 1)
    return scipy.signal.sosfiltfilt(sos, x, axis=-1, padlen=padlen)


def _reference_bases(freqs: np.ndarray, rate: float, harmonics: int, n: int) -> np.ndarray:
    """Orthonormal bases (classes, n, 2*harmonics) of the centred sine/cosine references."""
    t = np.arange(1, n + 1) / rate
    h = np.arange(1, harmonics + 1)
    arg = 2 * np.pi * freqs[:, None, None] * h[None, None, :] * t[None, :, None]  # (K, n, H)
    refs = np.concatenate([np.sin(arg), np.cos(arg)], axis=-1)
    refs -= refs.mean(axis=1, keepdims=True)
    return np.linalg.qr(refs)[0]


def _cca_scores(x: np.ndarray, bases: np.ndarray) -> np.ndarray:
    """Largest canonical correlation of each trial x (trials, C, n) with each basis: (trials, classes)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    qx = np.linalg.qr(xc.transpose(0, 2, 1))[0]  # (trials, n, min(C, n))
    t, n, c = qx.shape
    k, _, h = bases.shape
    # One GEMM over all trials and classes instead of many tiny products.
    flat = qx.transpose(0, 2, 1).reshape(t * c, n) @ bases.transpose(1, 0, 2).reshape(n, k * h)
    cross = flat.reshape(t, c, k, h).transpose(0, 2, 1, 3)
    return np.linalg.svd(cross, compute_uv=False)[..., 0]


def _trca_filter(trials: np.ndarray) -> np.ndarray:
    """Leading TRCA spatial filter of one class's trials (trials, C, n) (Nakanishi trca.m)."""
    centred = trials - trials.mean(axis=-1, keepdims=True)
    total = centred.sum(axis=0)
    # S = sum over i != j of X_i X_j^T = (sum X)(sum X)^T - sum X_i X_i^T.
    s = total @ total.T - np.einsum("icn,idn->cd", centred, centred)
    pooled = np.concatenate(list(trials), axis=-1)
    pooled = pooled - pooled.mean(axis=-1, keepdims=True)
    q = pooled @ pooled.T
    try:
        _, vectors = scipy.linalg.eigh(s, q)
    except np.linalg.LinAlgError:
        raise DataError(
            "ETRCA.fit could not solve the TRCA eigenproblem: the channels of the training trials are "
            "linearly dependent (e.g. a flat or duplicated channel); drop such channels."
        ) from None
    return vectors[:, -1]


def _standardise(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)

"""Dense-to-spike encoders: delta modulation, Bernoulli rate coding and the SSVEP spike recipe.

Spike trains are time-major (``[..., time, features]``) because a spiking network consumes one time
step at a time. Everything here is numpy/scipy only, so a device host can encode data exactly as the
network was trained on, from nothing but the plain-JSON ``encoding`` stored in the model's metadata.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np
import scipy.signal

from edge.errors import DataError

__all__ = ["ENCODING_KEYS", "clock_spikes", "delta_encode", "rate_encode", "ssvep_spikes"]

# Every key ``ssvep_spikes`` understands, with its default; ``encoder`` has none and must be given.
ENCODING_KEYS: dict[str, Any] = {
    "encoder": None,
    "band_hz": None,
    "filter_order": 4,
    "causal": False,
    "downsample": 1,
    "normalise": "per-trial-std",
    "threshold": 0.5,
    "gain": 1.0,
    "seed": 0,
    "clock_steps": 0,
}
ENCODERS = ("delta", "rate")
NORMALISERS = ("per-trial-std", "per-channel-std", "none")


def delta_encode(x: np.ndarray, threshold: float, *, axis: int = -1) -> np.ndarray:
    """ON/OFF send-on-delta spikes of x [..., channels, samples]: float32 [..., samples, 2 * channels].

    Each channel keeps a reference level that starts at its first sample. Whenever the signal rises
    above reference + threshold an ON spike is sent and the reference moves up by one threshold;
    falls below reference - threshold send OFF spikes likewise. At most one spike per sample and
    polarity is sent, so a signal that moves faster than ``threshold`` per sample is tracked with a lag
    (the reference keeps catching up on the following samples). The first sample never spikes.
    ON channels come first, then OFF channels, in the input's channel order.
    """
    if not np.isfinite(threshold) or threshold <= 0:
        raise DataError(f"delta_encode needs a threshold > 0; got {threshold}.")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[axis] == 0:
        raise DataError(f"delta_encode needs x shaped [..., channels, samples]; got shape {x.shape}.")
    x = np.moveaxis(x, axis, -1)
    samples = x.shape[-1]
    on = np.zeros(x.shape, dtype=bool)
    off = np.zeros(x.shape, dtype=bool)
    reference = x[..., 0].copy()
    # The recursion in time is inherently sequential; trials and channels are vectorised.
    for t in range(1, samples):
        now = x[..., t]
        up = now > reference + threshold
        down = now < reference - threshold
        reference += threshold * up
        reference -= threshold * down
        on[..., t] = up
        off[..., t] = down
    spikes = np.concatenate([on, off], axis=-2)  # [..., 2 * channels, samples]
    return np.ascontiguousarray(np.swapaxes(spikes, -1, -2), dtype=np.float32)


def rate_encode(
    x: np.ndarray, time_steps: int, *, seed: int = 0, gain: float = 1.0, feature_axes: int = 1
) -> np.ndarray:
    """Bernoulli spikes with probability clip(gain * x, 0, 1): x [..., *features] -> [..., time_steps, *features].

    The last ``feature_axes`` axes are the features; the time axis is inserted just before them. The
    same seed gives the same spikes.
    """
    x = np.asarray(x, dtype=np.float64)
    if int(time_steps) < 1:
        raise DataError(f"rate_encode needs time_steps >= 1; got {time_steps}.")
    if not 0 <= feature_axes <= x.ndim:
        raise DataError(f"rate_encode got feature_axes={feature_axes} for an array of {x.ndim} dimensions.")
    if not np.all(np.isfinite(x)):
        raise DataError("rate_encode got NaN or Inf values; drop or repair those inputs.")
    p = np.clip(gain * x, 0.0, 1.0)
    split = x.ndim - feature_axes
    p = np.expand_dims(p, split)
    shape = p.shape[:split] + (int(time_steps),) + p.shape[split + 1 :]
    draws = np.random.default_rng(seed).random(shape)
    return (draws < p).astype(np.float32)


def ssvep_spikes(raw: np.ndarray, sample_rate: float, encoding: dict[str, Any]) -> np.ndarray:
    """Spike trains float32 [trials, T, features] from raw SSVEP windows [trials, channels, samples] in µV.

    The recipe runs in this order, driven only by ``encoding`` (plain JSON; missing keys take the
    defaults in ``ENCODING_KEYS``):

    - ``band_hz``: ``[low, high]`` Butterworth band-pass in Hz, or null for none;
    - ``filter_order``: order of that Butterworth design (the band-pass has twice as many poles);
    - ``causal``: false filters forward and backward with ``sosfiltfilt`` (zero phase, what the
      window looks like offline); true runs one causal ``sosfilt`` pass from rest, as a streaming
      device would;
    - ``downsample``: keep every n-th filtered sample (the band-pass is the anti-alias filter, so
      ``high`` must lie below the new Nyquist frequency; with ``band_hz`` null nothing guards against
      aliasing); T = ceil(samples / downsample);
    - ``normalise``: ``"per-trial-std"`` divides each trial by its standard deviation over all
      channels and samples (keeps the channels' relative amplitudes), ``"per-channel-std"`` divides
      each channel of each trial by its own, ``"none"`` keeps µV;
    - ``encoder``: ``"delta"`` gives ON/OFF send-on-delta spikes (``delta_encode``) with ``threshold``
      in the normalised units, features = 2 * channels, ON first; ``"rate"`` draws one Bernoulli
      spike per sample with probability clip(``gain`` * x, 0, 1) for ON and clip(-``gain`` * x, 0, 1)
      for OFF channels from ``seed``, features = 2 * channels;
    - ``clock_steps``: 0 for none, else ceil(T / clock_steps) clock channels are appended after the
      ON/OFF channels, channel k spiking at every step t with t // clock_steps == k. Windows are
      stimulus-locked but a spiking network is time-invariant, so without a time reference it cannot
      tell JFPM phases (or 0.2 Hz steps) apart; the clock lets each neuron learn a time-varying bias
      and act as a coincidence detector between the EEG and an expected waveform.
    """
    settings = _settings(encoding)
    x = np.asarray(raw, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] < 2:
        raise DataError(f"ssvep_spikes needs raw windows shaped [trials, channels, samples]; got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise DataError("ssvep_spikes got NaN or Inf samples; drop or repair those trials.")
    step = settings["downsample"]
    if settings["band_hz"] is not None:
        x = _band_pass(x, sample_rate, settings)
    x = x[..., ::step]
    x = _normalise(x, settings["normalise"])
    if settings["encoder"] == "delta":
        spikes = delta_encode(x, float(settings["threshold"]))
    else:
        on_off = np.swapaxes(np.concatenate([x, -x], axis=1), 1, 2)  # [trials, T, 2 * channels]
        drawn = rate_encode(on_off, 1, seed=int(settings["seed"]), gain=float(settings["gain"]), feature_axes=2)
        spikes = drawn[:, 0]
    if settings["clock_steps"]:
        clock = clock_spikes(spikes.shape[1], settings["clock_steps"])
        spikes = np.concatenate([spikes, np.broadcast_to(clock, (len(spikes), *clock.shape))], axis=-1)
    return np.ascontiguousarray(spikes, dtype=np.float32)


def clock_spikes(time_steps: int, clock_steps: int) -> np.ndarray:
    """One-hot time reference float32 [time_steps, ceil(time_steps / clock_steps)]: channel t // clock_steps spikes at t."""
    if int(clock_steps) < 1 or int(time_steps) < 1:
        raise DataError(f"clock_spikes needs time_steps and clock_steps >= 1; got {time_steps} and {clock_steps}.")
    steps = np.arange(int(time_steps))
    clock = np.zeros((len(steps), -(-len(steps) // int(clock_steps))), dtype=np.float32)
    clock[steps, steps // int(clock_steps)] = 1.0
    return clock


def _settings(encoding: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(encoding, dict):
        raise DataError(f"the spike encoding must be a dict of settings; got {type(encoding).__name__}.")
    for key in encoding:
        if key not in ENCODING_KEYS:
            close = difflib.get_close_matches(key, list(ENCODING_KEYS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else f" Known keys: {', '.join(ENCODING_KEYS)}."
            raise DataError(f"unknown spike-encoding key '{key}'.{hint}")
    settings = {**ENCODING_KEYS, **encoding}
    if settings["encoder"] not in ENCODERS:
        raise DataError(f"the spike encoding's 'encoder' must be one of {', '.join(ENCODERS)}; "
                        f"got {settings['encoder']!r}.")
    if settings["normalise"] not in NORMALISERS:
        raise DataError(f"the spike encoding's 'normalise' must be one of {', '.join(NORMALISERS)}; "
                        f"got {settings['normalise']!r}.")
    for key in ("downsample", "clock_steps"):
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "downsample" else 0):
            low = 1 if key == "downsample" else 0
            raise DataError(f"the spike encoding's '{key}' must be an integer >= {low}; got {value!r}.")
    threshold = settings["threshold"]
    if settings["encoder"] == "delta" and not (isinstance(threshold, int | float) and threshold > 0):
        raise DataError(f"the spike encoding's 'threshold' must be a number > 0; got {threshold!r}.")
    return settings


def _band_pass(x: np.ndarray, sample_rate: float, settings: dict[str, Any]) -> np.ndarray:
    band = settings["band_hz"]
    nyquist = sample_rate / 2.0 / settings["downsample"]
    try:
        low, high = (float(edge) for edge in band)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not 0 < low < high < nyquist:
        raise DataError(
            f"the spike encoding's 'band_hz' must be [low, high] with 0 < low < high < {nyquist:g} Hz "
            f"(the Nyquist frequency after downsampling by {settings['downsample']}); got {band}."
        )
    sos = scipy.signal.butter(int(settings["filter_order"]), [low, high], btype="bandpass", fs=sample_rate, output="sos")
    if settings["causal"]:
        return scipy.signal.sosfilt(sos, x, axis=-1)
    padlen = min(3 * (2 * len(sos) + 1), x.shape[-1] - 1)  # scipy's default, shortened for short windows
    return scipy.signal.sosfiltfilt(sos, x, axis=-1, padlen=padlen)


def _normalise(x: np.ndarray, how: str) -> np.ndarray:
    if how == "none":
        return x
    axes = (1, 2) if how == "per-trial-std" else (2,)
    std = x.std(axis=axes, keepdims=True)
    # A flat trial (a disconnected electrode) stays zero rather than dividing by zero.
    return x / np.where(std > 0, std, 1.0)

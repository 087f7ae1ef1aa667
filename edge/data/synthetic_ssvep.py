"""A seeded, realistic synthetic SSVEP generator in the Tsinghua Benchmark layout.

Each subject gets 40 JFPM targets x ``blocks`` trials of [channels, 1500] samples at
250 Hz with stimulus onset at sample 125. The SSVEP is a sum of 5 harmonics that starts
0.14 s after onset (with ~2 ms trial jitter), builds up over 50 ms and is largest over
Oz. The background is pink noise from 24 smooth scalp sources, occipital alpha, a little
50 Hz line noise and white sensor noise, all in microvolts.

Random numbers come from ``SeedSequence([seed, subject])`` only, split into independent
streams for the subject's constants, each block's trials and each channel's sensor noise
in each block, so a subject, a block and a channel come out the same however many of the
others are asked for.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.fft

from edge.data.benchmark import (
    BENCHMARK_CHANNELS,
    BENCHMARK_FREQS,
    BENCHMARK_PHASES,
    N_TARGETS,
    ONSET_SAMPLE,
    SAMPLE_RATE,
    TRIAL_SAMPLES,
    write_benchmark_subject,
    write_freq_phase,
)
from edge.errors import DataError

__all__ = ["CHANNEL_POSITIONS", "generate_subject", "write_synthetic_benchmark"]

# Approximate 2-D scalp positions (x right, y front; Cz at the origin, the 10-20
# circumference at radius 0.8) from an azimuthal projection of the 10-10 system.
# CB1/CB2 are placed at I1/I2 and M1/M2 at TP9/TP10.
CHANNEL_POSITIONS: dict[str, tuple[float, float]] = {
    "FP1": (-0.25, +0.76), "FPZ": (+0.00, +0.80), "FP2": (+0.25, +0.76), "AF3": (-0.24, +0.62),
    "AF4": (+0.24, +0.62), "F7": (-0.65, +0.47), "F5": (-0.49, +0.45), "F3": (-0.32, +0.44),
    "F1": (-0.16, +0.42), "FZ": (+0.00, +0.40), "F2": (+0.16, +0.42), "F4": (+0.32, +0.44),
    "F6": (+0.49, +0.45), "F8": (+0.65, +0.47), "FT7": (-0.76, +0.25), "FC5": (-0.57, +0.24),
    "FC3": (-0.38, +0.22), "FC1": (-0.19, +0.21), "FCZ": (+0.00, +0.20), "FC2": (+0.19, +0.21),
    "FC4": (+0.38, +0.22), "FC6": (+0.57, +0.24), "FT8": (+0.76, +0.25), "T7": (-0.80, +0.00),
    "C5": (-0.60, +0.00), "C3": (-0.40, +0.00), "C1": (-0.20, +0.00), "CZ": (+0.00, +0.00),
    "C2": (+0.20, +0.00), "C4": (+0.40, +0.00), "C6": (+0.60, +0.00), "T8": (+0.80, +0.00),
    "M1": (-0.95, -0.31), "TP7": (-0.76, -0.25), "CP5": (-0.57, -0.24), "CP3": (-0.38, -0.22),
    "CP1": (-0.19, -0.21), "CPZ": (+0.00, -0.20), "CP2": (+0.19, -0.21), "CP4": (+0.38, -0.22),
    "CP6": (+0.57, -0.24), "TP8": (+0.76, -0.25), "M2": (+0.95, -0.31), "P7": (-0.65, -0.47),
    "P5": (-0.49, -0.45), "P3": (-0.32, -0.44), "P1": (-0.16, -0.42), "PZ": (+0.00, -0.40),
    "P2": (+0.16, -0.42), "P4": (+0.32, -0.44), "P6": (+0.49, -0.45), "P8": (+0.65, -0.47),
    "PO7": (-0.47, -0.65), "PO5": (-0.35, -0.64), "PO3": (-0.24, -0.62), "POZ": (+0.00, -0.60),
    "PO4": (+0.24, -0.62), "PO6": (+0.35, -0.64), "PO8": (+0.47, -0.65), "CB1": (-0.31, -0.95),
    "O1": (-0.25, -0.76), "OZ": (+0.00, -0.80), "O2": (+0.25, -0.76), "CB2": (+0.31, -0.95),
}  # fmt: skip

_POS = np.array([CHANNEL_POSITIONS[name] for name in BENCHMARK_CHANNELS])

N_HARMONICS = 5
LATENCY_S = 0.14
STIMULUS_S = 5.0

# Population mean of the harmonic phases: subjects scatter around it, so what a network
# learns on some subjects transfers to others, as with real subjects.
_THETA_MEAN = np.array([0.6, -1.9, 2.5, 0.3, -2.8])
_THETA_SD = 0.3
_CHANNEL_LAG_SD = 0.15  # rad, per channel and harmonic order
_JITTER_SD_S = 0.002
_JITTER_MAX_S = 0.003
_BUILDUP_S = 0.05
_TRIAL_AMP_SIGMA = 0.2

# Absolute scales in microvolts, chosen so that a median subject (snr_scale 0.5) gives
# Benchmark-like CCA accuracy (about half the trials right at 1 s on 9 channels).
_SSVEP_UV = 9.0
_SNR_SCALE_MEDIAN = 0.5
_SNR_SCALE_SIGMA = 0.35
_PINK_UV = 14.0  # median over channels of the pink background's RMS
_PINK_SOURCES = 24
_PINK_EXPONENT = 1.2
_PINK_KNEE_HZ = 1.0
_ALPHA_UV = 6.0
_ALPHA_BANDWIDTH_HZ = 0.6
_LINE_UV = 0.5
_SENSOR_UV = (1.0, 2.0)


def generate_subject(
    subject: int,
    seed: int = 0,
    *,
    blocks: int = 6,
    snr: float = 1.0,
    channels: Sequence[str] | None = None,
    dtype: type | np.dtype = np.float32,
) -> np.ndarray:
    """Generate one subject as a Benchmark-layout array [channels, 1500, 40, blocks] in µV."""
    _check_int("subject", subject, minimum=0)
    _check_int("seed", seed, minimum=0)
    _check_int("blocks", blocks, minimum=1)
    if not np.isfinite(snr) or snr < 0:
        raise DataError(f"The 'snr' parameter of generate_subject must be >= 0. Got {snr!r} instead.")
    rows = _channel_rows(channels)

    def stream(*key: int) -> np.random.Generator:
        # Explicit spawn keys give each block and channel its own stream, so asking for
        # fewer blocks or channels leaves the others' numbers unchanged.
        return np.random.default_rng(np.random.SeedSequence([seed, subject], spawn_key=key))

    params = _subject_params(stream(0))
    mixing = _mixing_matrix(params, snr)
    n = TRIAL_SAMPLES
    out = np.empty((len(rows), n, N_TARGETS, blocks), np.float32)
    for b in range(blocks):
        sources = _block_sources(stream(1, b), params)
        # Mixing all 64 rows every time keeps a channel's floating-point result independent
        # of which subset was requested (BLAS may round differently for other shapes).
        block = (mixing @ sources.reshape(sources.shape[0], -1))[rows].reshape(len(rows), N_TARGETS, n)
        for i, row in enumerate(rows):
            noise = stream(2, int(row), b).standard_normal((N_TARGETS, n), np.float32)
            block[i] += params["sensor_sd"][row] * noise
        out[..., b] = block.transpose(0, 2, 1)
    return out.astype(dtype, copy=False)


def write_synthetic_benchmark(
    folder: str | os.PathLike, subjects: Sequence[int], seed: int = 0, **kw
) -> list[Path]:
    """Write ``S{n}.mat`` for each subject and ``Freq_Phase.mat`` into a folder; return the paths."""
    if kw.get("channels") is not None:
        raise DataError("write_synthetic_benchmark writes all 64 channels; do not pass 'channels'.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for subject in subjects:
        data = generate_subject(subject, seed, **kw)
        written.append(write_benchmark_subject(folder / f"S{subject}.mat", data))
    written.append(write_freq_phase(folder / "Freq_Phase.mat"))
    return written


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(
            f"The '{name}' parameter of generate_subject must be an integer >= {minimum}. "
            f"Got {value!r} instead."
        )


def _channel_rows(channels: Sequence[str] | None) -> np.ndarray:
    if channels is None:
        return np.arange(len(BENCHMARK_CHANNELS))
    if isinstance(channels, str):
        channels = [channels]
    index = {name: i for i, name in enumerate(BENCHMARK_CHANNELS)}
    rows = []
    for name in channels:
        key = str(name).upper()
        if key not in index:
            near = difflib.get_close_matches(key, BENCHMARK_CHANNELS, n=1, cutoff=0.5)
            hint = f" Did you mean '{near[0]}'?" if near else ""
            raise DataError(
                f"Unknown Benchmark channel '{name}'; names are those of BENCHMARK_CHANNELS.{hint}"
            )
        rows.append(index[key])
    if not rows:
        raise DataError("The 'channels' parameter of generate_subject is empty.")
    return np.array(rows)


def _subject_params(rng: np.random.Generator) -> dict:
    # Every draw has a fixed size and order, so the subject is the same whatever is asked of it.
    n_ch = len(BENCHMARK_CHANNELS)
    p: dict = {}
    gamma = rng.uniform(1.0, 1.6)
    p["harm_amp"] = np.arange(1, N_HARMONICS + 1) ** -gamma
    p["theta"] = _THETA_MEAN + rng.normal(0.0, _THETA_SD, N_HARMONICS)
    p["snr_scale"] = _SNR_SCALE_MEDIAN * np.exp(rng.normal(0.0, _SNR_SCALE_SIGMA))
    centre = np.array(CHANNEL_POSITIONS["OZ"]) + rng.normal(0.0, 0.05, 2)
    width = rng.uniform(0.25, 0.35)
    p["ssvep_topo"] = _blob(centre, width)
    p["lag"] = rng.normal(0.0, _CHANNEL_LAG_SD, n_ch)

    centres = _points_in_disk(rng, _PINK_SOURCES, radius=1.0)
    widths = rng.uniform(0.25, 0.6, _PINK_SOURCES)
    weights = rng.normal(0.0, 1.0, _PINK_SOURCES)
    pink = np.stack([w * _blob(c, s) for c, s, w in zip(centres, widths, weights)], axis=1)
    p["pink_topo"] = pink * (_PINK_UV / np.median(np.sqrt((pink**2).sum(axis=1))))

    alpha_uv = _ALPHA_UV * np.exp(rng.normal(0.0, 0.4))
    p["alpha_freq"] = rng.uniform(9.0, 11.0)
    alpha_centres = np.array([[-0.3, -0.65], [0.3, -0.65]]) + rng.normal(0.0, 0.05, (2, 2))
    p["alpha_topo"] = alpha_uv * np.stack([_blob(c, 0.35) for c in alpha_centres], axis=1)

    line_amp = _LINE_UV * np.exp(rng.normal(0.0, 0.5, n_ch))
    line_lag = rng.normal(0.0, 0.1, n_ch)
    p["line_topo"] = np.stack([line_amp * np.cos(line_lag), line_amp * np.sin(line_lag)], axis=1)
    p["sensor_sd"] = rng.uniform(*_SENSOR_UV, n_ch).astype(np.float32)
    return p


def _blob(centre: np.ndarray, width: float) -> np.ndarray:
    d2 = ((_POS - centre) ** 2).sum(axis=1)
    return np.exp(-0.5 * d2 / width**2)


def _points_in_disk(rng: np.random.Generator, n: int, radius: float) -> np.ndarray:
    r = radius * np.sqrt(rng.uniform(0.0, 1.0, n))
    a = rng.uniform(0.0, 2 * np.pi, n)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _mixing_matrix(p: dict, snr: float) -> np.ndarray:
    # Source order matches _block_sources: pink, alpha, line (sin, cos), then sin and cos
    # carriers of each harmonic; the channel lag h*delta_c enters through the cos/sin weights.
    h = np.arange(1, N_HARMONICS + 1)
    lag = p["lag"][:, None] * h[None, :]
    amp = _SSVEP_UV * p["snr_scale"] * snr * p["ssvep_topo"][:, None]
    ssvep = np.concatenate([amp * np.cos(lag), amp * np.sin(lag)], axis=1)
    return np.concatenate([p["pink_topo"], p["alpha_topo"], p["line_topo"], ssvep], axis=1).astype(
        np.float32
    )


def _spectral_shapes(alpha_freq: float) -> tuple[np.ndarray, np.ndarray]:
    n = TRIAL_SAMPLES
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    pink = (f**2 + _PINK_KNEE_HZ**2) ** (-_PINK_EXPONENT / 4)
    alpha = np.exp(-0.5 * ((f - alpha_freq) / _ALPHA_BANDWIDTH_HZ) ** 2)
    shapes = []
    for w in (pink, alpha):
        w[0] = w[-1] = 0.0  # no DC offset; the Nyquist bin would be real-only
        # irfft of unit complex Gaussian coefficients shaped by w has variance 4*sum(w^2)/n^2.
        shapes.append((w * n / (2.0 * np.sqrt((w**2).sum()))).astype(np.float32))
    return shapes[0], shapes[1]


def _block_sources(rng: np.random.Generator, p: dict) -> np.ndarray:
    """One block's source time courses [sources, 40, 1500] (unit variance, except the SSVEP)."""
    n, fs = TRIAL_SAMPLES, SAMPLE_RATE
    n_freq = n // 2 + 1
    n_noise = _PINK_SOURCES + 2

    jitter = np.clip(rng.normal(0.0, _JITTER_SD_S, N_TARGETS), -_JITTER_MAX_S, _JITTER_MAX_S)
    trial_amp = rng.lognormal(0.0, _TRIAL_AMP_SIGMA, N_TARGETS)
    line_phase = rng.uniform(0.0, 2 * np.pi, N_TARGETS)
    coef = rng.standard_normal((2, n_noise, N_TARGETS, n_freq), np.float32)

    pink_w, alpha_w = _spectral_shapes(p["alpha_freq"])
    spectra = coef[0] + 1j * coef[1]
    spectra[:_PINK_SOURCES] *= pink_w
    spectra[_PINK_SOURCES:] *= alpha_w
    noise = scipy.fft.irfft(spectra, n=n, axis=-1)

    t = np.arange(n) / fs
    line_arg = 2 * np.pi * 50.0 * t + line_phase[:, None]
    line = np.stack([np.sin(line_arg), np.cos(line_arg)])

    tau = ONSET_SAMPLE / fs + LATENCY_S + jitter  # [40]
    u = t[None, :] - tau[:, None]  # time since response onset, [40, N]
    build = np.where(u >= 0, -np.expm1(-np.maximum(u, 0.0) / _BUILDUP_S), 0.0)
    # The response fades with the same time constant once the 5 s flicker stops.
    fade = np.exp(-np.maximum(u - STIMULUS_S, 0.0) / _BUILDUP_S)
    envelope = (trial_amp * np.sqrt(12.0 / BENCHMARK_FREQS))[:, None] * build * fade
    carriers = np.empty((2, N_HARMONICS, N_TARGETS, n))
    for i, h in enumerate(range(1, N_HARMONICS + 1)):
        phase = 2 * np.pi * h * BENCHMARK_FREQS[:, None] * u + h * BENCHMARK_PHASES[:, None] + p["theta"][i]
        weight = p["harm_amp"][i] * envelope
        carriers[0, i] = weight * np.sin(phase)
        carriers[1, i] = weight * np.cos(phase)

    return np.concatenate(
        [noise, line, carriers.reshape(2 * N_HARMONICS, N_TARGETS, n)], axis=0
    ).astype(np.float32)

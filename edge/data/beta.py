"""The BETA SSVEP dataset (Liu, Huang, Wang, Chen, Gao, Front. Neurosci. 14:627, 2020) and its .mat files.

Each subject file ``S{n}.mat`` holds one MATLAB struct ``data`` with fields

- ``EEG``: [64 channels, T samples, 4 blocks, 40 targets] at 250 Hz, T = 750 for S1-S15
  (0.5 s + 2 s flicker + 0.5 s) and 1000 for S16-S70 (3 s flicker); stimulus onset at
  0-based sample 125. The block and target axes are swapped relative to the Benchmark.
- ``suppl_info``: struct with ``sub, age, gender, chan (64x4 cell: index, polar degree,
  radius, name), freqs (1x40), phases (1x40, radians), bci_quotient, wide_snr, narrow_snr,
  srate``.

Targets run 8.6, 8.8, ..., 15.8, 8.0, 8.2, 8.4 Hz; channels are the Benchmark's 64.
Files may be MATLAB v5/v7 (scipy) or v7.3 (HDF5, h5py).

>>> epochs = read_beta_subject("S16.mat")  # 160 trials, (160, 64, 1000) uV, onset at sample 125
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.data.benchmark import (
    BENCHMARK_CHANNELS,
    _atomic_savemat,
    _numeric_variable,
    _subject_number,
    load_mat,
)
from edge.data.epochs import EEGEpochs
from edge.errors import DataError

__all__ = [
    "BETA_BLOCKS",
    "BETA_CHANNELS",
    "BETA_CLASSES",
    "BETA_FREQS",
    "BETA_PHASES",
    "BETA_TRIAL_SAMPLES",
    "LATENCY_S",
    "N_TARGETS",
    "ONSET_SAMPLE",
    "SAMPLE_RATE",
    "read_beta_subject",
    "write_beta_subject",
]

SAMPLE_RATE = 250
ONSET_SAMPLE = 125  # 0.5 s before stimulus onset
N_TARGETS = 40
BETA_BLOCKS = 4
BETA_TRIAL_SAMPLES = (750, 1000)  # S1-S15, S16-S70
LATENCY_S = 0.13  # visual latency after onset used for BETA (Guney; SSVEP-Analysis-Toolbox)
BETA_CHANNELS: tuple[str, ...] = BENCHMARK_CHANNELS

_K = np.r_[np.arange(3, 40), np.arange(0, 3)]  # k = (f - 8) / 0.2 in BETA's target order
BETA_FREQS: np.ndarray = np.round(8.0 + 0.2 * _K, 1)
BETA_PHASES: np.ndarray = (0.5 * np.pi * _K) % (2 * np.pi)
BETA_FREQS.flags.writeable = False
BETA_PHASES.flags.writeable = False
del _K
BETA_CLASSES: tuple[str, ...] = tuple(f"{f:.1f} Hz" for f in BETA_FREQS)


def read_beta_subject(path: str | os.PathLike, *, subject: int | None = None) -> EEGEpochs:
    """All 4 x 40 trials of one BETA subject file as epochs, block by block in the file's target order.

    Each epoch is the whole trial (750 or 1000 samples) in microvolts, float32, with the
    stimulus onset at sample 125 (0.5 s). ``y`` is the target index (0..39) in the file's order
    (8.6 Hz first), ``classes`` are "8.6 Hz", ... and ``stim_freqs`` the frequencies, both taken
    from ``suppl_info.freqs`` (the published values if the file has no ``suppl_info``);
    ``block`` is the 0-based block. Channel names come from ``suppl_info.chan``, upper-cased.
    The subject number is ``subject``, else the n of ``S{n}.mat``, else ``suppl_info.sub``.
    """
    path = Path(path)
    data = load_mat(path, "data")["data"]
    if not isinstance(data, dict):
        raise DataError(
            f"variable 'data' is {_kind(data)}, expected a struct with fields EEG and suppl_info.", where=str(path)
        )
    if "EEG" not in data:
        raise DataError(
            f"struct 'data' has no field 'EEG' (found: {', '.join(sorted(data)) or 'none'}).", where=str(path)
        )
    eeg = _numeric_variable(data, "EEG", path)
    problem = _eeg_shape_problem(eeg.shape)
    if problem:
        raise DataError(f"field 'data.EEG' {problem}.", where=str(path))
    info = data.get("suppl_info", {})
    if not isinstance(info, dict):
        raise DataError(f"field 'data.suppl_info' is {_kind(info)}, expected a struct.", where=str(path))

    freqs = _vector(info, "freqs", path, BETA_FREQS)
    classes = [f"{f:.1f} Hz" for f in freqs]
    if len(set(classes)) != N_TARGETS:
        raise DataError("field 'data.suppl_info.freqs' does not hold 40 distinct frequencies.", where=str(path))
    srate = _srate(info, path)
    channels = _channel_names(info, path)
    subject = _subject(path, subject, info)

    n_channels, n_samples, n_blocks, _ = eeg.shape
    # (channel, time, block, target) -> (block, target, channel, time)
    x = np.ascontiguousarray(eeg.transpose(2, 3, 0, 1), dtype=np.float32).reshape(-1, n_channels, n_samples)
    n = len(x)
    return EEGEpochs(
        x,
        np.tile(np.arange(N_TARGETS, dtype=np.int64), n_blocks),
        srate,
        channels,
        classes,
        subject=np.full(n, subject, dtype=np.int64),
        session=np.full(n, "1"),
        block=np.repeat(np.arange(n_blocks, dtype=np.int64), N_TARGETS),
        onset_sample=int(round(0.5 * srate)),
        stim_freqs=[float(f) for f in freqs],
    )


def write_beta_subject(
    path: str | os.PathLike,
    eeg: np.ndarray,
    *,
    subject: int | None = None,
    freqs: np.ndarray | None = None,
    phases: np.ndarray | None = None,
    channels: list[str] | tuple[str, ...] | None = None,
    suppl_info: dict[str, Any] | None = None,
) -> Path:
    """Write ``eeg`` [64, 750|1000, blocks, 40] as a BETA subject file (MATLAB v5 struct ``data``).

    ``suppl_info`` gets every published field: ``sub`` ("S{n}", from ``subject`` or the file
    name), ``freqs``/``phases`` (the published ones unless given), ``chan`` (64x4 cell of index,
    polar degree, radius, name; the positions written are 0 as the montage is not known here),
    ``srate`` 250 and placeholders for ``age, gender, bci_quotient, wide_snr, narrow_snr``;
    entries of ``suppl_info`` replace or add fields.
    """
    path = Path(path)
    eeg = np.asarray(eeg)
    problem = _eeg_shape_problem(eeg.shape)
    if problem or not (np.issubdtype(eeg.dtype, np.floating) or np.issubdtype(eeg.dtype, np.integer)):
        problem = problem or f"has dtype {eeg.dtype}, expected real numbers"
        raise DataError(f"Cannot write '{path}': the array {problem}.")
    names = list(channels if channels is not None else BETA_CHANNELS)
    if len(names) != eeg.shape[0]:
        raise DataError(f"Cannot write '{path}': {len(names)} channel names for {eeg.shape[0]} channels.")
    chan = np.empty((len(names), 4), dtype=object)
    for i, name in enumerate(names):
        chan[i] = [float(i + 1), 0.0, 0.0, name]
    if subject is None:
        try:
            subject = _subject_number(path, None)
        except DataError:
            subject = None
    info: dict[str, Any] = {
        "sub": f"S{subject}" if subject is not None else "",
        "age": np.nan,
        "gender": "",
        "chan": chan,
        "freqs": np.asarray(BETA_FREQS if freqs is None else freqs, dtype=np.float64).reshape(1, -1),
        "phases": np.asarray(BETA_PHASES if phases is None else phases, dtype=np.float64).reshape(1, -1),
        "bci_quotient": np.nan,
        "wide_snr": np.nan,
        "narrow_snr": np.nan,
        "srate": float(SAMPLE_RATE),
    }
    info.update(suppl_info or {})
    _atomic_savemat(path, {"data": {"EEG": eeg, "suppl_info": info}})
    return path


def _eeg_shape_problem(shape: tuple[int, ...]) -> str:
    """Why an EEG array shape is not BETA's [64, 750|1000, blocks, 40], or '' if it is."""
    expected = f"expected [64, 750 or 1000, blocks, {N_TARGETS}] (channel, time, block, target)"
    if len(shape) != 4:
        return f"has shape {list(shape)}, {expected}"
    channels, samples, blocks, targets = shape
    if channels == len(BETA_CHANNELS) and samples >= 1 and targets != N_TARGETS and blocks == N_TARGETS:
        return (f"has shape {list(shape)}, {expected}; the block and target axes look swapped, "
                "as in the Benchmark's [64, 1500, 40, blocks]")
    if channels != len(BETA_CHANNELS) or samples not in BETA_TRIAL_SAMPLES or blocks < 1 or targets != N_TARGETS:
        return f"has shape {list(shape)}, {expected}"
    return ""


def _kind(value: Any) -> str:
    """What a loaded MATLAB value is, for messages: 'a cell of shape [1, 9]', 'a str'."""
    if not isinstance(value, np.ndarray):
        return "a struct" if isinstance(value, dict) else f"a {type(value).__name__}"
    if value.dtype != object:
        return f"a {value.dtype} array of shape {list(value.shape)}"
    is_structs = value.size > 0 and all(isinstance(item, dict) for item in value.flat)
    return f"{'a struct array' if is_structs else 'a cell'} of shape {list(value.shape)}"


def _vector(info: dict, name: str, path: Path, default: np.ndarray) -> np.ndarray:
    if name not in info:
        return np.array(default, dtype=np.float64)
    values = _numeric_variable(info, name, path).astype(np.float64).ravel()
    if values.size != N_TARGETS:
        raise DataError(
            f"field 'data.suppl_info.{name}' has {values.size} values, expected {N_TARGETS}.", where=str(path)
        )
    if not np.all(np.isfinite(values)):
        raise DataError(f"field 'data.suppl_info.{name}' holds non-finite values.", where=str(path))
    return values


def _srate(info: dict, path: Path) -> float:
    if "srate" not in info:
        return float(SAMPLE_RATE)
    value = _numeric_variable(info, "srate", path).astype(np.float64).ravel()
    if value.size != 1 or not np.isfinite(value[0]) or value[0] <= 0:
        raise DataError(
            f"field 'data.suppl_info.srate' is {value.tolist()}, expected one positive rate in Hz.", where=str(path)
        )
    return float(value[0])


def _channel_names(info: dict, path: Path) -> list[str]:
    """Names from the 64x4 ``chan`` cell (4th column), upper-cased; the Benchmark names without one."""
    chan = info.get("chan")
    if chan is None:
        return list(BETA_CHANNELS)
    if not (isinstance(chan, np.ndarray) and chan.dtype == object and chan.shape == (len(BETA_CHANNELS), 4)):
        raise DataError(
            f"field 'data.suppl_info.chan' is {_kind(chan)}, expected a 64x4 cell (index, degree, radius, name).",
            where=str(path),
        )
    names = [chan[i, 3] for i in range(len(chan))]
    if not all(isinstance(name, str) and name.strip() for name in names):
        raise DataError("field 'data.suppl_info.chan' has a 4th column that is not all channel names.", where=str(path))
    return [name.strip().rstrip(".").upper() for name in names]


def _subject(path: Path, subject: int | None, info: dict) -> int:
    if subject is not None:
        return _subject_number(path, subject)
    try:
        return _subject_number(path, None)
    except DataError:
        sub = info.get("sub")
        if isinstance(sub, str) and sub.strip().upper().startswith("S") and sub.strip()[1:].isdigit():
            return int(sub.strip()[1:])
        raise

"""The Tsinghua SSVEP Benchmark layout: channels, targets, timing, and its .mat files.

Each subject file ``S{n}.mat`` holds one variable ``data`` of shape
[64 electrodes, 1500 samples, 40 targets, blocks] at 250 Hz, with stimulus onset at
0-based sample 125. ``Freq_Phase.mat`` holds ``freqs`` and ``phases`` (1x40) in
target-index order.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import scipy.io

from edge.errors import DataError

__all__ = [
    "BENCHMARK_CHANNELS",
    "BENCHMARK_FREQS",
    "BENCHMARK_PHASES",
    "N_TARGETS",
    "OCCIPITAL_9",
    "ONSET_SAMPLE",
    "SAMPLE_RATE",
    "TRIAL_SAMPLES",
    "read_benchmark_subject",
    "read_freq_phase",
    "write_benchmark_subject",
    "write_freq_phase",
]

BENCHMARK_CHANNELS: tuple[str, ...] = (
    "FP1", "FPZ", "FP2", "AF3", "AF4", "F7", "F5", "F3", "F1", "FZ",
    "F2", "F4", "F6", "F8", "FT7", "FC5", "FC3", "FC1", "FCZ", "FC2",
    "FC4", "FC6", "FT8", "T7", "C5", "C3", "C1", "CZ", "C2", "C4",
    "C6", "T8", "M1", "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2", "CP4",
    "CP6", "TP8", "M2", "P7", "P5", "P3", "P1", "PZ", "P2", "P4",
    "P6", "P8", "PO7", "PO5", "PO3", "POZ", "PO4", "PO6", "PO8", "CB1",
    "O1", "OZ", "O2", "CB2",
)  # fmt: skip

OCCIPITAL_9: tuple[str, ...] = ("PZ", "PO5", "PO3", "POZ", "PO4", "PO6", "O1", "OZ", "O2")

SAMPLE_RATE = 250
ONSET_SAMPLE = 125
TRIAL_SAMPLES = 1500
N_TARGETS = 40

# The 40 targets sit on a 5x8 keyboard matrix stored column-wise: target index i has
# row i // 8 and column i % 8, frequency 8 + column + 0.2 * row, and k = (f - 8) / 0.2.
_K = np.array([5 * (i % 8) + i // 8 for i in range(N_TARGETS)])
BENCHMARK_FREQS: np.ndarray = np.round(8.0 + 0.2 * _K, 1)
BENCHMARK_PHASES: np.ndarray = (0.5 * np.pi * _K) % (2 * np.pi)
BENCHMARK_FREQS.flags.writeable = False
BENCHMARK_PHASES.flags.writeable = False
del _K


def write_benchmark_subject(path: str | os.PathLike, data: np.ndarray) -> Path:
    """Write one subject's array [64, 1500, 40, blocks] as variable ``data`` of a .mat file."""
    path = Path(path)
    data = np.asarray(data)
    if not _subject_shape_ok(data):
        raise DataError(f"Cannot write '{path}': the array {_shape_problem(data)}.")
    _atomic_savemat(path, {"data": data})
    return path


def write_freq_phase(path: str | os.PathLike) -> Path:
    """Write ``Freq_Phase.mat`` with the Benchmark ``freqs`` and ``phases`` (radians), 1x40 each."""
    path = Path(path)
    _atomic_savemat(path, {"freqs": BENCHMARK_FREQS[None, :], "phases": BENCHMARK_PHASES[None, :]})
    return path


def read_benchmark_subject(path: str | os.PathLike) -> np.ndarray:
    """Read variable ``data`` [64, 1500, 40, blocks] from a Benchmark subject file."""
    path = Path(path)
    contents = _loadmat(path, "data")
    data = _numeric_variable(contents, "data", path)
    # MATLAB drops a trailing singleton dimension, so a one-block file comes back 3-D.
    if data.ndim == 3:
        data = data[..., None]
    if not _subject_shape_ok(data):
        raise DataError(f"variable 'data' {_shape_problem(data)}.", where=str(path))
    return data


def read_freq_phase(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read ``freqs`` (Hz) and ``phases`` (radians) from a Benchmark ``Freq_Phase.mat``."""
    path = Path(path)
    contents = _loadmat(path, "freqs", "phases")
    freqs = _numeric_variable(contents, "freqs", path).astype(np.float64).ravel()
    phases = _numeric_variable(contents, "phases", path).astype(np.float64).ravel()
    for name, values in (("freqs", freqs), ("phases", phases)):
        if values.size != N_TARGETS:
            raise DataError(
                f"variable '{name}' has {values.size} values, expected {N_TARGETS}.", where=str(path)
            )
        if not np.all(np.isfinite(values)):
            raise DataError(f"variable '{name}' holds non-finite values.", where=str(path))
    # Some copies store phases in units of pi (0, 0.5, 1, 1.5); radians reach up to 1.5 pi.
    if phases.max() <= 2.0:
        phases = phases * np.pi
    return freqs, phases


_SUBJECT_SHAPE = (len(BENCHMARK_CHANNELS), TRIAL_SAMPLES, N_TARGETS)


def _subject_shape_ok(data: np.ndarray) -> bool:
    return data.ndim == 4 and data.shape[:3] == _SUBJECT_SHAPE and data.shape[3] >= 1


def _shape_problem(data: np.ndarray) -> str:
    c, t, k = _SUBJECT_SHAPE
    return f"has shape {list(data.shape)}, expected [{c}, {t}, {k}, blocks>=1]"


def _loadmat(path: Path, *names: str) -> dict:
    if not path.exists():
        raise DataError("no such file.", where=str(path))
    if not path.is_file():
        raise DataError("is not a file.", where=str(path))
    try:
        contents = scipy.io.loadmat(path, variable_names=list(names))
    except NotImplementedError as exc:
        # scipy raises this for MATLAB v7.3 (HDF5) files only.
        raise DataError(
            f"is a MATLAB v7.3 (HDF5) file, which is not supported; re-save it with -v7 ({exc}).",
            where=str(path),
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:
        # A damaged or foreign file fails deep inside scipy with many exception types.
        raise DataError(
            f"is not a readable .mat file, perhaps truncated or of another format "
            f"({type(exc).__name__}: {exc}).",
            where=str(path),
        ) from exc
    return contents


def _numeric_variable(contents: dict, name: str, path: Path) -> np.ndarray:
    if name not in contents:
        # loadmat was asked for the wanted names only; list what the file does hold.
        found = sorted(entry[0] for entry in scipy.io.whosmat(path))
        raise DataError(
            f"has no variable '{name}' (found: {', '.join(found) or 'none'}).", where=str(path)
        )
    value = contents[name]
    if not isinstance(value, np.ndarray) or not (
        np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)
    ):
        raise DataError(
            f"variable '{name}' is not a real numeric array (got {getattr(value, 'dtype', type(value))}).",
            where=str(path),
        )
    return value


def _atomic_savemat(path: Path, variables: dict) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise DataError(f"Cannot write '{path}': the folder does not exist.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            scipy.io.savemat(handle, variables)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise

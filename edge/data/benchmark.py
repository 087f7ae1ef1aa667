"""The Tsinghua SSVEP Benchmark layout: channels, targets, timing, and its .mat files.

Each subject file ``S{n}.mat`` holds one variable ``data`` of shape
[64 electrodes, 1500 samples, 40 targets, blocks] at 250 Hz, with stimulus onset at
0-based sample 125. ``Freq_Phase.mat`` holds ``freqs`` and ``phases`` (1x40) in
target-index order.

Files may be MATLAB v5/v7 (read with scipy) or v7.3 (HDF5, read with h5py, which
MATLAB fills column-major, so h5py sees every array with its dimensions reversed).
:func:`load_mat` and :func:`write_mat73` hide that difference; the BETA and BCI IV 2a
readers use them too.

>>> epochs = read_benchmark_epochs("S3.mat")  # 40 x blocks trials, (trials, 64, 1500) uV
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from edge.data.epochs import EEGEpochs
from edge.errors import DataError

__all__ = [
    "BENCHMARK_CHANNELS",
    "BENCHMARK_CLASSES",
    "BENCHMARK_FREQS",
    "BENCHMARK_PHASES",
    "LATENCY_S",
    "N_TARGETS",
    "OCCIPITAL_9",
    "ONSET_SAMPLE",
    "SAMPLE_RATE",
    "TRIAL_SAMPLES",
    "load_mat",
    "read_benchmark_epochs",
    "read_benchmark_subject",
    "read_freq_phase",
    "write_benchmark_subject",
    "write_freq_phase",
    "write_mat73",
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
LATENCY_S = 0.14  # visual latency after onset used for the Benchmark (Guney; SSVEP-Analysis-Toolbox)

# The 40 targets sit on a 5x8 keyboard matrix stored column-wise: target index i has
# row i // 8 and column i % 8, frequency 8 + column + 0.2 * row, and k = (f - 8) / 0.2.
_K = np.array([5 * (i % 8) + i // 8 for i in range(N_TARGETS)])
BENCHMARK_FREQS: np.ndarray = np.round(8.0 + 0.2 * _K, 1)
BENCHMARK_PHASES: np.ndarray = (0.5 * np.pi * _K) % (2 * np.pi)
BENCHMARK_FREQS.flags.writeable = False
BENCHMARK_PHASES.flags.writeable = False
del _K
BENCHMARK_CLASSES: tuple[str, ...] = tuple(f"{f:.1f} Hz" for f in BENCHMARK_FREQS)


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
    """Read variable ``data`` [64, 1500, 40, blocks] from a Benchmark subject file (MATLAB v5/v7 or v7.3)."""
    path = Path(path)
    contents = load_mat(path, "data")
    data = _numeric_variable(contents, "data", path)
    # MATLAB drops a trailing singleton dimension, so a one-block file comes back 3-D.
    if data.ndim == 3:
        data = data[..., None]
    if not _subject_shape_ok(data):
        raise DataError(f"variable 'data' {_shape_problem(data)}.", where=str(path))
    return data


def read_freq_phase(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read ``freqs`` (Hz) and ``phases`` (radians) from a Benchmark ``Freq_Phase.mat`` (v5/v7 or v7.3)."""
    path = Path(path)
    contents = load_mat(path, "freqs", "phases")
    freqs = _numeric_variable(contents, "freqs", path).astype(np.float64).ravel()
    phases = _numeric_variable(contents, "phases", path).astype(np.float64).ravel()
    for name, values in (("freqs", freqs), ("phases", phases)):
        if values.size != N_TARGETS:
            raise DataError(
                f"variable '{name}' has {values.size} values, expected {N_TARGETS}.", where=str(path)
            )
        if not np.all(np.isfinite(values)):
            raise DataError(f"variable '{name}' holds non-finite values.", where=str(path))
    return freqs, _phases_in_radians(phases)


def read_benchmark_epochs(path: str | os.PathLike, *, subject: int | None = None) -> EEGEpochs:
    """All 40 x blocks trials of one subject file as epochs, block by block in target order.

    Each epoch is the whole 1500-sample (6 s) trial in microvolts, float32, with the stimulus
    onset at sample 125. ``y`` is the target index (0..39) into ``classes`` ("8.0 Hz", "9.0 Hz",
    ...) and ``stim_freqs``; ``block`` is the 0-based block. The subject number comes from the
    file name ``S{n}.mat`` unless ``subject`` is given.
    """
    path = Path(path)
    data = read_benchmark_subject(path)
    subject = _subject_number(path, subject)
    n_blocks = data.shape[3]
    # (channel, time, target, block) -> (block, target, channel, time)
    x = np.ascontiguousarray(data.transpose(3, 2, 0, 1), dtype=np.float32).reshape(-1, *_SUBJECT_SHAPE[:2])
    n = len(x)
    return EEGEpochs(
        x,
        np.tile(np.arange(N_TARGETS, dtype=np.int64), n_blocks),
        float(SAMPLE_RATE),
        list(BENCHMARK_CHANNELS),
        list(BENCHMARK_CLASSES),
        subject=np.full(n, subject, dtype=np.int64),
        session=np.full(n, "1"),
        block=np.repeat(np.arange(n_blocks, dtype=np.int64), N_TARGETS),
        onset_sample=ONSET_SAMPLE,
        stim_freqs=[float(f) for f in BENCHMARK_FREQS],
    )


_SUBJECT_SHAPE = (len(BENCHMARK_CHANNELS), TRIAL_SAMPLES, N_TARGETS)


def _subject_shape_ok(data: np.ndarray) -> bool:
    return data.ndim == 4 and data.shape[:3] == _SUBJECT_SHAPE and data.shape[3] >= 1


def _shape_problem(data: np.ndarray) -> str:
    c, t, k = _SUBJECT_SHAPE
    return f"has shape {list(data.shape)}, expected [{c}, {t}, {k}, blocks>=1]"


def _subject_number(path: Path, subject: int | None) -> int:
    """The subject number given, or the n of a file named ``S{n}.mat``."""
    if subject is not None:
        if isinstance(subject, bool) or not isinstance(subject, (int, np.integer)) or subject < 1:
            raise DataError(f"subject must be a positive integer; got {subject!r}.", where=str(path))
        return int(subject)
    match = re.fullmatch(r"S(\d+)\.mat", path.name, flags=re.IGNORECASE)
    if not match or int(match.group(1)) < 1:
        raise DataError(
            "the file name does not give the subject (expected S{n}.mat, such as S3.mat); pass subject=.",
            where=str(path),
        )
    return int(match.group(1))


def _phases_in_radians(phases: np.ndarray) -> np.ndarray:
    # Some copies store phases in units of pi (0, 0.5, 1, 1.5); radians reach up to 1.5 pi.
    return phases * np.pi if phases.max() <= 2.0 else phases


# --- MATLAB files, any version ----------------------------------------------------------------

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def load_mat(path: str | os.PathLike, *names: str) -> dict[str, Any]:
    """Read the named variables (all, if none are named) of a MATLAB .mat file of any version.

    v4/v5/v7 files are read with scipy, v7.3 (HDF5) files with h5py. Either way the values
    come back the same, in MATLAB's own dimension order: numeric and logical arrays as
    ndarrays (at least 2-D), char arrays as ``str``, a 1x1 struct as a ``dict`` of its fields,
    cells and struct arrays as object ndarrays. A named variable that is missing, or a file that
    is missing, damaged or not a .mat file, raises :class:`DataError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file.", where=str(path))
    if not path.is_file():
        raise DataError("is not a file.", where=str(path))
    if _is_hdf5(path):
        return _load_mat73(path, names)
    try:
        contents = scipy.io.loadmat(path, variable_names=list(names) or None)
    except NotImplementedError as exc:
        # scipy says this for a v7.3 header; the HDF5 part that should follow it is not there.
        raise DataError(
            f"has a MATLAB v7.3 header but no HDF5 data after it; the file is likely truncated ({exc}).",
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
    variables = {key: value for key, value in contents.items() if not key.startswith("__")}
    missing = [name for name in names if name not in variables]
    if missing:
        try:
            found = sorted(entry[0] for entry in scipy.io.whosmat(path))
        except Exception:
            found = sorted(variables)
        raise DataError(
            f"has no variable '{missing[0]}' (found: {', '.join(found) or 'none'}).", where=str(path)
        )
    try:
        return {key: _from_scipy(value) for key, value in variables.items()}
    except UnicodeError as exc:
        raise DataError(f"holds text that cannot be decoded ({exc}).", where=str(path)) from exc


def write_mat73(path: str | os.PathLike, variables: dict[str, Any]) -> Path:
    """Write variables as a MATLAB v7.3 (HDF5) file laid out the way MATLAB writes one.

    For test fixtures and mirrors of datasets that ship as v7.3. Values use :func:`load_mat`'s
    types: numeric ndarrays (1-D ones become 1xN rows, trailing singleton dimensions beyond
    the second are dropped as MATLAB does), Python numbers, ``str`` (char),
    ``dict`` (1x1 struct) and object ndarrays (cells). Arrays are stored with their dimensions
    reversed (MATLAB is column-major), each tagged with its ``MATLAB_class``; cell elements go
    to ``#refs#``; the file starts with MATLAB's 512-byte header.
    """
    path = Path(path)
    try:
        import h5py
    except ImportError:
        raise DataError(f"Cannot write '{path}': writing a MATLAB v7.3 file needs h5py: pip install h5py.") from None
    folder = path.parent
    if not folder.is_dir():
        raise DataError(f"Cannot write '{path}': the folder does not exist.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        with h5py.File(tmp, "w", userblock_size=512) as handle:
            for name, value in variables.items():
                _h5_write(handle, name, value, handle, path)
        header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: edge. HDF5 schema 1.00 ."
        with open(tmp, "r+b") as raw:
            raw.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _is_hdf5(path: Path) -> bool:
    """Whether the file is HDF5: the signature sits at byte 0 or at 512, 1024, 2048... (after a userblock)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        offset = 0
        while offset + len(_HDF5_SIGNATURE) <= size:
            handle.seek(offset)
            if handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def _h5py(path: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise DataError(
            "is a MATLAB v7.3 (HDF5) file; reading it needs h5py: pip install h5py.", where=str(path)
        ) from None
    return h5py


def _from_scipy(value: Any) -> Any:
    """scipy.io.loadmat's value (struct_as_record, not squeezed) in :func:`load_mat`'s types."""
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.names:  # struct or struct array
        out = np.empty(value.shape, dtype=object)
        for index in np.ndindex(value.shape):
            out[index] = {field: _from_scipy(value[index][field]) for field in value.dtype.names}
        return out.flat[0] if out.size == 1 else out
    if value.dtype.kind == "U":  # char: one string per row
        return "\n".join(str(row) for row in value.ravel())
    if value.dtype == object:  # cell
        out = np.empty(value.shape, dtype=object)
        for index in np.ndindex(value.shape):
            out[index] = _from_scipy(value[index])
        return out
    return value


_MATLAB_CLASS_OF = {
    "float64": "double", "float32": "single", "int8": "int8", "uint8": "uint8", "int16": "int16",
    "uint16": "uint16", "int32": "int32", "uint32": "uint32", "int64": "int64", "uint64": "uint64",
}  # fmt: skip
_NUMERIC_CLASSES = {cls: np.dtype(dtype) for dtype, cls in _MATLAB_CLASS_OF.items()} | {"logical": np.dtype(np.uint8)}


def _load_mat73(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    h5py = _h5py(path)
    try:
        with h5py.File(path, "r") as handle:
            found = sorted(key for key in handle if not key.startswith("#"))
            missing = [name for name in names if name not in found]
            if missing:
                raise DataError(
                    f"has no variable '{missing[0]}' (found: {', '.join(found) or 'none'}).", where=str(path)
                )
            return {name: _h5_read(handle[name], handle, path, name) for name in (names or found)}
    except (DataError, MemoryError):
        raise
    except Exception as exc:
        raise DataError(
            f"is not a readable .mat file, perhaps truncated or of another format "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).",
            where=str(path),
        ) from exc


def _attr(node: Any, name: str) -> Any:
    value = node.attrs.get(name)
    return value.decode() if isinstance(value, bytes) else value


def _h5_read(node: Any, handle: Any, path: Path, where: str) -> Any:
    """One MATLAB v7.3 value, turned back to MATLAB's dimension order."""
    import h5py

    cls = _attr(node, "MATLAB_class")
    if isinstance(node, h5py.Group):
        if cls not in (None, "struct") or "MATLAB_sparse" in node.attrs:
            kind = "sparse matrix" if "MATLAB_sparse" in node.attrs else f"MATLAB {cls} object"
            raise DataError(f"variable '{where}' is a {kind}, which cannot be read.", where=str(path))
        fields = {key: node[key] for key in node if not key.startswith("#")}
        if fields and all(
            isinstance(f, h5py.Dataset) and f.dtype == h5py.ref_dtype and "MATLAB_class" not in f.attrs
            for f in fields.values()
        ):
            # A struct array: each field holds one reference per element.
            shape = next(iter(fields.values())).shape
            out = np.empty(shape[::-1], dtype=object)
            for index in np.ndindex(shape):
                out[index[::-1]] = {
                    key: _h5_read(handle[f[index]], handle, path, f"{where}.{key}") for key, f in fields.items()
                }
            return out.flat[0] if out.size == 1 else out
        return {key: _h5_read(f, handle, path, f"{where}.{key}") for key, f in fields.items()}
    if node.attrs.get("MATLAB_empty", 0):
        # An empty array is stored as its dimensions, not as data.
        dims = tuple(int(d) for d in np.asarray(node[()]).ravel()[::-1])
        if cls == "char":
            return ""
        if cls in ("cell", "struct"):
            return np.empty(dims, dtype=object)
        return np.zeros(dims, dtype=_NUMERIC_CLASSES.get(cls, np.dtype(np.float64)))
    data = node[()]
    if node.dtype == h5py.ref_dtype:  # a cell
        out = np.empty(data.shape[::-1], dtype=object)
        for index in np.ndindex(data.shape):
            out[index[::-1]] = _h5_read(handle[data[index]], handle, path, f"{where}{{{index[::-1]}}}")
        return out
    if cls == "char":
        chars = np.asarray(data).T
        chars = chars.reshape(1, -1) if chars.ndim < 2 else chars
        return "\n".join("".join(map(chr, row)) for row in chars)
    if data.dtype.names:
        raise DataError(f"variable '{where}' is complex or compound, which cannot be read.", where=str(path))
    data = np.asarray(data).T  # logical stays uint8, as scipy gives it for v5 files
    return data.reshape(1, 1) if data.ndim == 0 else data


def _h5_write(group: Any, name: str, value: Any, handle: Any, path: Path) -> Any:
    """Write one value as MATLAB does; returns the dataset or group."""
    import h5py

    if isinstance(value, dict):
        sub = group.create_group(name)
        sub.attrs["MATLAB_class"] = np.bytes_("struct")
        sub.attrs.create(
            "MATLAB_fields",
            np.array([np.frombuffer(k.encode(), dtype="S1") for k in value] + [None], dtype=object)[:-1],
            dtype=h5py.vlen_dtype(np.dtype("S1")),
        )
        for key, item in value.items():
            _h5_write(sub, key, item, handle, path)
        return sub
    if isinstance(value, str):
        if not value:
            return _h5_empty(group, name, "char", (0, 0))
        dataset = group.create_dataset(name, data=np.array([[ord(c)] for c in value], dtype=np.uint16))
        dataset.attrs["MATLAB_class"] = np.bytes_("char")
        dataset.attrs["MATLAB_int_decode"] = np.int32(2)
        return dataset
    array = np.asarray(value)
    if array.ndim < 2:
        array = array.reshape(1, -1)
    while array.ndim > 2 and array.shape[-1] == 1:  # MATLAB drops trailing singleton dimensions
        array = array[..., 0]
    if array.dtype == object:  # a cell
        if array.size == 0:
            return _h5_empty(group, name, "cell", array.shape)
        refs_group = handle.require_group("#refs#")
        refs = np.empty(array.shape[::-1], dtype=h5py.ref_dtype)
        for index in np.ndindex(array.shape):
            item = _h5_write(refs_group, f"r{len(refs_group)}", array[index], handle, path)
            refs[index[::-1]] = item.ref
        dataset = group.create_dataset(name, data=refs)
        dataset.attrs["MATLAB_class"] = np.bytes_("cell")
        return dataset
    if array.dtype == bool:
        cls, array = "logical", array.astype(np.uint8)
    else:
        cls = _MATLAB_CLASS_OF.get(array.dtype.name)
        if cls is None:
            raise DataError(
                f"Cannot write '{path}': variable '{name}' has dtype {array.dtype}, which has no MATLAB class."
            )
    if array.size == 0:
        return _h5_empty(group, name, cls, array.shape)
    dataset = group.create_dataset(name, data=array.T)
    dataset.attrs["MATLAB_class"] = np.bytes_(cls)
    if cls == "logical":
        dataset.attrs["MATLAB_int_decode"] = np.int32(1)
    return dataset


def _h5_empty(group: Any, name: str, cls: str, shape: tuple[int, ...]) -> Any:
    dataset = group.create_dataset(name, data=np.array(shape[::-1], dtype=np.uint64))
    dataset.attrs["MATLAB_class"] = np.bytes_(cls)
    dataset.attrs["MATLAB_empty"] = np.uint8(1)
    return dataset


def _numeric_variable(contents: dict, name: str, path: Path) -> np.ndarray:
    if name not in contents:
        raise DataError(f"has no variable '{name}' (found: {', '.join(sorted(contents)) or 'none'}).", where=str(path))
    value = contents[name]
    if not isinstance(value, np.ndarray) or not (
        np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)
    ):
        raise DataError(
            f"variable '{name}' is not a real numeric array (got {getattr(value, 'dtype', type(value).__name__)}).",
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

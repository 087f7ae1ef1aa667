"""Trials the user prepared: an ``.npz`` archive, or a folder of one file per trial with a labels CSV.

Layouts read (x keeps the stored integer dtype; float64 becomes float32; y is kept as stored):

- ``FILE.npz`` with ``x`` (trials in the model's input layout) and optionally ``y`` and ``groups``;
- a folder with ``labels.csv`` (header ``file,label``, or no header: ``file,label`` rows);
- a folder with ``y_labels.csv`` in the EEMBC / MLPerf Tiny accuracy-set layout, no header:
  ``file,number of classes,label`` per trial, or for anomaly detection
  ``file,number of classes,label,window width (bytes),stride (bytes)`` per recording.

Trial files are ``.npy`` (read as stored) or raw binary (``.bin`` or any other name), whose element type and
shape are the model's first input (little-endian); ``FOLDER:dtype=uint8`` names another element type,
as the MLPerf Tiny image sets store uint8 pixels for int8 models.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import Meta
from edge.data.labels import class_indices
from edge.data.dataset import Dataset
from edge.errors import DataError

LABEL_FILES = ("labels.csv", "y_labels.csv")
FOLDER_PARAMETERS = {"dtype"}


def is_trial_folder(path: Path) -> bool:
    """A folder holding one of the label files this module reads."""
    return path.is_dir() and any((path / name).is_file() for name in LABEL_FILES)


def stored_x(x: np.ndarray, where: str) -> np.ndarray:
    """Trials as stored, except float64 which becomes float32 (no engine here computes in float64)."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise DataError("x is a single number, not an array of trials.", where=where)
    if len(x) == 0:
        raise DataError(f"x holds no trials (shape {x.shape}).", where=where)
    return x.astype(np.float32) if x.dtype == np.float64 else x


def read_npz(path: Path) -> Dataset:
    """An ``.npz`` holding ``x`` and optionally ``y`` and ``groups``, each kept as stored."""
    if not path.is_file():
        raise DataError("no such file.", where=str(path))
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive:
                raise DataError(f"no array 'x' in the archive (found: {', '.join(archive.files) or 'none'}).",
                                where=str(path))
            x = archive["x"]
            y = archive["y"] if "y" in archive else None
            groups = archive["groups"] if "groups" in archive else np.array([])
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"not a readable .npz archive ({type(exc).__name__}).", where=str(path)) from None
    x = stored_x(x, str(path))
    if y is not None and (np.ndim(y) == 0 or len(y) != len(x)):
        raise DataError(f"x has {len(x)} trials but y has {np.size(y) if np.ndim(y) else 'a single'} label(s); "
                        "give one label (or one-hot row) per trial.", where=str(path))
    if len(groups) and (np.ndim(groups) != 1 or len(groups) != len(x)):
        raise DataError(f"x has {len(x)} trials but groups has shape {np.shape(groups)}; give one group (subject, "
                        "session) per trial.", where=str(path))
    return Dataset(str(path), x, y, groups)


def read_trial_folder(path: Path, meta: Meta | None, params: dict[str, str] | None = None) -> Dataset:
    """One trial per file, in the order of the folder's labels CSV."""
    params = params or {}
    unknown = sorted(set(params) - FOLDER_PARAMETERS)
    if unknown:
        raise DataError(f"a folder of trial files takes the parameter dtype; not {unknown[0]!r}.", where=str(path))
    labels_file = next(path / name for name in LABEL_FILES if (path / name).is_file())
    rows = _rows(labels_file)
    widths = {len(row) for row in rows}
    if widths == {5}:
        return _anomaly_windows(path, labels_file, rows, meta, params)
    if widths == {3}:
        return _eembc_trials(path, labels_file, rows, meta, params)
    if widths != {2}:
        raise DataError(f"rows have {sorted(widths)} columns; expected file,label (2), EEMBC "
                        "file,classes,label (3) or file,classes,label,width,stride (5) in every row.",
                        where=str(labels_file))
    files = [row[0] for row in rows]
    x = _stack([_read_trial(path, labels_file, f, meta, params) for f in files], path)
    dataset = Dataset(str(path), x, _label_values([row[1] for row in rows], meta, labels_file))
    _note_byte_type(dataset, files, params)
    return dataset


def _rows(labels_file: Path) -> list[list[str]]:
    """Non-empty rows, cells stripped, without a ``file,label`` header."""
    try:
        with labels_file.open(newline="", encoding="utf-8-sig") as fh:
            rows = [[cell.strip() for cell in row] for row in csv.reader(fh) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"not a readable CSV file ({type(exc).__name__}).", where=str(labels_file)) from None
    if rows and "file" in [c.lower() for c in rows[0]]:
        header = [c.lower() for c in rows[0]]
        if "label" not in header:
            raise DataError("the header names a 'file' column but no 'label' column.", where=str(labels_file))
        rows = [[row[header.index("file")], row[header.index("label")]] if len(row) == len(header) else row
                for row in rows[1:]]
    if not rows:
        raise DataError("it lists no trials.", where=str(labels_file))
    return rows


def _label_values(cells: list[str], meta: Meta | None, where: Path) -> np.ndarray:
    """Integers if every label is one, else floats, else class names looked up in the model's labels."""
    for kind in (int, float):
        try:
            return np.array([kind(c) for c in cells])
        except ValueError:
            pass
    names = list(meta.labels) if meta is not None else []
    unknown = [c for c in cells if c not in names]
    if unknown:
        known = f"the model's classes are {', '.join(names)}" if names else "the model names no classes"
        raise DataError(f"label '{unknown[0]}' is neither a class index nor a class name ({known}).",
                        where=str(where))
    return np.array([names.index(c) for c in cells], dtype=np.int64)


def _eembc_trials(path: Path, labels_file: Path, rows: list[list[str]], meta: Meta | None,
                  params: dict[str, str]) -> Dataset:
    """EEMBC / MLPerf Tiny ``y_labels.csv``: file, number of classes, label."""
    counts = {row[1] for row in rows}
    if len(counts) != 1 or not rows[0][1].isdigit():
        raise DataError(f"the number-of-classes column must hold one whole number in every row; found "
                        f"{sorted(counts)[:3]}.", where=str(labels_file))
    n_classes = int(rows[0][1])
    outputs = _fixed_size(meta.outputs[0].shape[1:]) if meta is not None and meta.outputs else None
    if outputs is not None and outputs != n_classes:
        raise DataError(f"it gives {n_classes} classes but the model's first output has {outputs} values.",
                        where=str(labels_file))
    y = class_indices(_label_values([row[2] for row in rows], meta, labels_file), n_classes, str(labels_file))
    x = _stack([_read_trial(path, labels_file, row[0], meta, params) for row in rows], path)
    dataset = Dataset(str(path), x, y)
    _note_byte_type(dataset, [row[0] for row in rows], params)
    return dataset


def _note_byte_type(dataset: Dataset, files: list[str], params: dict[str, str]) -> None:
    """Say which byte type raw trials were read as when the file itself cannot tell int8 from uint8."""
    raw = any(not f.lower().endswith(".npy") for f in files)
    if raw and "dtype" not in params and dataset.x.dtype.itemsize == 1:
        other = "uint8" if dataset.x.dtype == np.int8 else "int8"
        dataset.notes.append(f"raw trials read as {dataset.x.dtype.name}, the model input's type; if the files hold "
                             f"{other} values (MLPerf Tiny's image sets store uint8 pixels), give :dtype={other}")


def _anomaly_windows(path: Path, labels_file: Path, rows: list[list[str]], meta: Meta | None,
                     params: dict[str, str]) -> Dataset:
    """MLPerf Tiny anomaly-detection rows: each file is cut into windows of ``width`` bytes every ``stride``."""
    dtype, shape = _input_type(meta, params, path)
    trials, groups = [], []
    for row in rows:
        try:
            width, stride = int(row[3]), int(row[4])
        except ValueError:
            raise DataError(f"the window width and stride of '{row[0]}' are not whole numbers of bytes.",
                            where=str(labels_file)) from None
        per_trial = int(np.prod(shape)) * dtype.itemsize
        if width != per_trial or stride < 1 or stride % dtype.itemsize:
            raise DataError(f"windows of {width} bytes every {stride} do not fit the model input, which takes "
                            f"{dtype.name} x {shape} = {per_trial} bytes.", where=str(labels_file))
        data = _trial_bytes(path, labels_file, row[0])
        if len(data) < width:
            raise DataError(f"'{row[0]}' holds {len(data)} bytes, less than one {width}-byte window.", where=str(path))
        values = np.frombuffer(data[: len(data) - len(data) % dtype.itemsize], dtype)
        step, size = stride // dtype.itemsize, width // dtype.itemsize
        for start in range(0, len(values) - size + 1, step):
            trials.append(values[start : start + size].reshape(shape))
            groups.append(row[0])
    dataset = Dataset(str(path), stored_x(np.stack(trials), str(path)), None, np.array(groups))
    # The labels belong to whole recordings and are scored by an AUC over per-file anomaly scores; reading them
    # as the class of each window would let an accuracy be computed that means nothing, so they stay out.
    dataset.notes.append(f"{labels_file.name} holds anomaly labels per recording (scored by an AUC over "
                         f"per-file scores, which is not computed here); the {len(trials)} windows are unlabelled")
    return dataset


def _read_trial(path: Path, labels_file: Path, name: str, meta: Meta | None, params: dict[str, str]) -> np.ndarray:
    """One ``.npy`` trial as stored, or one raw binary trial in the model input's element type and shape."""
    if name.lower().endswith(".npy"):
        trial = _trial_path(path, labels_file, name)
        try:
            return np.load(trial, allow_pickle=False)
        except Exception:
            raise DataError("not a readable .npy file.", where=str(trial)) from None
    dtype, shape = _input_type(meta, params, path)
    data = _trial_bytes(path, labels_file, name)
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"'{name}' holds {len(data)} bytes but one trial of the model input is {dtype.name} x "
                        f"{shape} = {expected} bytes.", where=str(path))
    return np.frombuffer(data, dtype).reshape(shape)


def _trial_path(path: Path, labels_file: Path, name: str) -> Path:
    trial = path / name
    if not trial.is_file():
        raise DataError(f"{labels_file.name} names '{name}', which is not in the folder.", where=str(path))
    return trial


def _trial_bytes(path: Path, labels_file: Path, name: str) -> bytes:
    return _trial_path(path, labels_file, name).read_bytes()


def _input_type(meta: Meta | None, params: dict[str, str], path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Little-endian element type and fixed per-trial shape of raw binary trials, from the model's first input."""
    if meta is None or not meta.inputs:
        raise DataError("raw binary trials take their type and shape from the model, and this one states no "
                        "input.", where=str(path))
    spec = meta.inputs[0]
    shape = spec.shape[1:]
    if _fixed_size(shape) is None:
        raise DataError(f"raw binary trials need a fixed input shape, and the model input '{spec.name}' has shape "
                        f"{spec.shape}; store the trials as .npy files instead.", where=str(path))
    name = params.get("dtype", spec.dtype)
    try:
        dtype = np.dtype(name).newbyteorder("<")
    except TypeError:
        raise DataError(f"dtype='{name}' is not a numpy element type (int8, uint8, int16, float32...).",
                        where=str(path)) from None
    if not np.issubdtype(dtype, np.number):
        raise DataError(f"raw binary trials must hold numbers, not {dtype.name}.", where=str(path))
    return dtype, tuple(int(d) for d in shape)


def _fixed_size(shape: list[Any]) -> int | None:
    """The number of values of a shape whose dimensions are all known, else None."""
    if not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    return int(np.prod(shape)) if shape else 1


def _stack(trials: list[np.ndarray], path: Path) -> np.ndarray:
    shapes = {t.shape for t in trials}
    if len(shapes) > 1:
        raise DataError(f"trials have different shapes: {sorted(shapes)[:3]}.", where=str(path))
    dtypes = {t.dtype for t in trials}
    if len(dtypes) > 1:
        raise DataError(f"trials have different dtypes: {sorted(map(str, dtypes))}; store them alike.",
                        where=str(path))
    return stored_x(np.stack(trials), str(path))

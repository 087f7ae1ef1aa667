"""Dataset specs: one string names the data, the model's metadata says how to shape it.

Accepted specs:

- ``synthetic-ssvep:subjects=31-35,seed=0,blocks=6,snr=1`` — the seeded generator (bci.md §6);
- a folder of Tsinghua Benchmark files ``S1.mat, S2.mat, ...`` — optionally ``folder:subjects=1-3``;
- ``file.npz`` holding ``x`` (already in the model's input layout) and ``y``;
- a folder of ``.npy`` trials with ``labels.csv`` (columns ``file,label``).
"""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import Meta
from edge.errors import DataError

GENERATORS = ("synthetic-ssvep",)


@dataclass
class Dataset:
    """Trials in the model's input layout, their labels and the group (subject/block) of each."""

    name: str
    x: np.ndarray
    y: np.ndarray | None
    groups: np.ndarray = field(default_factory=lambda: np.array([]))

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield (x, y) batches in order."""
        for start in range(0, len(self.x), batch_size):
            stop = start + batch_size
            yield self.x[start:stop], None if self.y is None else self.y[start:stop]


def load_dataset(spec: str, meta: Meta) -> Dataset:
    """Build the dataset a spec names, shaped for the model described by ``meta``."""
    name, params = parse_spec(spec)
    path = Path(name)
    if name in GENERATORS:
        dataset = _synthetic_ssvep(spec, params, meta)
    elif path.suffix.lower() == ".npz":
        dataset = _npz(path)
    elif path.is_dir() and (path / "labels.csv").is_file():
        dataset = _npy_folder(path)
    elif path.is_dir() and any(path.glob("S*.mat")):
        dataset = _benchmark_folder(path, params, meta)
    elif path.exists():
        raise DataError(
            "not a dataset this toolkit reads: expected an .npz with x and y, a folder of .npy files with "
            "labels.csv, or a folder of Benchmark S*.mat files.",
            where=name,
        )
    elif "/" in name or "." in name:
        raise DataError("no such file or folder.", where=name)
    else:
        close = difflib.get_close_matches(name, GENERATORS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DataError(
            f"unknown dataset '{name}'. Give a file or folder path, or one of: {', '.join(GENERATORS)}.{hint}"
        )
    check_against_model(dataset, meta)
    return dataset


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``name:key=value,key=value`` into the name and its parameters."""
    name, _, rest = spec.partition(":")
    if Path(spec).exists():  # a path may itself contain ':'
        return spec, {}
    params: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DataError(f"dataset parameter '{item}' in '{spec}' is not of the form key=value.")
        params[key.strip()] = value.strip()
    return name, params


def parse_subjects(text: str) -> list[int]:
    """A count (``4`` is 1..4), a range (``31-35``, ``9-9`` for one) or a list (``1+3+5``)."""
    try:
        if re.fullmatch(r"\d+", text):
            return list(range(1, int(text) + 1))
        subjects: list[int] = []
        for part in text.split("+"):
            lo, _, hi = part.partition("-")
            subjects.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise DataError(f"subjects='{text}' is not a count (4), a range (31-35) or a list (1+3+5).") from None
    if not subjects or min(subjects) < 1:
        raise DataError(f"subjects='{text}' must name subjects numbered from 1.")
    return subjects


def check_against_model(dataset: Dataset, meta: Meta) -> None:
    """Refuse data whose trial shape differs from the model input or that holds NaN or Inf."""
    if not meta.inputs:
        return
    spec = meta.inputs[0]
    expected = spec.shape[1:]
    got = dataset.x.shape[1:]
    fixed = all(isinstance(e, int) and e > 0 for e in expected)
    if len(expected) != len(got) or (fixed and tuple(expected) != tuple(got)):
        raise DataError(
            f"each trial has shape {tuple(got)} but the model input '{spec.name}' expects "
            f"{tuple(expected)} (after the batch axis).",
            where=dataset.name,
        )
    if not np.issubdtype(dataset.x.dtype, np.number):
        raise DataError(f"x has dtype {dataset.x.dtype}, not a number type.", where=dataset.name)
    bad = ~np.isfinite(dataset.x)
    if bad.any():
        trials = np.flatnonzero(bad.reshape(len(dataset.x), -1).any(axis=1))
        raise DataError(
            f"{int(bad.sum())} NaN or Inf values in {len(trials)} trial(s), first in trial {int(trials[0])}; "
            "drop or repair those trials.",
            where=dataset.name,
        )
    if dataset.y is not None and len(dataset.y) != len(dataset.x):
        raise DataError(f"x has {len(dataset.x)} trials but y has {len(dataset.y)} labels.", where=dataset.name)


def ssvep_settings(meta: Meta) -> dict[str, Any]:
    """Preprocessing settings for SSVEP data, from the metadata or guessed from a plain model's input."""
    from edge.data.benchmark import BENCHMARK_CHANNELS, OCCIPITAL_9

    pre = meta.preprocessing
    shape = meta.inputs[0].shape if meta.inputs else []
    if len(shape) != 4:
        raise DataError(
            f"SSVEP data need a model input of shape (batch, sub-bands, channels, samples); this model's is {shape}."
        )
    _, n_bands, n_channels, n_samples = shape
    sample_rate = pre.sample_rate or 250.0
    channels = list(pre.channels)
    if not channels:
        channels = list(OCCIPITAL_9) if n_channels == 9 else list(BENCHMARK_CHANNELS[:n_channels]) if isinstance(n_channels, int) else []
    upper = [c.upper() for c in BENCHMARK_CHANNELS]
    missing = [c for c in channels if c.upper() not in upper]
    if missing:
        raise DataError(f"channels {missing} of the model are not in the Benchmark montage.")
    bands = [tuple(b) for b in pre.filter_bank] or [(8.0 * (i + 1), 90.0) for i in range(int(n_bands))]
    window_s = pre.window_s or (n_samples / sample_rate if isinstance(n_samples, int) else 0.4)
    return {
        "sample_rate": sample_rate,
        "channel_idx": [upper.index(c.upper()) for c in channels],
        "latency_s": pre.latency_s if pre.window_s else 0.14,
        "window_s": window_s,
        "bands": bands,
    }


def _number(params: dict[str, str], key: str, default: float, kind: type = float) -> Any:
    if key not in params:
        return default
    try:
        return kind(params[key])
    except ValueError:
        raise DataError(f"dataset parameter {key}='{params[key]}' is not a {kind.__name__}.") from None


def _synthetic_ssvep(spec: str, params: dict[str, str], meta: Meta) -> Dataset:
    from edge.data.benchmark import BENCHMARK_CHANNELS
    from edge.data.preprocess import ssvep_epochs
    from edge.data.synthetic_ssvep import generate_subject

    known = {"subjects", "seed", "blocks", "snr"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise DataError(f"synthetic-ssvep has no parameter {unknown[0]!r}; it takes {', '.join(sorted(known))}.")
    subjects = parse_subjects(params.get("subjects", "4"))
    seed = _number(params, "seed", 0, int)
    blocks = _number(params, "blocks", 6, int)
    snr = _number(params, "snr", 1.0)
    if blocks < 1 or snr < 0:
        raise DataError("synthetic-ssvep needs blocks >= 1 and snr >= 0.")
    settings = ssvep_settings(meta)
    # Generate only the model's channels; the generator gives each channel the same values either way.
    channels = [BENCHMARK_CHANNELS[i] for i in settings["channel_idx"]]
    settings["channel_idx"] = list(range(len(channels)))
    xs, ys, groups = [], [], []
    for subject in subjects:
        data = generate_subject(subject, seed, blocks=blocks, snr=snr, channels=channels)
        x, y, block = ssvep_epochs(data, **settings)
        xs.append(x)
        ys.append(y)
        groups.extend(f"S{subject}/B{b + 1}" for b in block)
    return Dataset(spec, np.concatenate(xs), np.concatenate(ys), np.array(groups))


def _benchmark_folder(path: Path, params: dict[str, str], meta: Meta) -> Dataset:
    from edge.data.benchmark import read_benchmark_subject
    from edge.data.preprocess import ssvep_epochs

    files = {int(m.group(1)): f for f in path.glob("S*.mat") if (m := re.fullmatch(r"S(\d+)\.mat", f.name))}
    subjects = parse_subjects(params["subjects"]) if "subjects" in params else sorted(files)
    absent = [s for s in subjects if s not in files]
    if absent:
        raise DataError(f"no S{absent[0]}.mat in the folder.", where=str(path))
    settings = ssvep_settings(meta)
    xs, ys, groups = [], [], []
    for subject in subjects:
        x, y, block = ssvep_epochs(read_benchmark_subject(files[subject]), **settings)
        xs.append(x)
        ys.append(y)
        groups.extend(f"S{subject}/B{b + 1}" for b in block)
    return Dataset(str(path), np.concatenate(xs), np.concatenate(ys), np.array(groups))


def _npz(path: Path) -> Dataset:
    if not path.is_file():
        raise DataError("no such file.", where=str(path))
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive:
                raise DataError(f"no array 'x' in the archive (found: {', '.join(archive.files) or 'none'}).", where=str(path))
            x = archive["x"]
            y = archive["y"] if "y" in archive else None
            groups = archive["groups"] if "groups" in archive else np.array([])
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"not a readable .npz archive ({type(exc).__name__}).", where=str(path)) from None
    return Dataset(str(path), np.asarray(x, dtype=np.float32), _labels(y, path), groups)


def _npy_folder(path: Path) -> Dataset:
    rows = list(csv.DictReader((path / "labels.csv").open(newline="")))
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise DataError("labels.csv needs a header with columns 'file' and 'label'.", where=str(path / "labels.csv"))
    trials = []
    for row in rows:
        trial = path / row["file"]
        if not trial.is_file():
            raise DataError(f"labels.csv names '{row['file']}', which is not in the folder.", where=str(path))
        try:
            trials.append(np.load(trial, allow_pickle=False))
        except Exception:
            raise DataError("not a readable .npy file.", where=str(trial)) from None
    shapes = {t.shape for t in trials}
    if len(shapes) > 1:
        raise DataError(f"trials have different shapes: {sorted(shapes)[:3]}.", where=str(path))
    labels = np.array([row["label"] for row in rows])
    return Dataset(str(path), np.stack(trials).astype(np.float32), _labels(labels, path))


def _labels(y: np.ndarray | None, path: Path) -> np.ndarray | None:
    if y is None:
        return None
    try:
        return np.asarray(y).astype(np.int64).reshape(-1)
    except ValueError:
        raise DataError("labels must be integer class indices.", where=str(path)) from None

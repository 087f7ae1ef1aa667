"""Dataset specs: one string names the data, the model's metadata says how to shape it.

Accepted specs:

- ``synthetic-ssvep:subjects=31-35,seed=0,blocks=6,snr=1`` — the seeded generator (bci.md §6);
- a folder of Tsinghua Benchmark files ``S1.mat, S2.mat, ...`` — optionally ``folder:subjects=1-3``;
  BETA files of the same names with ``folder:format=beta``;
- an SSVEPExo folder (``subjectNN/sessionK-raw.fif`` + events) — optionally ``folder:subjects=1-2``;
- for EEG classifiers, a recording (.edf/.gdf/.fif/.bdf) or a folder of them — ``folder:runs=6+10`` picks
  PhysioNet-style runs, ``events=T1+T2`` names each class's event code (default: the model's own);
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
from edge.data.epochs import EEGEpochs
from edge.data.text import is_text_spec, load_token_windows
from edge.errors import DataError

GENERATORS = ("synthetic-ssvep",)


@dataclass
class Dataset:
    """Trials in the model's input layout, their labels and the group (subject/block) of each."""

    name: str
    x: np.ndarray
    y: np.ndarray | None
    groups: np.ndarray = field(default_factory=lambda: np.array([]))
    raw: np.ndarray | None = None  # unfiltered windows (trials, channels, samples), for the classic baselines
    stim_freqs: list[float] | None = None
    sample_rate: float | None = None

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
    if meta.family == "llm" or is_text_spec(name):
        return Dataset(spec, load_token_windows(spec, meta), None)
    if path.suffix.lower() == ".npz":
        dataset = _npz(path)
    elif path.is_dir() and (path / "labels.csv").is_file():
        dataset = _npy_folder(path)
    elif meta.family == "eeg" and (_is_recording(path) or (path.is_dir() and any(filter(_is_recording, path.iterdir())))):
        dataset = _recordings(path, params, meta)
    elif name in GENERATORS or (path.is_dir() and (any(path.glob("S*.mat")) or any(path.glob("subject*")))):
        channels = ssvep_settings(meta)["channels"] or None
        dataset = shape_for_model(load_epochs(spec, channels), meta, spec)
    elif path.exists():
        raise DataError(
            "not a dataset this toolkit reads: expected an .npz with x and y, a folder of .npy files with "
            "labels.csv, a folder of Benchmark S*.mat files or an SSVEPExo folder of subjectNN recordings.",
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
    """Preprocessing of an SSVEP network, from its metadata or guessed from a plain model's input."""
    from edge.data.benchmark import OCCIPITAL_9

    pre = meta.preprocessing
    shape = meta.inputs[0].shape if meta.inputs else []
    if len(shape) != 4:
        raise DataError(
            f"SSVEP data need a model input of shape (batch, sub-bands, channels, samples); this model's is {shape}."
        )
    _, n_bands, n_channels, n_samples = shape
    sample_rate = pre.sample_rate or 250.0
    channels = list(pre.channels) or (list(OCCIPITAL_9) if n_channels == 9 else [])
    bands = [tuple(b) for b in pre.filter_bank] or [(8.0 * (i + 1), 90.0) for i in range(int(n_bands))]
    window_s = pre.window_s or (n_samples / sample_rate if isinstance(n_samples, int) else 0.4)
    return {
        "sample_rate": sample_rate,
        "channels": channels,
        "latency_s": pre.latency_s if pre.window_s else 0.14,
        "window_s": window_s,
        "bands": bands,
    }


def load_epochs(spec: str, channels: list[str] | None = None) -> EEGEpochs:
    """Whole labelled trials (before windowing and filtering) from a synthetic or recorded SSVEP source."""
    name, params = parse_spec(spec)
    path = Path(name)
    if name == "synthetic-ssvep":
        return _synthetic_epochs(params, channels)
    if path.is_dir() and any(path.glob("S*.mat")):
        return _benchmark_epochs(path, params, channels)
    if path.is_dir() and any(path.glob("subject*")):
        from edge.data.ssvep_exo import read_ssvep_exo

        subjects = parse_subjects(params["subjects"]) if "subjects" in params else None
        epochs = read_ssvep_exo(path, subjects=subjects)
        return epochs.pick_channels(channels) if channels else epochs
    raise DataError("not a source of whole SSVEP trials (synthetic-ssvep, a Benchmark folder or an SSVEPExo folder).",
                    where=name)


def shape_for_model(epochs: EEGEpochs, meta: Meta, name: str) -> Dataset:
    """Cut the model's window after the visual latency and apply its filter bank."""
    from edge.data.preprocess import filter_bank

    settings = ssvep_settings(meta)
    if epochs.sample_rate != settings["sample_rate"]:
        raise DataError(f"the data are sampled at {epochs.sample_rate:g} Hz but the model expects "
                        f"{settings['sample_rate']:g} Hz.", where=name)
    if settings["channels"]:
        epochs = epochs.pick_channels(settings["channels"])
    raw = epochs.window(settings["latency_s"], settings["window_s"])
    x = filter_bank(raw.astype(np.float64), epochs.sample_rate, settings["bands"]).astype(np.float32)
    groups = np.array([f"S{s}/B{b + 1}" for s, b in zip(epochs.subject, epochs.block, strict=True)])
    return Dataset(name, x, epochs.y, groups, raw=raw.astype(np.float32), stim_freqs=epochs.stim_freqs,
                   sample_rate=epochs.sample_rate)


def _number(params: dict[str, str], key: str, default: float, kind: type = float) -> Any:
    if key not in params:
        return default
    try:
        return kind(params[key])
    except ValueError:
        raise DataError(f"dataset parameter {key}='{params[key]}' is not a {kind.__name__}.") from None


def _synthetic_epochs(params: dict[str, str], channels: list[str] | None) -> EEGEpochs:
    from edge.data.benchmark import OCCIPITAL_9
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
    # Generate only the channels asked for; the generator gives each channel the same values either way.
    channels = [c.upper() for c in (channels or OCCIPITAL_9)]
    return EEGEpochs.concatenate(
        [benchmark_layout_epochs(generate_subject(s, seed, blocks=blocks, snr=snr, channels=channels), s, channels)
         for s in subjects]
    )


def benchmark_layout_epochs(data: np.ndarray, subject: int, channels: list[str]) -> EEGEpochs:
    """Benchmark layout [channels, samples, targets, blocks] as epochs, block-major then target."""
    from edge.data.benchmark import BENCHMARK_FREQS, ONSET_SAMPLE, SAMPLE_RATE

    n_ch, n_samples, n_targets, n_blocks = data.shape
    x = np.ascontiguousarray(data.transpose(3, 2, 0, 1).reshape(n_blocks * n_targets, n_ch, n_samples))
    freqs = [float(f) for f in BENCHMARK_FREQS[:n_targets]]
    return EEGEpochs(
        x.astype(np.float32, copy=False), np.tile(np.arange(n_targets, dtype=np.int64), n_blocks), float(SAMPLE_RATE),
        list(channels), [f"{f:.1f} Hz" for f in freqs], np.full(len(x), subject, dtype=np.int64),
        np.full(len(x), "1"), np.repeat(np.arange(n_blocks, dtype=np.int64), n_targets), ONSET_SAMPLE, freqs,
    )


def _benchmark_epochs(path: Path, params: dict[str, str], channels: list[str] | None) -> EEGEpochs:
    from edge.data.benchmark import BENCHMARK_CHANNELS, OCCIPITAL_9, read_benchmark_subject

    files = {int(m.group(1)): f for f in path.glob("S*.mat") if (m := re.fullmatch(r"S(\d+)\.mat", f.name))}
    subjects = parse_subjects(params["subjects"]) if "subjects" in params else sorted(files)
    absent = [s for s in subjects if s not in files]
    if absent:
        raise DataError(f"no S{absent[0]}.mat in the folder.", where=str(path))
    layout = params.get("format", "benchmark")
    if layout == "beta":
        from edge.data.beta import read_beta_subject

        parts = [read_beta_subject(files[s], subject=s) for s in subjects]
        return EEGEpochs.concatenate([p.pick_channels(list(channels or OCCIPITAL_9)) for p in parts])
    if layout != "benchmark":
        raise DataError(f"format='{layout}' is not known; S*.mat folders are format=benchmark or format=beta.")
    upper = [c.upper() for c in BENCHMARK_CHANNELS]
    names = [c.upper() for c in (channels or OCCIPITAL_9)]
    missing = [c for c in names if c not in upper]
    if missing:
        raise DataError(f"channels {missing} are not in the Benchmark montage.", where=str(path))
    rows = [upper.index(c) for c in names]
    return EEGEpochs.concatenate(
        [benchmark_layout_epochs(read_benchmark_subject(files[s])[rows], s, names) for s in subjects]
    )


RECORDING_SUFFIXES = (".edf", ".bdf", ".gdf", ".fif")


def _is_recording(path: Path) -> bool:
    """An EEG recording MNE reads, or a BCI Competition IV 2a .mat file."""
    return path.is_file() and (path.suffix.lower() in RECORDING_SUFFIXES
                               or re.fullmatch(r"A0\d[TE]\.mat", path.name) is not None)


def _recordings(path: Path, params: dict[str, str], meta: Meta) -> Dataset:
    """EEG recordings cut and preprocessed as an EEG classifier's metadata says (band, window, standardisation)."""
    from edge.data.eeg_files import read_eeg_file

    unknown = sorted(set(params) - {"runs", "files", "events"})
    if unknown:
        raise DataError(f"recordings take the parameters runs, files and events; not {unknown[0]!r}.", where=str(path))
    if path.is_file():
        files = [path]
    elif "runs" in params:
        files = []
        text = params["runs"].replace("R", "").replace("r", "")
        # Unlike subjects=4 (a count), runs=14 means run 14 alone.
        for run in parse_subjects(f"{text}-{text}" if text.isdigit() else text):
            matches = sorted(path.glob(f"*R{run:02d}.*"))
            if not matches:
                raise DataError(f"no recording of run {run} (a file named *R{run:02d}.edf or similar).", where=str(path))
            files += matches
    elif "files" in params:
        files = [path / f for f in params["files"].split("+")]
    else:
        files = sorted(filter(_is_recording, path.iterdir()))
    pre = meta.preprocessing
    if any(re.fullmatch(r"A0\d[TE]\.mat", f.name) for f in files):
        return _bciiv2a(files, meta, str(path))
    codes = params["events"].split("+") if "events" in params else list(meta.extra.get("event_codes", []))
    if len(codes) != len(meta.labels):
        raise DataError(f"name the event code of each of the model's {len(meta.labels)} classes "
                        f"({', '.join(meta.labels)}) with events=CODE+CODE.", where=str(path))
    band = pre.filter.get("band_hz") or [None, None]
    window = pre.window_s or 0.0
    parts = [read_eeg_file(f, classes=dict(zip(codes, meta.labels, strict=True)), tmin=pre.latency_s,
                           tmax=pre.latency_s + window, l_freq=band[0], h_freq=band[1],
                           channels=list(pre.channels) or None, block=i)
             for i, f in enumerate(files)]
    return _eeg_model_input(EEGEpochs.concatenate(parts), meta, [f.stem for f in files], str(path))


def _bciiv2a(files: list[Path], meta: Meta, name: str) -> Dataset:
    """BCI Competition IV 2a .mat files cut at the model's window (seconds after each trial start)."""
    import mne

    from edge.data.bciiv2a import read_bciiv2a_mat

    pre = meta.preprocessing
    parts = [read_bciiv2a_mat(f, tmin=pre.latency_s, tmax=pre.latency_s + (pre.window_s or 4.0)) for f in files]
    for i, part in enumerate(parts):
        part.block = np.full(len(part), i, dtype=np.int64)
    epochs = EEGEpochs.concatenate(parts)
    if pre.channels:
        epochs = epochs.pick_channels(list(pre.channels))
    band = pre.filter.get("band_hz")
    if band:
        # The files hold cut trials, so the band-pass runs per trial rather than on the recording.
        epochs.x = mne.filter.filter_data(epochs.x.astype(np.float64), epochs.sample_rate, band[0], band[1],
                                          verbose="ERROR").astype(np.float32)
    return _eeg_model_input(epochs, meta, [f.stem for f in files], name)


def _eeg_model_input(epochs: EEGEpochs, meta: Meta, block_names: list[str], path: str) -> Dataset:
    """Standardise per channel as the metadata says and add the model's singleton axis."""
    pre = meta.preprocessing
    if pre.sample_rate and epochs.sample_rate != pre.sample_rate:
        raise DataError(f"the recordings are sampled at {epochs.sample_rate:g} Hz but the model expects "
                        f"{pre.sample_rate:g} Hz.", where=str(path))
    x = epochs.x.astype(np.float64)
    standardize = pre.filter.get("standardize")
    if standardize:
        x = (x - np.asarray(standardize["mean"])[None, :, None]) / np.asarray(standardize["std"])[None, :, None]
    groups = np.array([block_names[b] for b in epochs.block])
    return Dataset(path, x[:, None].astype(np.float32), epochs.y, groups, sample_rate=epochs.sample_rate)


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
    x = np.asarray(x, dtype=np.float32) if np.asarray(x).dtype == np.float64 else np.asarray(x)  # int8 stays int8
    return Dataset(str(path), x, _labels(y, path), groups)


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

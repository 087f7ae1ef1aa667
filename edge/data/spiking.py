"""Input spike trains [samples, T, *input shape] for a spiking network, from any source the toolkit reads.

* an ``.npz`` with ``x`` (and ``y``) or a folder of ``.npy`` files with ``labels.csv``: spikes already shaped
  [samples, T, *input], or dense signals [samples, channels, samples] that the model's encoder turns into spikes;
* an N-MNIST folder (``Train/<digit>/*.bin``, ``Test/<digit>/*.bin``): ``PATH:split=Test,limit=1000``;
* an SHD/SSC HDF5 file: ``shd_test.h5:limit=500`` (channels summed down to the model's input size);
* ``synthetic-events:samples=200,classes=4,seed=0``: class-dependent Poisson spike patterns for tests;
* any SSVEP source (``synthetic-ssvep:...``, a Benchmark folder, an SSVEPExo folder) for a model that carries a
  dense-to-spike encoder in its metadata (``task["encoding"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import Meta
from edge.data.registry import Dataset, _npy_folder, _npz, _number, load_epochs, parse_spec
from edge.errors import DataError

SPIKE_GENERATORS = ("synthetic-events",)
SSVEP_SOURCES = ("synthetic-ssvep",)


def input_shape(meta: Meta) -> tuple[int, ...]:
    """Per-step input shape of a spiking model (its ``x`` input without the batch)."""
    spec = next((s for s in meta.inputs if s.name == meta.task.get("input", "x")), None)
    if spec is None or not all(isinstance(d, int) for d in spec.shape[1:]):
        raise DataError("the spiking model does not state a fixed per-step input shape.")
    return tuple(int(d) for d in spec.shape[1:])


def load_spike_dataset(spec: str, meta: Meta) -> Dataset:
    """The dataset ``spec`` names as input spikes for the spiking model described by ``meta``."""
    name, params = parse_spec(spec)
    path = Path(name)
    shape = input_shape(meta)
    steps = int(meta.task.get("time_steps", 0)) or None
    if path.suffix.lower() == ".npz":
        dataset = _dense_or_spikes(_npz(path), meta, shape)
    elif path.is_dir() and (path / "labels.csv").is_file():
        dataset = _dense_or_spikes(_npy_folder(path), meta, shape)
    elif path.is_dir() and ((path / "Test").is_dir() or (path / "Train").is_dir()):
        dataset = _nmnist(path, params, shape, steps)
    elif path.suffix.lower() in (".h5", ".hdf5"):
        dataset = _shd(path, params, shape, steps)
    elif name in SPIKE_GENERATORS:
        dataset = _synthetic(params, meta, shape, steps)
    elif name in SSVEP_SOURCES or (path.is_dir() and (any(path.glob("S*.mat")) or any(path.glob("subject*")))):
        dataset = _ssvep(spec, meta)
    elif path.exists():
        raise DataError("not spike data this toolkit reads: expected an .npz with x and y, a folder of .npy files "
                        "with labels.csv, an N-MNIST folder, an SHD .h5 file or an SSVEP source.", where=name)
    else:
        raise DataError(f"unknown spike data '{name}'. Give a file or folder, or one of: "
                        f"{', '.join(SPIKE_GENERATORS + SSVEP_SOURCES)}.")
    if dataset.x.shape[2:] != shape:
        raise DataError(f"the data give per-step inputs of shape {tuple(dataset.x.shape[2:])}; the model takes "
                        f"{shape}.", where=name)
    return dataset


def _dense_or_spikes(dataset: Dataset, meta: Meta, shape: tuple[int, ...]) -> Dataset:
    if dataset.x.ndim == 2 + len(shape) and dataset.x.shape[2:] == shape:
        if dataset.x.dtype.kind in "biu":  # spike counts are exact numbers, not quantized codes: float is lossless
            return Dataset(dataset.name, dataset.x.astype(np.float32), dataset.y, dataset.groups)
        return dataset
    encoding = meta.task.get("encoding")
    if encoding and dataset.x.ndim == 3:
        from edge.data.spike_encoding import ssvep_spikes

        rate = meta.preprocessing.sample_rate or 250.0
        return Dataset(dataset.name, ssvep_spikes(dataset.x, rate, encoding), dataset.y, dataset.groups)
    raise DataError(f"the arrays have shape {tuple(dataset.x.shape)}; a spiking model with per-step input {shape} "
                    f"needs x of shape (samples, T, {', '.join(map(str, shape))})"
                    + (", or dense (samples, channels, samples) for its encoder." if encoding else "."),
                    where=dataset.name)


def _limit(params: dict[str, str]) -> int | None:
    limit = _number(params, "limit", 0, int)
    if limit < 0:
        raise DataError("limit must be a positive number of samples.")
    return limit or None


def _nmnist(path: Path, params: dict[str, str], shape: tuple[int, ...], steps: int | None) -> Dataset:
    from edge.data.events import events_to_frames, load_nmnist

    unknown = sorted(set(params) - {"split", "limit", "duration_ms"})
    if unknown:
        raise DataError(f"N-MNIST data take split, limit and duration_ms; not {unknown[0]!r}.", where=str(path))
    if shape != (2, 34, 34):
        raise DataError(f"N-MNIST frames are (2 polarities, 34, 34); the model's input is {shape}.", where=str(path))
    events, labels = load_nmnist(path, split=params.get("split", "Test"), limit=_limit(params))
    duration = round(_number(params, "duration_ms", 300.0) * 1000)
    x = np.stack([events_to_frames(e, shape, time_steps=steps or 30, duration_us=duration, binary=True)
                  for e in events])
    return Dataset(str(path), x, labels)


def _shd(path: Path, params: dict[str, str], shape: tuple[int, ...], steps: int | None) -> Dataset:
    from edge.data.events import read_shd, shd_to_frames

    channels = 700
    if len(shape) != 1 or channels % shape[0]:
        raise DataError(f"SHD has 700 channels, which cannot be summed down to the model's input {shape}.",
                        where=str(path))
    samples, labels = read_shd(path, limit=_limit(params))
    duration = _number(params, "duration_s", 1.0)
    x = np.stack([shd_to_frames(t, u, steps or 100, duration_s=duration, channels=channels,
                                downsample=channels // shape[0]) for t, u in samples])
    return Dataset(str(path), x, labels)


def _synthetic(params: dict[str, str], meta: Meta, shape: tuple[int, ...], steps: int | None) -> Dataset:
    from edge.data.events import synthetic_events

    unknown = sorted(set(params) - {"samples", "classes", "seed"})
    if unknown:
        raise DataError(f"synthetic-events takes samples, classes and seed; not {unknown[0]!r}.")
    if len(shape) != 1:
        raise DataError(f"synthetic-events gives (channels,) per step; the model's input is {shape}.")
    classes = _number(params, "classes", len(meta.labels) or 4, int)
    x, y = synthetic_events(_number(params, "samples", 200, int), classes, channels=shape[0],
                            time_steps=steps or 100, seed=_number(params, "seed", 0, int))
    return Dataset("synthetic-events", x, y)


def _ssvep(spec: str, meta: Meta) -> Dataset:
    from edge.data.spike_encoding import ssvep_spikes

    encoding = meta.task.get("encoding")
    if not encoding:
        raise DataError("SSVEP recordings feed a spiking model only through an encoder, and this model carries "
                        "none in its metadata (task.encoding); give spikes in an .npz instead.")
    pre = meta.preprocessing
    epochs = load_epochs(spec, list(pre.channels) or None)
    if pre.sample_rate and epochs.sample_rate != pre.sample_rate:
        raise DataError(f"the data are sampled at {epochs.sample_rate:g} Hz but the model expects "
                        f"{pre.sample_rate:g} Hz.", where=spec)
    raw = epochs.window(pre.latency_s, pre.window_s or 1.0)
    groups = np.array([f"S{s}/B{b + 1}" for s, b in zip(epochs.subject, epochs.block, strict=True)])
    return Dataset(spec, ssvep_spikes(raw, epochs.sample_rate, encoding), epochs.y, groups,
                   stim_freqs=epochs.stim_freqs, sample_rate=epochs.sample_rate)


def describe(dataset: Dataset) -> dict[str, Any]:
    """Size and input rate of a spike dataset, for reports."""
    return {"spec": dataset.name, "samples": len(dataset), "time_steps": int(dataset.x.shape[1]),
            "input_rate": float(dataset.x.mean()) if dataset.x.size else 0.0}

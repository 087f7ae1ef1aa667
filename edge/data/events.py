"""Event-camera and spiking-audio datasets for spiking networks: N-MNIST, SHD/SSC, binning, synthetic data.

N-MNIST (Orchard et al. 2015) stores one sample per ``.bin`` file under ``Train/<digit>/`` and
``Test/<digit>/``. Each event is 5 bytes, big-endian: byte 0 is x (0..33), byte 1 is y (0..33),
bit 7 of byte 2 is the polarity (1 = ON) and the remaining 23 bits are the timestamp in microseconds.

SHD and SSC (Cramer et al. 2022) store one split per HDF5 file (``shd_test.h5``): ``spikes/times``
holds one variable-length array per sample of spike times in seconds (float16 in the release, so
upcast before arithmetic), ``spikes/units`` the matching channel ids 0..699 (uint16), ``labels`` the
classes (uint16) and ``extra/`` speaker information that these readers do not need.

>>> events = read_nmnist("Test/3/00001.bin")           # structured array x, y, p, t (us)
>>> frames = events_to_frames(events, time_steps=10)    # float32 [10, 2, 34, 34]
>>> samples, labels = read_shd("shd_test.h5", limit=100)
>>> frames = shd_to_frames(*samples[0], time_steps=100, downsample=5)  # float32 [100, 140]
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np

from edge.errors import DataError

__all__ = [
    "EVENT_DTYPE",
    "NMNIST_SENSOR",
    "SHD_CHANNELS",
    "events_to_frames",
    "load_nmnist",
    "read_nmnist",
    "read_shd",
    "shd_to_frames",
    "synthetic_events",
    "synthetic_nmnist_events",
    "write_nmnist",
    "write_shd",
]

EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("p", np.int8), ("t", np.int64)])
NMNIST_SENSOR = (2, 34, 34)  # polarities, height, width
SHD_CHANNELS = 700
_MAX_NMNIST_T = (1 << 23) - 1  # the timestamp has 23 bits

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------- N-MNIST files


def read_nmnist(path: PathLike) -> np.ndarray:
    """Read one N-MNIST ``.bin`` file into a structured array with fields x, y, p, t (int64 us)."""
    path = _existing_file(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise DataError(
            f"the file is {raw.size} bytes, not a multiple of the 5-byte N-MNIST event, "
            "so it is truncated or not an N-MNIST .bin file.",
            where=str(path),
        )
    raw = raw.reshape(-1, 5)
    events = np.empty(len(raw), dtype=EVENT_DTYPE)
    events["x"] = raw[:, 0]
    events["y"] = raw[:, 1]
    events["p"] = raw[:, 2] >> 7
    wide = raw.astype(np.int64)
    events["t"] = ((wide[:, 2] & 0x7F) << 16) | (wide[:, 3] << 8) | wide[:, 4]
    return events


def write_nmnist(path: PathLike, events: np.ndarray) -> Path:
    """Write events (fields x, y, p, t) as an N-MNIST ``.bin`` file, in the order given."""
    path = Path(path)
    _require_fields(events, ("x", "y", "p", "t"))
    for name, high in (("x", 255), ("y", 255), ("p", 1), ("t", _MAX_NMNIST_T)):
        values = np.asarray(events[name])
        if values.size and (values.min() < 0 or values.max() > high):
            raise DataError(
                f"Cannot write '{path}': field '{name}' must lie in 0..{high} for the N-MNIST format, "
                f"got {values.min()}..{values.max()}."
            )
    t = np.asarray(events["t"], dtype=np.int64)
    raw = np.empty((len(events), 5), dtype=np.uint8)
    raw[:, 0] = events["x"]
    raw[:, 1] = events["y"]
    raw[:, 2] = (np.asarray(events["p"], dtype=np.int64) << 7) | (t >> 16)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    _write_atomic(path, lambda tmp: Path(tmp).write_bytes(raw.tobytes()))
    return path


def load_nmnist(root: PathLike, split: str = "Test", limit: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Read ``root/<split>/<digit>/*.bin`` into (event arrays, int64 labels).

    Files are read digit by digit in name order. With ``limit``, the first files of each digit are
    taken in turn (0, 1, ..., 9, 0, 1, ...), so a small subset stays balanced over the classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("the N-MNIST folder does not exist.", where=str(root))
    folder = root / split
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        close = difflib.get_close_matches(split, found, n=1)
        listed = ", ".join(found[:10]) + (", ..." if len(found) > 10 else "")
        hint = f"; did you mean '{close[0]}'?" if close else f"; it holds {listed or 'no folders'}."
        raise DataError(f"there is no '{split}' folder in it{hint}", where=str(root))
    per_digit = [
        (int(d.name), sorted(d.glob("*.bin")))
        for d in sorted(folder.iterdir(), key=lambda p: p.name)
        if d.is_dir() and d.name.isdigit()
    ]
    if not any(files for _, files in per_digit):
        raise DataError("no .bin files in digit sub-folders (0..9) were found.", where=str(folder))
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit must be at least 1, got {limit}.")
        longest = max(len(files) for _, files in per_digit)
        order = [(digit, files[i]) for i in range(longest) for digit, files in per_digit if i < len(files)]
        chosen = sorted(order[:limit], key=lambda item: (item[0], item[1].name))
    else:
        chosen = [(digit, f) for digit, files in per_digit for f in files]
    return [read_nmnist(f) for _, f in chosen], np.array([d for d, _ in chosen], dtype=np.int64)


# ---------------------------------------------------------------- SHD / SSC files


def read_shd(path: PathLike, limit: int | None = None) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Read an SHD/SSC HDF5 file into ([(times in s, units), ...], int64 labels).

    Times come back as float32 (float64 if stored wider), units in their stored integer type.
    """
    path = _existing_file(path)
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}.")
    try:
        handle = h5py.File(path, "r")
    except OSError:
        raise DataError("it is not an HDF5 file.", where=str(path)) from None
    with handle:
        for name in ("spikes/times", "spikes/units", "labels"):
            if not isinstance(handle.get(name), h5py.Dataset):
                raise DataError(
                    f"there is no '{name}' dataset, so it is not an SHD/SSC file (top level holds "
                    f"{sorted(handle.keys()) or 'nothing'}).",
                    where=str(path),
                )
        times_ds, units_ds, labels_ds = handle["spikes/times"], handle["spikes/units"], handle["labels"]
        if not len(times_ds) == len(units_ds) == len(labels_ds):
            raise DataError(
                f"'spikes/times', 'spikes/units' and 'labels' hold {len(times_ds)}, {len(units_ds)} "
                f"and {len(labels_ds)} samples; they must match.",
                where=str(path),
            )
        stop = len(labels_ds) if limit is None else min(limit, len(labels_ds))
        times, units = times_ds[:stop], units_ds[:stop]
        labels = np.asarray(labels_ds[:stop], dtype=np.int64)
    samples = []
    for i, (t, u) in enumerate(zip(times, units)):
        if len(t) != len(u):
            raise DataError(f"sample {i} has {len(t)} spike times but {len(u)} units.", where=str(path))
        # The release stores float16 seconds: t * 1e6 would overflow, so widen first.
        samples.append((np.asarray(t, dtype=np.result_type(t.dtype, np.float32)), np.asarray(u)))
    return samples, labels


def write_shd(
    path: PathLike,
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    labels: Sequence[int] | np.ndarray,
    *,
    time_dtype: np.dtype | type = np.float16,
) -> Path:
    """Write (times in s, units) samples and labels as an SHD-style HDF5 file with vlen datasets."""
    path = Path(path)
    labels = np.asarray(labels)
    if len(samples) != len(labels):
        raise DataError(f"Cannot write '{path}': {len(samples)} samples but {len(labels)} labels.")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise DataError(f"Cannot write '{path}': labels must lie in 0..65535.")
    times = np.empty(len(samples), dtype=object)
    units = np.empty(len(samples), dtype=object)
    for i, (t, u) in enumerate(samples):
        t, u = np.asarray(t), np.asarray(u)
        if t.shape != u.shape or t.ndim != 1:
            raise DataError(f"Cannot write '{path}': sample {i} needs 1-D times and units of equal length.")
        if u.size and (u.min() < 0 or u.max() > np.iinfo(np.uint16).max):
            raise DataError(f"Cannot write '{path}': units of sample {i} must lie in 0..65535.")
        times[i], units[i] = t.astype(time_dtype), u.astype(np.uint16)

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as handle:
            spikes = handle.create_group("spikes")
            spikes.create_dataset("times", (len(times),), dtype=h5py.vlen_dtype(np.dtype(time_dtype)))
            spikes.create_dataset("units", (len(units),), dtype=h5py.vlen_dtype(np.dtype(np.uint16)))
            if len(times):
                spikes["times"][...] = times
                spikes["units"][...] = units
            handle.create_dataset("labels", data=labels.astype(np.uint16))

    _write_atomic(path, write)
    return path


# ---------------------------------------------------------------- binning


def events_to_frames(
    events: np.ndarray,
    sensor: tuple[int, int, int] = NMNIST_SENSOR,
    *,
    time_steps: int,
    duration_us: int | None = None,
    binary: bool = False,
) -> np.ndarray:
    """Count events into float32 frames [time_steps, polarities, height, width] indexed [t, p, y, x].

    Time runs from 0 (not from the first event) to ``duration_us``, default the last timestamp + 1,
    in equal bins. Events before 0 or at or after ``duration_us`` are dropped. A sensor with one
    polarity merges ON and OFF. ``binary=True`` clips counts to 1.
    """
    time_steps = _check_steps(time_steps)
    _require_fields(events, ("x", "y", "p", "t"))
    polarities, height, width = sensor
    t = np.asarray(events["t"], dtype=np.int64)
    if duration_us is None:
        duration_us = int(t.max()) + 1 if t.size else 1
    if duration_us <= 0:
        raise DataError(f"duration_us must be positive, got {duration_us}.")
    duration_us = int(np.ceil(duration_us))
    x, y = np.asarray(events["x"], dtype=np.int64), np.asarray(events["y"], dtype=np.int64)
    p = np.asarray(events["p"], dtype=np.int64) if polarities > 1 else np.zeros_like(t)
    for name, values, size in (("x", x, width), ("y", y, height), ("p", p, polarities)):
        if values.size and (values.min() < 0 or values.max() >= size):
            raise DataError(
                f"event field '{name}' spans {values.min()}..{values.max()}, outside the sensor's 0..{size - 1}; "
                f"check the sensor size {tuple(sensor)}."
            )
    keep = (t >= 0) & (t < duration_us)
    step = t[keep] * time_steps // duration_us
    flat = ((step * polarities + p[keep]) * height + y[keep]) * width + x[keep]
    counts = np.bincount(flat, minlength=time_steps * polarities * height * width)
    frames = counts.reshape(time_steps, polarities, height, width).astype(np.float32)
    return np.minimum(frames, 1.0) if binary else frames


def shd_to_frames(
    times: np.ndarray,
    units: np.ndarray,
    time_steps: int,
    *,
    duration_s: float = 1.0,
    channels: int = SHD_CHANNELS,
    downsample: int = 1,
) -> np.ndarray:
    """Count spikes into float32 frames [time_steps, channels // downsample].

    ``downsample`` sums each group of that many neighbouring channels (700 -> 140 with 5, as in the
    DCLS paper). Spikes before 0 s or at or after ``duration_s`` are dropped.
    """
    time_steps = _check_steps(time_steps)
    if duration_s <= 0:
        raise DataError(f"duration_s must be positive, got {duration_s}.")
    if downsample < 1 or channels % downsample:
        raise DataError(f"downsample must be a positive divisor of channels ({channels}), got {downsample}.")
    t = np.asarray(times, dtype=np.float64)
    u = np.asarray(units, dtype=np.int64)
    if t.shape != u.shape:
        raise DataError(f"times and units must have the same shape, got {t.shape} and {u.shape}.")
    if u.size and (u.min() < 0 or u.max() >= channels):
        raise DataError(f"units span {u.min()}..{u.max()}, outside 0..{channels - 1}; check channels.")
    keep = (t >= 0) & (t < duration_s)
    # Rounding can put a time just below duration_s into bin time_steps: clamp it to the last bin.
    step = np.minimum((t[keep] / duration_s * time_steps).astype(np.int64), time_steps - 1)
    groups = channels // downsample
    counts = np.bincount(step * groups + u[keep] // downsample, minlength=time_steps * groups)
    return counts.reshape(time_steps, groups).astype(np.float32)


# ---------------------------------------------------------------- synthetic data


def synthetic_events(
    n_samples: int,
    n_classes: int,
    *,
    channels: int = 140,
    time_steps: int = 100,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw 0/1 spike trains x float32 [n, time_steps, channels] and balanced int64 labels y.

    Each class raises the firing rate of its own band of channels during its own time window above a
    background rate of 0.02 per step. Bands of neighbouring classes overlap and every sample jitters
    its band, window and gain, so classes are separable but not trivially. The class patterns depend
    only on ``n_classes``, ``channels`` and ``time_steps``: different seeds draw new samples of the
    same task (train with one seed, test with another).
    """
    time_steps = _check_steps(time_steps)
    if n_samples < 1 or n_classes < 1 or channels < 1:
        raise DataError(
            f"n_samples, n_classes and channels must be at least 1, got {n_samples}, {n_classes}, {channels}."
        )
    rng = np.random.default_rng(seed)
    spacing = channels / n_classes
    centre = (np.arange(n_classes) + 0.5) * spacing
    # Golden-ratio steps spread the windows so classes with neighbouring bands fire at different times.
    onset = time_steps * (0.2 + 0.6 * ((np.arange(n_classes) * 0.6180339887) % 1.0))
    y = rng.permutation(np.arange(n_samples) % n_classes).astype(np.int64)
    mu = centre[y] + rng.normal(0.0, 0.4 * spacing, n_samples)
    tau = onset[y] + rng.normal(0.0, time_steps / 20, n_samples)
    gain = rng.uniform(0.5, 1.0, n_samples)
    ch = np.arange(channels)[None, None, :]
    step = np.arange(time_steps)[None, :, None]
    band = np.exp(-0.5 * ((ch - mu[:, None, None]) / (0.6 * spacing)) ** 2)
    window = np.exp(-0.5 * ((step - tau[:, None, None]) / (time_steps / 10)) ** 2)
    rate = 0.02 + 0.15 * gain[:, None, None] * band * window
    x = (rng.random((n_samples, time_steps, channels)) < rate).astype(np.float32)
    return x, y


# Seven-segment strokes on a 28 x 28 glyph as (row0, row1, col0, col1): a, b, c, d, e, f, g.
_SEGMENTS = {
    "a": (4, 7, 8, 20), "b": (4, 14, 17, 20), "c": (13, 24, 17, 20), "d": (21, 24, 8, 20),
    "e": (13, 24, 8, 11), "f": (4, 14, 8, 11), "g": (12, 15, 8, 20),
}  # fmt: skip
_DIGIT_SEGMENTS = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]


def synthetic_nmnist_events(label: int, seed: int = 0) -> np.ndarray:
    """Simulate N-MNIST-like events of a seven-segment digit ``label`` seen through three saccades.

    As in the N-MNIST recordings, a 28 x 28 digit moves over the 34 x 34 sensor along a triangle in
    three 100 ms saccades; a pixel fires ON (OFF) each time its log intensity has risen (fallen) by
    its own threshold since its last event, plus sparse noise events. Sorted by time, ~300 ms long.
    """
    if not 0 <= label <= 9:
        raise DataError(f"label must be a digit 0..9, got {label}.")
    rng = np.random.default_rng(seed)
    glyph = np.zeros((28, 28))
    for name in _DIGIT_SEGMENTS[label]:
        r0, r1, c0, c1 = _SEGMENTS[name]
        glyph[r0:r1, c0:c1] = 1.0
    steps = 300  # 1 ms each
    corners = np.array([[0.0, 0.0], [6.0, 3.0], [0.0, 6.0], [0.0, 0.0]]) + rng.normal(0, 0.2, (4, 2))
    corners = np.clip(corners, 0.0, 6.0)
    phase = np.arange(steps + 1) / 100.0
    seg = np.minimum(phase.astype(int), 2)
    frac = (phase - seg)[:, None]
    path = corners[seg] * (1 - frac) + corners[seg + 1] * frac  # (dy, dx) per step
    threshold = rng.normal(0.5, 0.05, (34, 34)).clip(0.2)
    reference = np.log(_place(glyph, *path[0]) + 0.05)
    parts = []
    for k in range(1, steps + 1):  # a loop over time steps; the events of a step are found at once
        level = np.log(_place(glyph, *path[k]) + 0.05)
        for polarity, fired in ((1, level - reference >= threshold), (0, reference - level >= threshold)):
            yy, xx = np.nonzero(fired)
            reference[fired] += threshold[fired] if polarity else -threshold[fired]
            parts.append((xx, yy, np.full(len(xx), polarity), (k - 1) * 1000 + rng.integers(0, 1000, len(xx))))
    n_noise = rng.poisson(60)
    parts.append((rng.integers(0, 34, n_noise), rng.integers(0, 34, n_noise), rng.integers(0, 2, n_noise),
                  rng.integers(0, steps * 1000, n_noise)))  # fmt: skip
    events = np.empty(sum(len(part[0]) for part in parts), dtype=EVENT_DTYPE)
    for i, name in enumerate(("x", "y", "p", "t")):
        events[name] = np.concatenate([part[i] for part in parts])
    return events[np.argsort(events["t"], kind="stable")]


def _place(glyph: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Put the 28 x 28 glyph on a 34 x 34 canvas at a sub-pixel offset (bilinear)."""
    canvas = np.zeros((35, 35))
    iy, ix = int(dy), int(dx)
    fy, fx = dy - iy, dx - ix
    for oy, ox, weight in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
        canvas[iy + oy : iy + oy + 28, ix + ox : ix + ox + 28] += weight * glyph
    return canvas[:34, :34]


# ---------------------------------------------------------------- helpers


def _existing_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError("no such file.", where=str(path))
    if not path.is_file():
        raise DataError("it is a folder, not a data file.", where=str(path))
    return path


def _check_steps(time_steps: int) -> int:
    if not isinstance(time_steps, (int, np.integer, float)) or int(time_steps) != time_steps or time_steps < 1:
        raise DataError(f"time_steps must be a whole number of at least 1, got {time_steps!r}.")
    return int(time_steps)


def _require_fields(events: np.ndarray, names: Sequence[str]) -> None:
    given = getattr(getattr(events, "dtype", None), "names", None) or ()
    missing = [n for n in names if n not in given]
    if missing:
        raise DataError(f"events need fields {list(names)} but lack {missing}; got fields {list(given)}.")


def _write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """Write through ``write(tmp_name)`` to a temporary file beside ``path``, then rename it over."""
    folder = path.parent
    if not folder.is_dir():
        raise DataError(f"Cannot write '{path}': the folder does not exist.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

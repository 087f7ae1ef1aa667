from __future__ import annotations

import h5py
import numpy as np
import pytest

from edge.data.events import (
    EVENT_DTYPE,
    events_to_frames,
    load_nmnist,
    read_nmnist,
    read_shd,
    shd_to_frames,
    synthetic_events,
    synthetic_nmnist_events,
    write_nmnist,
    write_shd,
)
from edge.errors import DataError


def make_events(rows: list[tuple[int, int, int, int]]) -> np.ndarray:
    return np.array(rows, dtype=EVENT_DTYPE)


def nearest_mean_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> float:
    means = np.stack([train[y_train == k].mean(0) for k in np.unique(y_train)])
    pred = np.argmin(((test[:, None] - means[None]) ** 2).sum(-1), axis=1)
    return float((pred == y_test).mean())


# ---------------------------------------------------------------- N-MNIST


def test_nmnist_byte_layout(tmp_path):
    path = write_nmnist(tmp_path / "one.bin", make_events([(5, 7, 1, 1000), (33, 0, 0, (1 << 23) - 1)]))
    raw = path.read_bytes()
    assert raw[:5] == bytes([0x05, 0x07, 0x80, 0x03, 0xE8])  # x, y, p<<7 | t>>16, t>>8, t
    assert raw[5:] == bytes([0x21, 0x00, 0x7F, 0xFF, 0xFF])
    back = read_nmnist(path)
    assert back.dtype.names == ("x", "y", "p", "t") and back["t"].dtype == np.int64
    assert back.tolist() == [(5, 7, 1, 1000), (33, 0, 0, (1 << 23) - 1)]


def test_nmnist_round_trip(tmp_path):
    events = synthetic_nmnist_events(7, seed=3)
    assert 1000 < len(events) < 20000
    assert events["x"].max() <= 33 and events["y"].max() <= 33 and set(np.unique(events["p"])) == {0, 1}
    assert np.all(np.diff(events["t"]) >= 0) and events["t"].max() < 300_000
    path = write_nmnist(tmp_path / "s.bin", events)
    assert path.stat().st_size == 5 * len(events)
    np.testing.assert_array_equal(read_nmnist(path), events)
    np.testing.assert_array_equal(synthetic_nmnist_events(7, seed=3), events)


def test_nmnist_digits_differ():
    # Each digit draws a different glyph: the accumulated event images should not be alike.
    images = [events_to_frames(synthetic_nmnist_events(d, seed=0), time_steps=1).sum(axis=(0, 1)) for d in (1, 8)]
    assert images[1].sum() > 1.5 * images[0].sum()


def test_load_nmnist_folder(tmp_path):
    for digit, name, seed in ((3, "00001.bin", 0), (3, "00002.bin", 1), (8, "00001.bin", 2)):
        (tmp_path / "Test" / str(digit)).mkdir(parents=True, exist_ok=True)
        write_nmnist(tmp_path / "Test" / str(digit) / name, synthetic_nmnist_events(digit, seed=seed))
    (tmp_path / "Test" / "README").write_text("not a digit folder")
    events, labels = load_nmnist(tmp_path, "Test")
    assert labels.tolist() == [3, 3, 8] and labels.dtype == np.int64
    np.testing.assert_array_equal(events[0], synthetic_nmnist_events(3, seed=0))
    _, labels = load_nmnist(tmp_path, "Test", limit=2)
    assert labels.tolist() == [3, 8]  # balanced: the first file of each digit


def test_nmnist_bad_input(tmp_path):
    bad = tmp_path / "cut.bin"
    bad.write_bytes(bytes(12))
    with pytest.raises(DataError, match="12 bytes, not a multiple of the 5-byte"):
        read_nmnist(bad)
    with pytest.raises(DataError, match="no such file"):
        read_nmnist(tmp_path / "absent.bin")
    with pytest.raises(DataError, match="N-MNIST folder does not exist"):
        load_nmnist(tmp_path / "nowhere")
    (tmp_path / "Train").mkdir()
    with pytest.raises(DataError, match="no 'train' folder in it; did you mean 'Train'"):
        load_nmnist(tmp_path, "train")
    with pytest.raises(DataError, match=r"no \.bin files"):
        load_nmnist(tmp_path, "Train")
    with pytest.raises(DataError, match="field 't' must lie in 0..8388607"):
        write_nmnist(tmp_path / "big.bin", make_events([(0, 0, 1, 1 << 23)]))
    with pytest.raises(DataError, match="folder does not exist"):
        write_nmnist(tmp_path / "no" / "x.bin", make_events([(0, 0, 1, 0)]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Train", "cut.bin"]  # no temporary files left


# ---------------------------------------------------------------- SHD


def test_shd_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for n in (50, 0, 300):
        times = np.sort(rng.uniform(0, 1.2, n))
        samples.append((times, rng.integers(0, 700, n)))
    path = write_shd(tmp_path / "shd_test.h5", samples, [4, 0, 19])
    with h5py.File(path) as handle:  # the same layout and types as the release
        assert h5py.check_vlen_dtype(handle["spikes/times"].dtype) == np.float16
        assert h5py.check_vlen_dtype(handle["spikes/units"].dtype) == np.uint16
        assert handle["labels"].dtype == np.uint16
    back, labels = read_shd(path)
    assert labels.tolist() == [4, 0, 19] and labels.dtype == np.int64
    for (t, u), (t0, u0) in zip(back, samples):
        assert t.dtype == np.float32  # widened from float16
        np.testing.assert_array_equal(t, t0.astype(np.float16))
        np.testing.assert_array_equal(u, u0)
    back, labels = read_shd(path, limit=2)
    assert len(back) == 2 and labels.tolist() == [4, 0]
    exact = write_shd(tmp_path / "f64.h5", samples, [4, 0, 19], time_dtype=np.float64)
    np.testing.assert_array_equal(read_shd(exact)[0][2][0], samples[2][0])


def test_shd_bad_input(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("labels", data=np.zeros(3, np.uint16))
    with pytest.raises(DataError, match="no 'spikes/times' dataset, so it is not an SHD/SSC file"):
        read_shd(path)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(DataError, match="not an HDF5 file"):
        read_shd(text)
    with pytest.raises(DataError, match="2 samples but 1 labels"):
        write_shd(tmp_path / "x.h5", [(np.zeros(1), np.zeros(1))] * 2, [0])


# ---------------------------------------------------------------- binning


def test_events_to_frames_counts_and_late_events():
    events = make_events(
        [(0, 0, 0, 0), (1, 2, 1, 499), (1, 2, 1, 450), (33, 33, 0, 500), (3, 4, 1, 999), (5, 5, 1, 1000)]
    )
    frames = events_to_frames(events, time_steps=2, duration_us=1000)
    assert frames.shape == (2, 2, 34, 34) and frames.dtype == np.float32
    assert frames.sum() == 5  # the event at t = 1000 is dropped
    assert frames[0, 1, 2, 1] == 2 and frames[0, 0, 0, 0] == 1  # indexed [t, p, y, x]
    assert frames[1, 0, 33, 33] == 1 and frames[1, 1, 4, 3] == 1
    assert events_to_frames(events, time_steps=2, duration_us=1000, binary=True)[0, 1, 2, 1] == 1
    full = events_to_frames(events, time_steps=4)  # default duration keeps every event
    assert full.sum() == len(events) and full[-1, 1, 5, 5] == 1
    merged = events_to_frames(events, sensor=(1, 34, 34), time_steps=1)
    assert merged.shape == (1, 1, 34, 34) and merged.sum() == len(events)


def test_events_to_frames_real_sample():
    events = synthetic_nmnist_events(4, seed=1)
    frames = events_to_frames(events, time_steps=3, duration_us=300_000)
    assert frames.sum() == len(events)
    in_first = np.count_nonzero(events["t"] < 100_000)
    assert frames[0].sum() == in_first


def test_shd_to_frames_counts_drop_and_downsample():
    times = np.array([0.0, 0.0999, 0.1, 0.55, 0.999, 1.0, 1.3, -0.1])
    units = np.array([0, 4, 5, 699, 3, 1, 2, 0])
    frames = shd_to_frames(times, units, time_steps=10)
    assert frames.shape == (10, 700) and frames.dtype == np.float32
    assert frames.sum() == 5  # 1.0, 1.3 and -0.1 lie outside [0, 1) s
    assert frames[0, 0] == 1 and frames[0, 4] == 1 and frames[1, 5] == 1 and frames[5, 699] == 1 and frames[9, 3] == 1
    small = shd_to_frames(times, units, time_steps=10, downsample=5)
    assert small.shape == (10, 140)
    assert small[0, 0] == 2 and small[1, 1] == 1 and small[5, 139] == 1
    np.testing.assert_array_equal(small, frames.reshape(10, 140, 5).sum(-1))
    rng = np.random.default_rng(1)
    t, u = rng.uniform(0, 2, 5000), rng.integers(0, 700, 5000)
    assert shd_to_frames(t, u, time_steps=7, duration_s=1.5).sum() == np.count_nonzero(t < 1.5)


def test_binning_bad_input():
    events = make_events([(0, 0, 0, 10)])
    with pytest.raises(DataError, match="time_steps must be a whole number of at least 1, got 0"):
        events_to_frames(events, time_steps=0)
    with pytest.raises(DataError, match="time_steps must be a whole number of at least 1, got 0"):
        shd_to_frames(np.zeros(1), np.zeros(1), time_steps=0)
    with pytest.raises(DataError, match="field 'x' spans 40..40, outside the sensor's 0..33"):
        events_to_frames(make_events([(40, 0, 0, 10)]), time_steps=1)
    with pytest.raises(DataError, match="lack"):
        events_to_frames(np.zeros(3), time_steps=1)
    with pytest.raises(DataError, match="positive divisor of channels"):
        shd_to_frames(np.zeros(1), np.zeros(1), time_steps=1, downsample=3)
    with pytest.raises(DataError, match="units span 0..700"):
        shd_to_frames(np.zeros(2), np.array([0, 700]), time_steps=1)


# ---------------------------------------------------------------- synthetic spikes


def test_synthetic_events_seeded_and_separable():
    x, y = synthetic_events(300, 10, seed=0)
    assert x.shape == (300, 100, 140) and x.dtype == np.float32 and y.dtype == np.int64
    assert set(np.unique(x)) == {0.0, 1.0} and np.bincount(y).tolist() == [30] * 10
    again, y_again = synthetic_events(300, 10, seed=0)
    np.testing.assert_array_equal(x, again)
    np.testing.assert_array_equal(y, y_again)
    x_test, y_test = synthetic_events(300, 10, seed=1)
    assert not np.array_equal(x, x_test)
    # Same task across seeds: means from seed 0 classify seed 1 far above the 10 % chance level.
    accuracy = nearest_mean_accuracy(x.sum(1), y, x_test.sum(1), y_test)
    assert 0.5 < accuracy < 0.97
    # The total number of spikes alone carries nothing about the class.
    assert nearest_mean_accuracy(x.sum((1, 2))[:, None], y, x_test.sum((1, 2))[:, None], y_test) < 0.3


def test_synthetic_bad_input():
    with pytest.raises(DataError, match="time_steps must be"):
        synthetic_events(10, 2, time_steps=0)
    with pytest.raises(DataError, match="at least 1"):
        synthetic_events(0, 2)
    with pytest.raises(DataError, match="label must be a digit"):
        synthetic_nmnist_events(10)

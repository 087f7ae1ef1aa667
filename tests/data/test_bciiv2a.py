"""BCI Competition IV 2a readers on files in the exact formats: BNCI .mat (v5, v7.3) and GDF with events."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
import scipy.io

from edge.data.bciiv2a import (
    CLASSES,
    EEG_CHANNELS,
    EOG_CHANNELS,
    read_bciiv2a_gdf,
    read_bciiv2a_mat,
    write_bciiv2a_mat,
)
from edge.data.benchmark import load_mat, write_mat73
from edge.errors import DataError

FS = 250
TRIAL = 1875  # samples between trial starts (7.5 s)
LEAD = 250  # samples before the first trial of a run


def labels_of(run: int, n_trials: int) -> np.ndarray:
    """A fixed, mixed sequence of classes 1..4 for a run."""
    return (np.arange(n_trials) * 7 + run) % 4 + 1


def mi_run(run: int, n_trials: int = 48, dtype=np.float64) -> dict:
    """A run in the BNCI layout: zeros with markers at the cue (t = 2 s) and at t = 6 s - 1 sample."""
    trial = LEAD + TRIAL * np.arange(n_trials) + 1  # 1-based, as MATLAB stores them
    x = np.zeros((LEAD + TRIAL * n_trials + 500, 25), dtype)
    y = labels_of(run, n_trials)
    x[trial - 1 + 2 * FS, 0] = 1000 * run + np.arange(n_trials) + 1  # Fz at the cue: run and trial
    x[trial - 1 + 6 * FS - 1, 21] = y  # POz at the last sample of the 2-6 s window: the label
    x[:, 22:] = 7.0  # EOG
    artifacts = np.zeros(n_trials)
    artifacts[[i for i in (1, 5) if i < n_trials]] = 1
    return {"X": x, "trial": trial, "y": y, "artifacts": artifacts, "gender": "f", "age": 24.0}


def eog_run(samples: int = 3000) -> dict:
    """An EOG calibration run: signal but no trials."""
    return {"X": np.full((samples, 25), 3.0)}


def expect_data_error(path, reader, what: str, **kwargs) -> None:
    with pytest.raises(DataError) as info:
        reader(path, **kwargs)
    message = str(info.value)
    assert str(path) in message, message
    assert re.search(what, message), message


# --- BNCI .mat -------------------------------------------------------------------------------


def test_full_training_file(tmp_path):
    # The real layout: 3 EOG runs, then 6 runs x 48 trials, X double (samples x 25).
    runs = [eog_run(), eog_run(), eog_run()] + [mi_run(r) for r in range(6)]
    path = write_bciiv2a_mat(tmp_path / "A01T.mat", runs)
    assert [p.name for p in tmp_path.iterdir()] == ["A01T.mat"]
    raw = scipy.io.loadmat(path)["data"]  # what EEG-TCNet / MOABB index
    assert raw.shape == (1, 9) and raw[0, 3]["X"][0, 0].shape == (LEAD + TRIAL * 48 + 500, 25)
    assert raw[0, 3]["trial"][0, 0].shape == (48, 1) and raw[0, 0]["trial"][0, 0].size == 0
    assert raw[0, 3]["fs"][0, 0][0, 0] == 250

    epochs = read_bciiv2a_mat(path)
    assert epochs.x.shape == (288, 22, 1000) and epochs.x.dtype == np.float32
    assert epochs.channels == list(EEG_CHANNELS) and epochs.classes == list(CLASSES)
    assert epochs.sample_rate == 250.0 and epochs.onset_sample == 0
    assert set(epochs.subject) == {1} and set(epochs.session) == {"T"}
    np.testing.assert_array_equal(epochs.block, np.repeat(np.arange(6), 48))
    trial_in_run = np.tile(np.arange(48), 6)
    np.testing.assert_array_equal(epochs.x[:, 0, 0], 1000 * epochs.block + trial_in_run + 1)
    np.testing.assert_array_equal(epochs.y, np.concatenate([labels_of(r, 48) for r in range(6)]) - 1)
    np.testing.assert_array_equal(epochs.x[:, 21, -1], epochs.y + 1)
    assert np.count_nonzero(epochs.x) == 2 * 288

    clean = read_bciiv2a_mat(path, drop_artifacts=True)
    assert len(clean) == 288 - 12  # trials 2 and 6 of each run are marked as artifacts
    np.testing.assert_array_equal(clean.x[:, 0, 0] % 1000 - 1, np.tile(np.delete(np.arange(48), [1, 5]), 6))


def test_window_eog_and_session_from_name(tmp_path):
    path = write_bciiv2a_mat(tmp_path / "A03E.mat", [eog_run(), mi_run(0, n_trials=4), mi_run(1, n_trials=4)])
    epochs = read_bciiv2a_mat(path, tmin=1.5, tmax=6.0, eog=True)
    assert epochs.x.shape == (8, 25, 1125) and epochs.onset_sample == 125  # EEG-TCNet's window
    assert epochs.channels == list(EEG_CHANNELS) + list(EOG_CHANNELS)
    assert set(epochs.subject) == {3} and set(epochs.session) == {"E"}
    np.testing.assert_array_equal(epochs.x[:, 0, 125], 1000 * epochs.block + np.tile(np.arange(4), 2) + 1)
    assert np.all(epochs.x[:, 22:] == 7.0)
    named = read_bciiv2a_mat(path, subject=5, session="T")
    assert set(named.subject) == {5} and set(named.session) == {"T"}


def test_v73_file_gives_the_same_epochs(tmp_path):
    runs = [eog_run(), mi_run(0, n_trials=6), mi_run(1, n_trials=6)]
    v5 = read_bciiv2a_mat(write_bciiv2a_mat(tmp_path / "A02T.mat", runs))
    cell = load_mat(tmp_path / "A02T.mat", "data")["data"]  # the same values, now stored as MATLAB v7.3
    (tmp_path / "v73").mkdir()
    v73 = read_bciiv2a_mat(write_mat73(tmp_path / "v73" / "A02T.mat", {"data": cell}))
    np.testing.assert_array_equal(v73.x, v5.x)
    np.testing.assert_array_equal(v73.y, v5.y)
    np.testing.assert_array_equal(v73.block, v5.block)


def test_single_precision_and_a_run_given_as_a_struct(tmp_path):
    path = tmp_path / "A04T.mat"
    run = mi_run(0, n_trials=3, dtype=np.float32)
    run["trial"], run["y"] = run["trial"][:, None].astype(float), run["y"][:, None].astype(float)
    scipy.io.savemat(path, {"data": run | {"fs": 250.0}})
    epochs = read_bciiv2a_mat(path)
    assert epochs.x.shape == (3, 22, 1000) and list(epochs.x[:, 0, 0]) == [1, 2, 3]


def bad_run_file(tmp_path, **changes) -> object:
    run = mi_run(0, n_trials=3)
    run.update(changes)
    path = tmp_path / "A01T.mat"
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0] = {"X": np.zeros((10, 25)), "trial": np.zeros((0, 0)), "y": np.zeros((0, 0))}
    cell[0, 1] = {k: (v[:, None] if isinstance(v, np.ndarray) and v.ndim == 1 else v) for k, v in run.items()}
    cell[0, 1].setdefault("fs", 250.0)
    scipy.io.savemat(path, {"data": cell})
    return path


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"X": np.zeros((25, 9000))}, r"run 2 of 2 has X of shape \[25, 9000\], expected \[samples, 25\] \(it looks"),
        ({"X": np.zeros((9000, 22))}, r"run 2 of 2 has X of shape \[9000, 22\], expected \[samples, 25\]"),
        ({"trial": np.array([1.0, 2.0, 99999.0])}, "trial starts outside its"),
        ({"trial": np.array([1.5, 2.0, 3.0])}, "'trial' values that are not whole numbers"),
        ({"y": np.array([1.0, 2.0, 5.0])}, r"labels \[1, 2, 5\], expected 1..4"),
        ({"y": np.array([1.0, 2.0])}, "3 trials but 2 values in 'y'"),
        ({"fs": np.array([[250.0, 250.0]])}, r"'fs' \[250.0, 250.0\], expected one positive number"),
        ({"X": "text"}, "'X' is not a real numeric array"),
    ],
)
def test_malformed_runs(tmp_path, changes, what):
    expect_data_error(bad_run_file(tmp_path, **changes), read_bciiv2a_mat, what)


def test_missing_field_and_variable(tmp_path):
    path = tmp_path / "A01T.mat"
    scipy.io.savemat(path, {"data": {"X": np.zeros((10, 25)), "trial": np.zeros((0, 0))}})
    expect_data_error(path, read_bciiv2a_mat, r"run 1 of 1 has no field 'y' \(found: X, trial\)")
    scipy.io.savemat(path, {"runs": np.zeros(3)})
    expect_data_error(path, read_bciiv2a_mat, r"no variable 'data' \(found: runs\)")
    scipy.io.savemat(path, {"data": np.zeros((9, 25))})
    expect_data_error(path, read_bciiv2a_mat, r"variable 'data' is a float64 array, expected a 1xN cell of run structs")


def test_no_trials_window_too_long_and_bad_name(tmp_path):
    path = write_bciiv2a_mat(tmp_path / "A01T.mat", [eog_run(), eog_run()])
    expect_data_error(path, read_bciiv2a_mat, "none of its 2 runs holds trials")
    path = write_bciiv2a_mat(tmp_path / "A01T.mat", [mi_run(0, n_trials=2)])
    expect_data_error(path, read_bciiv2a_mat, r"trial 2 of run 1 of 1 does not fit the window 2-10 s", tmax=10.0)
    expect_data_error(path, read_bciiv2a_mat, r"tmax \(2.0\) must be greater than tmin \(2.0\)", tmax=2.0)
    renamed = path.rename(tmp_path / "subject1.mat")
    expect_data_error(renamed, read_bciiv2a_mat, r"does not give the subject .*pass subject= and session=")


@pytest.mark.parametrize("v73", [False, True])
def test_truncated_and_not_a_mat(tmp_path, v73):
    path = tmp_path / "A01T.mat"
    runs = [eog_run(), mi_run(0, n_trials=4)]
    if v73:
        write_bciiv2a_mat(path, runs)
        write_mat73(path, {"data": load_mat(path, "data")["data"]})
    else:
        write_bciiv2a_mat(path, runs)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    expect_data_error(path, read_bciiv2a_mat, "not a readable .mat file.*truncated")
    path.write_text("this is a GDF file, honest\n" * 10)
    expect_data_error(path, read_bciiv2a_mat, "not a readable .mat file")


def test_writer_refuses_bad_runs(tmp_path):
    with pytest.raises(DataError, match=r"Cannot write '.*A01T.mat': run 1 has X of shape \[25, 100\]"):
        write_bciiv2a_mat(tmp_path / "A01T.mat", [{"X": np.zeros((25, 100))}])
    with pytest.raises(DataError, match=r"run 1 has 2 trials, 1 labels"):
        write_bciiv2a_mat(tmp_path / "A01T.mat", [{"X": np.zeros((100, 25)), "trial": [1, 2], "y": [1]}])
    assert list(tmp_path.iterdir()) == []


# --- GDF -------------------------------------------------------------------------------------


def write_gdf(path, signal: np.ndarray, events: list[tuple[int, int]]) -> None:
    """A GDF 1.25 file as BioSig writes it: float32 records of 1 s, 'uV' units, event table mode 1."""
    n_channels, n = signal.shape
    records = -(-n // FS)
    data = np.zeros((n_channels, records * FS), np.float32)
    data[:, :n] = signal
    names = [f"EEG-{c}" for c in EEG_CHANNELS] + list(EOG_CHANNELS)
    header = b"GDF 1.25" + b"X X".ljust(80) + b"".ljust(80) + b"2005010112000000"
    header += struct.pack("<q", 256 * (n_channels + 1)) + bytes(24) + bytes(20)
    header += struct.pack("<q", records) + struct.pack("<II", 1, 1) + struct.pack("<I", n_channels)
    header += b"".join(name.encode().ljust(16) for name in names)
    header += b" " * 80 * n_channels + b"uV".ljust(8) * n_channels
    header += struct.pack(f"<{n_channels}d", *[-1e5] * n_channels) + struct.pack(f"<{n_channels}d", *[1e5] * n_channels)
    header += struct.pack(f"<{n_channels}q", *[-100000] * n_channels)
    header += struct.pack(f"<{n_channels}q", *[100000] * n_channels)
    header += b" " * 80 * n_channels + struct.pack(f"<{n_channels}i", *[FS] * n_channels)
    header += struct.pack(f"<{n_channels}i", *[16] * n_channels) + bytes(32 * n_channels)  # 16 = float32
    assert len(header) == 256 * (n_channels + 1)
    body = data.reshape(n_channels, records, FS).transpose(1, 0, 2).astype("<f4").tobytes()
    pos = np.array([s + 1 for s, _ in events], "<u4")  # 1-based
    typ = np.array([c for _, c in events], "<u2")
    table = bytes([1]) + FS.to_bytes(3, "little") + struct.pack("<I", len(events)) + pos.tobytes() + typ.tobytes()
    path.write_bytes(header + body + table)


def gdf_session(evaluation: bool, runs: int = 2, n_trials: int = 4) -> tuple[np.ndarray, list, np.ndarray]:
    """Signal (25, samples), events and true labels (1..4) of a short session in the competition's coding."""
    run_samples = LEAD + TRIAL * n_trials
    signal = np.zeros((25, runs * run_samples + 500), np.float32)
    signal[22:] = 7.0
    events, labels = [], []
    for run in range(runs):
        start_run = run * run_samples
        events.append((start_run, 32766))
        y = labels_of(run, n_trials)
        for i in range(n_trials):
            start = start_run + LEAD + TRIAL * i
            events.append((start, 768))
            if i == 1:
                events.append((start, 1023))
            events.append((start + 2 * FS, 783 if evaluation else 768 + int(y[i])))
            signal[0, start + 2 * FS] = 1000 * run + i + 1
            signal[21, start + 6 * FS - 1] = y[i]
        labels.extend(y)
    return signal, events, np.array(labels)


def test_gdf_training_file(tmp_path):
    signal, events, labels = gdf_session(evaluation=False)
    path = tmp_path / "A01T.gdf"
    write_gdf(path, signal, events)
    epochs = read_bciiv2a_gdf(path)
    assert epochs.x.shape == (8, 22, 1000) and epochs.x.dtype == np.float32
    assert epochs.channels == list(EEG_CHANNELS) and epochs.classes == list(CLASSES)
    assert set(epochs.subject) == {1} and set(epochs.session) == {"T"} and epochs.onset_sample == 0
    np.testing.assert_array_equal(epochs.y, labels - 1)
    np.testing.assert_array_equal(epochs.block, np.repeat([0, 1], 4))
    np.testing.assert_allclose(epochs.x[:, 0, 0], 1000 * epochs.block + np.tile(np.arange(4), 2) + 1)
    np.testing.assert_allclose(epochs.x[:, 21, -1], labels)
    clean = read_bciiv2a_gdf(path, drop_artifacts=True, eog=True, tmin=1.5)
    assert clean.x.shape == (6, 25, 1125) and clean.onset_sample == 125
    np.testing.assert_allclose(clean.x[:, 22:], 7.0)
    np.testing.assert_allclose(clean.x[:, 0, 125] % 1000, [1, 3, 4] * 2)


def test_gdf_evaluation_file_needs_true_labels(tmp_path):
    signal, events, labels = gdf_session(evaluation=True)
    path = tmp_path / "A02E.gdf"
    write_gdf(path, signal, events)
    expect_data_error(path, read_bciiv2a_gdf, r"8 of 8 trials have cue 783 .*pass labels= the true-label file")
    truth = tmp_path / "A02E.mat"
    scipy.io.savemat(truth, {"classlabel": labels[:, None].astype(np.uint8)})
    epochs = read_bciiv2a_gdf(path, labels=truth)
    assert set(epochs.session) == {"E"} and set(epochs.subject) == {2}
    np.testing.assert_array_equal(epochs.y, labels - 1)
    np.testing.assert_allclose(epochs.x[:, 21, -1], labels)

    scipy.io.savemat(truth, {"classlabel": labels[:5, None]})
    with pytest.raises(DataError, match=rf"'{re.escape(str(truth))}'.*'classlabel' has 5 labels but the recording has"):
        read_bciiv2a_gdf(path, labels=truth)
    scipy.io.savemat(truth, {"labels": labels[:, None]})
    with pytest.raises(DataError, match=r"no variable 'classlabel' \(found: labels\)"):
        read_bciiv2a_gdf(path, labels=truth)


def test_gdf_labels_must_agree_with_training_cues(tmp_path):
    signal, events, labels = gdf_session(evaluation=False)
    path = tmp_path / "A01T.gdf"
    write_gdf(path, signal, events)
    truth = tmp_path / "A01T_labels.mat"
    scipy.io.savemat(truth, {"classlabel": labels[:, None]})
    np.testing.assert_array_equal(read_bciiv2a_gdf(path, labels=truth).y, labels - 1)
    scipy.io.savemat(truth, {"classlabel": (labels % 4 + 1)[:, None]})
    expect_data_error(path, read_bciiv2a_gdf, r"gives trial 1 class \d but the recording's cue says \d", labels=truth)


def test_gdf_malformed(tmp_path):
    signal, events, _ = gdf_session(evaluation=False)
    path = tmp_path / "A01T.gdf"
    write_gdf(path, signal, [e for e in events if e[1] != 768])
    expect_data_error(path, read_bciiv2a_gdf, r"no trial-start events \(768\)")
    write_gdf(path, signal, [e for e in events if e[1] in (768, 32766)])
    expect_data_error(path, read_bciiv2a_gdf, r"trial 1 \(start at sample 250\) has no cue event")
    write_gdf(path, signal, events)
    expect_data_error(path, read_bciiv2a_gdf, "trial 8 of the recording does not fit the window 2-10 s", tmax=10.0)
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    expect_data_error(path, read_bciiv2a_gdf, "MNE could not read it")

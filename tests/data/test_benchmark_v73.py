"""Benchmark files as MATLAB v7.3 (HDF5), the generic .mat loader, and read_benchmark_epochs."""

from __future__ import annotations

import re
import sys

import h5py
import numpy as np
import pytest
import scipy.io

from edge.data.benchmark import (
    BENCHMARK_CHANNELS,
    BENCHMARK_CLASSES,
    BENCHMARK_FREQS,
    BENCHMARK_PHASES,
    ONSET_SAMPLE,
    TRIAL_SAMPLES,
    load_mat,
    read_benchmark_epochs,
    read_benchmark_subject,
    read_freq_phase,
    write_benchmark_subject,
    write_mat73,
)
from edge.data.epochs import EEGEpochs
from edge.errors import DataError

MATLAB_HEADER = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  6 10:00:00 2025 "
                 b"HDF5 schema 1.00 .").ljust(116) + b"\x00" * 8 + b"\x00\x02IM"


def marked_subject(blocks: int, dtype=np.float32) -> np.ndarray:
    """Zeros [64, 1500, 40, blocks] with markers that say which (target, block) each trial is."""
    data = np.zeros((64, TRIAL_SAMPLES, 40, blocks), dtype)
    code = 100 * np.arange(blocks)[None, :] + np.arange(40)[:, None] + 1  # (target, block)
    data[0, 0] = code
    data[63, TRIAL_SAMPLES - 1] = -code
    data[47, ONSET_SAMPLE] = BENCHMARK_FREQS[:, None]  # Pz at stimulus onset
    return data


def check_markers(epochs: EEGEpochs, blocks: int) -> None:
    assert epochs.x.shape == (40 * blocks, 64, TRIAL_SAMPLES) and epochs.x.dtype == np.float32
    code = 100 * epochs.block + epochs.y + 1
    np.testing.assert_array_equal(epochs.x[:, 0, 0], code)
    np.testing.assert_array_equal(epochs.x[:, 63, -1], -code)
    np.testing.assert_allclose(epochs.x[:, 47, ONSET_SAMPLE], BENCHMARK_FREQS[epochs.y], rtol=1e-6)
    assert np.count_nonzero(epochs.x) == 3 * len(epochs)


def write_by_hand(path, variables: dict, userblock: bool = True) -> None:
    """What MATLAB's save -v7.3 writes for plain numeric arrays: reversed dims, MATLAB_class, header."""
    with h5py.File(path, "w", userblock_size=512 if userblock else 0) as handle:
        for name, array in variables.items():
            dataset = handle.create_dataset(name, data=np.asarray(array).T)
            dataset.attrs["MATLAB_class"] = np.bytes_({"float64": "double", "float32": "single"}[array.dtype.name])
    if userblock:
        with open(path, "r+b") as raw:
            raw.write(MATLAB_HEADER)


def expect_data_error(path, reader, what: str) -> None:
    with pytest.raises(DataError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message, message
    assert re.search(what, message), message


@pytest.mark.parametrize("userblock", [True, False])
def test_v73_subject_written_like_matlab_reads_back(tmp_path, userblock):
    data = marked_subject(blocks=2)
    path = tmp_path / "S2.mat"
    write_by_hand(path, {"data": data}, userblock)
    with h5py.File(path) as handle:
        assert handle["data"].shape == (2, 40, 1500, 64)  # what h5py sees: MATLAB's dims reversed
    back = read_benchmark_subject(path)
    assert back.shape == (64, 1500, 40, 2) and back.dtype == np.float32
    np.testing.assert_array_equal(back, data)


def test_write_mat73_matches_matlab_layout(tmp_path):
    data = marked_subject(blocks=1)[..., :3, :]  # any array will do for the layout
    path = write_mat73(tmp_path / "x.mat", {"data": data, "name": "S1", "info": {"srate": 250.0}})
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with pytest.raises(NotImplementedError):  # scipy recognises a v7.3 file by its header
        scipy.io.loadmat(path)
    with h5py.File(path) as handle:
        assert handle["data"].shape == (3, 1500, 64)  # MATLAB drops the trailing 1 of [64 1500 3 1]
        assert handle["data"].attrs["MATLAB_class"] == b"single"
        assert handle["name"].attrs["MATLAB_class"] == b"char" and handle["name"].shape == (2, 1)
        assert handle["info"].attrs["MATLAB_class"] == b"struct"
        assert handle["info/srate"].shape == (1, 1)
    back = load_mat(path)
    np.testing.assert_array_equal(back["data"], data[..., 0])
    assert back["name"] == "S1" and back["info"]["srate"].item() == 250.0
    assert [p.name for p in tmp_path.iterdir()] == ["x.mat"]  # no temp file left behind


def test_load_mat_gives_the_same_values_for_v5_and_v73(tmp_path):
    cell = np.empty((2, 2), dtype=object)
    cell[:] = [[np.ones((1, 1)), "a"], [np.zeros((0, 0)), {"k": np.arange(3.0)}]]
    values = {"a": np.arange(24.0).reshape(2, 3, 4), "s": "hello", "c": cell, "st": {"v": np.ones((3, 1))}}
    scipy.io.savemat(tmp_path / "v5.mat", values)
    write_mat73(tmp_path / "v73.mat", values)
    for path in (tmp_path / "v5.mat", tmp_path / "v73.mat"):
        got = load_mat(path)
        assert sorted(got) == ["a", "c", "s", "st"]
        np.testing.assert_array_equal(got["a"], values["a"])
        assert got["s"] == "hello" and got["st"]["v"].shape == (3, 1)
        assert got["c"].shape == (2, 2) and got["c"][0, 1] == "a" and got["c"][1, 0].shape == (0, 0)
        np.testing.assert_array_equal(got["c"][1, 1]["k"], [[0.0, 1.0, 2.0]])


def test_v73_single_block_file_is_read_as_4d(tmp_path):
    path = tmp_path / "S1.mat"
    write_by_hand(path, {"data": marked_subject(blocks=1)[..., 0]})
    assert read_benchmark_subject(path).shape == (64, 1500, 40, 1)


@pytest.mark.parametrize("pi_units", [False, True])
def test_v73_freq_phase(tmp_path, pi_units):
    path = tmp_path / "Freq_Phase.mat"
    phases = BENCHMARK_PHASES / np.pi if pi_units else BENCHMARK_PHASES
    write_by_hand(path, {"freqs": BENCHMARK_FREQS[None, :], "phases": phases[None, :]})
    with h5py.File(path) as handle:
        assert handle["freqs"].shape == (40, 1)
    freqs, back = read_freq_phase(path)
    np.testing.assert_allclose(freqs, BENCHMARK_FREQS)
    np.testing.assert_allclose(back, BENCHMARK_PHASES)


def test_epochs_of_a_full_size_subject_file(tmp_path):
    # The real shape and type once: [64, 1500, 40, 6] float64, 176 MiB.
    path = write_benchmark_subject(tmp_path / "S12.mat", marked_subject(blocks=6, dtype=np.float64))
    epochs = read_benchmark_epochs(path)
    check_markers(epochs, blocks=6)
    np.testing.assert_array_equal(epochs.y, np.tile(np.arange(40), 6))
    np.testing.assert_array_equal(epochs.block, np.repeat(np.arange(6), 40))
    assert set(epochs.subject) == {12} and set(epochs.session) == {"1"}
    assert epochs.sample_rate == 250.0 and epochs.onset_sample == 125
    assert epochs.channels == list(BENCHMARK_CHANNELS)
    assert epochs.classes[:2] == ["8.0 Hz", "9.0 Hz"] and epochs.classes[8] == "8.2 Hz"
    assert epochs.classes == list(BENCHMARK_CLASSES) and len(set(epochs.classes)) == 40
    np.testing.assert_allclose(epochs.stim_freqs, BENCHMARK_FREQS)


def test_epochs_of_a_v73_file_and_subject_override(tmp_path):
    path = tmp_path / "subject_three.mat"
    write_by_hand(path, {"data": marked_subject(blocks=2)})
    expect_data_error(path, read_benchmark_epochs, r"does not give the subject \(expected S\{n\}\.mat.*pass subject=")
    epochs = read_benchmark_epochs(path, subject=3)
    check_markers(epochs, blocks=2)
    assert set(epochs.subject) == {3}


def test_v73_missing_variable(tmp_path):
    path = tmp_path / "S1.mat"
    write_by_hand(path, {"eeg": np.zeros((2, 2))})
    expect_data_error(path, read_benchmark_subject, r"no variable 'data' \(found: eeg\)")
    expect_data_error(path, read_freq_phase, r"no variable 'freqs' \(found: eeg\)")


@pytest.mark.parametrize("shape", [(63, 1500, 40, 2), (64, 1500, 12, 2), (40, 1500, 64)])
def test_v73_wrong_shape(tmp_path, shape):
    path = tmp_path / "S1.mat"
    write_by_hand(path, {"data": np.zeros(shape, np.float32)})
    expect_data_error(path, read_benchmark_subject, r"has shape \[.*\], expected \[64, 1500, 40, blocks>=1\]")


def test_v73_text_where_numbers_belong(tmp_path):
    path = tmp_path / "S1.mat"
    write_mat73(path, {"data": "hello"})
    expect_data_error(path, read_benchmark_subject, "'data' is not a real numeric array")


@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_v73_truncated(tmp_path, keep):
    path = tmp_path / "S1.mat"
    write_by_hand(path, {"data": marked_subject(blocks=1)})
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    expect_data_error(path, read_benchmark_subject, "truncated")


def test_v73_header_without_hdf5_part(tmp_path):
    path = tmp_path / "S1.mat"
    path.write_bytes(MATLAB_HEADER + b"\x00" * 100)
    expect_data_error(path, read_benchmark_subject, r"v7\.3 header but no HDF5 data.*truncated")


@pytest.mark.parametrize("content", [b"S1,PZ,OZ\n1,2,3\n" * 20, b"\x00" * 300])
def test_not_a_mat_file(tmp_path, content):
    path = tmp_path / "S1.mat"
    path.write_bytes(content)
    expect_data_error(path, read_benchmark_epochs, "not a readable .mat file")


def test_v73_without_h5py_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "S1.mat"
    write_by_hand(path, {"data": marked_subject(blocks=1)})
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now fails
    needs = r"is a MATLAB v7\.3 \(HDF5\) file; reading it needs h5py: pip install h5py\."
    expect_data_error(path, read_benchmark_subject, needs)
    with pytest.raises(DataError, match=r"Cannot write '.*x.mat': writing a MATLAB v7\.3 file needs h5py: pip install"):
        write_mat73(tmp_path / "x.mat", {"a": np.zeros(2)})

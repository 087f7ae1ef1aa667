"""The BETA reader and writer on files in the exact format (v5 and v7.3), and on damaged ones."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
import scipy.io

from edge.data.benchmark import BENCHMARK_CHANNELS, write_mat73
from edge.data.beta import (
    BETA_CHANNELS,
    BETA_CLASSES,
    BETA_FREQS,
    BETA_PHASES,
    LATENCY_S,
    ONSET_SAMPLE,
    read_beta_subject,
    write_beta_subject,
)
from edge.data.epochs import EEGEpochs
from edge.errors import DataError


def marked_eeg(samples: int, blocks: int = 4, dtype=np.float32) -> np.ndarray:
    """Zeros [64, samples, blocks, 40] with markers that say which (block, target) each trial is."""
    eeg = np.zeros((64, samples, blocks, 40), dtype)
    code = 100 * np.arange(blocks)[:, None] + np.arange(40)[None, :] + 1  # (block, target)
    eeg[0, 0] = code
    eeg[63, samples - 1] = -code
    eeg[61, ONSET_SAMPLE] = BETA_FREQS[None, :]  # Oz at stimulus onset
    return eeg


def check_epochs(epochs: EEGEpochs, samples: int, blocks: int = 4) -> None:
    assert epochs.x.shape == (40 * blocks, 64, samples) and epochs.x.dtype == np.float32
    np.testing.assert_array_equal(epochs.y, np.tile(np.arange(40), blocks))
    np.testing.assert_array_equal(epochs.block, np.repeat(np.arange(blocks), 40))
    code = 100 * epochs.block + epochs.y + 1
    np.testing.assert_array_equal(epochs.x[:, 0, 0], code)
    np.testing.assert_array_equal(epochs.x[:, 63, -1], -code)
    np.testing.assert_allclose(epochs.x[:, 61, ONSET_SAMPLE], BETA_FREQS[epochs.y], rtol=1e-6)
    assert np.count_nonzero(epochs.x) == 3 * len(epochs)
    assert epochs.sample_rate == 250.0 and epochs.onset_sample == 125
    assert epochs.channels == list(BENCHMARK_CHANNELS)
    assert epochs.classes == list(BETA_CLASSES)
    np.testing.assert_allclose(epochs.stim_freqs, BETA_FREQS)


def suppl_info(subject: int = 1) -> dict:
    chan = np.empty((64, 4), dtype=object)
    for i, name in enumerate(BETA_CHANNELS):
        chan[i] = [float(i + 1), 10.0 * i, 0.5, name]
    return {
        "sub": f"S{subject}", "age": 23.0, "gender": "male", "chan": chan,
        "freqs": BETA_FREQS[None, :].copy(), "phases": BETA_PHASES[None, :].copy(),
        "bci_quotient": 0.8, "wide_snr": -10.5, "narrow_snr": -5.2, "srate": 250.0,
    }  # fmt: skip


def expect_data_error(path, what: str) -> None:
    with pytest.raises(DataError) as info:
        read_beta_subject(path)
    message = str(info.value)
    assert str(path) in message, message
    assert re.search(what, message), message


def test_layout_facts():
    np.testing.assert_allclose(BETA_FREQS[:3], [8.6, 8.8, 9.0])
    np.testing.assert_allclose(BETA_FREQS[-4:], [15.8, 8.0, 8.2, 8.4])
    np.testing.assert_allclose(np.sort(BETA_FREQS), 8 + 0.2 * np.arange(40), atol=1e-9)
    np.testing.assert_allclose(BETA_PHASES[:4], [4.712, 0, 1.571, 3.142], atol=1e-3)  # aawedha's radians
    k = np.round((BETA_FREQS - 8) / 0.2)
    np.testing.assert_allclose(BETA_PHASES, (0.5 * np.pi * k) % (2 * np.pi))
    assert BETA_CHANNELS[47] == "PZ" and BETA_CHANNELS[61] == "OZ"
    assert BETA_CLASSES[0] == "8.6 Hz" and LATENCY_S == 0.13


@pytest.mark.parametrize(("name", "samples", "dtype"), [("S1.mat", 750, np.float64), ("S16.mat", 1000, np.float32)])
def test_round_trip_full_shape(tmp_path, name, samples, dtype):
    eeg = marked_eeg(samples, dtype=dtype)
    path = write_beta_subject(tmp_path / name, eeg)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left behind
    epochs = read_beta_subject(path)
    check_epochs(epochs, samples)
    assert set(epochs.subject) == {int(name[1:-4])} and set(epochs.session) == {"1"}
    # The file is what public loaders expect (bci.md §3.2 indexing).
    m = scipy.io.loadmat(path)["data"][0, 0]
    assert m["EEG"].shape == (64, samples, 4, 40) and m["EEG"].dtype == dtype
    si = m["suppl_info"][0, 0]
    assert set(si.dtype.names) == {"sub", "age", "gender", "chan", "freqs", "phases", "bci_quotient",
                                   "wide_snr", "narrow_snr", "srate"}
    np.testing.assert_allclose(si["freqs"].ravel()[:3], [8.6, 8.8, 9.0])
    names = [c[0] for c in si["chan"][:, 3]]
    assert names[47] == "PZ" and names[61] == "OZ"
    assert si["sub"][0] == name[:-4] and si["srate"][0, 0] == 250


def test_v73_file_written_like_matlab(tmp_path):
    eeg = marked_eeg(1000)
    path = write_mat73(tmp_path / "S20.mat", {"data": {"EEG": eeg, "suppl_info": suppl_info(20)}})
    with h5py.File(path) as handle:  # MATLAB's column-major layout as h5py sees it
        assert handle["data"].attrs["MATLAB_class"] == b"struct"
        assert handle["data/EEG"].shape == (40, 4, 1000, 64)
        assert handle["data/suppl_info/chan"].shape == (4, 64)
        assert handle["data/suppl_info/chan"].attrs["MATLAB_class"] == b"cell"
        assert handle["data/suppl_info/freqs"].shape == (40, 1)
    epochs = read_beta_subject(path)
    check_epochs(epochs, 1000)
    assert set(epochs.subject) == {20}


def test_subject_from_suppl_info_and_fewer_blocks(tmp_path):
    path = tmp_path / "beta_subject.mat"
    scipy.io.savemat(path, {"data": {"EEG": marked_eeg(750, blocks=1), "suppl_info": suppl_info(7)}})
    epochs = read_beta_subject(path)
    check_epochs(epochs, 750, blocks=1)
    assert set(epochs.subject) == {7}
    assert set(read_beta_subject(path, subject=9).subject) == {9}


def test_names_from_chan_are_cleaned_and_freqs_come_from_the_file(tmp_path):
    info = suppl_info()
    info["chan"][47, 3] = " Pz. "
    path = tmp_path / "S1.mat"
    scipy.io.savemat(path, {"data": {"EEG": marked_eeg(750, blocks=1), "suppl_info": info}})
    assert read_beta_subject(path).channels[47] == "PZ"


def test_without_suppl_info_uses_the_published_layout(tmp_path):
    path = tmp_path / "S3.mat"
    scipy.io.savemat(path, {"data": {"EEG": marked_eeg(750, blocks=1)}})
    epochs = read_beta_subject(path)
    check_epochs(epochs, 750, blocks=1)
    assert set(epochs.subject) == {3}


def test_no_subject_anywhere(tmp_path):
    path = tmp_path / "beta.mat"
    scipy.io.savemat(path, {"data": {"EEG": marked_eeg(750, blocks=1)}})
    expect_data_error(path, r"does not give the subject .*pass subject=")


def test_missing_variable_and_field(tmp_path):
    path = tmp_path / "S1.mat"
    scipy.io.savemat(path, {"EEG": np.zeros((2, 2))})
    expect_data_error(path, r"no variable 'data' \(found: EEG\)")
    scipy.io.savemat(path, {"data": {"eeg": np.zeros((2, 2)), "suppl_info": {"srate": 250.0}}})
    expect_data_error(path, r"struct 'data' has no field 'EEG' \(found: eeg, suppl_info\)")
    scipy.io.savemat(path, {"data": np.zeros((64, 750, 1, 40), np.float32)})
    expect_data_error(path, r"variable 'data' is a float32 array of shape \[64, 750, 1, 40\], expected a struct")


@pytest.mark.parametrize(
    ("shape", "what"),
    [
        ((64, 750, 40, 1), "axes look swapped"),
        ((64, 1500, 40, 1), "axes look swapped"),
        ((63, 750, 1, 40), r"has shape \[63, 750, 1, 40\], expected \[64, 750 or 1000, blocks, 40\]"),
        ((64, 10, 1, 40), r"has shape \[64, 10, 1, 40\]"),
        ((64, 750, 40), r"has shape \[64, 750, 40\]"),
    ],
)
def test_wrong_shape(tmp_path, shape, what):
    path = tmp_path / "S1.mat"
    scipy.io.savemat(path, {"data": {"EEG": np.zeros(shape, np.float32)}}, do_compression=True)
    expect_data_error(path, "field 'data.EEG' .*" + what)
    with pytest.raises(DataError, match=r"Cannot write '.*S1.mat': the array has shape"):
        write_beta_subject(path, np.zeros(shape, np.float32))


def test_bad_suppl_info_fields(tmp_path):
    path = tmp_path / "S1.mat"
    eeg = marked_eeg(750, blocks=1)
    info = suppl_info() | {"freqs": np.arange(12.0)[None]}
    scipy.io.savemat(path, {"data": {"EEG": eeg, "suppl_info": info}})
    expect_data_error(path, r"'data.suppl_info.freqs' has 12 values, expected 40")
    info = suppl_info() | {"chan": np.zeros((64, 3))}
    scipy.io.savemat(path, {"data": {"EEG": eeg, "suppl_info": info}})
    expect_data_error(path, r"'data.suppl_info.chan' is a float64 array of shape \[64, 3\], expected a 64x4 cell")
    info = suppl_info() | {"srate": np.zeros((1, 2))}
    scipy.io.savemat(path, {"data": {"EEG": eeg, "suppl_info": info}})
    expect_data_error(path, r"'data.suppl_info.srate' is \[0.0, 0.0\], expected one positive rate")


@pytest.mark.parametrize("v73", [False, True])
def test_truncated(tmp_path, v73):
    path = tmp_path / "S1.mat"
    variables = {"data": {"EEG": marked_eeg(750, blocks=1), "suppl_info": suppl_info()}}
    write_mat73(path, variables) if v73 else scipy.io.savemat(path, variables)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expect_data_error(path, "not a readable .mat file.*truncated")


def test_not_a_mat_file(tmp_path):
    path = tmp_path / "S1.mat"
    path.write_text("subject,age\nS1,23\n" * 20)
    expect_data_error(path, "not a readable .mat file")
    expect_data_error(tmp_path / "S2.mat", "no such file")

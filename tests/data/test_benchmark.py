from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.io

from edge.data.benchmark import (
    BENCHMARK_CHANNELS,
    BENCHMARK_FREQS,
    BENCHMARK_PHASES,
    OCCIPITAL_9,
    ONSET_SAMPLE,
    SAMPLE_RATE,
    TRIAL_SAMPLES,
    read_benchmark_subject,
    read_freq_phase,
    write_benchmark_subject,
    write_freq_phase,
)
from edge.errors import DataError


def small_subject(blocks: int = 1, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((64, TRIAL_SAMPLES, 40, blocks)).astype(dtype)


def test_layout_facts():
    assert len(BENCHMARK_CHANNELS) == 64 and len(set(BENCHMARK_CHANNELS)) == 64
    assert [BENCHMARK_CHANNELS.index(c) for c in OCCIPITAL_9] == [47, 53, 54, 55, 56, 57, 60, 61, 62]
    assert BENCHMARK_CHANNELS[32] == "M1" and BENCHMARK_CHANNELS[59] == "CB1"
    assert (SAMPLE_RATE, ONSET_SAMPLE, TRIAL_SAMPLES) == (250, 125, 1500)
    np.testing.assert_allclose(BENCHMARK_FREQS[:9], [8, 9, 10, 11, 12, 13, 14, 15, 8.2])
    np.testing.assert_allclose(BENCHMARK_FREQS[-1], 15.8)
    np.testing.assert_allclose(np.sort(BENCHMARK_FREQS), 8 + 0.2 * np.arange(40), atol=1e-9)
    np.testing.assert_allclose(BENCHMARK_PHASES[:5] / np.pi, [0, 0.5, 1, 1.5, 0])
    np.testing.assert_allclose(BENCHMARK_PHASES[8] / np.pi, 0.5)  # 8.2 Hz, k = 1
    k = np.round((BENCHMARK_FREQS - 8) / 0.2)
    np.testing.assert_allclose(BENCHMARK_PHASES, (0.5 * np.pi * k) % (2 * np.pi))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_subject_round_trip(tmp_path, dtype):
    data = small_subject(blocks=2, dtype=dtype)
    path = write_benchmark_subject(tmp_path / "S3.mat", data)
    assert path.name == "S3.mat"
    assert [p.name for p in tmp_path.iterdir()] == ["S3.mat"]  # no temp file left behind
    back = read_benchmark_subject(path)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, data)
    # The file is what real loaders expect: scipy.io.loadmat(f)['data'].
    assert scipy.io.loadmat(path)["data"].shape == (64, 1500, 40, 2)


def test_single_block_file_written_by_matlab_is_read_as_4d(tmp_path):
    path = tmp_path / "S1.mat"
    scipy.io.savemat(path, {"data": small_subject(blocks=1)[..., 0]})  # MATLAB drops trailing 1
    assert read_benchmark_subject(path).shape == (64, 1500, 40, 1)


def test_freq_phase_round_trip(tmp_path):
    freqs, phases = read_freq_phase(write_freq_phase(tmp_path / "Freq_Phase.mat"))
    np.testing.assert_allclose(freqs, BENCHMARK_FREQS)
    np.testing.assert_allclose(phases, BENCHMARK_PHASES)
    raw = scipy.io.loadmat(tmp_path / "Freq_Phase.mat")
    assert raw["freqs"].shape == (1, 40) and raw["phases"].shape == (1, 40)


def test_phases_in_pi_units_are_converted(tmp_path):
    path = tmp_path / "Freq_Phase.mat"
    scipy.io.savemat(path, {"freqs": BENCHMARK_FREQS[None], "phases": (BENCHMARK_PHASES / np.pi)[None]})
    _, phases = read_freq_phase(path)
    np.testing.assert_allclose(phases, BENCHMARK_PHASES)


def expect_data_error(path, reader, what: str) -> None:
    with pytest.raises(DataError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message, message
    assert re.search(what, message), message


def test_missing_file(tmp_path):
    expect_data_error(tmp_path / "S1.mat", read_benchmark_subject, "no such file")
    expect_data_error(tmp_path / "Freq_Phase.mat", read_freq_phase, "no such file")


def test_folder_instead_of_file(tmp_path):
    expect_data_error(tmp_path, read_benchmark_subject, "not a file")


def test_random_bytes_are_not_a_mat_file(tmp_path):
    path = tmp_path / "S1.mat"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    expect_data_error(path, read_benchmark_subject, "not a readable .mat file")


def test_truncated_file(tmp_path):
    path = tmp_path / "S1.mat"
    write_benchmark_subject(path, small_subject())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expect_data_error(path, read_benchmark_subject, "not a readable .mat file.*truncated")


def test_missing_data_variable(tmp_path):
    path = tmp_path / "S1.mat"
    scipy.io.savemat(path, {"eeg": np.zeros((2, 2))})
    expect_data_error(path, read_benchmark_subject, r"no variable 'data' \(found: eeg\)")


@pytest.mark.parametrize(
    "shape", [(64, 1500, 40, 1, 2), (63, 1500, 40, 1), (64, 1000, 40, 1), (64, 1500, 12, 1), (64, 1500)]
)
def test_wrong_shape(tmp_path, shape):
    path = tmp_path / "S1.mat"
    scipy.io.savemat(path, {"data": np.zeros(shape, np.float32)})
    expect_data_error(path, read_benchmark_subject, r"has shape \[.*\], expected \[64, 1500, 40, blocks>=1\]")


def test_non_numeric_data(tmp_path):
    path = tmp_path / "S1.mat"
    scipy.io.savemat(path, {"data": "hello"})
    expect_data_error(path, read_benchmark_subject, "not a real numeric array")


def test_freq_phase_wrong_count_and_missing(tmp_path):
    path = tmp_path / "Freq_Phase.mat"
    scipy.io.savemat(path, {"freqs": np.arange(12.0)[None], "phases": np.zeros((1, 12))})
    expect_data_error(path, read_freq_phase, "'freqs' has 12 values, expected 40")
    scipy.io.savemat(path, {"freqs": BENCHMARK_FREQS[None]})
    expect_data_error(path, read_freq_phase, "no variable 'phases'")


def test_writer_refuses_wrong_shape_and_keeps_existing_file(tmp_path):
    path = tmp_path / "S1.mat"
    write_benchmark_subject(path, small_subject())
    before = path.read_bytes()
    with pytest.raises(DataError, match=r"Cannot write '.*S1.mat'.*expected \[64, 1500, 40"):
        write_benchmark_subject(path, np.zeros((9, 1500, 40, 1)))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["S1.mat"]

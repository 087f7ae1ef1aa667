from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_conv_model
from edge.artifact import Artifact
from edge.data.registry import load_dataset, parse_spec, parse_subjects
from edge.data.synthetic_ssvep import write_synthetic_benchmark
from edge.errors import DataError
from edge.families.ssvep.export import ssvep_meta


@pytest.fixture(scope="module")
def meta():
    return ssvep_meta()


def test_spec_parsing() -> None:
    assert parse_spec("synthetic-ssvep:subjects=31-35,seed=2") == ("synthetic-ssvep", {"subjects": "31-35", "seed": "2"})
    assert parse_subjects("3") == [1, 2, 3]
    assert parse_subjects("31-33") == [31, 32, 33]
    assert parse_subjects("2+5-6") == [2, 5, 6]
    with pytest.raises(DataError, match="subjects='x'"):
        parse_subjects("x")
    with pytest.raises(DataError, match="key=value"):
        parse_spec("synthetic-ssvep:subjects")


def test_synthetic_ssvep_is_shaped_for_the_model(meta) -> None:
    data = load_dataset("synthetic-ssvep:subjects=4-4,blocks=2,seed=1", meta)
    assert data.x.shape == (80, 3, 9, 100) and data.x.dtype == np.float32
    assert list(data.y[:3]) == [0, 1, 2]
    assert sorted(set(data.groups)) == ["S4/B1", "S4/B2"]
    again = load_dataset("synthetic-ssvep:subjects=4-4,blocks=2,seed=1", meta)
    np.testing.assert_array_equal(data.x, again.x)


def test_window_follows_the_metadata() -> None:
    data = load_dataset("synthetic-ssvep:subjects=1-1,blocks=1", ssvep_meta(window_s=0.8))
    assert data.x.shape == (40, 3, 9, 200)


def test_plain_model_gets_preprocessing_from_its_input_shape() -> None:
    plain = Artifact.from_model(tiny_conv_model())
    plain.meta.inputs[0].shape = ["N", 2, 9, 50]
    data = load_dataset("synthetic-ssvep:subjects=1-1,blocks=1", plain.meta)
    assert data.x.shape == (40, 2, 9, 50)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("synthetic-ssvp", "unknown dataset 'synthetic-ssvp'.*Did you mean 'synthetic-ssvep'"),
        ("synthetic-ssvep:colour=red", "no parameter 'colour'"),
        ("synthetic-ssvep:seed=abc", "seed='abc' is not a int"),
        ("missing/folder", "no such file or folder"),
    ],
)
def test_bad_specs(meta, spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(spec, meta)


def test_npz_with_x_and_y(tmp_path: Path, meta) -> None:
    x = np.random.default_rng(0).normal(size=(6, 3, 9, 100)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(6))
    data = load_dataset(str(tmp_path / "d.npz"), meta)
    np.testing.assert_array_equal(data.x, x)
    assert list(data.y) == list(range(6))


def test_npz_shape_mismatch_names_both_shapes(tmp_path: Path, meta) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 8, 100), np.float32), y=np.zeros(4))
    with pytest.raises(DataError, match=r"\(3, 8, 100\) but the model input 'eeg' expects \(3, 9, 100\)"):
        load_dataset(str(tmp_path / "d.npz"), meta)


def test_nan_and_inf_are_refused(tmp_path: Path, meta) -> None:
    x = np.zeros((4, 3, 9, 100), np.float32)
    x[2, 0, 0, 5] = np.nan
    x[3, 1, 1, 1] = np.inf
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(4))
    with pytest.raises(DataError, match="2 NaN or Inf values in 2 trial.*first in trial 2"):
        load_dataset(str(tmp_path / "d.npz"), meta)


def test_npz_without_x(tmp_path: Path, meta) -> None:
    np.savez(tmp_path / "d.npz", data=np.zeros(3))
    with pytest.raises(DataError, match="no array 'x'.*found: data"):
        load_dataset(str(tmp_path / "d.npz"), meta)


def test_folder_of_npy_with_labels_csv(tmp_path: Path, meta) -> None:
    rng = np.random.default_rng(0)
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label"])
        for i in range(3):
            np.save(tmp_path / f"t{i}.npy", rng.normal(size=(3, 9, 100)).astype(np.float32))
            writer.writerow([f"t{i}.npy", 7 + i])
    data = load_dataset(str(tmp_path), meta)
    assert data.x.shape == (3, 3, 9, 100)
    assert list(data.y) == [7, 8, 9]


def test_folder_with_labels_naming_a_missing_trial(tmp_path: Path, meta) -> None:
    (tmp_path / "labels.csv").write_text("file,label\nnope.npy,1\n")
    with pytest.raises(DataError, match="names 'nope.npy'"):
        load_dataset(str(tmp_path), meta)


def test_benchmark_folder_matches_the_generator(tmp_path: Path, meta) -> None:
    write_synthetic_benchmark(tmp_path, [2], seed=0, blocks=2)
    from_files = load_dataset(f"{tmp_path}:subjects=2-2", meta)
    generated = load_dataset("synthetic-ssvep:subjects=2-2,blocks=2,seed=0", meta)
    np.testing.assert_allclose(from_files.x, generated.x, rtol=1e-5, atol=1e-4)
    assert list(from_files.groups[:1]) == ["S2/B1"]


MMI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "eegmmidb_s001"


@pytest.mark.skipif(not MMI.is_dir(), reason="../shared/data is not beside this checkout")
def test_recordings_are_cut_and_standardised_for_an_eeg_classifier() -> None:
    from edge import read_artifact, zoo_path

    meta = read_artifact(zoo_path("eegnet-mmi-s001")).meta
    data = load_dataset(f"{MMI}:runs=14", meta)
    assert data.x.shape == (15, 1, 21, 640)
    assert set(data.groups) == {"S001R14"}
    assert abs(float(data.x.mean())) < 0.5 and 0.3 < float(data.x.std()) < 3  # standardised per channel
    both = load_dataset(f"{MMI}:runs=6+10", meta)
    assert len(both) == 30 and set(both.groups) == {"S001R06", "S001R10"}
    with pytest.raises(DataError, match="no recording of run 3"):
        load_dataset(f"{MMI}:runs=3", meta)
    with pytest.raises(DataError, match="event code of each of the model's 2 classes"):
        load_dataset(f"{MMI}:runs=14,events=T1", meta)


def test_beta_folder_feeds_an_ssvep_model(tmp_path: Path, meta) -> None:
    from edge.data.beta import write_beta_subject

    eeg = np.random.default_rng(0).normal(size=(64, 750, 4, 40)).astype(np.float32)
    write_beta_subject(tmp_path / "S3.mat", eeg, subject=3)
    data = load_dataset(f"{tmp_path}:format=beta", meta)
    assert data.x.shape == (160, 3, 9, 100)
    assert data.raw.shape == (160, 9, 100) and len(data.stim_freqs) == 40
    assert sorted(set(data.groups)) == ["S3/B1", "S3/B2", "S3/B3", "S3/B4"]
    with pytest.raises(DataError, match="format='gdf' is not known"):
        load_dataset(f"{tmp_path}:format=gdf", meta)


def test_bciiv2a_files_feed_an_eeg_classifier(tmp_path: Path) -> None:
    from edge.data.bciiv2a import CLASSES, EEG_CHANNELS, write_bciiv2a_mat
    from edge.families.eeg.export import eeg_meta

    rng = np.random.default_rng(0)
    starts = np.arange(8) * 2000 + 1
    run = {"X": rng.normal(size=(16_500, 25)), "trial": starts, "y": np.tile([1, 2, 3, 4], 2),
           "artifacts": np.zeros(8)}
    write_bciiv2a_mat(tmp_path / "A01T.mat", [run])
    meta = eeg_meta(EEG_CHANNELS, 250.0, 4.0, list(CLASSES), tmin_s=2.0, band=(4.0, 40.0),
                    standardize={"mean": [0.0] * 22, "std": [2.0] * 22})
    data = load_dataset(str(tmp_path), meta)
    assert data.x.shape == (8, 1, 22, 1000)
    assert list(data.y) == [0, 1, 2, 3, 0, 1, 2, 3]
    assert set(data.groups) == {"A01T"}
    assert 0.1 < float(data.x.std()) < 0.5  # band-passed white noise, then divided by 2

"""Real recordings in the folder layouts they are published in, built in tmp folders from ../shared/data:
SSVEPExo with its original record-[date] names, PhysioNet EDF+ with .edf.event sidecars and stray files."""

from __future__ import annotations

import shutil
from pathlib import Path

import mne
import numpy as np
import pytest

from edge.data.registry import load_dataset, load_epochs
from edge.data.ssvep_exo import read_ssvep_exo
from edge.errors import DataError
from edge.families.ssvep.export import ssvep_meta

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
EXO = DATA / "ssvep_exo"
MMI = DATA / "eegmmidb_s001"
# The published names of the renamed sessions (sylvchev/dataset-ssvep-exoskeleton), session 1 first.
PUBLISHED = {
    "subject01": ["2012.07.06-19.02.16", "2012.07.06-19.06.14"],
    "subject02": ["2012.07.19-17.36.23", "2012.07.19-17.41.14"],
}
EXO_CHANNELS = ["Oz", "O1", "O2", "PO3", "POz", "PO7", "PO8", "PO4"]

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not beside this checkout")


@pytest.fixture(scope="module")
def published_exo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Subjects 01-02 under their published file names, with the .gdf/.pz siblings the repository carries."""
    root = tmp_path_factory.mktemp("dataset-ssvep-exoskeleton")
    for subject, dates in PUBLISHED.items():
        folder = root / subject
        folder.mkdir()
        for k, date in enumerate(dates, start=1):
            shutil.copy(EXO / subject / f"session{k}-raw.fif", folder / f"record-[{date}]_raw.fif")
            shutil.copy(EXO / subject / f"session{k}-eve.fif", folder / f"record-[{date}]-eve.fif")
            (folder / f"record-[{date}].pz").write_bytes(b"pickled classifier, not read")
        (folder / f"record-[{dates[0]}].gdf").write_bytes(b"0")  # a broken GDF sibling must not be opened
    (root / "README.md").write_text("# SSVEP exoskeleton dataset\n")
    return root


def test_renamed_sessions_are_in_date_order() -> None:
    """The renamed copy's session 1 is the earlier record, so the published date order gives the same sessions."""
    for subject in PUBLISHED:
        dates = [mne.io.read_raw_fif(EXO / subject / f"session{k}-raw.fif", verbose="ERROR").info["meas_date"]
                 for k in (1, 2)]
        assert dates[0] < dates[1]


def test_published_exo_layout_gives_the_same_trials_as_the_renamed_copy(published_exo: Path) -> None:
    published = read_ssvep_exo(published_exo)
    renamed = read_ssvep_exo(EXO, subjects=[1, 2])
    assert published.x.shape == renamed.x.shape == (96, 8, 1280)
    np.testing.assert_array_equal(published.x, renamed.x)
    assert published.y.tolist() == renamed.y.tolist()
    assert published.subject.tolist() == renamed.subject.tolist()
    assert published.session.tolist() == renamed.session.tolist()
    assert published.block.tolist() == renamed.block.tolist()
    assert np.bincount(published.y).tolist() == [32, 32, 32]


def test_published_exo_layout_through_the_registry(published_exo: Path) -> None:
    epochs = load_epochs(f"{published_exo}:subjects=2-2", EXO_CHANNELS[:3])
    assert epochs.x.shape == (48, 3, 1280) and set(epochs.subject) == {2}
    meta = ssvep_meta(channels=EXO_CHANNELS, sample_rate=256.0, window_s=1.0, bands=[[6.0, 40.0]])
    meta.outputs[0].shape = ["N", 3]
    data = load_dataset(f"{published_exo}:subjects=1-1", meta)
    again = load_dataset(f"{EXO}:subjects=1-1", meta)
    assert data.x.shape == (48, 1, 8, 256)
    np.testing.assert_array_equal(data.x, again.x)
    assert data.y.tolist() == again.y.tolist()
    assert sorted(set(data.groups)) == ["S1/B1", "S1/B2"]


def test_exo_session_without_its_partner_file_is_one_sentence(tmp_path: Path) -> None:
    folder = tmp_path / "subject01"
    folder.mkdir()
    date = PUBLISHED["subject01"][0]
    shutil.copy(EXO / "subject01" / "session1-raw.fif", folder / f"record-[{date}]_raw.fif")
    with pytest.raises(DataError, match=r"record-\[2012.07.06-19.02.16\]_raw.fif': the events file \(-eve.fif\) "
                                        "of the same name is missing beside it"):
        read_ssvep_exo(tmp_path)
    (folder / f"record-[{date}]_raw.fif").unlink()
    shutil.copy(EXO / "subject01" / "session1-eve.fif", folder / "record-[2012.07.06-19.06.14]-eve.fif")
    with pytest.raises(DataError, match=r"the recording \(_raw.fif\) of the same name is missing"):
        read_ssvep_exo(tmp_path)
    (folder / "record-[2012.07.06-19.06.14]-eve.fif").unlink()
    (folder / "notes.txt").write_text("nothing here")
    with pytest.raises(DataError, match="no recordings: expected record-\\[date\\]_raw.fif"):
        read_ssvep_exo(tmp_path)


@pytest.fixture(scope="module")
def physionet_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two imagery runs as PhysioNet ships them (with .edf.event sidecars and stray files), and a plain copy."""
    plain = tmp_path_factory.mktemp("plain")
    shipped = tmp_path_factory.mktemp("S001")
    rng = np.random.default_rng(0)
    for run in ("S001R04", "S001R08"):
        shutil.copy(MMI / f"{run}.edf", plain / f"{run}.edf")
        shutil.copy(MMI / f"{run}.edf", shipped / f"{run}.edf")
        # PhysioNet's sidecars are WFDB annotation files: binary, and a copy of the EDF+ annotations.
        (shipped / f"{run}.edf.event").write_bytes(rng.integers(0, 256, 600, dtype=np.uint8).tobytes())
    (shipped / "RECORDS").write_text("S001/S001R04.edf\nS001/S001R08.edf\n")
    (shipped / "README.txt").write_text("EEG Motor Movement/Imagery Dataset\n")
    (shipped / "runs.csv").write_text("run,task\n4,imagine fists\n")
    (shipped / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (shipped / "._S001R04.edf").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork
    return plain, shipped


def test_edf_folder_with_event_sidecars_loads_exactly_as_without(physionet_folder: tuple[Path, Path]) -> None:
    from edge import read_artifact, zoo_path

    meta = read_artifact(zoo_path("eegnet-mmi-s001")).meta
    plain, shipped = physionet_folder
    want = load_dataset(str(plain), meta)
    got = load_dataset(str(shipped), meta)
    assert got.x.shape == want.x.shape == (30, 1, 21, 640)
    np.testing.assert_array_equal(got.x, want.x)
    assert got.y.tolist() == want.y.tolist()
    assert got.groups.tolist() == want.groups.tolist()
    one_run = load_dataset(f"{shipped}:runs=8", meta)
    assert len(one_run) == 15 and set(one_run.groups) == {"S001R08"}
    np.testing.assert_array_equal(one_run.x, want.x[want.groups == "S001R08"])
    with pytest.raises(DataError, match="no recording of run 6"):
        load_dataset(f"{shipped}:runs=6", meta)


def test_one_published_subject_folder_reads_as_that_subject(published_exo: Path) -> None:
    alone = load_epochs(str(published_exo / "subject02"))
    assert set(alone.subject) == {2} and len(alone) == 48
    np.testing.assert_array_equal(alone.x, read_ssvep_exo(EXO, subjects=[2]).x)
    with pytest.raises(DataError, match=r"holds subject 2 only; subjects=\[1\] names others"):
        load_epochs(f"{published_exo / 'subject02'}:subjects=1-1")

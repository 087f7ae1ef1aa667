"""The MNE-based reader on the real recordings in ../shared/data and on damaged copies of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.data.eeg_files import read_eeg_file
from edge.errors import DataError

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
EXO = DATA / "ssvep_exo" / "subject01"
MMI = DATA / "eegmmidb_s001"
SSVEP_CLASSES = {2: "13 Hz", 3: "21 Hz", 4: "17 Hz"}

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not beside this checkout")


def test_fif_with_events_file() -> None:
    epochs = read_eeg_file(EXO / "session1-raw.fif", events=EXO / "session1-eve.fif", classes=SSVEP_CLASSES,
                           tmin=0, tmax=5, subject=1, session="1")
    assert epochs.x.shape == (24, 8, 1280) and epochs.x.dtype == np.float32
    assert epochs.sample_rate == 256.0
    assert epochs.channels == ["Oz", "O1", "O2", "PO3", "POz", "PO7", "PO8", "PO4"]
    assert epochs.classes == ["13 Hz", "21 Hz", "17 Hz"]
    assert np.bincount(epochs.y).tolist() == [8, 8, 8]


def test_gdf_stimulation_codes_give_the_same_trial_order_as_the_fif_export() -> None:
    codes = {"33025": "13 Hz", "33026": "21 Hz", "33027": "17 Hz"}
    gdf = read_eeg_file(EXO / "session1.gdf", classes=codes, tmin=0, tmax=5)
    fif = read_eeg_file(EXO / "session1-raw.fif", events=EXO / "session1-eve.fif", classes=SSVEP_CLASSES, tmin=0, tmax=5)
    assert gdf.y.tolist() == fif.y.tolist()
    assert gdf.x.shape == fif.x.shape


def test_edf_annotations_and_channel_names_without_dots() -> None:
    epochs = read_eeg_file(MMI / "S001R04.edf", classes={"T1": "left fist", "T2": "right fist"}, tmin=0, tmax=4)
    assert epochs.x.shape[1:] == (64, 640)
    assert len(epochs) == 15 and set(epochs.y) == {0, 1}
    assert epochs.channels[:3] == ["Fc5", "Fc3", "Fc1"]
    assert 1 < float(epochs.x.std()) < 1000  # microvolts


def test_channel_pick_and_filter() -> None:
    epochs = read_eeg_file(MMI / "S001R04.edf", classes={"T1": "l", "T2": "r"}, tmin=0, tmax=4,
                           channels=["C3", "CZ", "c4"], l_freq=8, h_freq=30)
    assert epochs.channels == ["C3", "Cz", "C4"]
    spectrum = np.abs(np.fft.rfft(epochs.x, axis=-1)).mean(axis=(0, 1))
    freqs = np.fft.rfftfreq(640, 1 / 160)
    assert spectrum[(freqs > 10) & (freqs < 25)].mean() > 10 * spectrum[freqs > 50].mean()


def test_unknown_event_code_lists_what_the_file_has() -> None:
    with pytest.raises(DataError, match=r"no events with code 'T9'; the file has \['T0', 'T1', 'T2'\]"):
        read_eeg_file(MMI / "S001R04.edf", classes={"T9": "x"})


def test_truncated_and_unsupported_files(tmp_path: Path) -> None:
    cut = tmp_path / "cut.edf"
    cut.write_bytes((MMI / "S001R04.edf").read_bytes()[:300])
    with pytest.raises(DataError, match="cut.edf.*MNE could not read it"):
        read_eeg_file(cut, classes={"T1": "l"})
    marker = tmp_path / "rec.vmrk"
    marker.write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type \(.vmrk\).*Try the .vhdr"):
        read_eeg_file(marker)
    with pytest.raises(DataError, match="no such file"):
        read_eeg_file(tmp_path / "nope.fif")


def test_user_files_are_not_modified(tmp_path: Path) -> None:
    copy = tmp_path / "S001R04.edf"
    shutil.copy(MMI / "S001R04.edf", copy)
    before = copy.read_bytes()
    read_eeg_file(copy, classes={"T1": "l", "T2": "r"}, l_freq=8, h_freq=30)
    assert copy.read_bytes() == before

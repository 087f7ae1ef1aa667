"""The SSVEP exoskeleton recordings (Kalunga et al. 2016; MOABB ``SSVEPExo``) in their FIF export.

Layout: ``subjectNN/sessionK-raw.fif`` with ``sessionK-eve.fif`` beside it; event codes 1 = rest,
2 = 13 Hz, 3 = 21 Hz, 4 = 17 Hz; 5 s trials from the event; 8 channels at 256 Hz.
"""

from __future__ import annotations

import re
from pathlib import Path

from edge.data.eeg_files import read_eeg_file
from edge.data.epochs import EEGEpochs
from edge.errors import DataError

FREQUENCY_CLASSES = {2: "13 Hz", 3: "21 Hz", 4: "17 Hz"}
STIM_FREQS = [13.0, 21.0, 17.0]


def read_ssvep_exo(folder: str | Path, *, subjects: list[int] | None = None, tmin: float = 0.0,
                   tmax: float = 5.0) -> EEGEpochs:
    """All sessions of the chosen subjects, the three frequency classes only (rest left out)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("no such folder.", where=str(folder))
    found = {int(m.group(1)): p for p in sorted(folder.iterdir()) if (m := re.fullmatch(r"subject(\d+)", p.name))}
    if not found:
        raise DataError("no subjectNN folders; expected the SSVEPExo layout subjectNN/sessionK-raw.fif.", where=str(folder))
    chosen = subjects or sorted(found)
    absent = [s for s in chosen if s not in found]
    if absent:
        raise DataError(f"no folder for subject {absent[0]} (found {sorted(found)}).", where=str(folder))
    parts = []
    for subject in chosen:
        for raw in sorted(found[subject].glob("session*-raw.fif")):
            session = raw.name.split("-")[0].removeprefix("session")
            events = raw.with_name(raw.name.replace("-raw.fif", "-eve.fif"))
            if not events.is_file():
                raise DataError(f"the events file {events.name} is missing beside it.", where=str(raw))
            part = read_eeg_file(raw, events=events, classes=FREQUENCY_CLASSES, tmin=tmin, tmax=tmax,
                                 subject=subject, session=session, block=int(session) - 1)
            part.stim_freqs = list(STIM_FREQS)
            parts.append(part)
    return EEGEpochs.concatenate(parts)

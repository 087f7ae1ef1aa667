"""The SSVEP exoskeleton recordings (Kalunga et al. 2016; MOABB ``SSVEPExo``) in their FIF export.

Two layouts of ``subjectNN`` folders are read:

- as published (sylvchev/dataset-ssvep-exoskeleton): ``record-[2012.07.06-19.02.16]_raw.fif`` with
  ``record-[2012.07.06-19.02.16]-eve.fif`` beside it, one record per session, sessions in date order;
- renamed: ``sessionK-raw.fif`` with ``sessionK-eve.fif``.

Other files in the folders (the ``.gdf``, ``.pz`` and ``.mat`` copies of the published set) are left alone.
Event codes 1 = rest, 2 = 13 Hz, 3 = 21 Hz, 4 = 17 Hz; 5 s trials from the event; 8 channels at 256 Hz.
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
        raise DataError("no subjectNN folders; expected the SSVEPExo layout subjectNN/record-[date]_raw.fif "
                        "(or subjectNN/sessionK-raw.fif).", where=str(folder))
    chosen = subjects or sorted(found)
    absent = [s for s in chosen if s not in found]
    if absent:
        raise DataError(f"no folder for subject {absent[0]} (found {sorted(found)}).", where=str(folder))
    parts = []
    for subject in chosen:
        for index, (session, raw, events) in enumerate(session_files(found[subject])):
            part = read_eeg_file(raw, events=events, classes=FREQUENCY_CLASSES, tmin=tmin, tmax=tmax,
                                 subject=subject, session=session, block=index)
            part.stim_freqs = list(STIM_FREQS)
            parts.append(part)
    return EEGEpochs.concatenate(parts)


def is_exo_source(path: Path) -> bool:
    """The SSVEPExo root (holding subjectNN folders) or one subjectNN folder of it."""
    if not path.is_dir():
        return False
    if re.fullmatch(r"subject\d+", path.name) and any(path.glob("*raw.fif")):
        return True
    return any(p.is_dir() and re.fullmatch(r"subject\d+", p.name) for p in path.iterdir())


def exo_root_and_subjects(path: Path, subjects: list[int] | None) -> tuple[Path, list[int] | None]:
    """A subjectNN folder given alone reads as its parent with subjects=[NN]."""
    m = re.fullmatch(r"subject(\d+)", path.name)
    if m and not any(p.is_dir() and re.fullmatch(r"subject\d+", p.name) for p in path.iterdir()):
        if subjects and subjects != [int(m.group(1))]:
            raise DataError(f"the folder holds subject {int(m.group(1))} only; subjects={subjects} names others.",
                            where=str(path))
        return path.parent, [int(m.group(1))]
    return path, subjects


def session_files(folder: Path) -> list[tuple[str, Path, Path]]:
    """(session, raw file, events file) of one subject folder in session order; a lone raw or events file is refused."""
    raws: dict[str, Path] = {}
    events: dict[str, Path] = {}
    for path in folder.iterdir():
        if path.name.startswith(".") or not path.is_file():
            continue
        if m := re.fullmatch(r"(.+)[-_]raw\.fif", path.name):
            raws[m.group(1)] = path
        elif m := re.fullmatch(r"(.+)-eve\.fif", path.name):
            events[m.group(1)] = path
    lone = sorted(set(raws) ^ set(events))
    if lone:
        stem = lone[0]
        have, want = ((raws[stem], "events file (-eve.fif)") if stem in raws
                      else (events[stem], "recording (_raw.fif)"))
        raise DataError(f"the {want} of the same name is missing beside it; each session needs both.",
                        where=str(have))
    if not raws:
        raise DataError("no recordings: expected record-[date]_raw.fif with record-[date]-eve.fif (as published) "
                        "or sessionK-raw.fif with sessionK-eve.fif.", where=str(folder))
    numbered = {stem: int(m.group(1)) for stem in raws if (m := re.fullmatch(r"session(\d+)", stem))}
    if len(numbered) == len(raws):
        order = sorted(raws, key=numbered.__getitem__)
        return [(str(numbered[stem]), raws[stem], events[stem]) for stem in order]
    # Published names carry the recording date and time, [yyyy.mm.dd-hh.mm.ss], so name order is date order.
    return [(str(i + 1), raws[stem], events[stem]) for i, stem in enumerate(sorted(raws))]

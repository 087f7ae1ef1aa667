"""EEG recordings through MNE: FIF (with an events file), EDF/BDF with annotations, GDF with stim codes.

One reader per format family is MNE's job; this module picks the reader by extension, finds the
events, cuts fixed-length trials and returns :class:`EEGEpochs` in microvolts.

>>> epochs = read_eeg_file("S001R04.edf", classes={"T1": "left fist", "T2": "right fist"}, tmin=0, tmax=4)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.data.epochs import EEGEpochs
from edge.errors import DataError

READERS = {".fif": "read_raw_fif", ".edf": "read_raw_edf", ".bdf": "read_raw_bdf", ".gdf": "read_raw_gdf"}


def _mne() -> Any:
    try:
        import mne
    except ImportError:
        raise DataError("reading EEG files needs MNE-Python: pip install mne.") from None
    mne.set_log_level("ERROR")
    return mne


def read_raw(path: str | os.PathLike[str]) -> Any:
    """Open a recording with the MNE reader its extension calls for (data loaded into memory)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError("no such file.", where=str(path))
    if not path.is_file():
        raise DataError("it is a folder, not a recording.", where=str(path))
    if suffix not in READERS:
        hint = " Try the .vhdr header file." if suffix in (".vmrk", ".eeg") else ""
        raise DataError(f"unsupported file type ({suffix or 'no extension'}); readable: "
                        f"{', '.join(READERS)}.{hint}", where=str(path))
    mne = _mne()
    try:
        return getattr(mne.io, READERS[suffix])(path, preload=True, verbose="ERROR")
    except Exception as exc:  # MNE raises ValueError, OSError, struct.error... for damaged files
        raise DataError(f"MNE could not read it ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                        "is the file truncated or of another format?", where=str(path)) from None


def read_eeg_file(
    path: str | os.PathLike[str],
    *,
    classes: dict[Any, str] | None = None,
    tmin: float = 0.0,
    tmax: float = 4.0,
    events: str | os.PathLike[str] | None = None,
    l_freq: float | None = None,
    h_freq: float | None = None,
    channels: list[str] | None = None,
    subject: int = 1,
    session: str = "1",
    block: int = 0,
) -> EEGEpochs:
    """Cut labelled trials [tmin, tmax) s around each event; ``classes`` maps event codes to class names.

    Event codes are the integers of an MNE events file (``events=``) or, without one, the
    annotation descriptions in the recording (``"T1"``, or GDF codes such as ``"33025"``).
    """
    if tmax <= tmin:
        raise DataError(f"tmax ({tmax}) must be greater than tmin ({tmin}).")
    mne = _mne()
    raw = read_raw(path)
    if events is not None:
        try:
            event_array = mne.read_events(events)
        except Exception as exc:
            raise DataError(f"not a readable MNE events file ({type(exc).__name__}).", where=str(events)) from None
        code_of = {code: int(code) for code in np.unique(event_array[:, 2])}
    else:
        event_array, ids = mne.events_from_annotations(raw, verbose="ERROR")
        code_of = dict(ids)
    if len(event_array) == 0:
        raise DataError("the recording has no events or annotations to cut trials at.", where=str(path))
    if classes is None:
        classes = {code: str(code) for code in sorted(code_of, key=str)}
    wanted = {name: code_of.get(code, code_of.get(str(code))) for code, name in classes.items()}
    missing = [code for code, name in classes.items() if wanted[name] is None]
    if missing:
        raise DataError(f"no events with code {missing[0]!r}; the file has {sorted(map(str, code_of))}.", where=str(path))
    if l_freq is not None or h_freq is not None:
        raw.filter(l_freq, h_freq, verbose="ERROR")
    if channels is not None:
        raw = _pick(raw, channels, path)
    fs = float(raw.info["sfreq"])
    samples = int(round((tmax - tmin) * fs))
    label_of = {code: i for i, code in enumerate(wanted.values())}
    keep = np.isin(event_array[:, 2], list(label_of))
    chosen = event_array[keep]
    epochs = mne.Epochs(raw, chosen, event_id={n: c for n, c in wanted.items()}, tmin=tmin,
                        tmax=tmin + (samples - 1) / fs, baseline=None, preload=True,
                        reject_by_annotation=False, verbose="ERROR")
    if len(epochs) == 0:
        raise DataError(f"no trial fits inside the recording for tmin={tmin}, tmax={tmax}.", where=str(path))
    x = epochs.get_data(units="uV").astype(np.float32)
    y = np.array([label_of[c] for c in epochs.events[:, 2]], dtype=np.int64)
    n = len(x)
    return EEGEpochs(
        x, y, fs, [name.rstrip(".") for name in epochs.ch_names], list(wanted),
        np.full(n, subject, dtype=np.int64), np.full(n, session), np.full(n, block, dtype=np.int64),
        onset_sample=int(round(-tmin * fs)) if tmin < 0 else 0,
    )


def _pick(raw: Any, channels: list[str], path: Any) -> Any:
    """Pick channels by name, ignoring case and the trailing dots of some EDF files."""
    clean = {name.rstrip(".").upper(): name for name in raw.ch_names}
    missing = [c for c in channels if c.upper() not in clean]
    if missing:
        raise DataError(f"channels {missing} are not in the recording.", where=str(path))
    return raw.pick([clean[c.upper()] for c in channels])

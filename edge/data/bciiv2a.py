"""BCI Competition IV dataset 2a (4-class motor imagery): the BNCI .mat files and the original GDF files.

9 subjects, two sessions each (``T`` training, ``E`` evaluation), 6 runs x 48 trials = 288
trials per session, classes left hand, right hand, feet, tongue; 22 EEG + 3 EOG channels at
250 Hz. A trial starts with a fixation cross at t = 0, the cue comes at t = 2 s and the
imagery lasts until t = 6 s.

- ``A0{s}T.mat`` / ``A0{s}E.mat`` (BNCI Horizon): a 1xN cell ``data`` of run structs with
  fields ``X`` (samples x 25, microvolts), ``trial`` (1-based start sample of each trial), ``y``
  (1..4), ``fs``, ``classes``, ``artifacts`` (1 = rejected by an expert), ``gender``, ``age``.
  The first runs are EOG calibration with empty ``trial``; they are skipped.
- ``A0{s}T.gdf`` / ``A0{s}E.gdf`` (competition): events 768 (trial start), 769-772 (cue left,
  right, feet, tongue), 783 (cue of unknown class, in E files), 1023 (rejected trial), 32766
  (new run). The classes of E files come from the true-label file ``A0{s}E.mat``
  (variable ``classlabel``), passed as ``labels=``.

Windows are [tmin, tmax) seconds after the trial start; the default 2-6 s is the cue-to-end
imagery window of MOABB's BNCI2014_001 (EEG-TCNet and Q-EEGNet use 1.5-6 s, 1125 samples).

>>> epochs = read_bciiv2a_mat("A01T.mat")  # 288 trials, (288, 22, 1000) uV
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from edge.data.benchmark import _atomic_savemat, _numeric_variable, load_mat
from edge.data.eeg_files import read_raw
from edge.data.epochs import EEGEpochs
from edge.errors import DataError

__all__ = [
    "CLASSES",
    "CUE_S",
    "EEG_CHANNELS",
    "EOG_CHANNELS",
    "EVENT_CUES",
    "EVENT_NEW_RUN",
    "EVENT_REJECTED",
    "EVENT_TRIAL_START",
    "EVENT_UNKNOWN_CUE",
    "SAMPLE_RATE",
    "read_bciiv2a_gdf",
    "read_bciiv2a_mat",
    "write_bciiv2a_mat",
]

SAMPLE_RATE = 250
CUE_S = 2.0
EEG_CHANNELS: tuple[str, ...] = (
    "Fz", "FC3", "FC1", "FCz", "FC2", "FC4", "C5", "C3", "C1", "Cz", "C2",
    "C4", "C6", "CP3", "CP1", "CPz", "CP2", "CP4", "P1", "Pz", "P2", "POz",
)  # fmt: skip
EOG_CHANNELS: tuple[str, ...] = ("EOG-left", "EOG-central", "EOG-right")
CLASSES: tuple[str, ...] = ("left hand", "right hand", "feet", "tongue")
EVENT_TRIAL_START = 768
EVENT_CUES: dict[int, int] = {769: 0, 770: 1, 771: 2, 772: 3}  # GDF code -> class index
EVENT_UNKNOWN_CUE = 783
EVENT_REJECTED = 1023
EVENT_NEW_RUN = 32766

_N_CHANNELS = len(EEG_CHANNELS) + len(EOG_CHANNELS)


def read_bciiv2a_mat(
    path: str | os.PathLike,
    *,
    tmin: float = 2.0,
    tmax: float = 6.0,
    eog: bool = False,
    drop_artifacts: bool = False,
    subject: int | None = None,
    session: str | None = None,
) -> EEGEpochs:
    """The trials of a BNCI ``A0{s}T.mat`` / ``A0{s}E.mat`` file as epochs.

    Each epoch is [tmin, tmax) s after its trial start (default 2-6 s: 1000 samples from the
    cue), float32 microvolts, 22 EEG channels (25 with ``eog=True``). ``y`` is 0..3 into
    ``classes``; ``block`` is the 0-based run among the runs that hold trials (the EOG
    calibration runs are skipped); trials an expert marked as artifacts are kept unless
    ``drop_artifacts``. Subject and session (``"T"``/``"E"``) come from the file name unless given.
    """
    path = Path(path)
    _check_window(tmin, tmax, path)
    data = load_mat(path, "data")["data"]
    runs = _runs(data, path)
    subject, session = _subject_session(path, subject, session)
    picks = slice(0, _N_CHANNELS if eog else len(EEG_CHANNELS))

    xs, ys, blocks, keeps = [], [], [], []
    fs = None
    classes = list(CLASSES)
    block = 0
    for number, run in enumerate(runs, start=1):
        where = f"run {number} of {len(runs)}"
        missing = [name for name in ("X", "trial", "y") if name not in run]
        if missing:
            raise DataError(
                f"{where} has no field '{missing[0]}' (found: {', '.join(sorted(run)) or 'none'}).", where=str(path)
            )
        x_run = _numeric_variable(run, "X", path)
        if x_run.ndim != 2 or x_run.shape[1] != _N_CHANNELS:
            hint = " (it looks transposed)" if x_run.ndim == 2 and x_run.shape[0] == _N_CHANNELS else ""
            raise DataError(
                f"{where} has X of shape {list(x_run.shape)}, expected [samples, {_N_CHANNELS}]{hint}.", where=str(path)
            )
        run_fs = _scalar(run, "fs", path, where) if "fs" in run else float(SAMPLE_RATE)
        if fs is None:
            fs = run_fs
        elif run_fs != fs:
            raise DataError(f"{where} has fs {run_fs:g} Hz but an earlier run has {fs:g} Hz.", where=str(path))
        trial = _integers(run, "trial", path, where)
        if trial.size == 0:
            continue  # an EOG calibration run
        y = _integers(run, "y", path, where)
        artifacts = _integers(run, "artifacts", path, where) if "artifacts" in run else np.zeros_like(trial)
        for name, values in (("y", y), ("artifacts", artifacts)):
            if values.size != trial.size:
                raise DataError(
                    f"{where} has {trial.size} trials but {values.size} values in '{name}'.", where=str(path)
                )
        if np.any((trial < 1) | (trial > len(x_run))):
            raise DataError(f"{where} has trial starts outside its {len(x_run)} samples (1-based).", where=str(path))
        if np.any((y < 1) | (y > len(CLASSES))):
            raise DataError(
                f"{where} has labels {sorted(set(y.tolist()))}, expected 1..{len(CLASSES)}.", where=str(path)
            )
        if block == 0 and "classes" in run:
            classes = _classes(run["classes"], path, where)
        starts = trial - 1 + int(round(tmin * fs))
        xs.append(_cut(x_run[:, picks].T, starts, _n_samples(tmin, tmax, fs), path, where, tmin, tmax))
        ys.append(y - 1)
        blocks.append(np.full(trial.size, block, dtype=np.int64))
        keeps.append(artifacts == 0)
        block += 1
    if not xs:
        raise DataError(f"none of its {len(runs)} runs holds trials (every 'trial' is empty).", where=str(path))

    keep = np.concatenate(keeps) if drop_artifacts else slice(None)
    x = np.concatenate(xs)[keep]
    n = len(x)
    return EEGEpochs(
        x,
        np.concatenate(ys).astype(np.int64)[keep],
        float(fs),
        _channel_names(eog),
        classes,
        subject=np.full(n, subject, dtype=np.int64),
        session=np.full(n, session),
        block=np.concatenate(blocks)[keep],
        onset_sample=_onset_sample(tmin, float(fs)),
    )


def read_bciiv2a_gdf(
    path: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    tmin: float = 2.0,
    tmax: float = 6.0,
    eog: bool = False,
    drop_artifacts: bool = False,
    subject: int | None = None,
    session: str | None = None,
) -> EEGEpochs:
    """The trials of a competition ``A0{s}T.gdf`` / ``A0{s}E.gdf`` file as epochs (read with MNE).

    Trials start at the 768 events; the class of each is its cue (769-772). Evaluation files
    have cue 783 (unknown class) and need ``labels=``, the true-label file ``A0{s}E.mat``
    (variable ``classlabel``, one 1..4 value per trial); given for a training file, the labels
    must agree with its cues. ``block`` is the 0-based run (32766 events), trials with a 1023
    event are the expert-rejected ones (kept unless ``drop_artifacts``); the rest is as in
    :func:`read_bciiv2a_mat`.
    """
    path = Path(path)
    _check_window(tmin, tmax, path)
    subject, session = _subject_session(path, subject, session)
    raw = read_raw(path)  # says how to install MNE if it is missing
    import mne

    if len(raw.ch_names) != _N_CHANNELS:
        raise DataError(
            f"has {len(raw.ch_names)} channels, expected {_N_CHANNELS} (22 EEG + 3 EOG) as in BCI IV 2a.",
            where=str(path),
        )
    fs = float(raw.info["sfreq"])
    try:
        events, _ = mne.events_from_annotations(
            raw, event_id=lambda desc: int(desc) if desc.strip().isdigit() else None, verbose="ERROR"
        )
    except ValueError:  # no annotation is an event code
        events = np.zeros((0, 3), dtype=np.int64)
    sample = events[:, 0] - raw.first_samp
    code = events[:, 2]
    starts = np.sort(sample[code == EVENT_TRIAL_START])
    if starts.size == 0:
        raise DataError(f"has no trial-start events ({EVENT_TRIAL_START}); is it a BCI IV 2a file?", where=str(path))
    ends = np.r_[starts[1:], np.iinfo(np.int64).max]
    runs_at = np.sort(sample[code == EVENT_NEW_RUN])

    cues = np.full(starts.size, -1, dtype=np.int64)  # class index, -1 for 783 (unknown)
    artifacts = np.zeros(starts.size, dtype=bool)
    run_of = np.searchsorted(runs_at, starts, side="right")
    for i, (start, end) in enumerate(zip(starts, ends)):
        inside = code[(sample >= start) & (sample < end)]
        cue = [c for c in inside if c in EVENT_CUES or c == EVENT_UNKNOWN_CUE]
        if not cue:
            raise DataError(
                f"trial {i + 1} (start at sample {start}) has no cue event (769-772 or {EVENT_UNKNOWN_CUE}).",
                where=str(path),
            )
        cues[i] = EVENT_CUES.get(int(cue[0]), -1)
        artifacts[i] = EVENT_REJECTED in inside

    if labels is not None:
        y = _true_labels(Path(labels), starts.size)
        known = cues >= 0
        wrong = np.flatnonzero(known & (cues != y))
        if wrong.size:
            i = wrong[0]
            raise DataError(
                f"the labels file gives trial {i + 1} class {y[i] + 1} but the recording's cue says "
                f"{cues[i] + 1} ({wrong.size} trials disagree); is it the labels file of this recording?",
                where=str(path),
            )
    elif np.any(cues < 0):
        raise DataError(
            f"{int(np.sum(cues < 0))} of {starts.size} trials have cue {EVENT_UNKNOWN_CUE} (class not given), "
            "as in evaluation files; pass labels= the true-label file A0{s}E.mat (variable 'classlabel').",
            where=str(path),
        )
    else:
        y = cues

    picks = list(range(_N_CHANNELS if eog else len(EEG_CHANNELS)))
    signal = raw.get_data(picks=picks, units="uV")
    x = _cut(signal, starts + int(round(tmin * fs)), _n_samples(tmin, tmax, fs), path, "the recording", tmin, tmax)
    block = np.unique(run_of, return_inverse=True)[1].astype(np.int64)
    keep = ~artifacts if drop_artifacts else slice(None)
    x = x[keep]
    n = len(x)
    return EEGEpochs(
        x,
        y.astype(np.int64)[keep],
        fs,
        _channel_names(eog),
        list(CLASSES),
        subject=np.full(n, subject, dtype=np.int64),
        session=np.full(n, session),
        block=block[keep],
        onset_sample=_onset_sample(tmin, fs),
    )


def write_bciiv2a_mat(path: str | os.PathLike, runs: list[dict[str, Any]]) -> Path:
    """Write runs as a BNCI ``A0{s}T.mat``-style file: variable ``data``, a 1xN cell of run structs.

    Each run needs ``X`` (samples x 25, microvolts); ``trial`` (1-based start samples), ``y``
    (1..4) and ``artifacts`` (0/1) default to empty (an EOG calibration run) or, for
    ``artifacts``, to zeros; ``fs`` defaults to 250, ``classes`` to the four class names,
    ``gender`` and ``age`` to placeholders. Vectors are written as columns, as in the real files.
    """
    path = Path(path)
    cell = np.empty((1, len(runs)), dtype=object)
    for number, run in enumerate(runs, start=1):
        where = f"Cannot write '{path}': run {number}"
        x = np.asarray(run.get("X", np.zeros((0, 0))))
        if x.ndim != 2 or x.shape[1] != _N_CHANNELS:
            raise DataError(f"{where} has X of shape {list(x.shape)}, expected [samples, {_N_CHANNELS}].")
        trial = np.asarray(run.get("trial", []), dtype=np.float64).ravel()
        y = np.asarray(run.get("y", []), dtype=np.float64).ravel()
        artifacts = np.asarray(run.get("artifacts", np.zeros(trial.size)), dtype=np.float64).ravel()
        if not y.size == artifacts.size == trial.size:
            raise DataError(f"{where} has {trial.size} trials, {y.size} labels and {artifacts.size} artifact flags.")
        if np.any((trial < 1) | (trial > len(x))):
            raise DataError(f"{where} has trial starts outside 1..{len(x)}.")
        classes = np.empty((1, len(CLASSES)), dtype=object)
        classes[0, :] = list(run.get("classes", CLASSES))
        cell[0, number - 1] = {
            "X": x,
            "trial": _column(trial),
            "y": _column(y),
            "fs": float(run.get("fs", SAMPLE_RATE)),
            "classes": classes,
            "artifacts": _column(artifacts),
            "gender": str(run.get("gender", "")),
            "age": float(run.get("age", np.nan)),
        }
    _atomic_savemat(path, {"data": cell})
    return path


def _column(values: np.ndarray) -> np.ndarray:
    return values.reshape(-1, 1) if values.size else np.zeros((0, 0))


def _check_window(tmin: float, tmax: float, path: Path) -> None:
    if not (np.isfinite(tmin) and np.isfinite(tmax)) or tmax <= tmin:
        raise DataError(f"tmax ({tmax}) must be greater than tmin ({tmin}), both finite seconds.", where=str(path))


def _n_samples(tmin: float, tmax: float, fs: float) -> int:
    return int(round((tmax - tmin) * fs))


def _onset_sample(tmin: float, fs: float) -> int:
    """Sample of the cue (2 s after the trial start) in each epoch; 0 when the window starts after it."""
    return max(0, int(round((CUE_S - tmin) * fs)))


def _cut(signal: np.ndarray, starts: np.ndarray, n_samples: int, path: Path, where: str,
         tmin: float, tmax: float) -> np.ndarray:
    """Windows [start, start + n_samples) of a (channels, samples) signal, as float32 (trials, channels, samples)."""
    length = signal.shape[1]
    bad = np.flatnonzero((starts < 0) | (starts + n_samples > length))
    if bad.size:
        raise DataError(
            f"trial {bad[0] + 1} of {where} does not fit the window {tmin:g}-{tmax:g} s inside its "
            f"{length} samples.",
            where=str(path),
        )
    index = starts[:, None] + np.arange(n_samples)[None, :]
    return np.ascontiguousarray(signal[:, index].transpose(1, 0, 2), dtype=np.float32)


def _runs(data: Any, path: Path) -> list[dict]:
    """The run structs of ``data``: a cell of structs (the BNCI layout) or a struct array."""
    if isinstance(data, dict):
        return [data]
    if isinstance(data, np.ndarray) and data.dtype == object and data.size:
        runs = list(data.ravel(order="F"))
        if all(isinstance(run, dict) for run in runs):
            return runs
    kind = f"a {data.dtype} array" if isinstance(data, np.ndarray) and data.dtype != object else (
        "a cell that does not hold structs" if isinstance(data, np.ndarray) else f"a {type(data).__name__}")
    raise DataError(f"variable 'data' is {kind}, expected a 1xN cell of run structs.", where=str(path))


def _scalar(run: dict, name: str, path: Path, where: str) -> float:
    value = _numeric_variable(run, name, path).astype(np.float64).ravel()
    if value.size != 1 or not np.isfinite(value[0]) or value[0] <= 0:
        raise DataError(f"{where} has '{name}' {value.tolist()}, expected one positive number.", where=str(path))
    return float(value[0])


def _integers(run: dict, name: str, path: Path, where: str) -> np.ndarray:
    value = _numeric_variable(run, name, path).astype(np.float64).ravel()
    if value.size and not np.all(np.isfinite(value) & (value == np.round(value))):
        raise DataError(f"{where} has '{name}' values that are not whole numbers.", where=str(path))
    return value.astype(np.int64)


def _classes(value: Any, path: Path, where: str) -> list[str]:
    names = list(value.ravel(order="F")) if isinstance(value, np.ndarray) and value.dtype == object else None
    if names is None or len(names) != len(CLASSES) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{where} has 'classes' that is not a cell of {len(CLASSES)} names.", where=str(path))
    return names


def _channel_names(eog: bool) -> list[str]:
    return list(EEG_CHANNELS) + (list(EOG_CHANNELS) if eog else [])


def _subject_session(path: Path, subject: int | None, session: str | None) -> tuple[int, str]:
    """Subject and session given, or read from a name like ``A01T.mat`` / ``A09E.gdf``."""
    match = re.fullmatch(r"A0*(\d+)([TE])", path.stem, flags=re.IGNORECASE)
    if subject is None:
        if not match:
            raise DataError(
                "the file name does not give the subject (expected A0{s}T or A0{s}E, such as A01T.mat); "
                "pass subject= and session=.",
                where=str(path),
            )
        subject = int(match.group(1))
    if session is None:
        if not match:
            raise DataError(
                "the file name does not give the session (expected A0{s}T or A0{s}E); pass session='T' or 'E'.",
                where=str(path),
            )
        session = match.group(2).upper()
    if isinstance(subject, bool) or not isinstance(subject, (int, np.integer)) or subject < 1:
        raise DataError(f"subject must be a positive integer; got {subject!r}.", where=str(path))
    return int(subject), str(session)


def _true_labels(path: Path, n_trials: int) -> np.ndarray:
    """The 0-based classes of a true-label file (variable ``classlabel``, values 1..4)."""
    labels = _numeric_variable(load_mat(path, "classlabel"), "classlabel", path).astype(np.float64).ravel()
    if labels.size != n_trials:
        raise DataError(
            f"variable 'classlabel' has {labels.size} labels but the recording has {n_trials} trials.", where=str(path)
        )
    if not np.all(np.isin(labels, np.arange(1, len(CLASSES) + 1))):
        raise DataError(f"variable 'classlabel' holds values other than 1..{len(CLASSES)}.", where=str(path))
    return labels.astype(np.int64) - 1

"""The train/test splits the BCI literature uses, as lists of (name, train indices, test indices)."""

from __future__ import annotations

import numpy as np

from edge.errors import DataError

Split = tuple[str, np.ndarray, np.ndarray]


def leave_one_group_out(groups: np.ndarray, label: str = "") -> list[Split]:
    """One fold per distinct group value: test on it, train on the rest."""
    groups = np.asarray(groups)
    values = list(dict.fromkeys(groups.tolist()))
    if len(values) < 2:
        raise DataError(f"leave-one-{label or 'group'}-out needs at least two {label or 'group'}s; got {len(values)}.")
    return [(f"{label}={v}" if label else str(v), np.flatnonzero(groups != v), np.flatnonzero(groups == v))
            for v in values]


def leave_one_block_out(blocks: np.ndarray) -> list[Split]:
    """SSVEP convention (Guney, Nakanishi): each block is the test set once."""
    return leave_one_group_out(blocks, "block")


def cross_subject(subjects: np.ndarray) -> list[Split]:
    """Leave-one-subject-out (MOABB CrossSubjectEvaluation)."""
    return leave_one_group_out(subjects, "subject")


def session_transfer(sessions: np.ndarray, train: str = "T", test: str = "E") -> list[Split]:
    """Train on one session, test on another (BCI IV 2a: T -> E)."""
    sessions = np.asarray(sessions).astype(str)
    for name in (train, test):
        if name not in sessions:
            raise DataError(f"session '{name}' is not in the data (sessions: {sorted(set(sessions))}).")
    return [(f"session {train}->{test}", np.flatnonzero(sessions == train), np.flatnonzero(sessions == test))]


def per_subject(subjects: np.ndarray, inner: str = "block", blocks: np.ndarray | None = None) -> list[Split]:
    """Within-subject folds: leave-one-block-out inside each subject."""
    subjects = np.asarray(subjects)
    if blocks is None:
        raise DataError("per-subject splits need the block of every trial.")
    folds = []
    for subject in dict.fromkeys(subjects.tolist()):
        own = np.flatnonzero(subjects == subject)
        for name, train, test in leave_one_group_out(np.asarray(blocks)[own], inner):
            folds.append((f"subject={subject} {name}", own[train], own[test]))
    return folds

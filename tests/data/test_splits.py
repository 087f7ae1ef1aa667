from __future__ import annotations

import numpy as np
import pytest

from edge.data.splits import cross_subject, leave_one_block_out, per_subject, session_transfer
from edge.errors import DataError


def test_leave_one_block_out_tests_each_block_once_and_never_trains_on_it() -> None:
    blocks = np.repeat(np.arange(6), 40)
    folds = leave_one_block_out(blocks)
    assert [name for name, _, _ in folds] == [f"block={b}" for b in range(6)]
    for _, train, test in folds:
        assert len(test) == 40 and len(train) == 200
        assert not set(train) & set(test)
    assert sorted(np.concatenate([test for _, _, test in folds])) == list(range(240))


def test_session_transfer_and_cross_subject() -> None:
    sessions = np.array(["T"] * 5 + ["E"] * 3)
    ((name, train, test),) = session_transfer(sessions)
    assert name == "session T->E" and list(train) == [0, 1, 2, 3, 4] and list(test) == [5, 6, 7]
    with pytest.raises(DataError, match="session 'X' is not in the data"):
        session_transfer(sessions, train="X")
    folds = cross_subject(np.array([1, 1, 2, 2, 3]))
    assert [list(test) for _, _, test in folds] == [[0, 1], [2, 3], [4]]


def test_per_subject_folds_stay_inside_each_subject() -> None:
    subjects = np.repeat([1, 2], 6)
    blocks = np.tile(np.repeat([0, 1, 2], 2), 2)
    folds = per_subject(subjects, blocks=blocks)
    assert len(folds) == 6
    for _, train, test in folds:
        assert len(set(subjects[train]) | set(subjects[test])) == 1
    with pytest.raises(DataError, match="at least two blocks"):
        leave_one_block_out(np.zeros(4))

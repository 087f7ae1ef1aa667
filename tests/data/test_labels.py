"""class_indices: stored labels become class indices, or one sentence says why they are not classes."""

from __future__ import annotations

import numpy as np
import pytest

from edge.data.labels import class_indices, class_indices_and_note, model_classes
from edge.errors import DataError
from edge.families.ssvep.export import ssvep_meta


def test_integer_and_whole_float_labels() -> None:
    got = class_indices(np.array([2, 0, 1], np.int8), 3)
    assert got.dtype == np.int64 and got.tolist() == [2, 0, 1]
    assert class_indices(np.array([2.0, 0.0, 1.0]), 3).tolist() == [2, 0, 1]
    assert class_indices(np.array([[1], [0]]), 2).tolist() == [1, 0]  # one label per row in a column
    assert class_indices(np.array([True, False]), None).tolist() == [1, 0]


def test_one_hot_rows_are_read_by_argmax_with_a_note() -> None:
    y = np.eye(4, dtype=np.float32)[[3, 1, 2, 0, 0]]
    indices, note = class_indices_and_note(y, 4, "d.npz")
    assert indices.tolist() == [3, 1, 2, 0, 0]
    assert note == "y is one-hot (5 x 4): read by argmax"
    assert class_indices_and_note(np.array([1, 2]), 4)[1] is None


@pytest.mark.parametrize(
    ("y", "n_classes", "message"),
    [
        (np.array([0.0, 0.37, 1.0]), 3, r"non-integer values \(e.g. 0.37\): class labels must be integer"),
        (np.array([0, 5, 1]), 4, r"labels run from 0 to 5 but the model has 4 outputs.*1 label\(s\) lie outside"),
        (np.array([-1, 0]), 2, "labels run from -1 to 0"),
        (np.eye(3)[[0, 1]], 4, "3 columns per trial but the model has 4 classes"),
        (np.array([[1.0, 1.0], [0.0, 1.0]]), 2, "row 0 is not one-hot"),
        (np.array([[0.7, 0.3], [0.0, 1.0]]), 2, "row 0 is not one-hot"),
        (np.array(["a", "b"]), 2, "dtype <U1; class labels must be integer"),
        (np.array([0.0, np.nan]), 2, "NaN or Inf"),
        (np.zeros((2, 3, 4)), 3, r"shape \(2, 3, 4\)"),
    ],
)
def test_labels_that_are_not_classes_are_refused(y: np.ndarray, n_classes: int, message: str) -> None:
    with pytest.raises(DataError, match=message):
        class_indices(y, n_classes, "d.npz")


def test_model_classes_from_the_first_output() -> None:
    assert model_classes(ssvep_meta()) == 40
    meta = ssvep_meta()
    meta.outputs[0].shape = ["N", "classes"]
    assert model_classes(meta) is None

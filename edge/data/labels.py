"""Labels as class indices: the one place that decides whether a stored ``y`` can be scored as classes.

The loaders keep ``y`` as stored (shape and dtype), so that one-hot rows, float targets and integer
labels stay distinguishable. Whatever scores predictions against classes calls :func:`class_indices`
first; it accepts integer labels, whole-number floats and one-hot rows, and refuses anything else in
one sentence rather than guess.

>>> class_indices(np.array([[0, 1], [1, 0]]), 2, "d.npz")
array([1, 0])
"""

from __future__ import annotations

import numpy as np

from edge.errors import DataError

#: the note evaluation results carry when one-hot rows were read as class indices
ONE_HOT_NOTE = "y is one-hot; read as class indices"


def is_one_hot(y: np.ndarray) -> bool:
    """True for a 2-D array of 0/1 rows with exactly one 1 each (and more than one column)."""
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] < 2 or y.dtype.kind not in "biuf":
        return False
    return bool(np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1))


def class_indices(y: np.ndarray, n_classes: int | None, where: str | None = None) -> np.ndarray:
    """Integer class indices (trials,) from stored labels, or one sentence saying why they are not classes."""
    return class_indices_and_note(y, n_classes, where)[0]


def class_indices_and_note(y: np.ndarray, n_classes: int | None,
                           where: str | None = None) -> tuple[np.ndarray, str | None]:
    """Like :func:`class_indices`, plus a note when the labels were read as one-hot rows (else None)."""
    y = np.asarray(y)
    note = None
    if y.ndim == 2 and y.shape[1] > 1:
        y, note = _one_hot(y, n_classes, where), f"y is one-hot ({y.shape[0]} x {y.shape[1]}): read by argmax"
    elif y.ndim == 2 or (y.ndim > 2 and all(d == 1 for d in y.shape[1:])):
        y = y.reshape(len(y))  # (trials, 1): one label per trial in a column
    elif y.ndim != 1:
        raise DataError(f"y has shape {y.shape}; class labels must be one index per trial (trials,) or one-hot "
                        "rows (trials, classes).", where=where)
    indices = _whole_numbers(y, where)
    if n_classes is not None and len(indices) and (indices.min() < 0 or indices.max() >= n_classes):
        outside = int(((indices < 0) | (indices >= n_classes)).sum())
        raise DataError(f"labels run from {int(indices.min())} to {int(indices.max())} but the model has "
                        f"{n_classes} outputs (classes 0 to {n_classes - 1}); {outside} label(s) lie outside.",
                        where=where)
    return indices, note


def _whole_numbers(y: np.ndarray, where: str | None) -> np.ndarray:
    """int64 labels from integer or whole-number float (or bool) values."""
    if y.dtype == bool or np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.floating):
        raise DataError(f"y has dtype {y.dtype}; class labels must be integer class indices.", where=where)
    if not np.isfinite(y).all():
        raise DataError("y holds NaN or Inf values; class labels must be integer class indices.", where=where)
    fractional = y[y != np.round(y)]
    if len(fractional):
        raise DataError(f"y holds non-integer values (e.g. {float(fractional[0]):.4g}): class labels must be "
                        "integer class indices; for a regression target pass --task "
                        "regression.", where=where)
    return y.astype(np.int64)


def _one_hot(y: np.ndarray, n_classes: int | None, where: str | None) -> np.ndarray:
    """The argmax of rows that each hold exactly one 1 and zeros elsewhere, as wide as the model's classes."""
    if n_classes is not None and y.shape[1] != n_classes:
        raise DataError(f"y has {y.shape[1]} columns per trial but the model has {n_classes} classes; "
                        "one-hot labels need one column per class.", where=where)
    if not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
        raise DataError(f"y has dtype {y.dtype}; one-hot labels must be numbers.", where=where)
    ones = y == 1
    rows_ok = ((y == 0) | ones).all(axis=1) & (ones.sum(axis=1) == 1)
    if not rows_ok.all():
        row = int(np.flatnonzero(~rows_ok)[0])
        raise DataError(f"y is 2-D ({y.shape[0]} x {y.shape[1]}) but row {row} is not one-hot (exactly one 1, "
                        "zeros elsewhere); give one class index per trial, or one-hot rows.", where=where)
    return ones.argmax(axis=1).astype(np.int64)


def model_classes(meta: object) -> int | None:
    """The number of class scores of a model's first output when its shape (after the batch) is fixed, else None."""
    outputs = getattr(meta, "outputs", None)
    if not outputs:
        return None
    shape = outputs[0].shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    return int(np.prod(shape)) if shape else 1

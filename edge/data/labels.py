"""Labels as stored, read as class indices: integers as they are, whole-number floats, one-hot rows.

Loaders keep ``y`` as the file stores it; the evaluation decides what it means. A label that cannot be a
class index (a non-integer float, a value out of range, a row that is not one-hot) is refused with one
sentence rather than cast, because a cast turns 0.7 into class 0 and prints a confident, wrong accuracy.
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


def class_indices(y: np.ndarray, n_classes: int, where: str | None = None) -> np.ndarray:
    """``y`` as int64 class indices in [0, n_classes); one-hot rows become their argmax."""
    y = np.asarray(y)
    if is_one_hot(y):
        if y.shape[1] != n_classes:
            raise DataError(f"y holds one-hot rows of {y.shape[1]} classes but the model has {n_classes} outputs.",
                            where=where)
        return y.argmax(axis=1).astype(np.int64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"y has shape {tuple(y.shape)}; class labels are one index per trial (or one-hot rows).",
                        where=where)
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise DataError("y holds NaN or infinite values; class labels are whole numbers.", where=where)
        fractional = y[y != np.round(y)]
        if fractional.size:
            raise DataError(f"y holds non-integer values (e.g. {fractional[0]:g}); class labels must be whole "
                            "numbers (for a regression target pass --task regression).", where=where)
    elif y.dtype.kind not in "iu":
        raise DataError(f"y has dtype {y.dtype}; class labels must be integer class indices.", where=where)
    indices = y.astype(np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= n_classes):
        raise DataError(f"labels run from {int(indices.min())} to {int(indices.max())} but the model has "
                        f"{n_classes} outputs.", where=where)
    return indices

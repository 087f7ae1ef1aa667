"""What a model's outputs mean, and the metrics that fit: class scores, regression values, anomaly scores.

A model the toolkit made says its task in the metadata (``meta.task["kind"]``). A plain model does not, so
the task is read from the shapes and the labels, and the rule used is recorded in the results:

* class scores: an output of C >= 2 values per trial, integer (or one-hot) labels -> accuracy and friends;
* anomaly: an output shaped like the input (an autoencoder) -> reconstruction error per trial (MSE), and with
  0/1 labels the ROC AUC of that error (DeLong interval);
* regression: one value per trial, or float targets of the output's shape -> MSE, MAE, RMSE, R².

Where the shapes and labels fit two readings (one value per trial with 0/1 labels: a logit or a regression?),
the evaluation refuses and names ``--task`` rather than guess.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.data.labels import is_one_hot
from edge.errors import DataError
from edge.metrics import (
    bootstrap_mean_interval,
    bootstrap_regression_intervals,
    delong_interval,
    regression_errors,
    roc_auc,
)

TASK_KINDS = ("classification", "regression", "anomaly")
#: metadata kinds that are not classification; any other kind a toolkit family writes is class scores
META_KINDS = {"regression": "regression", "anomaly": "anomaly", "anomaly-detection": "anomaly",
              "autoencoder": "anomaly"}
NO_LABELS_NOTE = "task metrics skipped: the data have no labels (y)"


def _whole(y: np.ndarray) -> bool:
    return y.dtype.kind in "biu" or (y.dtype.kind == "f" and bool(np.all(np.isfinite(y) & (y == np.round(y)))))


def _binary(y: np.ndarray) -> bool:
    return _whole(y) and bool(np.all((y == 0) | (y == 1)))


def task_kind(output_shape: tuple[int, ...], input_shape: tuple[int, ...], y: np.ndarray | None,
              meta_kind: str | None = None, explicit: str | None = None) -> tuple[str, str]:
    """(kind, the rule that decided it) for per-trial output and input shapes and the labels as stored."""
    if explicit:
        if explicit not in TASK_KINDS:
            raise DataError(f"--task must be one of {', '.join(TASK_KINDS)}; got {explicit!r}.")
        return explicit, "--task"
    if meta_kind:
        return META_KINDS.get(meta_kind, "classification"), f"the model's metadata (task kind '{meta_kind}')"
    size = int(np.prod(output_shape)) if output_shape else 1
    y = None if y is None else np.asarray(y)
    if y is not None and is_one_hot(y) and y.shape[1] == size:
        return "classification", f"one-hot labels of {size} classes"
    if tuple(output_shape) == tuple(input_shape) and size > 1:
        if y is not None and y.ndim == 1 and _whole(y) and not _binary(y):
            raise DataError(f"the output has the input's shape {tuple(output_shape)} (an autoencoder?) but y holds "
                            "class labels beyond 0/1; pass --task classification or --task anomaly.")
        return "anomaly", f"the output has the input's shape {tuple(output_shape)} (an autoencoder)"
    if size == 1:
        if y is not None and _binary(y):
            raise DataError("the model gives one value per trial and y holds 0/1 labels: pass --task regression to "
                            "score the value against y, or --task anomaly to read it as an anomaly score (ROC AUC).")
        return "regression", "one output value per trial"
    if y is not None and y.dtype.kind == "f" and y.shape[1:] == tuple(output_shape) and not _whole(y):
        return "regression", f"float targets of the output's shape {tuple(output_shape)}"
    return "classification", f"{size} output values per trial (class scores)"


def regression_metrics(outputs: np.ndarray, y: np.ndarray, where: str | None = None) -> dict[str, Any]:
    """MSE, MAE, RMSE and R² of the outputs against ``y`` with bootstrap intervals over trials."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(f"regression targets must be numbers; y has dtype {y.dtype}.", where=where)
    if y.size != outputs.size or len(y) != len(outputs):
        raise DataError(f"y has shape {tuple(y.shape)} but the model gives outputs of shape "
                        f"{tuple(outputs.shape)}; regression targets need one value per output.", where=where)
    predicted = outputs.reshape(len(outputs), -1).astype(np.float64)
    target = y.reshape(len(y), -1).astype(np.float64)
    values = regression_errors(predicted, target)
    intervals = bootstrap_regression_intervals(predicted, target)
    block: dict[str, Any] = {key: {"value": None if np.isnan(v) else v, "ci95": list(intervals.get(key, (v, v)))}
                             for key, v in values.items()}
    block.update(n=len(y), outputs_per_trial=predicted.shape[1], interval="bootstrap over trials (1000 resamples)")
    if np.isnan(values["r2"]):
        block["r2"]["note"] = "R² undefined: the targets do not vary"
    return {"regression": block}


def anomaly_scores(outputs: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, str]:
    """Per-trial anomaly score and what it is: reconstruction MSE for an autoencoder, else the output itself."""
    flat_out = outputs.reshape(len(outputs), -1).astype(np.float64)
    flat_in = np.asarray(x).reshape(len(x), -1).astype(np.float64)
    if flat_out.shape == flat_in.shape and flat_out.shape[1] > 1:
        return np.mean((flat_out - flat_in) ** 2, axis=1), "reconstruction error (MSE per trial)"
    if flat_out.shape[1] == 1:
        return flat_out[:, 0], "the model's output value"
    raise DataError(f"an anomaly score needs the input's shape back (an autoencoder) or one value per trial; the "
                    f"model gives {flat_out.shape[1]} values per trial.")


def anomaly_metrics(outputs: np.ndarray, x: np.ndarray, y: np.ndarray | None,
                    where: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """(metrics, notes): the score per trial summarised, and with 0/1 labels its ROC AUC with DeLong's interval."""
    scores, source = anomaly_scores(outputs, x)
    lo, hi = bootstrap_mean_interval(scores)
    block: dict[str, Any] = {"score": source, "mean": {"value": float(scores.mean()), "ci95": [lo, hi]},
                             "n": len(scores)}
    notes: list[str] = []
    if y is None:
        notes.append("ROC AUC skipped: the data have no anomaly labels (y)")
        return {"anomaly": block}, notes
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(scores) or not _binary(y):
        sample = np.unique(np.asarray(y))[:4].tolist()
        raise DataError(f"anomaly labels must be one 0 (normal) or 1 (anomaly) per trial; y has shape "
                        f"{tuple(np.shape(y))} and values such as {sample}.", where=where)
    positive = y.astype(bool)
    block["anomalies"] = int(positive.sum())
    if positive.all() or not positive.any():
        notes.append(f"ROC AUC skipped: every trial is labelled {'1 (anomaly)' if positive.all() else '0 (normal)'}")
        return {"anomaly": block}, notes
    auc = roc_auc(scores, positive)
    block["roc_auc"] = {"value": auc, "ci95": list(delong_interval(scores, positive)), "interval": "DeLong",
                        "positive": "y == 1 (anomaly); higher score = more anomalous"}
    return {"anomaly": block}, notes

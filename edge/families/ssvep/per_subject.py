"""A Guney network trained for one subject on recorded trials, tested across sessions.

Recorded SSVEP datasets hold few long trials (SSVEPExo: 24 trials of 5 s per session), so training
uses several overlapping windows per trial and a trial's prediction averages the logits of its
windows. Preprocessing is the family's: sub-band filter bank applied to each window after slicing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.data.epochs import EEGEpochs
from edge.data.preprocess import GUNEY_BANDS, filter_bank
from edge.families.ssvep.train import TrainConfig, predict, train_global


def windows_of(epochs: EEGEpochs, starts_s: Sequence[float], window_s: float,
               bands: Sequence[tuple[float, float]] = GUNEY_BANDS) -> np.ndarray:
    """Filtered windows (trials, windows, bands, channels, samples) starting at each of ``starts_s`` after onset."""
    cuts = [filter_bank(epochs.window(s, window_s).astype(np.float64), epochs.sample_rate, bands) for s in starts_s]
    return np.stack(cuts, axis=1).astype(np.float32)


def train_subject_network(train: EEGEpochs, config: TrainConfig, *, starts_s: Sequence[float], window_s: float,
                          bands: Sequence[tuple[float, float]] = GUNEY_BANDS) -> object:
    """Train a fresh Guney network on every window of every training trial."""
    x = windows_of(train, starts_s, window_s, bands)
    n_trials, n_windows = x.shape[:2]
    flat = x.reshape(n_trials * n_windows, *x.shape[2:])
    labels = np.repeat(train.y, n_windows)
    # Scale to unit variance: recorded units vary by orders of magnitude between files (V vs uV).
    scale = float(flat.std()) or 1.0
    net = train_global(flat / scale, labels, config, classes=len(train.classes))
    net.input_scale = scale
    return net


def predict_trials(net: object, test: EEGEpochs, *, starts_s: Sequence[float], window_s: float,
                   bands: Sequence[tuple[float, float]] = GUNEY_BANDS) -> np.ndarray:
    """Class of each trial from the mean logits of its windows."""
    x = windows_of(test, starts_s, window_s, bands)
    n_trials, n_windows = x.shape[:2]
    logits = predict(net, x.reshape(n_trials * n_windows, *x.shape[2:]) / net.input_scale)
    return logits.reshape(n_trials, n_windows, -1).mean(axis=1).argmax(axis=1)


def cross_session_accuracy(epochs: EEGEpochs, config: TrainConfig, *, starts_s: Sequence[float],
                           window_s: float) -> float:
    """Train on each session and test on the other(s); accuracy over every trial tested once."""
    sessions = list(dict.fromkeys(epochs.session.tolist()))
    correct = 0
    for session in sessions:
        test = epochs.session == session
        net = train_subject_network(epochs.select(~test), config, starts_s=starts_s, window_s=window_s)
        correct += int(np.sum(predict_trials(net, epochs.select(test), starts_s=starts_s, window_s=window_s)
                              == epochs.y[test]))
    return correct / len(epochs)

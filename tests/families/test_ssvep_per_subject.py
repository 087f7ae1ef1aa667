from __future__ import annotations

import numpy as np

from edge.data.registry import load_epochs
from edge.families.ssvep.per_subject import cross_session_accuracy, predict_trials, train_subject_network, windows_of
from edge.families.ssvep.train import TrainConfig

STARTS = (0.14, 0.34)


def test_windows_of_cuts_and_filters_each_start() -> None:
    epochs = load_epochs("synthetic-ssvep:subjects=4-4,blocks=1")
    x = windows_of(epochs, STARTS, 0.4)
    assert x.shape == (40, 2, 3, 9, 100)
    assert not np.allclose(x[:, 0], x[:, 1])


def test_network_trained_on_one_session_predicts_the_other() -> None:
    epochs = load_epochs("synthetic-ssvep:subjects=4-4,blocks=4")
    epochs.session = np.where(epochs.block < 2, "1", "2")
    config = TrainConfig(epochs=10, lr=1e-3, batch_size=32, seed=0)
    accuracy = cross_session_accuracy(epochs, config, starts_s=STARTS, window_s=0.4)
    assert accuracy > 0.1  # 40 classes, 160 trials: chance is 2.5 %, its 99.9 % bound about 7.5 %
    net = train_subject_network(epochs.select(epochs.session == "1"), TrainConfig(epochs=1), starts_s=STARTS,
                                window_s=0.4)
    predicted = predict_trials(net, epochs.select(epochs.session == "2"), starts_s=STARTS, window_s=0.4)
    assert predicted.shape == (80,) and predicted.max() < 40

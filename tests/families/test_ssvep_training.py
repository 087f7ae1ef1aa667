from __future__ import annotations

import numpy as np
import torch

from edge.data.registry import load_dataset
from edge.families.ssvep.export import ssvep_meta
from edge.families.ssvep.train import TrainConfig, finetune, predict, train_global


def _accuracy(net, data) -> float:
    return float(np.mean(predict(net, data.x).argmax(1) == data.y))


def test_two_stage_training_learns_and_finetune_leaves_the_global_net_alone() -> None:
    meta = ssvep_meta()
    train = load_dataset("synthetic-ssvep:subjects=1-3,seed=0,blocks=4", meta)
    subject = load_dataset("synthetic-ssvep:subjects=9-9,seed=0,blocks=6", meta)
    own_blocks = np.isin(subject.groups, ["S9/B1", "S9/B2", "S9/B3", "S9/B4", "S9/B5"])
    config = TrainConfig(epochs=40, finetune_epochs=40, seed=0)

    epochs_seen: list[int] = []
    net = train_global(train.x, train.y, config, on_epoch=lambda epoch, _net: epochs_seen.append(epoch))
    assert epochs_seen == list(range(1, 41))
    assert _accuracy(net, train) > 0.5  # 40 classes: chance is 2.5 %
    before = [p.detach().clone() for p in net.parameters()]

    tuned = finetune(net, subject.x[own_blocks], subject.y[own_blocks], config)
    assert (tuned.drop1.p, tuned.drop2.p, tuned.drop3.p) == (0.6, 0.6, 0.95)
    assert (net.drop1.p, net.drop3.p) == (0.1, 0.95)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    own = type(subject)("own blocks", subject.x[own_blocks], subject.y[own_blocks])
    assert _accuracy(tuned, own) > _accuracy(net, own)  # it adapted to this subject


def test_training_is_seeded() -> None:
    meta = ssvep_meta()
    data = load_dataset("synthetic-ssvep:subjects=1,seed=0,blocks=2", meta)
    config = TrainConfig(epochs=2, seed=3)
    a = predict(train_global(data.x, data.y, config), data.x[:5])
    b = predict(train_global(data.x, data.y, config), data.x[:5])
    np.testing.assert_array_equal(a, b)

"""Training of the EEG classifiers: Adam on cross-entropy with Keras-style max-norm constraints.

The recipe of arl-eegmodels and EEG-TCNet: Adam (lr 1e-3), shuffled mini-batches, a fixed number of
epochs and no early stopping; after every optimiser step each constrained layer is rescaled to its
max-norm (:func:`edge.families.eeg.models.apply_max_norm`), as Keras applies ``kernel_constraint``.
Inputs are already standardised: that step belongs to the preprocessing recorded in the metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import DataError
from edge.families.eeg.models import _torch, apply_max_norm
from edge.families.torch_common import predict  # noqa: F401  (part of this module's API)


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run."""

    epochs: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0
    weight_decay: float = 0.0
    threads: int | None = None


def train(
    net: Any, x: np.ndarray, y: np.ndarray, config: TrainConfig, on_epoch: Callable[[int, Any], None] | None = None
) -> Any:
    """Train ``net`` in place on (trials, 1, channels, samples) inputs and integer labels; returns it in eval mode.

    Shuffling and dropout are seeded from ``config.seed``, so the same initial weights, data and
    config give the same network. ``on_epoch(epoch, net)`` is called after each epoch (1-based).
    """
    torch = _torch()
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 4 or x.shape[1] != 1:
        raise DataError(f"training inputs must be shaped (trials, 1, channels, samples); got {x.shape}.")
    if len(x) != len(y):
        raise DataError(f"training inputs have {len(x)} trials but {len(y)} labels.")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)  # dropout masks
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    targets = torch.from_numpy(y.astype(np.int64))
    generator = torch.Generator().manual_seed(config.seed)
    net.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2 and len(order) > 1:
                continue  # batch norm cannot train on a batch of one
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(inputs[idx]), targets[idx])
            loss.backward()
            optimiser.step()
            apply_max_norm(net)
        if on_epoch is not None:
            on_epoch(epoch + 1, net)
            net.train()
    net.eval()
    return net

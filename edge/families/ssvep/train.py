"""Two-stage training of the Guney network (bci.md §1.3): global on all subjects, then per subject.

Adam, constant learning rate 1e-4, L2 1e-3, shuffled every epoch, fixed epoch counts and no early
stopping, as in ``main.m``. Stage 2 copies the global weights and raises the first two dropouts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.families.ssvep.model import _torch, build_guney_net
from edge.families.torch_common import predict  # noqa: F401  (part of this module's API)


@dataclass
class TrainConfig:
    """Hyper-parameters of both stages; the defaults are the paper's (Benchmark)."""

    epochs: int = 1000
    batch_size: int = 100
    lr: float = 1e-4
    weight_decay: float = 1e-3
    finetune_epochs: int = 1000
    finetune_batch_size: int = 200
    finetune_dropout: float = 0.6
    seed: int = 0
    threads: int | None = None


def train_global(
    x: np.ndarray, y: np.ndarray, config: TrainConfig, *, classes: int = 40, on_epoch: Callable[[int, Any], None] | None = None
) -> Any:
    """Stage 1: train a fresh network on (trials, sub-bands, channels, samples) arrays."""
    torch = _torch()
    torch.manual_seed(config.seed)
    _, sub_bands, channels, samples = x.shape
    net = build_guney_net(channels=channels, samples=samples, sub_bands=sub_bands, classes=classes)
    _fit(net, x, y, config.epochs, config.batch_size, config, on_epoch)
    return net


def finetune(
    net: Any, x: np.ndarray, y: np.ndarray, config: TrainConfig, *, on_epoch: Callable[[int, Any], None] | None = None
) -> Any:
    """Stage 2: a copy of the global network fine-tuned on one subject's trials."""
    torch = _torch()
    torch.manual_seed(config.seed + 1)
    tuned = copy.deepcopy(net)
    tuned.set_dropout(config.finetune_dropout, tuned.drop3.p)
    _fit(tuned, x, y, config.finetune_epochs, config.finetune_batch_size, config, on_epoch)
    return tuned


def _fit(
    net: Any,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    config: TrainConfig,
    on_epoch: Callable[[int, Any], None] | None,
) -> None:
    torch = _torch()
    if config.threads:
        torch.set_num_threads(config.threads)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # The sub-band layer has no bias to freeze; MATLAB's frozen bias is simply absent here.
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    targets = torch.from_numpy(np.asarray(y, dtype=np.int64))
    generator = torch.Generator().manual_seed(config.seed)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(inputs[idx]), targets[idx])
            loss.backward()
            optimiser.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, net)
            net.train()
    net.eval()

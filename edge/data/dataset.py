"""Dataset: trials in a model's input layout, their labels as stored, and where each trial came from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Dataset:
    """Trials in the model's input layout, their labels and the group (subject/block) of each."""

    name: str
    x: np.ndarray
    y: np.ndarray | None
    groups: np.ndarray = field(default_factory=lambda: np.array([]))
    raw: np.ndarray | None = None  # unfiltered windows (trials, channels, samples), for the classic baselines
    stim_freqs: list[float] | None = None
    sample_rate: float | None = None
    notes: list[str] = field(default_factory=list)  # what the reader assumed or left out, for the user to see

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield (x, y) batches in order."""
        for start in range(0, len(self.x), batch_size):
            stop = start + batch_size
            yield self.x[start:stop], None if self.y is None else self.y[start:stop]

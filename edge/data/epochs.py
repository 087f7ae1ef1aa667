"""EEGEpochs: labelled trials from any recording, before they are shaped for a model."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.errors import DataError


def round_half_away(value: float) -> int:
    """Round halves away from zero, as MATLAB does (BETA's 157.5 -> 158)."""
    return int(np.sign(value) * np.floor(abs(value) + 0.5))


@dataclass
class EEGEpochs:
    """Trials (trials, channels, samples) in microvolts with labels and where each trial came from."""

    x: np.ndarray
    y: np.ndarray
    sample_rate: float
    channels: list[str]
    classes: list[str]
    subject: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    session: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    block: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    onset_sample: int = 0
    stim_freqs: list[float] | None = None

    def __post_init__(self) -> None:
        n = len(self.x)
        if self.x.ndim != 3:
            raise DataError(f"epochs need x shaped (trials, channels, samples); got shape {self.x.shape}.")
        if len(self.y) != n:
            raise DataError(f"epochs have {n} trials but {len(self.y)} labels.")
        if self.x.shape[1] != len(self.channels):
            raise DataError(f"epochs have {self.x.shape[1]} channels but {len(self.channels)} channel names.")
        if not len(self.subject):
            self.subject = np.ones(n, dtype=np.int64)
        if not len(self.session):
            self.session = np.full(n, "1")
        if not len(self.block):
            self.block = np.zeros(n, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.x)

    def select(self, mask: np.ndarray) -> EEGEpochs:
        """The trials where ``mask`` is true (or the given indices)."""
        return EEGEpochs(
            self.x[mask], self.y[mask], self.sample_rate, list(self.channels), list(self.classes),
            self.subject[mask], self.session[mask], self.block[mask], self.onset_sample, self.stim_freqs,
        )

    def window(self, start_s: float, length_s: float) -> np.ndarray:
        """Samples [start, start + length) seconds after stimulus onset: (trials, channels, samples)."""
        start = self.onset_sample + round_half_away(start_s * self.sample_rate)
        n = round_half_away(length_s * self.sample_rate)
        if n < 1 or start < 0 or start + n > self.x.shape[-1]:
            raise DataError(
                f"a {length_s} s window starting {start_s} s after onset does not fit in trials of "
                f"{self.x.shape[-1] / self.sample_rate:g} s (onset at {self.onset_sample / self.sample_rate:g} s)."
            )
        return self.x[..., start : start + n]

    def pick_channels(self, names: list[str]) -> EEGEpochs:
        """Only the named channels, in the given order (matched case-insensitively)."""
        upper = [c.upper() for c in self.channels]
        missing = [n for n in names if n.upper() not in upper]
        if missing:
            raise DataError(f"channels {missing} are not in the recording (it has {', '.join(self.channels)}).")
        idx = [upper.index(n.upper()) for n in names]
        return EEGEpochs(
            self.x[:, idx], self.y, self.sample_rate, [self.channels[i] for i in idx], list(self.classes),
            self.subject, self.session, self.block, self.onset_sample, self.stim_freqs,
        )

    @staticmethod
    def concatenate(parts: list[EEGEpochs]) -> EEGEpochs:
        """Join epochs from several files that share rate, channels and classes."""
        if not parts:
            raise DataError("no epochs to join.")
        first = parts[0]
        for part in parts[1:]:
            if part.sample_rate != first.sample_rate or part.channels != first.channels or part.classes != first.classes:
                raise DataError("cannot join recordings with different sample rates, channels or classes.")
        return EEGEpochs(
            np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]), first.sample_rate,
            list(first.channels), list(first.classes), np.concatenate([p.subject for p in parts]),
            np.concatenate([p.session for p in parts]), np.concatenate([p.block for p in parts]),
            first.onset_sample, first.stim_freqs,
        )

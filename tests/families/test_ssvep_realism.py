"""The synthetic generator behaves like real SSVEP data for the reference recipe (foundation Done-when).

Trains the reference architecture with a shortened schedule on synthetic subjects 1-6 and tests on
held-out subjects 31-33: accuracy must rise with the window length, and fall to chance (2.5 %) when
the SSVEP is switched off.
"""

from __future__ import annotations

import pytest

from edge.families.ssvep.reference import build_reference

TRAIN = "synthetic-ssvep:subjects=1-6,seed=0{extra}"
HELDOUT = "synthetic-ssvep:subjects=31-33,seed=0{extra}"


def _heldout_accuracy(window_s: float, extra: str = "") -> float:
    _, accuracy = build_reference(
        epochs=20, window_s=window_s, train_data=TRAIN.format(extra=extra),
        heldout_data=HELDOUT.format(extra=extra), log=False,
    )
    return accuracy


@pytest.mark.slow
def test_accuracy_rises_with_window_length() -> None:
    accuracies = [_heldout_accuracy(w) for w in (0.2, 0.4, 0.8)]
    assert accuracies[0] > 0.08  # well above chance even at 0.2 s
    assert accuracies[0] < accuracies[1] < accuracies[2], accuracies


@pytest.mark.slow
def test_without_ssvep_accuracy_is_chance() -> None:
    accuracy = _heldout_accuracy(0.4, extra=",snr=0")
    # 40 targets, 720 held-out trials: chance is 2.5 %, and 5.5 % is beyond its 99.9 % binomial bound.
    assert accuracy < 0.055

from __future__ import annotations

import numpy as np
import pytest

from edge.evaluate import label_metrics
from edge.metrics import balanced_accuracy, cohen_kappa, confusion_matrix, mean_sd


def test_confusion_balanced_accuracy_and_kappa_by_hand() -> None:
    y = np.array([0, 0, 0, 0, 1, 1])
    predicted = np.array([0, 0, 0, 1, 1, 0])
    confusion = confusion_matrix(y, predicted, 2)
    assert confusion.tolist() == [[3, 1], [1, 1]]
    assert balanced_accuracy(confusion) == pytest.approx((3 / 4 + 1 / 2) / 2)
    # observed 4/6, expected (4*4 + 2*2)/36 = 20/36 -> kappa = (24/36 - 20/36) / (16/36) = 0.25
    assert cohen_kappa(confusion) == pytest.approx(0.25)
    assert cohen_kappa(np.diag([5, 5])) == pytest.approx(1.0)


def test_mean_sd() -> None:
    assert mean_sd([0.5, 0.7]) == pytest.approx((0.6, np.std([0.5, 0.7], ddof=1)))
    assert mean_sd([0.5]) == (0.5, 0.0)


def test_label_metrics_per_subject_rows_and_itr() -> None:
    y = np.tile(np.arange(40), 4)
    predicted = y.copy()
    predicted[:40] = (predicted[:40] + 1) % 40  # subject S1 block 1 all wrong
    groups = np.array(["S1/B1"] * 40 + ["S1/B2"] * 40 + ["S2/B1"] * 40 + ["S2/B2"] * 40)
    m = label_metrics(y, predicted, 40, groups, itr_window_s=0.4)
    assert m["per_subject"]["S1"]["accuracy"] == 0.5 and m["per_subject"]["S2"]["accuracy"] == 1.0
    assert m["accuracy_over_subjects"]["mean"] == pytest.approx(0.75)
    assert m["itr_bits_per_min"]["groups"] == 4
    assert m["itr_bits_per_min"]["value"] == pytest.approx(3 * 354.795 / 4, abs=0.01)
    assert m["per_subject"]["S2"]["itr_bits_per_min"] == pytest.approx(354.795, abs=0.01)

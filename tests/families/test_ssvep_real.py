"""Classic SSVEP methods on the real SSVEPExo recordings in ../shared/data (issue: BCI data and models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.data.ssvep_exo import read_ssvep_exo
from edge.evaluate import baseline_predictions
from edge.families.ssvep.baselines import CCA

EXO = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ssvep_exo"

pytestmark = pytest.mark.skipif(not EXO.is_dir(), reason="../shared/data is not beside this checkout")


@pytest.fixture(scope="module")
def epochs():
    return read_ssvep_exo(EXO)


def test_recordings_load_as_three_frequency_classes(epochs) -> None:
    assert epochs.x.shape == (192, 8, 1280)
    assert sorted(set(epochs.subject.tolist())) == [1, 2, 3, 4]
    assert epochs.stim_freqs == [13.0, 21.0, 17.0]
    assert np.bincount(epochs.y).tolist() == [64, 64, 64]


def test_cca_reaches_70_percent_on_the_three_classes(epochs) -> None:
    # README of the data: CCA, 5-45 Hz, 0.5-4.5 s, 2 harmonics reaches about 80 % over 12 subjects.
    window = epochs.window(0.5, 4.0)
    cca = CCA(epochs.stim_freqs, epochs.sample_rate, harmonics=2, band=(5.0, 45.0)).fit()
    per_subject = [float(np.mean(cca.predict(window[epochs.subject == s]) == epochs.y[epochs.subject == s]))
                   for s in (1, 2, 3, 4)]
    assert np.mean(per_subject) >= 0.70, per_subject
    assert min(per_subject) > 1 / 3  # every subject above chance


def test_fbcca_on_the_real_recordings(epochs) -> None:
    predicted = baseline_predictions("fbcca", epochs.window(0.5, 4.0), epochs.y, np.array([]), epochs.stim_freqs,
                                     epochs.sample_rate)
    assert np.mean(predicted == epochs.y) >= 0.70

"""Per-subject SSVEP results on the real SSVEPExo recordings: classic methods beside a per-subject network.

    .venv/bin/python benchmarks/ssvep_exo.py [--epochs 40]

CCA and FBCCA are training-free (0.5-4.5 s window). eTRCA and the Guney network are trained on one
session and tested on the other (each trial tested once). The network sees 1 s windows every 0.5 s
of the 0.5-4.5 s trial; a trial's class is the mean of its windows' logits.

Measured 2026-11 (2 cores): CCA 79.2 ± 24.6 %, FBCCA 84.9 ± 18.3 %, eTRCA 34.4 ± 2.7 %, network
30.7 ± 8.7 % (chance 33.3 %). The stimulation of this dataset is not phase-locked to the event markers
(inter-trial phase-locking value at the stimulus frequency 0.09-0.21 on Oz for subject 3, against
0.74-0.91 on the synthetic data), so the template method and the phase-sensitive Guney network,
which both rely on phase-locked responses, stay at chance while the phase-free CCA methods work.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edge.data.ssvep_exo import read_ssvep_exo
from edge.evaluate import baseline_predictions
from edge.families.ssvep.baselines import CCA
from edge.families.ssvep.per_subject import cross_session_accuracy
from edge.families.ssvep.train import TrainConfig

EXO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ssvep_exo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=EXO)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    epochs = read_ssvep_exo(args.data)
    window = epochs.window(0.5, 4.0)
    groups = np.array([f"S{s}/B{b + 1}" for s, b in zip(epochs.subject, epochs.block, strict=True)])
    cca = CCA(epochs.stim_freqs, epochs.sample_rate, harmonics=2, band=(5.0, 45.0)).fit().predict(window)
    fbcca = baseline_predictions("fbcca", window, epochs.y, groups, epochs.stim_freqs, epochs.sample_rate)
    etrca = baseline_predictions("etrca", window, epochs.y, groups, epochs.stim_freqs, epochs.sample_rate)
    config = TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=32, weight_decay=1e-3, seed=0)
    print(f"{'subject':<8} {'CCA %':>6} {'FBCCA %':>8} {'eTRCA %':>8} {'network %':>10} {'train s':>8}")
    rows = []
    for subject in sorted(set(epochs.subject.tolist())):
        own = epochs.subject == subject
        start = time.time()
        net = cross_session_accuracy(epochs.select(own), config, starts_s=np.arange(0.5, 3.51, 0.5), window_s=1.0)
        row = [100 * np.mean((p == epochs.y)[own]) for p in (cca, fbcca, etrca)] + [100 * net]
        rows.append(row)
        print(f"S{subject:<7} {row[0]:6.1f} {row[1]:8.1f} {row[2]:8.1f} {row[3]:10.1f} {time.time() - start:8.0f}")
    mean, sd = np.mean(rows, axis=0), np.std(rows, axis=0, ddof=1)
    print("mean±SD  " + " ".join(f"{m:5.1f}±{s:4.1f}" for m, s in zip(mean, sd, strict=True)))
    print("chance 33.3 %; 3 classes (13, 17, 21 Hz), 48 trials per subject over 2 sessions")


if __name__ == "__main__":
    main()

"""Accuracy and ITR of CCA, FBCCA and eTRCA on synthetic Benchmark subjects, window 0.2..1.0 s.

    .venv/bin/python benchmarks/ssvep_baselines.py [--subjects 1-4] [--seed 0] [--snr 1.0]

9 occipital channels, 0.14 s latency. CCA and FBCCA are training-free and scored on every trial;
eTRCA is trained and tested leave-one-block-out (6 folds). Accuracy is the mean over all trials
(± SD over subjects); ITR (Wolpaw, t = T + 0.5 s) is the mean of per-(subject, block) ITRs, Guney's
convention (bci.md §1.4, §2).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edge.data.benchmark import BENCHMARK_FREQS, N_TARGETS, OCCIPITAL_9, SAMPLE_RATE
from edge.data.synthetic_ssvep import generate_subject
from edge.families.ssvep.baselines import CCA, ETRCA, FBCCA, ssvep_windows
from edge.families.ssvep.metrics import itr_bits_per_min

METHODS = ("cca", "fbcca", "etrca")
WINDOWS = tuple(round(0.1 * i, 1) for i in range(2, 11))


def parse_subjects(text: str) -> list[int]:
    """'1-4' or '1,3,5' or '1-3,7' to a list of subject numbers."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def correct_by_method(data: np.ndarray, window_s: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-trial correctness of each method at one window, and each trial's block."""
    x, y, block = ssvep_windows(data, window_s, channel_idx=range(data.shape[0]))
    correct = {
        "cca": CCA(BENCHMARK_FREQS, SAMPLE_RATE).fit().predict(x) == y,
        "fbcca": FBCCA(BENCHMARK_FREQS, SAMPLE_RATE).fit().predict(x) == y,
        "etrca": np.empty(y.shape, dtype=bool),
    }
    for held_out in np.unique(block):
        test = block == held_out
        model = ETRCA(SAMPLE_RATE).fit(x[~test], y[~test])
        correct["etrca"][test] = model.predict(x[test]) == y[test]
    return correct, block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", default="1-4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snr", type=float, default=1.0)
    args = parser.parse_args()
    subjects = parse_subjects(args.subjects)

    start = time.time()
    # acc[method][window] -> per-subject accuracies; itr[method][window] -> per-(subject, block) ITRs.
    acc = {m: {w: [] for w in WINDOWS} for m in METHODS}
    itr = {m: {w: [] for w in WINDOWS} for m in METHODS}
    for subject in subjects:
        data = generate_subject(subject, args.seed, snr=args.snr, channels=OCCIPITAL_9)
        for window in WINDOWS:
            correct, block = correct_by_method(data, window)
            for method, hits in correct.items():
                acc[method][window].append(float(hits.mean()))
                itr[method][window].extend(
                    itr_bits_per_min(float(hits[block == b].mean()), N_TARGETS, window)
                    for b in np.unique(block)
                )
        per_subject = "  ".join(f"{m} {100 * acc[m][1.0][-1]:.1f}" for m in METHODS)
        print(f"subject {subject}: accuracy at 1.0 s  {per_subject}", flush=True)

    print(f"\nsynthetic subjects {args.subjects} (seed {args.seed}, snr {args.snr}), 9 occipital channels; "
          "acc % (± SD over subjects), ITR bits/min (mean of per-block ITRs, t = T + 0.5 s)")
    header = f"{'T (s)':>5}  " + "  ".join(f"{m + ' acc':>14} {m + ' ITR':>10}" for m in METHODS)
    print(header)
    print("-" * len(header))
    for window in WINDOWS:
        cells = []
        for method in METHODS:
            a = 100 * np.array(acc[method][window])
            cells.append(f"{a.mean():7.1f} ±{a.std():5.1f} {np.mean(itr[method][window]):10.1f}")
        print(f"{window:5.1f}  " + "  ".join(cells))
    print(f"\n{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()

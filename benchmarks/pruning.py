"""Sparsification of the reference SSVEP model, measured in one run: MACs, parameters, accuracy, CPU latency.

    .venv/bin/python benchmarks/pruning.py [--subjects 31-35] [--runs 300] [--finetune-epochs 10]

Variants: fp32, 50 % unstructured magnitude (per layer), 2:4, and 50 % channel pruning of the two
time convolutions with and without fine-tuning (fine-tuning needs PyTorch; --finetune-epochs 0
skips it). Latency is the median of single-trial runs at batch 1 on the CPU target (one thread);
every figure is also printed as a ratio to the fp32 model timed in the same process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from converters.prune_channels import PruneChannels, finetune_pruned_ssvep
from converters.sparsify import PruneMagnitude, PruneNM, sparsity_report
from devices.cpu import median_latency_ms
from edge.artifact import read_artifact
from edge.data.registry import load_dataset
from edge.evaluate import predict
from edge.summary import summarize
from edge.zoo import zoo_path

TIME_CONVS = ["/time1/Conv", "/time2/Conv"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", default="31-35")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    args = parser.parse_args()

    reference = read_artifact(zoo_path("ssvep-guney-9ch-0.4s"))
    heldout = load_dataset(f"synthetic-ssvep:subjects={args.subjects},seed=0", reference.meta)
    channels = PruneChannels(ratio=0.5, nodes=TIME_CONVS)(reference)
    variants = [
        ("fp32", reference),
        ("50 % unstructured (per layer)", PruneMagnitude(sparsity=0.5, scope="layer")(reference)),
        ("50 % unstructured (global)", PruneMagnitude(sparsity=0.5, scope="global")(reference)),
        ("2:4", PruneNM(n=2, m=4)(reference)),
        ("50 % channels time1+time2", channels),
    ]
    if args.finetune_epochs > 0:
        start = time.time()
        tuned = finetune_pruned_ssvep(channels, epochs=args.finetune_epochs, lr=args.finetune_lr)
        print(f"fine-tuned {args.finetune_epochs} epochs (lr {args.finetune_lr:g}) on "
              f"{reference.meta.extra['training_data']} in {time.time() - start:.0f} s")
        variants.append((f"  + fine-tune {args.finetune_epochs} ep", tuned))

    fp32_pred = predict(reference, heldout.x).argmax(1)
    base = summarize(reference.model)
    base_ms = median_latency_ms(reference, heldout.x[0], args.runs)
    print(f"{len(heldout)} held-out trials ({args.subjects}); fp32: {base.macs:,} MACs, {base.parameters:,} parameters, "
          f"p50 {base_ms:.3f} ms")
    header = (f"{'variant':<31} {'MACs':>10} {'params':>8} {'zeros %':>7} {'acc %':>6} {'drop':>5} {'agree %':>7} "
              f"{'p50 ms':>7} {'MACs x':>6} {'speedup':>7}")
    print(header)
    acc0 = float(np.mean(fp32_pred == heldout.y))
    for name, artifact in variants:
        s = summarize(artifact.model)
        report = sparsity_report(artifact.model)
        zeros = sum(r["zeros"] for r in report) / sum(r["elements"] for r in report)
        pred = predict(artifact, heldout.x).argmax(1)
        acc = float(np.mean(pred == heldout.y))
        ms = base_ms if artifact is reference else median_latency_ms(artifact, heldout.x[0], args.runs)
        print(f"{name:<31} {s.macs:>10,} {s.parameters:>8,} {100 * zeros:7.1f} {100 * acc:6.2f} "
              f"{100 * (acc0 - acc):5.2f} {100 * np.mean(pred == fp32_pred):7.2f} {ms:7.3f} "
              f"{s.macs / base.macs:6.3f} {base_ms / ms:7.2f}")


if __name__ == "__main__":
    main()

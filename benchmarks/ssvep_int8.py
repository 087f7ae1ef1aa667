"""fp32 vs int8 for the reference SSVEP model, measured in one run: accuracy, agreement, size, latency.

    .venv/bin/python benchmarks/ssvep_int8.py [--subjects 31-35] [--runs 500]

Prints int8 variants (with and without the float sub-band layer, three calibration methods) as
ratios against the fp32 model timed in the same process.
"""

from __future__ import annotations

import argparse

import numpy as np

from converters.quantize import QuantizeInt8
from devices.cpu import median_latency_ms
from edge.artifact import read_artifact
from edge.data.registry import load_dataset
from edge.evaluate import predict
from edge.zoo import zoo_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", default="31-35")
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()

    reference = read_artifact(zoo_path("ssvep-guney-9ch-0.4s"))
    heldout = load_dataset(f"synthetic-ssvep:subjects={args.subjects},seed=0", reference.meta)
    calibration = load_dataset(reference.meta.extra["calibration_data"], reference.meta).x
    fp32_pred = predict(reference, heldout.x).argmax(1)
    fp32_acc = float(np.mean(fp32_pred == heldout.y))
    fp32_ms = median_latency_ms(reference, heldout.x[0], args.runs)
    fp32_size = len(reference.to_bytes())
    print(f"fp32: accuracy {100 * fp32_acc:.2f} %  p50 {fp32_ms:.3f} ms  size {fp32_size / 1024:.1f} KiB "
          f"({len(heldout)} held-out trials)")
    print(f"{'variant':<34} {'acc %':>7} {'drop pts':>8} {'agree %':>8} {'size':>6} {'p50':>6}")
    for keep_float in (True, False):
        for method in ("minmax", "percentile", "entropy"):
            exclude = list(reference.meta.extra["keep_float"]) if keep_float else []
            int8 = QuantizeInt8(calibrate=method, exclude=exclude)(reference, calibration)
            pred = predict(int8, heldout.x).argmax(1)
            acc = float(np.mean(pred == heldout.y))
            ms = median_latency_ms(int8, heldout.x[0], args.runs)
            name = f"int8 {method}" + (" +float sub-band" if keep_float else "")
            print(f"{name:<34} {100 * acc:7.2f} {100 * (fp32_acc - acc):8.2f} {100 * np.mean(pred == fp32_pred):8.2f} "
                  f"{len(int8.to_bytes()) / fp32_size:6.3f} {ms / fp32_ms:6.3f}")


if __name__ == "__main__":
    main()

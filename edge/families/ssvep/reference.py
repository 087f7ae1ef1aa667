"""Train and export the shipped reference SSVEP model (stage 1 of Guney's recipe on synthetic subjects).

    python -m edge.families.ssvep.reference --output edge/zoo/ssvep_guney_9ch_0.4s.onnx

The global network is what a new user without calibration data of their own gets; the per-subject
fine-tune (stage 2) is :func:`edge.families.ssvep.train.finetune`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edge.artifact import write_artifact
from edge.data.registry import load_dataset
from edge.families.ssvep.export import export_onnx, ssvep_meta
from edge.families.ssvep.train import TrainConfig, predict, train_global

TRAIN_DATA = "synthetic-ssvep:subjects=1-24,seed=0"
HELDOUT_DATA = "synthetic-ssvep:subjects=31-35,seed=0"
CALIBRATION_DATA = "synthetic-ssvep:subjects=1+2,seed=0,blocks=2"
# Keeping the 3-weight sub-band combination layer in float avoids quantizing the raw EEG input.
KEEP_FLOAT = ["/sub_band/Conv"]


def build_reference(epochs: int, window_s: float = 0.4, train_data: str = TRAIN_DATA, seed: int = 0,
                    heldout_data: str = HELDOUT_DATA, log: bool = True):
    """Train the global network and return (artifact, held-out accuracy)."""
    meta = ssvep_meta(window_s=window_s)
    train = load_dataset(train_data, meta)
    heldout = load_dataset(heldout_data, meta)
    config = TrainConfig(epochs=epochs, seed=seed)
    start = time.time()

    def report(epoch: int, net) -> None:
        if epoch % 10 == 0:
            acc = float(np.mean(predict(net, heldout.x).argmax(1) == heldout.y))
            print(f"epoch {epoch}/{epochs}  {time.time() - start:.0f} s  held-out accuracy {acc:.3f}", flush=True)

    net = train_global(train.x, train.y, config, on_epoch=report if log else None)
    accuracy = float(np.mean(predict(net, heldout.x).argmax(1) == heldout.y))
    meta.extra = {
        "training_data": train_data,
        "heldout_data": heldout_data,
        "calibration_data": CALIBRATION_DATA,
        "keep_float": KEEP_FLOAT,
        "heldout_accuracy": accuracy,
    }
    params = {"stage": "global", "epochs": epochs, "batch_size": config.batch_size, "lr": config.lr,
              "weight_decay": config.weight_decay, "seed": seed, "data": train_data}
    return export_onnx(net, meta, params=params), accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--window", type=float, default=0.4)
    args = parser.parse_args()
    artifact, accuracy = build_reference(args.epochs, args.window)
    write_artifact(artifact, args.output)
    print(f"held-out accuracy {accuracy:.4f}; wrote {args.output}")


if __name__ == "__main__":
    main()

"""Train and export the shipped reference EEG classifier: EEGNet-8,2 on PhysioNet eegmmidb subject 1.

    python -m edge.families.eeg.reference --output edge/zoo/eegnet_mmi_s001.onnx

Task: imagined movement of both fists (T1) vs both feet (T2), runs R06, R10, R14 of subject 1.
Trained on R06 and R10, held out R14 (the subject's last run, never seen in training). 21
sensorimotor channels (FC, C and CP rows), 8-30 Hz band-pass, 4 s from the cue at 160 Hz, per-channel
standardisation with statistics of the training runs. About half a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import Artifact, write_artifact
from edge.data.eeg_files import read_eeg_file
from edge.data.epochs import EEGEpochs
from edge.families.eeg.export import eeg_meta, export_onnx
from edge.families.eeg.models import _torch, build_eegnet
from edge.families.eeg.train import TrainConfig, predict, train

DATASET = "eegmmidb_s001"
CLASSES = {"T1": "both fists", "T2": "both feet"}
TRAIN_RUNS = ["R06", "R10"]
HELDOUT_RUNS = ["R14"]
# The FC, C and CP rows over sensorimotor cortex: the first 21 channels of the eegmmidb montage.
# Leaving out the frontal rows keeps eye movements out of a "motor imagery" decision, and the
# temporal convolution costs a third of what it costs on all 64 channels.
CHANNELS = ["FC5", "FC3", "FC1", "FCz", "FC2", "FC4", "FC6", "C5", "C3", "C1", "Cz", "C2", "C4", "C6",
            "CP5", "CP3", "CP1", "CPz", "CP2", "CP4", "CP6"]
BAND = (8.0, 30.0)
TMIN_S = 0.0
WINDOW_S = 4.0
KERN_LENGTH = 80  # sample rate / 2, as arl-eegmodels advises (64 at 128 Hz)
# Plain int8 keeps the held-out accuracy (EEGNET_MODEL_CARD.md), so nothing needs to stay in float.
KEEP_FLOAT: list[str] = []
# Relative to the repository root, where ../shared/data sits beside the checkout.
CALIBRATION_DATA = "../shared/data/eegmmidb_s001:runs=6+10"


def default_data_dir() -> Path:
    """The shared real-data folder beside the repository (``../shared/data``)."""
    return Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def load_runs(runs: Sequence[str], data_dir: str | os.PathLike[str] | None = None) -> EEGEpochs:
    """Trials of the reference task from the named runs of subject 1, preprocessed as the model expects."""
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    parts = [
        read_eeg_file(folder / DATASET / f"S001{run}.edf", classes=CLASSES, tmin=TMIN_S, tmax=TMIN_S + WINDOW_S,
                      l_freq=BAND[0], h_freq=BAND[1], channels=CHANNELS, subject=1, block=int(run[1:]))
        for run in runs
    ]
    return EEGEpochs.concatenate(parts)


def channel_statistics(epochs: EEGEpochs) -> dict[str, list[float]]:
    """Per-channel mean and standard deviation (microvolts) over all trials and samples."""
    x = epochs.x.astype(np.float64)
    return {"mean": x.mean(axis=(0, 2)).tolist(), "std": x.std(axis=(0, 2)).tolist()}


def model_input(epochs: EEGEpochs, standardize: dict[str, list[float]]) -> np.ndarray:
    """Standardised trials in the model's input layout (trials, 1, channels, samples), float32."""
    mean = np.asarray(standardize["mean"])[None, :, None]
    std = np.asarray(standardize["std"])[None, :, None]
    return ((epochs.x - mean) / std)[:, None].astype(np.float32)


def build_reference(
    epochs: int = 300,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    log: bool = True,
) -> tuple[Artifact, dict[str, Any]]:
    """Train on the training runs and return (artifact, facts: accuracy, trial counts, training seconds)."""
    torch = _torch()
    train_set = load_runs(TRAIN_RUNS, data_dir)
    heldout = load_runs(HELDOUT_RUNS, data_dir)
    stats = channel_statistics(train_set)
    x_train, x_heldout = model_input(train_set, stats), model_input(heldout, stats)
    config = TrainConfig(epochs=epochs, batch_size=16, lr=1e-3, seed=seed, threads=threads)
    torch.manual_seed(seed)  # initial weights
    net = build_eegnet(len(CHANNELS), x_train.shape[-1], len(CLASSES), kern_length=KERN_LENGTH)
    start = time.perf_counter()

    def report(epoch: int, net: Any) -> None:
        if log and epoch % 50 == 0:
            acc = float(np.mean(predict(net, x_heldout).argmax(1) == heldout.y))
            print(f"epoch {epoch}/{epochs}  {time.perf_counter() - start:.0f} s  held-out accuracy {acc:.3f}", flush=True)

    train(net, x_train, train_set.y, config, on_epoch=report)
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(predict(net, x_heldout).argmax(1) == heldout.y))
    meta = eeg_meta(CHANNELS, train_set.sample_rate, WINDOW_S, list(CLASSES.values()), tmin_s=TMIN_S, band=BAND,
                    standardize=stats, arch="eegnet-8,2")
    meta.extra = {
        "dataset": "PhysioNet EEG Motor Movement/Imagery (eegmmidb), subject 1",
        "task": "imagined both fists (T1) vs both feet (T2)",
        "training_runs": list(TRAIN_RUNS),
        "heldout_runs": list(HELDOUT_RUNS),
        "training_trials": len(train_set),
        "heldout_trials": len(heldout),
        "heldout_accuracy": accuracy,
        "keep_float": list(KEEP_FLOAT),
        "calibration_data": CALIBRATION_DATA,
        "event_codes": list(CLASSES),
    }
    params = {"arch": "eegnet-8,2", "kern_length": KERN_LENGTH, "epochs": epochs, "batch_size": config.batch_size,
              "lr": config.lr, "weight_decay": config.weight_decay, "seed": seed, "optimizer": "adam",
              "max_norm": {"spatial": 1.0, "classifier": 0.25}, "data": f"{DATASET} {'+'.join(TRAIN_RUNS)}"}
    facts = {"heldout_accuracy": accuracy, "heldout_trials": len(heldout), "training_trials": len(train_set),
             "training_seconds": seconds}
    return export_onnx(net, meta, params), facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None, help="folder holding eegmmidb_s001/ (default ../shared/data)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    artifact, facts = build_reference(args.epochs, args.seed, args.data, args.threads)
    write_artifact(artifact, args.output)
    correct = round(facts["heldout_accuracy"] * facts["heldout_trials"])
    print(f"held-out accuracy {facts['heldout_accuracy']:.4f} ({correct}/{facts['heldout_trials']}); "
          f"trained in {facts['training_seconds']:.0f} s; wrote {args.output}")


if __name__ == "__main__":
    main()

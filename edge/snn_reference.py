"""Build the shipped reference spiking network: train on delta-encoded synthetic SSVEP, export NIR, import it back.

    python -m edge.snn_reference --output edge/zoo/snn_ssvep_delta.onnx
    python -m edge.snn_reference --spikes synthetic-ssvep:subjects=31-31 --output spikes.npz   # its input spikes

The network is trained in PyTorch with surrogate gradients (``edge.families.snn.train``), written as a NIR graph
(Affine + LIF hidden layers, Affine + LI readout; ``tau = dt / (1 - beta)``, ``r = tau / dt``, snnTorch's
convention), read back through ``converters.nir_import`` and lowered to the stateful ONNX step graph; the NIR
file ships beside it. The script checks that the imported network decides like the PyTorch one.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import Preprocessing, write_artifact
from edge.data.benchmark import BENCHMARK_FREQS, OCCIPITAL_9
from edge.data.registry import load_epochs
from edge.data.spike_encoding import ssvep_spikes
from edge.families.snn.export import export_snn
from edge.families.snn.graph import Node, SpikingGraph
from edge.families.snn.simulate import simulate
from edge.families.snn.train import (
    REFERENCE_CONFIG,
    REFERENCE_ENCODING,
    REFERENCE_LATENCY_S,
    REFERENCE_WINDOW_S,
    predict_scores,
    train_snn,
)

TRAIN_DATA = "synthetic-ssvep:subjects=1-24,seed=0"
VALIDATION_DATA = "synthetic-ssvep:subjects=25-30,seed=0"
HELDOUT_DATA = "synthetic-ssvep:subjects=31-35,seed=0"
CALIBRATION_DATA = "synthetic-ssvep:subjects=1+2,seed=0,blocks=2"
SAMPLE_RATE = 250.0

log = logging.getLogger("edge")


def spikes_of(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """Input spikes [trials, T, features] and labels of an SSVEP source, encoded as the reference network reads."""
    epochs = load_epochs(spec, list(OCCIPITAL_9))
    raw = epochs.window(REFERENCE_LATENCY_S, REFERENCE_WINDOW_S)
    return ssvep_spikes(raw, epochs.sample_rate, REFERENCE_ENCODING), epochs.y


def write_spikes(spec: str, output: Path) -> None:
    """Write an .npz of the input spikes [trials, T, 143] and labels of an SSVEP source (through a temporary name)."""
    import io

    from edge.artifact import write_bytes_atomic

    x, y = spikes_of(spec)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    write_bytes_atomic(output, buffer.getvalue())
    log.info("wrote %s: x %s, y %s", output, x.shape, y.shape)


def spiking_graph(layers: list[dict[str, Any]], dt: float) -> SpikingGraph:
    """The trained layers as a NIR-shaped graph: Affine + LIF per hidden layer, Affine + LI readout."""
    nodes = {"input": Node("input", "input")}
    edges = []
    previous = "input"
    for i, layer in enumerate(layers):
        beta = np.minimum(np.asarray(layer["beta"], np.float64), 1 - 1e-7)  # beta = 1 would be an infinite tau
        tau = dt / (1 - beta)
        fc, neuron = (f"fc{i + 1}", f"lif{i + 1}") if layer["kind"] == "lif" else ("readout", "li")
        nodes[fc] = Node(fc, "affine", {"weight": layer["weight"], "bias": layer["bias"]})
        params = {"tau": tau, "r": tau / dt, "v_leak": np.zeros_like(tau)}
        if layer["kind"] == "lif":
            params.update(v_threshold=np.asarray(layer["threshold"], np.float64), v_reset=np.zeros_like(tau))
        nodes[neuron] = Node(neuron, layer["kind"], params)
        edges += [(previous, fc), (fc, neuron)]
        previous = neuron
    nodes["output"] = Node("output", "output")
    edges.append((previous, "output"))
    return SpikingGraph(nodes, edges, dt, (int(layers[0]["weight"].shape[1]),))


def main() -> None:
    from converters.nir_import import read_nir, write_nir
    from edge.families.snn.train import layers_of

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--epochs", type=int, default=REFERENCE_CONFIG.epochs)
    parser.add_argument("--spikes", metavar="DATASPEC",
                        help="Only write the input spikes (x) and labels (y) of an SSVEP source, encoded as the "
                             "network reads them, to OUTPUT (.npz), e.g. for the shipped .nir file.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.spikes:
        write_spikes(args.spikes, Path(args.output))
        return
    x_train, y_train = spikes_of(TRAIN_DATA)
    x_val, y_val = spikes_of(VALIDATION_DATA)
    x_test, y_test = spikes_of(HELDOUT_DATA)
    log.info("spikes: train %s, input rate %.3f", x_train.shape, x_train.mean())
    config = REFERENCE_CONFIG.__class__(**{**REFERENCE_CONFIG.__dict__, "epochs": args.epochs, "threads": 2})
    start = time.perf_counter()
    model, history = train_snn(x_train, y_train, x_val, y_val, config, classes=len(BENCHMARK_FREQS),
                               on_epoch=lambda e, h: log.info("epoch %d: %s", e, {k: v for k, v in h.items()
                                                                                   if not isinstance(v, list)}))
    seconds = time.perf_counter() - start
    dt = REFERENCE_ENCODING.get("downsample", 1) / SAMPLE_RATE
    output = Path(args.output)
    nir_path = output.with_suffix(".nir")
    write_nir(spiking_graph(layers_of(model), dt), nir_path)
    graph = read_nir(nir_path)  # the shipped network is what the NIR file says, read back through the importer
    torch_predictions = predict_scores(model, x_test).argmax(1)
    ours = simulate(graph, x_test)
    our_predictions = ours.y.mean(axis=1).argmax(1)
    accuracy = float(np.mean(our_predictions == y_test))
    record = {
        "heldout_accuracy": accuracy, "heldout_data": HELDOUT_DATA, "heldout_trials": len(y_test),
        "torch_heldout_accuracy": float(np.mean(torch_predictions == y_test)),
        "nir_vs_torch_agreement": float(np.mean(torch_predictions == our_predictions)),
        "heldout_spike_rates": {n: float(s.mean()) for n, s in ours.spikes.items()},
        "training_data": TRAIN_DATA, "validation_data": VALIDATION_DATA, "calibration_data": CALIBRATION_DATA,
        "training_seconds": round(seconds, 1), "best_epoch": history.get("best_epoch"),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()},
    }
    log.info("held-out accuracy %.4f (torch %.4f, agreement %.4f)", accuracy, record["torch_heldout_accuracy"],
             record["nir_vs_torch_agreement"])
    artifact = export_snn(graph, time_steps=int(x_test.shape[1]), labels=[f"{f:g} Hz" for f in BENCHMARK_FREQS],
                          encoding=REFERENCE_ENCODING, params={"file": nir_path.name, "dt": dt}, extra=record)
    artifact.meta.preprocessing = Preprocessing(sample_rate=SAMPLE_RATE, channels=list(OCCIPITAL_9),
                                                window_s=REFERENCE_WINDOW_S, latency_s=REFERENCE_LATENCY_S)
    write_artifact(artifact, output)
    log.info("wrote %s and %s", output, nir_path)


if __name__ == "__main__":
    main()

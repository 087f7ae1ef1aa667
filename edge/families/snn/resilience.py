"""Faults in a spiking network's stored weights and firing thresholds: accuracy and spike rate against BER.

The same fault models, seeded maps and bit-exact restore as the classifier campaigns (:mod:`edge.faults`). The
targets are the connection weights and biases (float or int8, as stored) and every neuron's threshold; they
become inputs of one Scan session over all T steps, each map is XORed into the fed arrays, the data are run and
the bits are XORed back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx

from edge.families.snn.lower import scan_model
from edge.faults.campaign import map_seed
from edge.faults.engine import create_session, weights_as_inputs
from edge.faults.models import FaultModel, FaultTargets, apply_fault_map, sample_fault_map, select_targets


def fault_target_names(model: onnx.ModelProto) -> tuple[str, ...]:
    """Weights and biases of the connections (not the fixed ones-kernels of sum pooling) and the thresholds."""
    weights = [n for n, _ in select_targets(model, FaultModel()) if not n.endswith(".ones")]
    thresholds = [t.name for t in model.graph.initializer if t.name.endswith(".threshold")]
    return tuple(weights + thresholds)


def spike_fault_curve(step: onnx.ModelProto, x: np.ndarray, y: np.ndarray, *, bers: Sequence[float], maps: int,
                      seed: int = 0, fault: FaultModel | None = None, batch: int = 256,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Accuracy, agreement with the fault-free predictions and mean spike rate at each BER (``maps`` maps each)."""
    base = fault or FaultModel()
    fault = FaultModel(kind=base.kind, bits=base.bits, burst=base.burst, targets=fault_target_names(step))
    targets = FaultTargets.from_model(step, fault)
    scan = scan_model(step)
    session = create_session(weights_as_inputs(scan, targets.names))
    names = [o.name for o in session.get_outputs()]

    def run() -> tuple[np.ndarray, float]:
        with np.errstate(invalid="ignore", over="ignore"):  # flipped exponent bits make inf/NaN membranes
            return _run()

    def _run() -> tuple[np.ndarray, float]:
        predictions, rates = [], []
        for start in range(0, len(x), batch):
            out = dict(zip(names, session.run(None, {"x": x[start:start + batch], **targets.arrays}), strict=True))
            predictions.append(out["y"].reshape(out["y"].shape[0], out["y"].shape[1], -1).mean(axis=1).argmax(1))
            spikes = [v for k, v in out.items() if k.startswith("spikes.")]
            rates.append(np.mean([s.mean() for s in spikes]) if spikes else 0.0)
        return np.concatenate(predictions), float(np.mean(rates))

    golden, clean_rate = run()
    clean_accuracy = float(np.mean(golden == y))
    points = []
    for b, ber in enumerate(bers):
        accuracies, agreements, rates, flips = [], [], [], []
        for m in range(maps):
            fault_map = sample_fault_map(targets, ber, map_seed(seed, b, m))
            restore = apply_fault_map(targets.arrays, fault_map)
            try:
                predicted, rate = run()
            finally:
                restore.undo()
            accuracies.append(float(np.mean(predicted == y)))
            agreements.append(float(np.mean(predicted == golden)))
            rates.append(rate)
            flips.append(len(fault_map))
        acc = np.array(accuracies)
        points.append({"ber": ber, "mean_flips": float(np.mean(flips)), "accuracy_mean": float(acc.mean()),
                       "accuracy_p10": float(np.percentile(acc, 10)), "agreement_mean": float(np.mean(agreements)),
                       "spike_rate_mean": float(np.mean(rates)), "spike_rate_max": float(np.max(rates))})
        if progress:
            progress(f"BER {ber:g}: accuracy {100 * acc.mean():.1f} %, spike rate {100 * np.mean(rates):.2f} %")
    return {"clean_accuracy": clean_accuracy, "clean_spike_rate": clean_rate, "bers": list(bers), "maps": maps,
            "seed": seed, "fault": fault.to_dict(), "targets": list(targets.names),
            "stored_bits": int(targets.stored_bits), "samples": len(x), "points": points}

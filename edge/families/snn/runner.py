"""Run a spiking step graph over time on any engine, and the figures the field reports from what it did.

An engine is anything with ``run_named(feeds) -> {output name: array}``: an onnxruntime session wrapper, LiteRT,
TFLite Micro, a deployed target. The host loop starts every state at zero and carries ``<state>.next`` back.
Synaptic operations follow NeuroBench: each connection node is run on 0/1 copies of the input it received
(recorded by the ``activity.<node>`` outputs) and of its weights, and the outputs are summed; inputs that were
all spikes count as accumulates (ACs), real-valued inputs as multiply-accumulates (MACs). The energy figure is
the usual estimate (Horowitz, ISSCC 2014, 45 nm: 0.9 pJ per accumulate, 4.6 pJ per multiply-accumulate) and
ignores memory and data movement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.artifact import Meta
from edge.families.snn.export import connection_node
from edge.families.snn.simulate import binary_ops

PJ_PER_AC = 0.9
PJ_PER_MAC = 4.6
ENERGY_SOURCE = "estimate: 0.9 pJ/AC, 4.6 pJ/MAC (Horowitz ISSCC 2014, 45 nm); memory and data movement ignored"

Engine = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class Recording:
    """Per-step outputs of a run: ``outputs[name]`` is [samples, T, *shape]."""

    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def y(self) -> np.ndarray:
        return self.outputs["y"]


def run_sequence(engine: Engine, meta: Meta, x: np.ndarray, *, batch: int = 64) -> Recording:
    """Run ``x`` [samples, T, *input] from the zero state, ``batch`` samples per call (1 for microcontrollers)."""
    states = meta.task["state"]
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), batch):
        chunk = np.asarray(x[start:start + batch], np.float32)
        state = {s["input"]: np.zeros((len(chunk), *s["shape"]), np.float32) for s in states}
        steps: dict[str, list[np.ndarray]] = {}
        for t in range(chunk.shape[1]):
            out = engine({"x": chunk[:, t], **state})
            state = {s["input"]: out[s["output"]] for s in states}
            for name, value in out.items():
                if not name.endswith(".next"):
                    steps.setdefault(name, []).append(value)
        for name, values in steps.items():
            parts.setdefault(name, []).append(np.stack(values, axis=1))
    return Recording({name: np.concatenate(values) for name, values in parts.items()})


def scores(recording: Recording) -> np.ndarray:
    """Class scores: the output averaged over the time steps."""
    return recording.y.reshape(recording.y.shape[0], recording.y.shape[1], -1).mean(axis=1)


def spike_rates(recording: Recording) -> dict[str, dict[str, float]]:
    """Per spiking node: spikes per neuron per step, and spikes per sample."""
    rates = {}
    for name, spikes in recording.outputs.items():
        if name.startswith("spikes."):
            rates[name[len("spikes."):]] = {"rate": float(spikes.mean()),
                                            "spikes_per_sample": float(spikes.reshape(len(spikes), -1).sum(1).mean()),
                                            "neurons": int(np.prod(spikes.shape[2:]))}
    return rates


def synaptic_operations(recording: Recording, meta: Meta, chunk: int = 4096) -> dict[str, Any]:
    """NeuroBench's effective ACs/MACs and dense operations per sample, per connection node and in total."""
    per_node = {}
    samples = None
    for name in meta.task.get("connections", {}):
        activity = recording.outputs.get(f"activity.{name}")
        if activity is None:
            continue
        samples = len(activity)
        node = connection_node(meta, name)
        flat = activity.reshape((-1,) + activity.shape[2:])
        active = dense = 0.0
        for start in range(0, len(flat), chunk):
            a, d = binary_ops(node, flat[start:start + chunk])
            active += a
            dense += d
        binary = bool(np.all((flat == 0) | (flat == 1)))
        per_node[name] = {"effective_acs" if binary else "effective_macs": active / samples,
                          "dense_macs": dense / samples, "spiking_input": binary}
    acs = sum(v.get("effective_acs", 0.0) for v in per_node.values())
    macs = sum(v.get("effective_macs", 0.0) for v in per_node.values())
    dense = sum(v["dense_macs"] for v in per_node.values())
    return {"per_node": per_node, "synops_per_sample": acs + macs, "effective_acs": acs, "effective_macs": macs,
            "dense_macs": dense, "time_steps": int(recording.y.shape[1]) if recording.outputs else 0,
            "energy": {"snn_nj": (acs * PJ_PER_AC + macs * PJ_PER_MAC) / 1000, "dense_ann_nj": dense * PJ_PER_MAC / 1000,
                       "source": ENERGY_SOURCE}}

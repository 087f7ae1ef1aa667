"""A spiking network as an artifact: the ONNX step graph with what running it needs in the metadata.

``meta.task`` of family ``snn`` holds the time step, the number of steps T of a sample, the readout (class =
argmax of the output averaged over the T steps), the state tensors (input name, output name, shape), the
spiking nodes, and per connection node the structure needed to count synaptic operations from its recorded
input (kind, weight initializer, stride/padding/...), and optionally the encoder that turns dense signals
into the input spikes.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from edge.artifact import Artifact, Meta, PassRecord, specs_from_graph
from edge.errors import DataError
from edge.families.snn.graph import Node, SpikingGraph
from edge.families.snn.lower import step_model
from edge.families.snn.simulate import Simulator

FAMILY = "snn"
READOUT = "mean over time steps, argmax"


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def export_snn(graph: SpikingGraph, *, time_steps: int, labels: list[str] | None = None,
               encoding: dict[str, Any] | None = None, source: str = "nir", params: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None) -> Artifact:
    """The step graph of ``graph`` as an artifact of family ``snn`` (``time_steps`` steps make one sample)."""
    if time_steps < 1:
        raise DataError(f"a spiking network needs at least one time step per sample; got {time_steps}.")
    model = step_model(graph)
    sim = Simulator(graph)
    connections = {}
    for name in graph.connection_nodes():
        node = graph.nodes[name]
        weight = np.asarray(node.params["weight"])
        connections[name] = {"kind": node.kind, "weight_shape": list(weight.shape),
                             "weight_nonzero": pack_mask(weight != 0),
                             **{k: _plain(v) for k, v in node.params.items() if k not in ("weight", "bias")}}
    task = {
        "kind": "classification", "dt": graph.dt, "time_steps": int(time_steps), "readout": READOUT,
        "input": "x", "output": "y",
        "state": [{"input": s.input, "output": s.output, "shape": list(s.shape)} for s in sim.slots],
        "spiking": {n: list(sim.shapes[n]) for n in graph.spiking_nodes()},
        "connections": connections,
        "neurons": int(sum(np.prod(sim.shapes[n]) for n in graph.spiking_nodes())),
        "parameters": graph.parameter_count(),
        "precision": {"weights": "float32", "state": "float32"},
    }
    if encoding:
        task["encoding"] = encoding
    inits = {t.name for t in model.graph.initializer}
    meta = Meta(family=FAMILY, task=task, inputs=specs_from_graph(model.graph.input, inits),
                outputs=specs_from_graph(model.graph.output), labels=list(labels or []),
                provenance=[PassRecord(f"import-{source}", params or {}, None)], extra=dict(extra or {}))
    return Artifact(model, meta)


def is_snn(artifact: Any) -> bool:
    """True for a spiking step-graph artifact (ours: family snn)."""
    meta = getattr(artifact, "meta", None)
    return meta is not None and meta.family == FAMILY and "state" in meta.task


def pack_mask(mask: np.ndarray) -> str:
    """A boolean array as base64 of its packed bits (how weight sparsity travels in the metadata)."""
    return base64.b64encode(np.packbits(mask.reshape(-1).astype(bool)).tobytes()).decode("ascii")


def unpack_mask(text: str, shape: list[int]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))
    return bits[: int(np.prod(shape))].reshape(shape).astype(bool)


def connection_node(meta: Meta, name: str) -> Node:
    """Connection node ``name`` rebuilt from the metadata, with its weights' non-zero pattern as the weight."""
    info = dict(meta.task["connections"][name])
    kind = info.pop("kind")
    mask = unpack_mask(info.pop("weight_nonzero"), info.pop("weight_shape"))
    return Node(name, kind, {**info, "weight": mask.astype(np.float32)})

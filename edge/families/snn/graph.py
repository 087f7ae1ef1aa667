"""A spiking network as the toolkit holds it: NIR's nodes and edges, flattened, in float arrays, with one time step.

NIR is continuous-time; each node here keeps NIR's own parameters and :func:`discretise` turns them into
the per-step constants of forward Euler with step ``dt`` (snnTorch's convention, the one NIR's
reference exporters round-trip):

* ``lif``/``li``: ``v = a*v + g*I + c`` with ``a = 1 - dt/tau``, ``g = dt/tau * r``, ``c = dt/tau * v_leak``;
* ``if``/``i``: ``v = v + g*I`` with ``g = dt * r``;
* ``cubalif``/``cubali``: first ``i_syn = alpha*i_syn + gs*S`` (``alpha = 1 - dt/tau_syn``,
  ``gs = dt/tau_syn * w_in``), then the ``lif``/``li`` update with ``i_syn`` as input;
* spiking kinds then fire ``z = v > v_threshold`` and reset ``v = v_reset`` where they fired (reset to a value,
  with the spike taken from the updated membrane);
* ``delay``: ``y[t] = x[t - round(delay/dt)]`` per element, zeros before the first input arrives.

A node with several incoming edges receives their sum. An edge that closes a cycle (recurrence) delivers its
source's output of the previous step, zeros at the first step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.errors import PassError

#: node kinds, NIR's class names in lower case
CONNECTIONS = ("affine", "linear", "conv1d", "conv2d")
STATELESS = CONNECTIONS + ("scale", "flatten", "sumpool2d", "avgpool2d", "threshold", "identity")
NEURONS = ("i", "if", "li", "lif", "cubali", "cubalif")
SPIKING = ("if", "lif", "cubalif", "threshold")
KINDS = ("input", "output", "delay") + STATELESS + NEURONS


@dataclass
class Node:
    """One node: its kind and NIR's parameters (numpy arrays, ints, tuples or strings)."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpikingGraph:
    """A flattened spiking network with one input and one output node, run with time step ``dt`` seconds."""

    nodes: dict[str, Node]
    edges: list[tuple[str, str]]
    dt: float
    input_shape: tuple[int, ...]
    dt_source: str = "given"  # where dt came from (the file's metadata, --dt, ...), reported with the results
    file_dt: float | None = None  # the dt the NIR file itself states or implies
    notes: list[str] = field(default_factory=list)  # how the file was read where it departs from NIR's letter

    def __post_init__(self) -> None:
        for name, node in self.nodes.items():
            if node.kind not in KINDS:
                raise PassError(f"node '{name}' has kind '{node.kind}', which the toolkit does not run.")
        for src, dst in self.edges:
            for end in (src, dst):
                if end not in self.nodes:
                    raise PassError(f"the edge {src} -> {dst} names '{end}', which is not a node of the graph.")
        if not (self.dt > 0 and np.isfinite(self.dt)):
            raise PassError(f"the time step dt must be a positive number of seconds; got {self.dt!r}.")
        self.input_name = self._only("input")
        self.output_name = self._only("output")
        self.order, self.back_edges = _schedule(self)

    def _only(self, kind: str) -> str:
        names = [n for n, node in self.nodes.items() if node.kind == kind]
        if len(names) != 1:
            raise PassError(f"the network needs exactly one {kind} node at its top level; it has {len(names)} "
                            f"({', '.join(names) or 'none'}).")
        return names[0]

    def sources(self, name: str) -> list[tuple[str, bool]]:
        """(source, from the previous step) for every edge into ``name``, in edge order."""
        return [(s, (s, d) in self.back_edges) for s, d in self.edges if d == name]

    def spiking_nodes(self) -> list[str]:
        return [n for n in self.order if self.nodes[n].kind in SPIKING]

    def connection_nodes(self) -> list[str]:
        return [n for n in self.order if self.nodes[n].kind in CONNECTIONS]

    def parameter_count(self) -> int:
        return int(sum(np.asarray(v).size for node in self.nodes.values() if node.kind in CONNECTIONS
                       for k, v in node.params.items() if k in ("weight", "bias")))


def _schedule(graph: SpikingGraph) -> tuple[list[str], set[tuple[str, str]]]:
    """Nodes in an order that computes every input before its reader, and the edges that close cycles."""
    successors: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        successors[src].append(dst)
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1 on the DFS stack, 2 finished

    def visit(root: str) -> None:
        stack = [(root, iter(successors[root]))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                back.add((node, child))
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(successors[child])))

    visit(graph.input_name)
    unreached = [n for n in graph.nodes if n not in state]
    if unreached:
        raise PassError(f"node '{unreached[0]}' cannot be reached from the input node '{graph.input_name}'.")
    forward = [(s, d) for s, d in graph.edges if (s, d) not in back]
    pending = {n: sum(1 for _, d in forward if d == n) for n in graph.nodes}
    ready = [graph.input_name]
    order = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for s, d in forward:
            if s == node:
                pending[d] -= 1
                if pending[d] == 0:
                    ready.append(d)
    if len(order) != len(graph.nodes):  # pragma: no cover - DFS back edges leave a DAG
        raise PassError("the network's edges could not be put in an order of computation.")
    if not any(d == graph.output_name for _, d in graph.edges):
        raise PassError(f"the output node '{graph.output_name}' has no incoming edge.")
    return order, back


@dataclass
class StepConstants:
    """Float32 per-step constants of one neuron node (None: the operation is skipped because it is trivial)."""

    a: np.ndarray | None = None  # membrane decay (None: 1)
    g: np.ndarray | None = None  # input gain (None: 1)
    c: np.ndarray | None = None  # leak drive (None: 0)
    alpha: np.ndarray | None = None  # synaptic decay (cuba kinds)
    gs: np.ndarray | None = None  # synaptic input gain (cuba kinds; None: 1)
    threshold: np.ndarray | None = None
    reset: np.ndarray | None = None


def _f32(value: Any) -> np.ndarray:
    return np.asarray(value, np.float64).astype(np.float32)


def _unless(value: np.ndarray, trivial: float) -> np.ndarray | None:
    return None if np.all(value == np.float32(trivial)) else value


def discretise(node: Node, dt: float) -> StepConstants:
    """The Euler constants of a neuron (or threshold) node for step ``dt``, as float32."""
    p = node.params
    k = node.kind
    out = StepConstants()
    if k in ("lif", "li", "cubalif", "cubali"):
        tau = np.asarray(p["tau_mem" if k.startswith("cuba") else "tau"], np.float64)
        out.a = _unless(_f32(1.0 - dt / tau), 1.0)
        out.g = _unless(_f32(dt / tau * np.asarray(p["r"], np.float64)), 1.0)
        out.c = _unless(_f32(dt / tau * np.asarray(p["v_leak"], np.float64)), 0.0)
    elif k in ("if", "i"):
        out.g = _unless(_f32(dt * np.asarray(p["r"], np.float64)), 1.0)
    if k.startswith("cuba"):
        tau_syn = np.asarray(p["tau_syn"], np.float64)
        out.alpha = _f32(1.0 - dt / tau_syn)
        out.gs = _unless(_f32(dt / tau_syn * np.asarray(p.get("w_in", 1.0), np.float64)), 1.0)
    if k in ("if", "lif", "cubalif"):
        out.threshold = _f32(p["v_threshold"])
        out.reset = _f32(p["v_reset"] if p.get("v_reset") is not None else np.zeros_like(out.threshold))
    if k == "threshold":
        out.threshold = _f32(p["threshold"])
    return out


def delay_steps(node: Node, dt: float) -> np.ndarray:
    """Per-element delays of a delay node in whole steps (NIR gives seconds)."""
    steps = np.rint(np.asarray(node.params["delay"], np.float64) / dt)
    if np.any(steps < 0):
        raise PassError(f"delay node '{node.name}' has a negative delay.")
    return steps.astype(np.int64)

"""The reference simulation of a :class:`SpikingGraph` in numpy: the ground truth the ONNX and TFLite forms are tested on.

Every step does, in float32 and in the same order, the arithmetic the ONNX step graph of ``lower.py`` does, so
the two agree spike for spike; it also counts what the field reports (spikes per node, synaptic operations).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.errors import PassError
from edge.families.snn.graph import CONNECTIONS, SPIKING, Node, SpikingGraph, StepConstants, delay_steps, discretise


@dataclass
class StateSlot:
    """One state tensor carried between steps: its step-graph input and output names and per-sample shape."""

    node: str
    var: str  # v, i_syn, buffer or previous
    shape: tuple[int, ...]

    @property
    def input(self) -> str:
        return f"{self.node}.{self.var}"

    @property
    def output(self) -> str:
        return f"{self.node}.{self.var}.next"


@dataclass
class Simulation:
    """Outputs over time and the activity counts of one run."""

    y: np.ndarray  # [batch, T, *output shape]
    spikes: dict[str, np.ndarray]  # spiking node -> [batch, T, *shape]
    synops: dict[str, float] = field(default_factory=dict)  # connection node -> non-zero (input, weight) pairs
    dense_ops: dict[str, float] = field(default_factory=dict)  # connection node -> every input x every weight


def pads_of(node: Node, spatial: tuple[int, ...]) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis of a conv or pool node, 'same'/'valid' resolved."""
    p = node.params
    kernel = tuple(np.asarray(p["weight"]).shape[2:]) if "weight" in p else tuple(int(k) for k in p["kernel_size"])
    n = len(kernel)
    stride = _per_axis(p.get("stride", 1), n)
    dilation = _per_axis(p.get("dilation", 1), n)
    padding = p.get("padding", 0)
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * n
        if padding != "same":
            raise PassError(f"node '{node.name}' has padding '{padding}'; NIR allows 'same', 'valid' or numbers.")
        pads = []
        for size, k, s, d in zip(spatial, kernel, stride, dilation, strict=True):
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            pads.append((total // 2, total - total // 2))
        return pads
    return [(q, q) for q in _per_axis(padding, n)]


def _per_axis(value: object, n: int) -> tuple[int, ...]:
    values = np.atleast_1d(np.asarray(value)).astype(int).tolist()
    return tuple(values * n if len(values) == 1 else values)


def _windows(x: np.ndarray, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
             pads: list[tuple[int, int]]) -> np.ndarray:
    """[batch, C, *out, *kernel] view of the padded input."""
    n = len(kernel)
    x = np.pad(x, [(0, 0), (0, 0)] + list(pads))
    span = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))
    view = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(2, 2 + n)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)
    index += tuple(slice(None, None, d) for d in dilation)
    return view[index]


def convolve(node: Node, x: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """NIR Conv1d/Conv2d on [batch, C, *spatial] (bias included unless ``weight`` is given)."""
    p = node.params
    w = np.asarray(p["weight"], np.float32) if weight is None else weight
    n = w.ndim - 2
    groups = int(p.get("groups", 1))
    stride, dilation = _per_axis(p.get("stride", 1), n), _per_axis(p.get("dilation", 1), n)
    patches = _windows(x, w.shape[2:], stride, dilation, pads_of(node, x.shape[2:]))
    cin, cout = w.shape[1], w.shape[0] // groups
    out, kernel = "hw"[:n], "xy"[:n]
    outs = [np.einsum(f"bc{out}{kernel},oc{kernel}->bo{out}", patches[:, g * cin:(g + 1) * cin],
                      w[g * cout:(g + 1) * cout], optimize=True)
            for g in range(groups)]
    y = np.concatenate(outs, axis=1).astype(np.float32)
    if weight is None and p.get("bias") is not None:
        y = y + np.asarray(p["bias"], np.float32).reshape((-1,) + (1,) * n)
    return y


def pool(node: Node, x: np.ndarray) -> np.ndarray:
    """NIR SumPool2d / AvgPool2d (padding counted as zeros, as PyTorch's default)."""
    p = node.params
    kernel = tuple(int(k) for k in np.atleast_1d(p["kernel_size"])) * (2 if np.size(p["kernel_size"]) == 1 else 1)
    stride = _per_axis(p["stride"], 2)
    patches = _windows(x, kernel, stride, (1, 1), pads_of(node, x.shape[2:]))
    total = patches.sum(axis=(-2, -1), dtype=np.float32)
    return total if node.kind == "sumpool2d" else (total / np.float32(kernel[0] * kernel[1])).astype(np.float32)


def flatten(node: Node, x: np.ndarray) -> np.ndarray:
    """NIR Flatten: ``start_dim``/``end_dim`` index the per-sample shape (without batch)."""
    shape = x.shape[1:]
    start = int(node.params.get("start_dim", 1)) % max(len(shape), 1)
    end = int(node.params.get("end_dim", -1)) % max(len(shape), 1)
    new = shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]
    return x.reshape((x.shape[0],) + new)


def stateless(node: Node, x: np.ndarray) -> np.ndarray:
    """The output of a node without state."""
    k, p = node.kind, node.params
    if k in ("affine", "linear"):
        y = np.matmul(x, np.asarray(p["weight"], np.float32).T)
        return y + np.asarray(p["bias"], np.float32) if k == "affine" else y
    if k in ("conv1d", "conv2d"):
        return convolve(node, x)
    if k in ("sumpool2d", "avgpool2d"):
        return pool(node, x)
    if k == "flatten":
        return flatten(node, x)
    if k == "scale":
        return x * np.asarray(p["scale"], np.float32)
    if k == "identity" or k == "output":
        return x
    raise PassError(f"node '{node.name}' of kind '{k}' is not stateless.")  # pragma: no cover


class Simulator:
    """Steps a :class:`SpikingGraph` on numpy arrays; states are named as in the ONNX step graph."""

    def __init__(self, graph: SpikingGraph) -> None:
        self.graph = graph
        self.constants: dict[str, StepConstants] = {
            n: discretise(graph.nodes[n], graph.dt) for n in graph.order
            if graph.nodes[n].kind in SPIKING + ("i", "li", "cubali")}
        self.delays = {n: delay_steps(graph.nodes[n], graph.dt) for n in graph.order if graph.nodes[n].kind == "delay"}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.slots: list[StateSlot] = []
        self._infer_shapes()

    def _infer_shapes(self) -> None:
        """Per-sample output shape of every node, found by one step on zeros; the state slots follow."""
        g = self.graph
        previous = {s for s, _ in g.back_edges}
        state: dict[str, np.ndarray] = {}
        outputs: dict[str, np.ndarray] = {}
        x = np.zeros((1,) + g.input_shape, np.float32)
        for name in g.order:
            node = g.nodes[name]
            try:
                inp = x if name == g.input_name else self._gather(name, outputs, state, shapes_only=True)
                out, new = self._node_step(node, inp, state, zeros=True)
            except (ValueError, IndexError) as exc:
                raise PassError(f"node '{name}' ({node.kind}) does not fit the shape of its input: {exc}") from None
            outputs[name] = out
            self.shapes[name] = tuple(out.shape[1:])
            for var, value in new.items():
                self.slots.append(StateSlot(name, var, tuple(value.shape[1:])))
        for src in sorted(previous, key=g.order.index):
            self.slots.append(StateSlot(src, "previous", self.shapes[src]))

    def initial_state(self, batch: int) -> dict[str, np.ndarray]:
        return {s.input: np.zeros((batch,) + s.shape, np.float32) for s in self.slots}

    def _gather(self, name: str, outputs: dict[str, np.ndarray], state: dict[str, np.ndarray],
                shapes_only: bool = False) -> np.ndarray:
        total = None
        for src, previous in self.graph.sources(name):
            if previous:
                value = state.get(f"{src}.previous")
                if value is None:  # shape inference: the source's output is not known yet on a cycle
                    if src not in outputs and shapes_only:
                        continue
                    value = np.zeros_like(outputs[src])
            else:
                value = outputs[src]
            total = value if total is None else total + value
        if total is None:
            raise PassError(f"node '{name}' receives only recurrent edges and no input at the first step.")
        return total

    def _node_step(self, node: Node, x: np.ndarray, state: dict[str, np.ndarray],
                   zeros: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(output, new state variables) of one node for one step."""
        k = node.kind
        if k == "input":
            return x, {}
        if k == "delay":
            steps = self.delays[node.name]
            depth = int(steps.max(initial=0))
            if steps.shape != x.shape[1:] and steps.size != 1:
                raise ValueError(f"delay has shape {steps.shape}, input {x.shape[1:]}")
            if depth == 0:
                return x, {}
            buffer = np.zeros((x.shape[0], depth) + x.shape[1:], np.float32) if zeros \
                else state[f"{node.name}.buffer"]
            full = np.concatenate([buffer, x[:, None]], axis=1)
            return (full * delay_selector(steps, depth, x.shape[1:])).sum(axis=1), {"buffer": full[:, 1:]}
        if node.name not in self.constants:
            return stateless(node, x), {}
        c = self.constants[node.name]
        if k == "threshold":
            return np.where(x > c.threshold, np.float32(1), np.float32(0)), {}
        new: dict[str, np.ndarray] = {}
        current = x
        if k.startswith("cuba"):
            i_syn = np.zeros_like(x) if zeros else state[f"{node.name}.i_syn"]
            drive = x if c.gs is None else x * c.gs
            current = i_syn * c.alpha + drive
            new["i_syn"] = current
        v = np.zeros_like(x) if zeros else state[f"{node.name}.v"]
        v = v if c.a is None else v * c.a
        v = v + (current if c.g is None else current * c.g)
        if c.c is not None:
            v = v + c.c
        if c.threshold is None:
            new["v"] = v
            return v, new
        fired = v > c.threshold
        new["v"] = np.where(fired, c.reset, v)
        return np.where(fired, np.float32(1), np.float32(0)), new

    def step(self, x: np.ndarray, state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(every node's output, the next state) for one step of input ``x`` [batch, *input shape]."""
        g = self.graph
        outputs: dict[str, np.ndarray] = {}
        new_state: dict[str, np.ndarray] = {}
        for name in g.order:
            inp = x.astype(np.float32) if name == g.input_name else self._gather(name, outputs, state)
            out, new = self._node_step(g.nodes[name], inp, state)
            outputs[name] = out
            new_state.update({f"{name}.{var}": value for var, value in new.items()})
        for slot in self.slots:
            if slot.var == "previous":
                new_state[slot.input] = outputs[slot.node]
        return outputs, new_state

    def run(self, x: np.ndarray, *, count_ops: bool = False) -> Simulation:
        """Run input spikes ``x`` [batch, T, *input shape] from the zero state."""
        g = self.graph
        x = np.asarray(x, np.float32)
        if x.shape[2:] != g.input_shape:
            raise PassError(f"the input has per-step shape {x.shape[2:]}; the network takes {g.input_shape}.")
        state = self.initial_state(len(x))
        ys, spikes = [], {n: [] for n in g.spiking_nodes()}
        result = Simulation(np.empty(0), {})
        for t in range(x.shape[1]):
            before = state
            outputs, state = self.step(x[:, t], state)
            ys.append(outputs[g.output_name])
            for n, trace in spikes.items():
                trace.append(outputs[n])
            if count_ops:
                self._count(outputs, before, result)
        result.y = np.stack(ys, axis=1)
        result.spikes = {n: np.stack(v, axis=1) for n, v in spikes.items()}
        return result

    def _count(self, outputs: dict[str, np.ndarray], state: dict[str, np.ndarray], result: Simulation) -> None:
        """NeuroBench's synaptic operations: run each connection on 0/1 copies of its input and weights."""
        for name in self.graph.connection_nodes():
            node = self.graph.nodes[name]
            inp = self._gather(name, outputs, state)
            active, dense = binary_ops(node, inp)
            result.synops[name] = result.synops.get(name, 0.0) + active
            result.dense_ops[name] = result.dense_ops.get(name, 0.0) + dense


def delay_selector(steps: np.ndarray, depth: int, shape: tuple[int, ...]) -> np.ndarray:
    """One-hot [depth + 1, *shape] picking, per element, the entry ``steps`` back in [buffer..., x]."""
    steps = np.broadcast_to(steps, shape)
    selector = np.zeros((depth + 1,) + shape, np.float32)
    np.put_along_axis(selector, (depth - steps)[None], np.float32(1), axis=0)
    return selector


def binary_ops(node: Node, x: np.ndarray) -> tuple[float, float]:
    """(non-zero input x non-zero weight pairs, every input x every weight pairs) of one connection node.

    The second is NeuroBench's dense count: all inputs active and no weight sparsity.
    """
    w = (np.asarray(node.params["weight"]) != 0).astype(np.float32)
    nz = (x != 0).astype(np.float32)
    ones, every = np.ones_like(nz[:1]), np.ones_like(w)
    if node.kind in ("affine", "linear"):
        return float((nz @ w.T).sum()), float((ones @ every.T).sum()) * len(nz)
    return float(convolve(node, nz, w).sum()), float(convolve(node, ones, every).sum()) * len(nz)


def simulate(graph: SpikingGraph, x: np.ndarray, *, count_ops: bool = False) -> Simulation:
    """Run ``graph`` on input spikes ``x`` [batch, T, *input shape] (see :class:`Simulator`)."""
    return Simulator(graph).run(x, count_ops=count_ops)


__all__ = ["CONNECTIONS", "Simulation", "Simulator", "StateSlot", "simulate"]

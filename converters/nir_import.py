"""Read NIR graphs (``nir`` package, HDF5 files from snnTorch, Norse, Sinabs, Rockpool, Spyx...) into a SpikingGraph.

Nested graphs (snnTorch's recurrent layers, for example) are flattened: a subgraph's own Input and Output nodes
become identity nodes named ``<subgraph>.<node>``, an edge to the subgraph goes to its input and an edge from it
leaves its output; dotted edge ends (``rnn.lif``) name inner nodes directly. :func:`to_nir` writes the other
way, so a network the toolkit trained can be handed to any NIR backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import DataError, PassError
from edge.families.snn.graph import Node, SpikingGraph

#: NIR class name -> (our kind, parameters copied)
NODE_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "Input": ("input", ()),
    "Output": ("output", ()),
    "Identity": ("identity", ()),
    "Affine": ("affine", ("weight", "bias")),
    "Linear": ("linear", ("weight",)),
    "Scale": ("scale", ("scale",)),
    "Conv1d": ("conv1d", ("weight", "bias", "stride", "padding", "dilation", "groups")),
    "Conv2d": ("conv2d", ("weight", "bias", "stride", "padding", "dilation", "groups")),
    "Flatten": ("flatten", ("start_dim", "end_dim")),
    "SumPool2d": ("sumpool2d", ("kernel_size", "stride", "padding")),
    "AvgPool2d": ("avgpool2d", ("kernel_size", "stride", "padding")),
    "Threshold": ("threshold", ("threshold",)),
    "Delay": ("delay", ("delay",)),
    "I": ("i", ("r",)),
    "IF": ("if", ("r", "v_threshold", "v_reset")),
    "LI": ("li", ("tau", "r", "v_leak")),
    "LIF": ("lif", ("tau", "r", "v_leak", "v_threshold", "v_reset")),
    "CubaLI": ("cubali", ("tau_syn", "tau_mem", "r", "v_leak", "w_in")),
    "CubaLIF": ("cubalif", ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")),
}

#: time step used when neither the caller nor the graph's metadata gives one (snnTorch's export_to_nir uses it)
DEFAULT_DT = 1e-4


def _nir() -> Any:
    try:
        import nir
    except ImportError:  # pragma: no cover - declared dependency
        raise PassError("importing NIR graphs needs the 'nir' package: pip install nir") from None
    return nir


def read_nir(path: str | Path, *, dt: float | None = None) -> SpikingGraph:
    """The network stored in a NIR HDF5 file, discretised with time step ``dt`` seconds (default: the file's own)."""
    nir = _nir()
    path = Path(path)
    if not path.is_file():
        raise DataError("no such NIR file.", where=str(path))
    try:
        graph = nir.read(str(path))
    except ValueError as exc:
        if "type mismatch" not in str(exc):
            raise DataError(f"not a NIR graph file (ValueError: {str(exc).splitlines()[0]}).",
                            where=str(path)) from None
        # nirtorch-based writers (Rockpool 3.1) store the input with its batch dimension, [1, n] against the
        # first layer's [n]; read without nir's type check and let from_nir drop that dimension
        graph = _read_unchecked(path)
    except Exception as exc:  # noqa: BLE001 - h5py and nir raise many kinds for a file that is not NIR
        raise DataError(f"not a NIR graph file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).",
                        where=str(path)) from None
    return from_nir(graph, dt=dt)


def _read_unchecked(path: Path) -> Any:
    nir = _nir()
    try:
        return nir.read(str(path), type_check=False)
    except Exception as exc:  # noqa: BLE001 - as above
        raise DataError(f"not a NIR graph file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).",
                        where=str(path)) from None


def from_nir(graph: Any, *, dt: float | None = None) -> SpikingGraph:
    """A :class:`SpikingGraph` from an ``nir.NIRGraph``; any node type or parameter we cannot run is named.

    The time step is ``dt`` when given, else the one the graph states (metadata ``dt``) or implies (every neuron's
    ``tau`` and ``r`` agreeing on one ``dt`` under snnTorch's or Rockpool's export convention), else
    :data:`DEFAULT_DT`; ``dt_source`` on the result says which, and ``file_dt`` what the file itself gives.
    """
    nir = _nir()
    if not isinstance(graph, nir.NIRGraph):
        raise PassError(f"expected a nir.NIRGraph; got {type(graph).__name__}.")
    nodes: dict[str, Node] = {}
    edges: list[tuple[str, str]] = []
    _flatten(graph, "", nodes, edges)
    inputs = [n for n in nodes.values() if n.kind == "input"]
    shape = _input_shape(inputs[0]) if len(inputs) == 1 else ()
    notes: list[str] = []
    if len(inputs) == 1:
        shape, note = _drop_batch_dimension(shape, inputs[0].name, nodes, edges)
        notes += [note] if note else []
    file_dt, file_source = _file_dt(graph, nodes, batch_dropped=bool(notes))
    if dt is not None:
        source = "--dt" if file_dt is None else (
            "--dt, the file's own" if np.isclose(dt, file_dt, rtol=1e-6) else f"--dt; the file's own is {file_dt:g} s")
        step = dt
    elif file_dt is not None:
        step, source = file_dt, file_source
    else:
        step, source = DEFAULT_DT, f"{DEFAULT_DT:g} s assumed: the file states no dt (pass --dt)"
    if len(inputs) == 1:
        inputs[0].params["shape"] = np.asarray(shape)
    return SpikingGraph(nodes, edges, float(step), shape, dt_source=source, file_dt=file_dt, notes=notes)


def _file_dt(graph: Any, nodes: dict[str, Node], *, batch_dropped: bool) -> tuple[float | None, str]:
    """(dt, how the file gives it): its metadata, else what every neuron's tau and r imply, else (None, '')."""
    metadata = getattr(graph, "metadata", None) or {}
    value = metadata.get("dt") if isinstance(metadata, dict) else None
    try:
        if value is not None and float(np.asarray(value).reshape(-1)[0]) > 0:
            return float(np.asarray(value).reshape(-1)[0]), "the file's metadata"
    except (TypeError, ValueError, IndexError):
        pass
    snntorch, rockpool = _implied_dt(nodes)
    # with one tau everywhere both conventions give a consistent dt; a batch dimension on the input marks
    # nirtorch's extraction without ignore_dims, which is how Rockpool 3.1 exports
    if rockpool is not None and (snntorch is None or batch_dropped):
        return rockpool, "implied by tau and r (Rockpool's r = tau·exp(-dt/tau)/dt; the file states no dt)"
    if snntorch is not None:
        return snntorch, "implied by tau and r (snnTorch's r = tau/dt; the file states no dt)"
    return None, ""


def _implied_dt(nodes: dict[str, Node]) -> tuple[float | None, float | None]:
    """The one dt every leaky neuron's (tau, r) implies under snnTorch's and under Rockpool's convention, or None."""
    taus, rs = [], []
    for node in nodes.values():
        if node.kind in ("lif", "li", "cubalif", "cubali") and "r" in node.params:
            tau = np.asarray(node.params["tau_mem" if node.kind.startswith("cuba") else "tau"], np.float64)
            r = np.broadcast_to(np.asarray(node.params["r"], np.float64), tau.shape)
            taus.append(tau.reshape(-1))
            rs.append(r.reshape(-1))
    if not taus:
        return None, None
    tau, r = np.concatenate(taus), np.concatenate(rs)
    if np.any(r <= 0) or np.any(tau <= 0):
        return None, None
    low, high = np.zeros_like(tau), tau / r  # r dt = tau exp(-dt/tau) has its one root in (0, tau/r)
    for _ in range(80):
        middle = (low + high) / 2
        above = r * middle > tau * np.exp(-middle / tau)
        high, low = np.where(above, middle, high), np.where(above, low, middle)
    return _one_value(tau / r, tau), _one_value((low + high) / 2, tau)


def _one_value(candidates: np.ndarray, tau: np.ndarray) -> float | None:
    value = float(f"{np.median(candidates):.6g}")  # float32 parameters carry about 7 digits
    consistent = np.all(np.abs(candidates - value) <= 1e-4 * value)
    return value if consistent and np.all(value < tau) else None


def _drop_batch_dimension(shape: tuple[int, ...], name: str, nodes: dict[str, Node],
                          edges: list[tuple[str, str]]) -> tuple[tuple[int, ...], str | None]:
    """The input shape without a leading batch 1 that its readers do not expect (nirtorch's [1, n] inputs)."""
    if len(shape) < 2 or shape[0] != 1:
        return shape, None
    readers = [nodes[d] for s, d in edges if s == name]
    fits = bool(readers)
    for node in readers:
        if node.kind in ("affine", "linear"):
            fits &= len(shape) == 2 and np.asarray(node.params["weight"]).shape[-1] == shape[1]
        elif node.kind in ("conv1d", "conv2d"):
            weight = np.asarray(node.params["weight"])
            fits &= len(shape) == weight.ndim and weight.shape[1] * int(node.params.get("groups", 1)) == shape[1]
        else:
            fits = False
    if not fits:
        return shape, None
    return shape[1:], (f"the input shape {list(shape)} was read as {list(shape[1:])}: its leading 1 is a batch "
                       "dimension (nirtorch's export)")


def _input_shape(node: Node) -> tuple[int, ...]:
    shape = node.params.get("shape")
    if shape is None or np.asarray(shape).size == 0:
        raise PassError(f"the input node '{node.name}' does not give its shape (input_type).")
    return tuple(int(d) for d in np.asarray(shape).reshape(-1))


def _flatten(graph: Any, prefix: str, nodes: dict[str, Node], edges: list[tuple[str, str]]) -> None:
    nir = _nir()
    ends: dict[str, tuple[str, str]] = {}  # subgraph name -> (its input, its output), prefixed
    for name, node in graph.nodes.items():
        full = prefix + name
        if isinstance(node, nir.NIRGraph):
            _flatten(node, full + ".", nodes, edges)
            inner_in = [n for n, v in node.nodes.items() if type(v).__name__ == "Input"]
            inner_out = [n for n, v in node.nodes.items() if type(v).__name__ == "Output"]
            if len(inner_in) != 1 or len(inner_out) != 1:
                raise PassError(f"subgraph '{full}' needs exactly one Input and one Output node to be connected.")
            for inner in (inner_in[0], inner_out[0]):
                nodes[f"{full}.{inner}"].kind = "identity"
            ends[full] = (f"{full}.{inner_in[0]}", f"{full}.{inner_out[0]}")
            continue
        nodes[full] = _node(full, node)
    for src, dst in graph.edges:
        src, dst = prefix + str(src), prefix + str(dst)
        src = ends[src][1] if src in ends else src
        dst = ends[dst][0] if dst in ends else dst
        for end in (src, dst):
            if end not in nodes and end not in ends:
                raise PassError(f"the NIR edge {src} -> {dst} names '{end}', which is not a node of the graph.")
        edges.append((src, dst))


def _node(name: str, node: Any) -> Node:
    kind_name = type(node).__name__
    if kind_name not in NODE_TYPES:
        raise PassError(f"NIR node '{name}' has type {kind_name}, which the toolkit cannot lower; supported: "
                        f"{', '.join(NODE_TYPES)}.")
    kind, names = NODE_TYPES[kind_name]
    params: dict[str, Any] = {}
    for key in names:
        value = getattr(node, key, None)
        if value is None:
            continue
        params[key] = value if isinstance(value, str) else np.asarray(value)
    if kind == "input":
        params["shape"] = np.asarray(node.input_type["input"])
    if kind == "flatten":
        params = {k: int(v) for k, v in params.items()}
    if kind in ("conv1d", "conv2d"):
        params["groups"] = int(params.get("groups", 1))
    for key, value in params.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            raise PassError(f"NIR node '{name}' ({kind_name}) has a parameter '{key}' that is not finite.")
    _check_neuron_shapes(name, kind_name, params)
    return Node(name, kind, params)


def _check_neuron_shapes(name: str, kind_name: str, params: dict[str, Any]) -> None:
    keys = [k for k in ("tau", "tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset") if k in params]
    shapes = {np.shape(params[k]) for k in keys}
    if len(shapes) > 1:
        raise PassError(f"NIR node '{name}' ({kind_name}) has parameters of different shapes: "
                        + ", ".join(f"{k} {np.shape(params[k])}" for k in keys) + ".")
    for key in ("tau", "tau_syn", "tau_mem"):
        if key in params and np.any(np.asarray(params[key]) <= 0):
            raise PassError(f"NIR node '{name}' ({kind_name}) has a non-positive time constant '{key}'.")


def to_nir(graph: SpikingGraph) -> Any:
    """The ``nir.NIRGraph`` of a flat :class:`SpikingGraph` (its time step stored in the metadata as ``dt``)."""
    nir = _nir()
    classes = {kind: cls for cls, (kind, _) in NODE_TYPES.items()}
    nodes = {}
    edges = list(graph.edges)
    for name, node in graph.nodes.items():
        if node.kind == "identity":  # a flattened subgraph's own input/output: connect around it
            into = [s for s, d in edges if d == name]
            out_of = [d for s, d in edges if s == name]
            edges = [(s, d) for s, d in edges if name not in (s, d)] + [(s, d) for s in into for d in out_of]
            continue
        p = dict(node.params)
        if node.kind == "input":
            nodes[name] = nir.Input(input_type={"input": np.asarray(graph.input_shape)})
            continue
        if node.kind == "output":
            continue  # its type is inferred below from what feeds it
        if node.kind == "flatten":
            nodes[name] = nir.Flatten(input_type={"input": None}, **p)
            continue
        if node.kind in ("conv1d", "conv2d"):
            p.setdefault("input_shape", None)
        nodes[name] = getattr(nir, classes[node.kind])(**p)
    from edge.families.snn.simulate import Simulator

    shapes = Simulator(graph).shapes
    nodes[graph.output_name] = nir.Output(output_type={"output": np.asarray(shapes[graph.output_name])})
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": graph.dt}, type_check=False)


def write_nir(graph: SpikingGraph, path: str | Path) -> None:
    """Write ``graph`` as a NIR HDF5 file (through a temporary name, then renamed)."""
    nir = _nir()
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    nir.write(str(partial), to_nir(graph))
    partial.replace(path)

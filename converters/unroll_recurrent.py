"""Unroll ONNX GRU and LSTM nodes with a fixed sequence length into per-step primitives.

Each time step becomes Slice + Squeeze of the input, one ``Gemm`` per gate for the input and one for the
hidden state, ``Add``, ``Sigmoid`` / ``Tanh``, ``Mul``, ``Sub`` and ``Add``: ops the int8 quantizer and
the TFLite exporter already know. The GRU update ``(1 - z) * n + z * h`` is written ``n + z * (h - n)``
so that no ``1 - z`` constant needs its own int8 grid.

Preconditions (a node that misses one is left as it is, and ``why_not_unrolled`` says why):
the sequence length is static, the weights W, R, B (and LSTM peepholes P) are constants, the
activations are the defaults, no ``clip``, no LSTM ``input_forget``, no ``sequence_lens`` shorter than
the sequence. Both layouts and directions (forward, reverse, bidirectional) are handled; a zero initial
state (a zero constant, or an Expand / Slice of one) drops the recurrent terms of the first step.

The outputs Y / Y_h / Y_c are rebuilt with Unsqueeze + Concat. Where Y only feeds layout ops that pick
one step (PyTorch's ``rnn(x)[0][:, -1]``: Squeeze, Transpose, Reshape, Gather), those ops are run on a
probe tensor of distinct numbers to find which step and direction each result is, and the result is
replaced by that step's hidden state: no 49-way Concat and no Gather for the exporter.

The cost: every step's Gemm holds its own copy of the weights (T copies in the int8 file, 1.4 MB for a
64-unit GRU over 49 steps), because the exact int8 requantization grids of ``converters.integer_scales``
depend on each Gemm's own input and output scales; shared weights made TFLite Micro and LiteRT differ.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger("edge")

RECURRENT_CELLS = ("GRU", "LSTM")
_DEFAULT_ACTIVATIONS = {"GRU": ("sigmoid", "tanh"), "LSTM": ("sigmoid", "tanh", "tanh")}
#: Gate order of the stacked weights: ONNX GRU is z, r, h; LSTM is i, o, f, c.
_GATES = {"GRU": ("z", "r", "h"), "LSTM": ("i", "o", "f", "c")}
#: Ops that only move, pick or reshape values (and the integer arithmetic of shape computations): the
#: consumers of Y that the probe may see through. Anything else ends the chain.
_LAYOUT_OPS = ("Squeeze", "Unsqueeze", "Transpose", "Reshape", "Gather", "Shape", "Slice", "Concat", "Flatten",
               "Identity", "Cast", "Mul", "Add", "Sub", "Div", "Split")
_ZERO_PASSTHROUGH = ("Expand", "Slice", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Tile", "Cast")


def unroll_recurrent(model: onnx.ModelProto) -> str | None:
    """Unroll every GRU / LSTM node of ``model`` that can be (in place); a note of what changed, or None."""
    unrolled = []
    for first in [n.output[0] for n in model.graph.node if n.op_type in RECURRENT_CELLS and not n.domain]:
        node = next(n for n in model.graph.node if n.op_type in RECURRENT_CELLS and n.output[0] == first)
        reason = why_not_unrolled(model, node)
        if reason:
            log.debug("unroll_recurrent: %s '%s' kept: %s", node.op_type, node.name, reason)
            continue
        _Unroller(model, node).run()
        unrolled.append(f"{node.op_type} '{node.name or node.output[0]}'")
    if not unrolled:
        return None
    _remove_dead_nodes(model.graph)
    return f"recurrent cells unrolled into per-step Gemm/Sigmoid/Tanh/Mul/Add: {', '.join(unrolled)}"


def why_not_unrolled(model: onnx.ModelProto, node: onnx.NodeProto) -> str | None:
    """Why ``node`` (a GRU or LSTM) cannot be unrolled, in one clause; None when it can."""
    graph = model.graph
    if node.op_type not in RECURRENT_CELLS:
        return f"{node.op_type} cells are not unrolled (only GRU and LSTM are)"
    layout = _attr(node, "layout", 0)
    steps = _dims(model, node.input[0])
    time_axis = 1 if layout else 0
    if steps is None or len(steps) != 3 or not isinstance(steps[time_axis], int):
        return "its sequence length is not fixed (export the model with a fixed sequence length)"
    for index, what in ((1, "W"), (2, "R"), (3, "B"), (7, "P")):
        if len(node.input) > index and node.input[index] and _initializer(graph, node.input[index]) is None:
            return f"its weights {what} are computed at run time, not constants"
    wanted = _DEFAULT_ACTIVATIONS[node.op_type]
    given = _attr(node, "activations", None)
    if given is not None:
        names = tuple(a.decode() if isinstance(a, bytes) else a for a in given)
        if tuple(n.lower() for n in names) not in (wanted, wanted * 2):
            return (f"it uses the activations {', '.join(names)}; only the defaults "
                    f"({', '.join(w.capitalize() for w in wanted)}) are unrolled")
    if _attr(node, "clip", None) is not None:
        return "it clips its gate inputs (attribute clip), which is not unrolled"
    if _attr(node, "input_forget", 0):
        return "it couples the input and forget gates (input_forget = 1), which is not unrolled"
    if len(node.input) > 4 and node.input[4]:
        lengths = _initializer(graph, node.input[4])
        if lengths is None or not np.all(lengths == steps[time_axis]):
            return "it takes sequence_lens shorter than the sequence (or computed at run time), which is not unrolled"
    return None


def variable_length_cells(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The GRU / LSTM nodes whose sequence length is a named (symbolic) dimension of the model as given.

    Exporters fix symbolic dimensions to 1 to get static shapes; such a cell would be unrolled for sequences of
    length 1 alone, so it is found here first, before any dimension is fixed.
    """
    cells = []
    for node in model.graph.node:
        if node.op_type in RECURRENT_CELLS and not node.domain:
            dims = _dims(model, node.input[0])
            if dims is not None and len(dims) == 3 and isinstance(dims[1 if _attr(node, "layout", 0) else 0], str):
                cells.append(node)
    return cells


class _Unroller:
    """Build the per-step nodes of one GRU / LSTM node and put them in its place."""

    def __init__(self, model: onnx.ModelProto, node: onnx.NodeProto) -> None:
        self.model, self.graph, self.node = model, model.graph, node
        self.kind = node.op_type
        self.layout = int(_attr(node, "layout", 0))
        self.hidden = int(_attr(node, "hidden_size", 0)) or _initializer(self.graph, node.input[2]).shape[-1]
        direction = _attr(node, "direction", b"forward")
        self.direction = direction.decode() if isinstance(direction, bytes) else direction
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.prefix = f"{node.name or node.output[0]}/unrolled"
        self.nodes: list[onnx.NodeProto] = []
        self.count = 0
        self.constants: dict[tuple, str] = {}
        self.steps = _dims(model, node.input[0])[1 if self.layout else 0]

    # -- small builders -----------------------------------------------------------------------------
    def _name(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}/{what}_{self.count}"

    def _op(self, op_type: str, inputs: list[str], what: str, **attrs: object) -> str:
        out = self._name(what)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def _const(self, what: str, value: np.ndarray) -> str:
        name = self._name(what)
        self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def _axes_op(self, op_type: str, x: str, axes: list[int], what: str) -> str:
        """Squeeze / Unsqueeze with axes as an input (opset >= 13) or an attribute."""
        if self.opset >= 13:
            return self._op(op_type, [x, self._const("axes", np.array(axes, np.int64))], what)
        return self._op(op_type, [x], what, axes=axes)

    def _split(self, x: str, axis: int, count: int, what: str) -> list[str]:
        """The ``count`` slices of ``x`` along ``axis``, that axis removed (one Split, then Squeeze each).

        One Split rather than a Slice per step: onnxruntime's quantizer quantizes a Split's input, while a Slice
        reading a graph input would stay float.
        """
        outputs = [self._name(f"{what}_split") for _ in range(count)]
        sizes = [1] * count
        if self.opset >= 13:
            inputs = [x, self._const("sizes", np.array(sizes, np.int64))]
            self.nodes.append(helper.make_node("Split", inputs, outputs, name=outputs[0], axis=axis))
        else:
            self.nodes.append(helper.make_node("Split", [x], outputs, name=outputs[0], axis=axis, split=sizes))
        return [self._axes_op("Squeeze", o, [axis], f"{what}{i}") for i, o in enumerate(outputs)]

    def _shared(self, what: str, value: np.ndarray) -> str:
        """One initializer per distinct value: every step's Gemm reads the same weights (stored once)."""
        value = np.ascontiguousarray(value.astype(np.float32))
        key = (value.shape, value.tobytes())
        if key not in self.constants:
            self.constants[key] = self._const(what, value)
        return self.constants[key]

    def _gemm(self, x: str, weight: np.ndarray, bias: np.ndarray | None, what: str) -> str:
        # each step's Gemm gets its own copy of the weights: the int8 grids that make requantization exact in
        # integer engines (converters.integer_scales) depend on each Gemm's input and output scales
        inputs = [x, self._const(f"{what}_weight", weight.astype(np.float32))]
        if bias is not None:
            inputs.append(self._const(f"{what}_bias", bias.astype(np.float32)))
        return self._op("Gemm", inputs, what, transB=1)

    # -- the rewrite --------------------------------------------------------------------------------
    def run(self) -> None:
        node, graph = self.node, self.graph
        gates = _GATES[self.kind]
        weights = _initializer(graph, node.input[1])
        recurrence = _initializer(graph, node.input[2])
        directions = weights.shape[0]
        bias = _initializer(graph, node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if bias is None:
            bias = np.zeros((directions, 2 * len(gates) * self.hidden), np.float32)
        peepholes = _initializer(graph, node.input[7]) if len(node.input) > 7 and node.input[7] else None
        if peepholes is not None and not np.any(peepholes):
            peepholes = None
        x_source, time_axis = self._input_source()
        inputs = self._split(x_source, time_axis, self.steps, "x")
        states = {"h": 5, "c": 6}
        hidden_steps, cell_steps = [], []
        names = ("forward", "reverse") if self.direction == "bidirectional" else (self.direction,)
        initial = {k: self._initial_state(i, directions) for k, i in states.items()}
        for d, name in enumerate(names):
            order = range(self.steps) if name == "forward" else range(self.steps - 1, -1, -1)
            split = self._gate_weights(weights[d], recurrence[d], bias[d], gates)
            hs, cs = [None] * self.steps, [None] * self.steps
            h, c = (None if initial[k] is None else initial[k][d] for k in ("h", "c"))
            for t in order:
                if self.kind == "GRU":
                    h = self._gru_step(inputs[t], h, split, f"d{d}t{t}")
                else:
                    h, c = self._lstm_step(inputs[t], h, c, split, peepholes[d] if peepholes is not None else None,
                                           f"d{d}t{t}")
                hs[t], cs[t] = h, c
            hidden_steps.append(hs)
            cell_steps.append(cs)
        self._outputs(hidden_steps, cell_steps, names)
        _replace(graph, node, self.nodes)

    def _input_source(self) -> tuple[str, int]:
        """The tensor the steps are sliced from and its time axis (through a batch-first Transpose)."""
        x = self.node.input[0]
        producer = next((n for n in self.graph.node if x in n.output), None)
        if (self.layout == 0 and producer is not None and producer.op_type == "Transpose"
                and list(_attr(producer, "perm", [])) == [1, 0, 2]):
            return producer.input[0], 1  # PyTorch's batch_first: slice the input itself, no Transpose to export
        return x, 1 if self.layout else 0

    def _initial_state(self, index: int, directions: int) -> list[str] | None:
        """The initial state of each direction as [batch, hidden], or None when it is zero (or not given)."""
        if len(self.node.input) <= index or not self.node.input[index]:
            return None
        name = self.node.input[index]
        if _is_zero(self.graph, name):
            return None
        return self._split(name, 1 if self.layout else 0, directions, f"initial{index}_")

    def _gate_weights(self, w: np.ndarray, r: np.ndarray, b: np.ndarray, gates: tuple[str, ...]) -> dict:
        """Per gate: input weight, recurrent weight, input bias and recurrent bias."""
        n, size = len(gates), self.hidden
        return {g: (w[i * size:(i + 1) * size], r[i * size:(i + 1) * size], b[i * size:(i + 1) * size],
                    b[(n + i) * size:(n + i + 1) * size]) for i, g in enumerate(gates)}

    def _gate(self, x: str, h: str | None, weights: tuple, what: str, act: str, recurrent_bias: bool = True) -> str:
        """``act(x W^T + Wb + h R^T + Rb)``; the h term is dropped when the state is zero."""
        w, r, wb, rb = weights
        x_term = self._gemm(x, w, wb + rb if recurrent_bias else wb, f"{what}_x")
        total = x_term if h is None else self._op("Add", [x_term, self._gemm(h, r, None, f"{what}_h")], f"{what}_sum")
        return self._op(act, [total], what) if act else total

    def _gru_step(self, x: str, h: str | None, split: dict, tag: str) -> str:
        z = self._gate(x, h, split["z"], f"{tag}_z", "Sigmoid")
        r = self._gate(x, h, split["r"], f"{tag}_r", "Sigmoid")
        w, rw, wb, rb = split["h"]
        if _attr(self.node, "linear_before_reset", 0):
            x_term = self._gemm(x, w, wb, f"{tag}_n_x")
            if h is None:
                recurrent = self._shared("bias", rb) if np.any(rb) else None
            else:
                recurrent = self._gemm(h, rw, rb, f"{tag}_n_h")
            gated = None if recurrent is None else self._op("Mul", [r, recurrent], f"{tag}_n_gated")
        else:
            x_term = self._gemm(x, w, wb + rb, f"{tag}_n_x")
            gated = None if h is None else self._gemm(self._op("Mul", [r, h], f"{tag}_rh"), rw, None, f"{tag}_n_h")
        total = x_term if gated is None else self._op("Add", [x_term, gated], f"{tag}_n_sum")
        n = self._op("Tanh", [total], f"{tag}_n")
        # H = (1 - z) * n + z * h = n + z * (h - n): no constant 1 to quantize
        if h is None:
            return self._op("Sub", [n, self._op("Mul", [z, n], f"{tag}_zn")], f"{tag}_h")
        delta = self._op("Sub", [h, n], f"{tag}_delta")
        return self._op("Add", [n, self._op("Mul", [z, delta], f"{tag}_zdelta")], f"{tag}_h")

    def _lstm_step(self, x: str, h: str | None, c: str | None, split: dict, peepholes: np.ndarray | None,
                   tag: str) -> tuple[str, str]:
        size = self.hidden

        def peep(total: str, k: int, state: str | None, what: str) -> str:
            if peepholes is None or state is None:
                return total
            weight = self._shared("peephole", peepholes[k * size:(k + 1) * size])
            return self._op("Add", [total, self._op("Mul", [state, weight], f"{what}_peep")], f"{what}_peeped")

        i = self._op("Sigmoid", [peep(self._gate(x, h, split["i"], f"{tag}_i", ""), 0, c, f"{tag}_i")], f"{tag}_i")
        f = self._op("Sigmoid", [peep(self._gate(x, h, split["f"], f"{tag}_f", ""), 2, c, f"{tag}_f")], f"{tag}_f")
        g = self._gate(x, h, split["c"], f"{tag}_g", "Tanh")
        ig = self._op("Mul", [i, g], f"{tag}_ig")
        c_new = ig if c is None else self._op("Add", [self._op("Mul", [f, c], f"{tag}_fc"), ig], f"{tag}_c")
        o = self._op("Sigmoid", [peep(self._gate(x, h, split["o"], f"{tag}_o", ""), 1, c_new, f"{tag}_o")], f"{tag}_o")
        h_new = self._op("Mul", [o, self._op("Tanh", [c_new], f"{tag}_tanh_c")], f"{tag}_h")
        return h_new, c_new

    # -- outputs ------------------------------------------------------------------------------------
    def _outputs(self, hidden: list[list[str]], cells: list[list[str]], names: tuple[str, ...]) -> None:
        """Y, Y_h, Y_c as the node wrote them (where read), or the picked steps where only a step is read."""
        node = self.node
        last = [steps[-1] if name == "forward" else steps[0] for steps, name in zip(hidden, names)]
        last_c = [steps[-1] if name == "forward" else steps[0] for steps, name in zip(cells, names)]
        lead = 2 if self.layout else 1  # axes the [batch, hidden] pieces gain
        d_axis = 2 if self.layout else 1
        t_axis = 1 if self.layout else 0
        if len(node.output) > 0 and node.output[0]:
            pieces = {(t, d): hidden[d][t] for d in range(len(names)) for t in range(self.steps)}
            if not self._pick_steps(node.output[0], pieces, "Y"):
                rows = []
                for t in range(self.steps):
                    parts = [self._axes_op("Unsqueeze", hidden[d][t], [0, 1] if not self.layout else [1, 2], "y_part")
                             for d in range(len(names))]
                    rows.append(parts[0] if len(parts) == 1 else self._op("Concat", parts, "y_row", axis=d_axis))
                self._alias(self._op("Concat", rows, "y", axis=t_axis), node.output[0])
        for index, ends in ((1, last), (2, last_c)):
            if len(node.output) > index and node.output[index]:
                pieces = {(0, d): ends[d] for d in range(len(names))}
                if self._pick_steps(node.output[index], pieces, "Y_h"):
                    continue
                parts = [self._axes_op("Unsqueeze", e, [lead - 1], "state_part") for e in ends]
                whole = parts[0] if len(parts) == 1 else self._op("Concat", parts, "state", axis=lead - 1)
                self._alias(whole, node.output[index])

    def _alias(self, built: str, name: str) -> None:
        self.nodes.append(helper.make_node("Identity", [built], [name], name=f"{self.prefix}/{name}"))

    def _pick_steps(self, output: str, pieces: dict[tuple[int, int], str], kind: str) -> bool:
        """Replace the readers of ``output`` that only pick one [batch, hidden] piece; True if none is left."""
        chain, frontier = _layout_chain(self.graph, output)
        if not frontier:
            return False
        directions = 1 + max(d for _, d in pieces)
        x_dims = _dims(self.model, self.node.input[0])
        batch = x_dims[0 if self.layout else 1]
        batches = [batch] if isinstance(batch, int) else [2, 3]
        found: dict[str, tuple[int, int]] = {}
        for b in batches:
            steps = 1 + max(t for t, _ in pieces)
            shape = (b, steps, directions, self.hidden) if self.layout else (steps, directions, b, self.hidden)
            if kind != "Y":
                shape = (b, directions, self.hidden) if self.layout else (directions, b, self.hidden)
            probe = np.arange(1, int(np.prod(shape)) + 1, dtype=np.float32).reshape(shape)
            try:
                results = _run_chain(self.graph, chain, output, probe, frontier, self.opset)
            except Exception as exc:  # a chain the reference runtime cannot run: keep Y as a tensor
                log.debug("unroll_recurrent: probe of %s failed (%s)", output, exc)
                return False
            for name, value in results.items():
                key = _which_piece(probe, value, pieces, kind, self.layout)
                if key is None or found.setdefault(name, key) != key:
                    return False
        for name, key in found.items():
            _rename_input(self.graph, name, pieces[key])
        return True


def _layout_chain(graph: onnx.GraphProto, output: str) -> tuple[list[onnx.NodeProto], list[str]]:
    """The layout nodes fed only by ``output`` (and constants), and the tensors they hand to other nodes."""
    constants = {t.name for t in graph.initializer}
    tensors, chain = {output}, []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if (node.op_type in _LAYOUT_OPS and not node.domain and any(i in tensors for i in inputs)
                and all(i in tensors or i in constants for i in inputs)):
            chain.append(node)
            tensors.update(o for o in node.output if o)
    graph_outputs = {o.name for o in graph.output}
    if output in graph_outputs:
        return chain, []
    inside = {id(n) for n in chain}
    readers_outside = {i for n in graph.node if id(n) not in inside for i in n.input}
    if output in readers_outside:
        return chain, []  # Y itself is read by a compute op: it must be built
    frontier = sorted(t for t in tensors - {output} if t in readers_outside)
    if any(t in graph_outputs for t in tensors):
        return chain, []
    return chain, frontier


def _run_chain(graph: onnx.GraphProto, chain: list[onnx.NodeProto], output: str, probe: np.ndarray,
               frontier: list[str], opset: int) -> dict[str, np.ndarray]:
    """The frontier tensors of the chain with ``probe`` in place of ``output`` (onnx's reference runtime)."""
    from onnx.reference import ReferenceEvaluator

    used = {i for n in chain for i in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    model = helper.make_model(helper.make_graph(
        list(chain), "probe", [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, probe.shape)],
        [helper.make_tensor_value_info(f, 0, None) for f in frontier], inits),
        opset_imports=[helper.make_opsetid("", opset)])
    return dict(zip(frontier, ReferenceEvaluator(model).run(None, {output: probe})))


def _which_piece(probe: np.ndarray, value: np.ndarray, pieces: dict, kind: str, layout: int) -> tuple | None:
    """The (step, direction) whose [batch, hidden] block ``value`` is exactly, or None."""
    for t, d in pieces:
        if kind == "Y":
            block = probe[:, t, d] if layout else probe[t, d]
        else:
            block = probe[:, d] if layout else probe[d]
        if value.shape == block.shape and value.dtype == block.dtype and np.array_equal(value, block):
            return t, d
    return None


# -- graph helpers ------------------------------------------------------------------------------------
def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _initializer(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for tensor in graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    return None


def _dims(model: onnx.ModelProto, name: str) -> list[int | str | None] | None:
    """The dimensions of ``name`` (ints, dim_param names or None), from the graph or shape inference."""
    specs = list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
    spec = next((s for s in specs if s.name == name and s.type.tensor_type.HasField("shape")), None)
    if spec is None:
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:
            return None
        spec = next((s for s in inferred.graph.value_info if s.name == name
                     and s.type.tensor_type.HasField("shape")), None)
        if spec is None:
            return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in spec.type.tensor_type.shape.dim]


def _is_zero(graph: onnx.GraphProto, name: str, depth: int = 0) -> bool:
    """Whether ``name`` is all zeros: a zero constant, or a zero broadcast, slice or reshape of one."""
    value = _initializer(graph, name)
    if value is not None:
        return not np.any(value)
    producer = next((n for n in graph.node if name in n.output), None)
    if producer is None or depth > 8:
        return False
    if producer.op_type == "ConstantOfShape":
        filled = _attr(producer, "value", None)
        return filled is None or not np.any(numpy_helper.to_array(filled))
    if producer.op_type == "Constant":
        tensor = _attr(producer, "value", None)
        return tensor is not None and not np.any(numpy_helper.to_array(tensor))
    if producer.op_type in _ZERO_PASSTHROUGH:
        return _is_zero(graph, producer.input[0], depth + 1)
    if producer.op_type == "Concat":
        return all(_is_zero(graph, i, depth + 1) for i in producer.input if i)
    return False


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _replace(graph: onnx.GraphProto, node: onnx.NodeProto, new: list[onnx.NodeProto]) -> None:
    nodes = list(graph.node)
    index = next(i for i, n in enumerate(nodes) if n.op_type == node.op_type and list(n.output) == list(node.output))
    kept = [_copy(n) for n in nodes[:index] + new + nodes[index + 1:]]
    del graph.node[:]
    graph.node.extend(kept)


def _remove_dead_nodes(graph: onnx.GraphProto) -> None:
    """Drop nodes none of whose outputs is read (the old layout chains, the zero-state plumbing)."""
    while True:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        keep = [_copy(n) for n in graph.node if any(o in read for o in n.output if o)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    read = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    """A detached copy (a repeated field's elements die with ``del graph.node[:]``)."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy

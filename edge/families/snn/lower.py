"""Lower a SpikingGraph to ONNX: the stateful single-step graph (the deployable form) and a Scan over T steps.

The step graph takes ``x`` [batch, *input shape] and every state tensor (membrane ``<node>.v``, synaptic current
``<node>.i_syn``, delay ring buffer ``<node>.buffer``, recurrent value ``<node>.previous``) and returns ``y``,
``spikes.<node>`` for each spiking node, ``activity.<node>`` (the input each connection node received, from which
synaptic operations are counted), and the next states ``<state>.next``; the host loop carries the state.
It uses Gemm/MatMul, Conv, AveragePool, Reshape, Add, Mul, Greater and Where (plus Concat, Slice and ReduceSum
for delays), all opset 17, and does exactly the float32 arithmetic of :mod:`edge.families.snn.simulate`.

:func:`scan_model` wraps the same body in a ``Scan`` over the time axis: one call evaluates ``x`` [batch, T, ...]
from the zero state, which is how the host evaluates a network fast.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.families.snn.graph import SPIKING, SpikingGraph
from edge.families.snn.simulate import Simulator, delay_selector, pads_of

OPSET = 17
IR_VERSION = 8
BATCH = "batch"
TIME = "time"


class _Builder:
    def __init__(self, graph: SpikingGraph) -> None:
        self.graph = graph
        self.sim = Simulator(graph)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.out: dict[str, str] = {}
        self.inputs_of: dict[str, str] = {}
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, name: str | None = None,
           **attrs: object) -> str:
        self._count += 1
        output = output or f"t{self._count}.{op_type}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name or f"{op_type}_{self._count}",
                                           **attrs))
        return output

    def gather(self, name: str) -> str:
        total = None
        for src, previous in self.graph.sources(name):
            value = f"{src}.previous" if previous else self.out[src]
            total = value if total is None else self.op("Add", [total, value], name=f"{name}/sum_inputs")
        return total

    def build(self) -> onnx.ModelProto:
        g = self.graph
        one = self.const("one", np.float32(1))
        zero = self.const("zero", np.float32(0))
        for name in g.order:
            node = g.nodes[name]
            k, p = node.kind, node.params
            if k == "input":
                self.out[name] = "x"
                continue
            x = self.gather(name)
            self.inputs_of[name] = x
            if k in ("identity", "output"):
                self.out[name] = x
            elif k in ("affine", "linear"):
                w = np.asarray(p["weight"], np.float32)
                rank = 1 + len(self.sim.shapes[self._source_of(name)])
                bias = [self.const(f"{name}.bias", np.asarray(p["bias"], np.float32))] if k == "affine" else []
                if rank == 2:
                    self.out[name] = self.op("Gemm", [x, self.const(f"{name}.weight", w)] + bias, name=name,
                                             transB=1)
                else:
                    y = self.op("MatMul", [x, self.const(f"{name}.weight", np.ascontiguousarray(w.T))], name=name)
                    self.out[name] = self.op("Add", [y] + bias, name=f"{name}/bias") if bias else y
            elif k in ("conv1d", "conv2d"):
                w = np.asarray(p["weight"], np.float32)
                spatial = self.sim.shapes[self._source_of(name)][1:]
                pads = pads_of(node, spatial)
                n = w.ndim - 2
                inputs = [x, self.const(f"{name}.weight", w)]
                if p.get("bias") is not None:
                    inputs.append(self.const(f"{name}.bias", np.asarray(p["bias"], np.float32)))
                self.out[name] = self.op(
                    "Conv", inputs, name=name, group=int(p.get("groups", 1)),
                    strides=_axes(p.get("stride", 1), n), dilations=_axes(p.get("dilation", 1), n),
                    pads=[b for b, _ in pads] + [e for _, e in pads], kernel_shape=list(w.shape[2:]))
            elif k in ("sumpool2d", "avgpool2d"):
                self.out[name] = self._pool(name, x)
            elif k == "flatten":
                shape = (-1,) + self.sim.shapes[name]
                self.out[name] = self.op("Reshape", [x, self.const(f"{name}.shape", np.array(shape, np.int64))],
                                         name=name)
            elif k == "scale":
                s = self.const(f"{name}.scale", np.asarray(p["scale"], np.float32))
                self.out[name] = self.op("Mul", [x, s], name=name)
            elif k == "delay":
                self.out[name] = self._delay(name, x)
            else:
                self.out[name] = self._neuron(name, x, one, zero)
        return self._model()

    def _source_of(self, name: str) -> str:
        return self.graph.sources(name)[0][0]

    def _pool(self, name: str, x: str) -> str:
        node = self.graph.nodes[name]
        p = node.params
        kernel = [int(k) for k in np.broadcast_to(np.asarray(p["kernel_size"]), (2,))]
        strides = _axes(p["stride"], 2)
        pads = pads_of(node, self.sim.shapes[self._source_of(name)][1:])
        flat_pads = [b for b, _ in pads] + [e for _, e in pads]
        if node.kind == "avgpool2d":
            return self.op("AveragePool", [x], name=name, kernel_shape=kernel, strides=strides, pads=flat_pads,
                           count_include_pad=1)
        channels = self.sim.shapes[self._source_of(name)][0]
        ones = self.const(f"{name}.ones", np.ones((channels, 1, *kernel), np.float32))
        return self.op("Conv", [x, ones], name=name, group=channels, kernel_shape=kernel, strides=strides,
                       pads=flat_pads)

    def _delay(self, name: str, x: str) -> str:
        steps = self.sim.delays[name]
        depth = int(steps.max(initial=0))
        if depth == 0:
            return x
        shape = self.sim.shapes[name]
        axis1 = self.const(f"{name}.axis", np.array([1], np.int64))
        incoming = self.op("Unsqueeze", [x, axis1], name=f"{name}/unsqueeze")
        full = self.op("Concat", [f"{name}.buffer", incoming], name=f"{name}/append", axis=1)
        picked = self.op("Mul", [full, self.const(f"{name}.selector", delay_selector(steps, depth, shape))],
                         name=f"{name}/select")
        self.op("Slice", [full, axis1, self.const(f"{name}.end", np.array([depth + 1], np.int64)), axis1],
                output=f"{name}.buffer.next", name=f"{name}/shift")
        return self.op("ReduceSum", [picked, axis1], name=name, keepdims=0)

    def _neuron(self, name: str, x: str, one: str, zero: str) -> str:
        kind = self.graph.nodes[name].kind
        c = self.sim.constants[name]
        if kind == "threshold":
            fired = self.op("Greater", [x, self.const(f"{name}.threshold", c.threshold)], name=f"{name}/fire")
            return self.op("Where", [fired, one, zero], name=name)
        current = x
        if kind.startswith("cuba"):
            drive = x if c.gs is None else self.op("Mul", [x, self.const(f"{name}.gs", c.gs)], name=f"{name}/w_in")
            decayed = self.op("Mul", [f"{name}.i_syn", self.const(f"{name}.alpha", c.alpha)], name=f"{name}/syn_decay")
            current = self.op("Add", [decayed, drive], output=f"{name}.i_syn.next", name=f"{name}/syn")
        v = f"{name}.v"
        if c.a is not None:
            v = self.op("Mul", [v, self.const(f"{name}.a", c.a)], name=f"{name}/decay")
        if c.g is not None:
            current = self.op("Mul", [current, self.const(f"{name}.g", c.g)], name=f"{name}/gain")
        spiking = c.threshold is not None
        last = c.c is None
        v = self.op("Add", [v, current], output=f"{name}.v.next" if last and not spiking else None,
                    name=f"{name}/integrate")
        if not last:
            v = self.op("Add", [v, self.const(f"{name}.c", c.c)], output=None if spiking else f"{name}.v.next",
                        name=f"{name}/leak")
        if not spiking:
            return v
        fired = self.op("Greater", [v, self.const(f"{name}.threshold", c.threshold)], name=f"{name}/fire")
        self.op("Where", [fired, self.const(f"{name}.reset", c.reset), v], output=f"{name}.v.next",
                name=f"{name}/reset")
        return self.op("Where", [fired, one, zero], name=name)

    def _model(self) -> onnx.ModelProto:
        g = self.graph
        for slot in self.sim.slots:
            if slot.var == "previous":
                self.op("Identity", [self.out[slot.node]], output=slot.output, name=f"{slot.node}/keep")
        self.op("Identity", [self.out[g.output_name]], output="y", name="output")
        spiking = [n for n in g.order if g.nodes[n].kind in SPIKING]
        for n in spiking:
            self.op("Identity", [self.out[n]], output=f"spikes.{n}", name=f"{n}/spikes")
        connections = g.connection_nodes()
        for n in connections:  # what each connection received: synaptic operations are counted from it
            self.op("Identity", [self.inputs_of[n]], output=f"activity.{n}", name=f"{n}/activity")

        def value(name: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *shape])

        inputs = [value("x", g.input_shape)] + [value(s.input, s.shape) for s in self.sim.slots]
        outputs = [value("y", self.sim.shapes[g.output_name])]
        outputs += [value(f"spikes.{n}", self.sim.shapes[n]) for n in spiking]
        outputs += [value(f"activity.{n}", self.sim.shapes[self._source_of(n)]) for n in connections]
        outputs += [value(s.output, s.shape) for s in self.sim.slots]
        model = helper.make_model(helper.make_graph(self.nodes, "snn_step", inputs, outputs, self.inits),
                                  opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model


def _axes(value: object, n: int) -> list[int]:
    values = np.atleast_1d(np.asarray(value)).astype(int).tolist()
    return values * n if len(values) == 1 else values


def step_model(graph: SpikingGraph) -> onnx.ModelProto:
    """The stateful single-step ONNX graph of ``graph`` (see the module docstring for its inputs and outputs)."""
    return _Builder(graph).build()


def state_names(model: onnx.ModelProto) -> list[str]:
    """The state inputs of a step graph, in order (every input but ``x``)."""
    return [i.name for i in model.graph.input if i.name != "x"]


def scan_model(step: onnx.ModelProto) -> onnx.ModelProto:
    """``x`` [batch, T, ...] -> ``y`` and ``spikes.<node>`` [batch, T, ...] from the zero state, as one Scan."""
    graph = step.graph
    states = [i for i in graph.input if i.name != "x"]
    step_x = next(i for i in graph.input if i.name == "x")
    per_step = [o for o in graph.output if not o.name.endswith(".next")]
    rename = {"x": "x.t", **{o.name: f"{o.name}.t" for o in per_step}}

    body_nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [rename.get(n, n) for n in node.input]
        copy.output[:] = [rename.get(n, n) for n in node.output]
        body_nodes.append(copy)
    nexts = {o.name: o for o in graph.output if o.name.endswith(".next")}

    def untyped(name: str, like: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in like.type.tensor_type.shape.dim]
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    body = helper.make_graph(
        body_nodes, "snn_step_body",
        [untyped(s.name, s) for s in states] + [untyped("x.t", step_x)],
        [untyped(f"{s.name}.next", nexts[f"{s.name}.next"]) for s in states]
        + [untyped(rename[o.name], o) for o in per_step])

    nodes = []
    inits = list(graph.initializer)
    x_dims = [d.dim_value for d in step_x.type.tensor_type.shape.dim][1:]
    perm = [1, 0] + list(range(2, 2 + len(x_dims)))
    nodes.append(helper.make_node("Transpose", ["x"], ["x.time_major"], perm=perm, name="to_time_major"))
    nodes.append(helper.make_node("Shape", ["x"], ["x.shape"], name="batch_shape", start=0, end=1))
    initial = []
    for s in states:
        dims = [d.dim_value for d in s.type.tensor_type.shape.dim][1:]
        inits.append(numpy_helper.from_array(np.array(dims, np.int64), f"{s.name}.dims"))
        nodes.append(helper.make_node("Concat", ["x.shape", f"{s.name}.dims"], [f"{s.name}.zero_shape"], axis=0,
                                      name=f"{s.name}/shape"))
        nodes.append(helper.make_node("ConstantOfShape", [f"{s.name}.zero_shape"], [f"{s.name}.initial"],
                                      value=numpy_helper.from_array(np.zeros(1, np.float32)), name=f"{s.name}/zeros"))
        initial.append(f"{s.name}.initial")
    finals = [f"{s.name}.final" for s in states]
    stacked = [f"{o.name}.time_major" for o in per_step]
    nodes.append(helper.make_node("Scan", initial + ["x.time_major"], finals + stacked, name="time_loop",
                                  num_scan_inputs=1, body=body))
    outputs = []
    for o in per_step:
        dims = [d.dim_value for d in o.type.tensor_type.shape.dim][1:]
        nodes.append(helper.make_node("Transpose", [f"{o.name}.time_major"], [o.name],
                                      perm=[1, 0] + list(range(2, 2 + len(dims))), name=f"{o.name}/batch_major"))
        outputs.append(helper.make_tensor_value_info(o.name, TensorProto.FLOAT, [BATCH, TIME, *dims]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, TIME, *x_dims])
    model = helper.make_model(helper.make_graph(nodes, "snn_scan", [x], outputs, inits),
                              opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model

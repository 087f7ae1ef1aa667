"""Normalise an ONNX graph from another exporter into the form the quantizer and the TFLite exporter expect.

Other exporters (CNTK, Keras through tf2onnx, PyTorch's legacy and dynamo exporters, skl2onnx) write
graphs that are valid ONNX but trip onnxruntime's quantizer or hide constants from shape inference.
``normalize_graph`` applies these rewrites, in this order (each one only where it applies):

1. Initializers that are also listed as graph inputs (IR < 4 exporters, ``keep_initializers_as_inputs``)
   become plain constants: shape inference then sees a Reshape's shape, and the quantizer a weight.
2. Default-domain opsets older than 13 are upgraded to 13 with ``onnx.version_converter`` (per-channel
   QDQ needs the ``axis`` of opset-13 QuantizeLinear; old Upsample, Pad and Clip take their constants as
   attributes); an opset the converter cannot upgrade is refused with the reason.
3. ``Constant`` nodes become initializers; ``Identity`` and inference ``Dropout`` that feed no graph
   output are removed.
4. ``BatchNormalization`` after a Conv, ConvTranspose or Gemm with constant weights that nothing else
   reads is folded into them; any other one becomes ``Mul`` + ``Add`` by per-channel constants.
5. ``Gemm`` with ``alpha`` / ``beta`` not 1 gets them folded into its constant B / C; ``transA`` = 1
   becomes a ``Transpose`` before it; a (1, N) bias of a Gemm, or of an Add after a MatMul, becomes (N,)
   (onnxruntime's quantizer fails on 2-D Gemm biases).
6. ``Sub`` / ``Div`` by a constant become ``Add`` / ``Mul`` by its negation / reciprocal, and
   ``HardSigmoid`` becomes ``Mul`` + ``Add`` + ``Clip(0, 1)``: ops the int8 kernels have.
7. ``GRU`` / ``LSTM`` with a fixed sequence length are unrolled into per-step primitives
   (``converters.unroll_recurrent``).

Every rewrite keeps the function of the graph (within float rounding) and is logged at debug level; the
list of notes returned says what changed, for provenance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters.unroll_recurrent import unroll_recurrent
from edge.errors import PassError

log = logging.getLogger("edge")

#: The opset old graphs are upgraded to: the first with per-axis QuantizeLinear and inputs-not-attributes.
TARGET_OPSET = 13
#: The oldest opset onnxruntime's QDQ quantizer takes (QuantizeLinear appeared in opset 10).
MIN_QUANTIZABLE_OPSET = 10
#: The newest IR version onnxruntime reads (DESIGN.md: onnx can write newer ones).
MAX_IR_VERSION = 10


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ("" / ai.onnx) domain the model imports."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def normalize_graph(model: onnx.ModelProto, *, upgrade: bool = True) -> tuple[onnx.ModelProto, list[str]]:
    """A normalised copy of ``model`` and notes on what changed (see the module docstring)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    notes: list[str] = []
    for rewrite in _pipeline(upgrade):
        before = onnx.ModelProto()
        before.CopyFrom(out)
        try:
            note = rewrite(out)
        except PassError:
            raise
        except Exception as exc:  # a form the rewrite did not foresee: leave the graph as it was
            log.debug("normalize: %s skipped (%s: %s)", rewrite.__name__, type(exc).__name__, exc)
            out.CopyFrom(before)
            continue
        if note:
            log.debug("normalize: %s", note)
            notes.append(note)
    out.ir_version = min(max(out.ir_version, 7), MAX_IR_VERSION)
    return out, notes


def _pipeline(upgrade: bool) -> list[Callable[[onnx.ModelProto], str | None]]:
    # Initializer inputs go first: the version converter treats them as variables otherwise.
    # Constants become initializers after the upgrade, which writes some of its own Constant nodes.
    steps = [_drop_initializer_inputs]
    if upgrade:
        steps.append(_upgrade_opset)
    steps += [_constants_to_initializers, _fold_constants, _drop_identities, _fold_batch_norms, _normalize_gemms,
              _flatten_row_biases, _sub_div_by_constants, fuse_hard_swish, _expand_hard_sigmoids]
    # last: the unrolled steps need the recurrent weights as constants (folded above) and add only plain ops
    steps.append(unroll_recurrent)
    return steps


# -- 1. initializers listed as inputs -------------------------------------------------------------
def _drop_initializer_inputs(model: onnx.ModelProto) -> str | None:
    names = {t.name for t in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in names]
    dropped = len(model.graph.input) - len(keep)
    if not dropped:
        return None
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.ir_version = max(model.ir_version, 4)  # IR 3 requires every initializer to be an input
    return f"{dropped} initializers listed as graph inputs are treated as constants"


# -- 2. old opsets ----------------------------------------------------------------------------------
def _upgrade_opset(model: onnx.ModelProto) -> str | None:
    version = default_opset(model)
    if version >= TARGET_OPSET or version == 0:
        return None
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, TARGET_OPSET)
    except Exception as exc:  # the converter raises RuntimeError / ConvertError with a C++ message
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if version >= MIN_QUANTIZABLE_OPSET:  # onnxruntime quantizes it as it is, per-tensor where it must
            log.warning("opset %d kept: onnx's version converter could not upgrade it to %d (%s)", version,
                        TARGET_OPSET, reason)
            return f"opset {version} kept (the version converter failed: {reason})"
        raise PassError(f"the model's opset {version} could not be upgraded to opset {TARGET_OPSET}, which the "
                        f"quantizer needs ({reason}); re-export the model at opset {TARGET_OPSET} or newer.") from None
    model.CopyFrom(upgraded)
    return f"opset {version} upgraded to {TARGET_OPSET}"


# -- 3. constants and no-ops ------------------------------------------------------------------------
def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a Constant node, or None for a sparse or unknown form."""
    for attribute in node.attribute:
        if attribute.name == "value":
            return numpy_helper.to_array(attribute.t)
        if attribute.name in ("value_float", "value_int"):
            dtype = np.float32 if attribute.name == "value_float" else np.int64
            return np.array(helper.get_attribute_value(attribute), dtype)
        if attribute.name in ("value_floats", "value_ints"):
            dtype = np.float32 if attribute.name == "value_floats" else np.int64
            return np.array(helper.get_attribute_value(attribute), dtype)
    return None


def _constants_to_initializers(model: onnx.ModelProto) -> str | None:
    graph = model.graph
    outputs = {o.name for o in graph.output}
    keep, moved = [], 0
    for node in graph.node:
        value = _constant_value(node) if node.op_type == "Constant" and not node.domain else None
        if value is None or node.output[0] in outputs:
            keep.append(node)
            continue
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        moved += 1
    if not moved:
        return None
    _set_nodes(graph, keep)
    return f"{moved} Constant nodes turned into initializers"


def _fold_constants(model: onnx.ModelProto) -> str | None:
    """Evaluate nodes whose inputs are all constants (and Shape of a static tensor) with onnx's reference runtime.

    Legacy exporters compute Reshape targets at run time (Shape -> Gather -> Unsqueeze -> Concat, Cast); a
    quantization DequantizeLinear of a weight is left alone, since it is how int8 weights are stored. Folding
    one Reshape target makes the shapes after it static, so this repeats until nothing more folds.
    """
    total = 0
    for _ in range(MAX_FOLD_ROUNDS):
        folded = _fold_constants_once(model)
        total += folded
        if not folded:
            break
    return f"{total} nodes of constants folded" if total else None


#: Rounds of constant folding (each one can make more shapes static); ShuffleNet needs one per block.
MAX_FOLD_ROUNDS = 64


def _fold_constants_once(model: onnx.ModelProto) -> int:
    """One round of ``_fold_constants``; returns how many nodes it folded."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    outputs = {o.name for o in graph.output}
    static = _static_shapes(model)
    known = {t.name for t in graph.initializer}
    keep, folded = [], 0
    for node in graph.node:
        inputs = [n for n in node.input if n]
        foldable = not node.domain and node.op_type not in _NOT_FOLDED and not any(o in outputs for o in node.output)
        value = None
        if foldable and node.op_type == "Shape" and node.input[0] in static:  # opset 15 adds start / end
            start, end = _attr(node, "start", 0), _attr(node, "end", None)
            value = [np.array(static[node.input[0]][start:end], np.int64)]
        elif foldable and inputs and all(n in known for n in inputs):
            try:
                value = _evaluate(ReferenceEvaluator, graph, node, default_opset(model))
            except Exception:  # the reference runtime lacks the op or this form of it: leave the node
                value = None
        if value is None:
            keep.append(node)
            continue
        for name, array in zip(node.output, value):
            if name:
                graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
                known.add(name)
        folded += 1
    if not folded:
        return 0
    _set_nodes(graph, keep)
    used = {n for node in graph.node for n in node.input} | outputs
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return folded


#: Ops never folded: a DequantizeLinear of an int8 weight is the weight; random ops differ per run.
_NOT_FOLDED = ("QuantizeLinear", "DequantizeLinear", "RandomNormal", "RandomUniform", "RandomNormalLike",
               "RandomUniformLike", "Multinomial", "Bernoulli")


def _evaluate(evaluator: type, graph: onnx.GraphProto, node: onnx.NodeProto, opset: int) -> list[np.ndarray]:
    """The outputs of ``node`` on its constant inputs."""
    feeds = {n: _initializer(graph, n) for n in node.input if n}
    outputs = [helper.make_tensor_value_info(o, 0, None) for o in node.output if o]
    single = helper.make_graph([node], "fold", [], outputs,
                               [numpy_helper.from_array(v, k) for k, v in feeds.items()])
    model = helper.make_model(single, opset_imports=[helper.make_opsetid("", opset or TARGET_OPSET)])
    return list(evaluator(model).run(None, {}))


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return {}
    shapes = {}
    for spec in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = spec.type.tensor_type.shape.dim
        if spec.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[spec.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _drop_identities(model: onnx.ModelProto) -> str | None:
    graph = model.graph
    outputs = {o.name for o in graph.output}
    keep, dropped = [], 0
    for node in graph.node:
        passthrough = node.op_type == "Identity" or (
            node.op_type == "Dropout" and (len(node.output) == 1 or not node.output[1])
            and (len(node.input) < 3 or not node.input[2] or _is_false(graph, node.input[2])))
        if passthrough and not node.domain and node.output[0] not in outputs:
            _rename_input(graph, node.output[0], node.input[0])
            dropped += 1
            continue
        keep.append(node)
    if not dropped:
        return None
    _set_nodes(graph, keep)
    return f"{dropped} Identity/Dropout nodes removed"


def _is_false(graph: onnx.GraphProto, name: str) -> bool:
    value = _initializer(graph, name)
    return value is not None and not bool(value.reshape(-1)[0])


# -- 4. batch normalisation -------------------------------------------------------------------------
def _fold_batch_norms(model: onnx.ModelProto) -> str | None:
    graph = model.graph
    folded, expanded = [], []
    for node in _fresh(graph, "BatchNormalization"):
        if len(node.output) > 1 and any(node.output[1:]):
            continue
        params = [_initializer(graph, n) for n in node.input[1:5]]
        if any(p is None for p in params):
            continue
        scale, bias, mean, var = (p.astype(np.float64) for p in params)
        eps = _attr(node, "epsilon", 1e-5)
        gain = scale / np.sqrt(var + eps)
        shift = bias - mean * gain
        if _fold_into_producer(graph, node, gain, shift):
            folded.append(node.name)
        else:
            _expand_batch_norm(graph, node, gain, shift)
            expanded.append(node.name)
    notes = []
    if folded:
        notes.append(f"BatchNormalization folded into the layer before it ({', '.join(folded)})")
    if expanded:
        notes.append(f"BatchNormalization turned into Mul + Add ({', '.join(expanded)})")
    return "; ".join(notes) or None


def _fold_into_producer(graph: onnx.GraphProto, bn: onnx.NodeProto, gain: np.ndarray, shift: np.ndarray) -> bool:
    """Scale the weights and bias of the Conv/ConvTranspose/Gemm before ``bn``; False where that is not exact."""
    producer = next((n for n in graph.node if bn.input[0] in n.output), None)
    if producer is None or producer.op_type not in ("Conv", "ConvTranspose", "Gemm") or producer.domain:
        return False
    if len(_readers(graph, bn.input[0])) != 1 or bn.input[0] in {o.name for o in graph.output}:
        return False
    weights = _initializer(graph, producer.input[1])
    if weights is None or len(_readers(graph, producer.input[1])) != 1:
        return False
    bias_name = producer.input[2] if len(producer.input) > 2 and producer.input[2] else None
    bias = _initializer(graph, bias_name) if bias_name else None
    if bias_name and (bias is None or len(_readers(graph, bias_name)) != 1):
        return False
    channels = gain.size
    if producer.op_type == "Conv":
        if weights.shape[0] != channels:
            return False
        new_w = weights * gain.reshape(-1, *[1] * (weights.ndim - 1))
    elif producer.op_type == "ConvTranspose":
        group = _attr(producer, "group", 1)
        if group != 1 or weights.shape[1] != channels:
            return False
        new_w = weights * gain.reshape(1, -1, *[1] * (weights.ndim - 2))
    else:  # Gemm: output features are the columns of op(B)
        if _attr(producer, "transA", 0) or _attr(producer, "alpha", 1.0) != 1.0 or _attr(producer, "beta", 1.0) != 1.0:
            return False
        trans_b = _attr(producer, "transB", 0)
        if weights.ndim != 2 or weights.shape[0 if trans_b else 1] != channels:
            return False
        new_w = weights * (gain.reshape(-1, 1) if trans_b else gain.reshape(1, -1))
        if bias is not None and bias.size not in (1, channels):
            return False
    old_bias = np.zeros(channels) if bias is None else np.broadcast_to(bias.reshape(-1), (channels,))
    new_b = old_bias * gain + shift
    dtype = weights.dtype
    _set_initializer(graph, producer.input[1], new_w.astype(dtype))
    b_name = bias_name or f"{producer.name or producer.output[0]}_bias"
    _set_initializer(graph, b_name, new_b.astype(dtype))
    if not bias_name:
        while len(producer.input) < 2:
            producer.input.append("")
        producer.input.append(b_name)
    producer.output[0] = bn.output[0]
    _replace(graph, bn, [])
    return True


def _expand_batch_norm(graph: onnx.GraphProto, bn: onnx.NodeProto, gain: np.ndarray, shift: np.ndarray) -> None:
    """Replace ``bn`` by Mul and Add with constants shaped (C, 1, ..., 1) to broadcast over the channels."""
    rank = _rank(graph, bn.input[0])
    shape = (-1, *[1] * max(rank - 2, 0)) if rank else (-1, 1, 1)
    base = bn.name or bn.output[0]
    gain_name, shift_name, mid = f"{base}_gain", f"{base}_shift", f"{base}_scaled"
    graph.initializer.extend([numpy_helper.from_array(gain.reshape(shape).astype(np.float32), gain_name),
                              numpy_helper.from_array(shift.reshape(shape).astype(np.float32), shift_name)])
    mul = helper.make_node("Mul", [bn.input[0], gain_name], [mid], name=f"{base}/Mul")
    add = helper.make_node("Add", [mid, shift_name], [bn.output[0]], name=f"{base}/Add")
    _replace(graph, bn, [mul, add])


# -- 5. Gemm attributes -----------------------------------------------------------------------------
def _normalize_gemms(model: onnx.ModelProto) -> str | None:
    graph = model.graph
    changed = []
    for node in _fresh(graph, "Gemm"):
        alpha, beta = _attr(node, "alpha", 1.0), _attr(node, "beta", 1.0)
        touched = False
        if alpha != 1.0 and _own_constant(graph, node.input[1]) is not None:
            b = _own_constant(graph, node.input[1])
            _set_initializer(graph, node.input[1], (b.astype(np.float64) * alpha).astype(b.dtype))
            _set_attr(node, "alpha", 1.0)
            touched = True
        has_c = len(node.input) > 2 and node.input[2]
        if beta != 1.0 and (not has_c or _own_constant(graph, node.input[2]) is not None):
            if has_c:
                c = _own_constant(graph, node.input[2])
                _set_initializer(graph, node.input[2], (c.astype(np.float64) * beta).astype(c.dtype))
            _set_attr(node, "beta", 1.0)
            touched = True
        if _attr(node, "transA", 0):
            transposed = f"{node.input[0]}_transposed"
            transpose = helper.make_node("Transpose", [node.input[0]], [transposed], perm=[1, 0],
                                         name=f"{node.name or node.output[0]}/transA")
            node.input[0] = transposed
            _set_attr(node, "transA", 0)
            _replace(graph, node, [transpose, node])
            touched = True
        if touched:
            changed.append(node.name)
    return f"Gemm alpha/beta/transA folded ({', '.join(changed)})" if changed else None


def _flatten_row_biases(model: onnx.ModelProto) -> str | None:
    """A (1, N) bias of a Gemm, or of an Add after a MatMul / Gemm, becomes (N,): the same broadcast.

    onnxruntime's quantizer fails on a 2-D Gemm bias ("The truth value of an array ... is ambiguous"), and its
    optimizer turns MatMul + Add into such a Gemm; old exporters write biases as (1, N) rows.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    changed = []
    for node in graph.node:
        if node.domain:
            continue
        if node.op_type == "Gemm" and len(node.input) > 2:
            slots = [2]
        elif node.op_type == "Add" and len(node.input) == 2:
            slots = [i for i in (0, 1) if producer.get(node.input[1 - i]) is not None
                     and producer[node.input[1 - i]].op_type in ("MatMul", "Gemm")]
        else:
            continue
        for slot in slots:
            value = _initializer(graph, node.input[slot])
            if value is None or value.ndim != 2 or value.shape[0] != 1:
                continue
            name = f"{node.input[slot]}_row"
            _set_initializer(graph, name, value.reshape(-1))
            node.input[slot] = name
            changed.append(node.name)
    return f"(1, N) biases flattened to (N,) ({', '.join(changed)})" if changed else None


# -- 6. ops int8 kernels lack -----------------------------------------------------------------------
def _sub_div_by_constants(model: onnx.ModelProto) -> str | None:
    graph = model.graph
    changed = []
    for node in graph.node:
        if node.op_type not in ("Sub", "Div") or node.domain or len(node.input) != 2:
            continue
        value = _initializer(graph, node.input[1])
        if value is None or value.dtype.kind != "f" or (node.op_type == "Div" and np.any(value == 0)):
            continue
        if _initializer(graph, node.input[0]) is not None:
            continue  # both constant: nothing at run time depends on it
        name = f"{node.input[1]}_{'negated' if node.op_type == 'Sub' else 'reciprocal'}"
        folded = -value if node.op_type == "Sub" else (1.0 / value.astype(np.float64)).astype(value.dtype)
        _set_initializer(graph, name, folded)
        node.input[1] = name
        node.op_type = "Add" if node.op_type == "Sub" else "Mul"
        changed.append(node.name)
    return f"Sub/Div by a constant turned into Add/Mul ({', '.join(changed)})" if changed else None


def fuse_hard_swish(model: onnx.ModelProto) -> str | None:
    """x * HardSigmoid(x; 1/6, 1/2) -> HardSwish (opset 14), the one op TFLite runs as HARD_SWISH.

    onnxruntime's optimizer writes HardSwish this way (it inlines the function), so the quantizer calls this
    again after ``quant_pre_process``. Raising the opset import from 13 to 14 changes no float semantics
    (14 added types and the BatchNormalization training mode, Reshape's allowzero and the recurrent layout,
    all defaulting to 13's behaviour).
    """
    graph = model.graph
    if default_opset(model) < 13:
        return None
    changed = []
    for sigmoid in _fresh(graph, "HardSigmoid"):
        if not np.isclose(_attr(sigmoid, "alpha", 0.2), 1 / 6) or not np.isclose(_attr(sigmoid, "beta", 0.5), 0.5):
            continue
        readers = _readers(graph, sigmoid.output[0])
        if len(readers) != 1 or readers[0].op_type != "Mul" or sigmoid.input[0] not in readers[0].input \
                or sigmoid.output[0] in {o.name for o in graph.output}:
            continue
        mul = readers[0]
        swish = helper.make_node("HardSwish", [sigmoid.input[0]], [mul.output[0]], name=mul.name or sigmoid.name)
        _replace(graph, sigmoid, [])
        _replace(graph, mul, [swish])
        changed.append(swish.name)
    if not changed:
        return None
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < 14:
            opset.version = 14
    return f"x * HardSigmoid(x) turned into HardSwish ({', '.join(changed)})"


def _expand_hard_sigmoids(model: onnx.ModelProto) -> str | None:
    graph = model.graph
    changed = []
    for node in _fresh(graph, "HardSigmoid"):
        base = node.name or node.output[0]
        alpha, beta = _attr(node, "alpha", 0.2), _attr(node, "beta", 0.5)
        names = {k: f"{base}_{k}" for k in ("alpha", "beta", "low", "high")}
        for key, value in (("alpha", alpha), ("beta", beta), ("low", 0.0), ("high", 1.0)):
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), names[key]))
        nodes = [helper.make_node("Mul", [node.input[0], names["alpha"]], [f"{base}_scaled"], name=f"{base}/Mul"),
                 helper.make_node("Add", [f"{base}_scaled", names["beta"]], [f"{base}_shifted"], name=f"{base}/Add"),
                 helper.make_node("Clip", [f"{base}_shifted", names["low"], names["high"]], [node.output[0]],
                                  name=f"{base}/Clip")]
        _replace(graph, node, nodes)
        changed.append(node.name)
    return f"HardSigmoid turned into Mul + Add + Clip ({', '.join(changed)})" if changed else None


# -- graph helpers ------------------------------------------------------------------------------------
def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value: object) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(helper.make_attribute(name, value))


def _initializer(graph: onnx.GraphProto, name: str | None) -> np.ndarray | None:
    if not name:
        return None
    for tensor in graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    return None


def _own_constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """An initializer that only this one node reads (so it may be rewritten in place)."""
    return _initializer(graph, name) if len(_readers(graph, name)) == 1 else None


def _set_initializer(graph: onnx.GraphProto, name: str, value: np.ndarray) -> None:
    tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
    for i, existing in enumerate(graph.initializer):
        if existing.name == name:
            graph.initializer[i].CopyFrom(tensor)
            return
    graph.initializer.append(tensor)


def _readers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if name in n.input]


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _set_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _replace(graph: onnx.GraphProto, node: onnx.NodeProto, new: list[onnx.NodeProto]) -> None:
    """Put ``new`` where ``node`` (found by its first output) stands."""
    nodes = list(graph.node)
    index = next(i for i, n in enumerate(nodes) if n.output[0] == node.output[0] and n.op_type == node.op_type)
    _set_nodes(graph, nodes[:index] + new + nodes[index + 1:])


def _fresh(graph: onnx.GraphProto, op_type: str) -> Iterator[onnx.NodeProto]:
    """Default-domain ``op_type`` nodes, each looked up again when reached, so rewrites may rebuild the list."""
    outputs = [n.output[0] for n in graph.node if n.op_type == op_type and not n.domain]
    for name in outputs:
        node = next((n for n in graph.node if n.op_type == op_type and n.output and n.output[0] == name), None)
        if node is not None:
            yield node


def _rank(graph: onnx.GraphProto, name: str) -> int:
    for spec in list(graph.input) + list(graph.value_info) + list(graph.output):
        if spec.name == name and spec.type.tensor_type.HasField("shape"):
            return len(spec.type.tensor_type.shape.dim)
    try:
        inferred = onnx.shape_inference.infer_shapes(helper.make_model(graph))
    except Exception:
        return 0
    for spec in inferred.graph.value_info:
        if spec.name == name and spec.type.tensor_type.HasField("shape"):
            return len(spec.type.tensor_type.shape.dim)
    return 0

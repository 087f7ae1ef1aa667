"""Export a QDQ int8 ONNX artifact as an int8 TFLite flatbuffer, written with LiteRT's schema.

The graph is first normalised (``converters.normalize``: initializers listed as inputs become constants,
old opsets are upgraded, constants folded, BatchNormalization folded, Gemm attributes, Sub/Div by constants
and HardSigmoid rewritten), so graphs from other exporters take the same path. Then the rewrite, node by
node in the ONNX graph's (topological) order:

* ``QuantizeLinear``/``DequantizeLinear`` pairs on activations become the int8 tensors' quantization
  (same scales and zero points as the ONNX model); ``DequantizeLinear`` on int8/int32 initializers
  becomes int8 weights and int32 biases. The float model input and output keep their ONNX shape and
  layout: ``QUANTIZE`` after the input, ``DEQUANTIZE`` before the output.
* ONNX activations are NCHW, TFLite kernels NHWC: a ``TRANSPOSE`` is inserted where a layout change is
  needed (after the input, before the output); conv weights are rewritten OIHW -> OHWI (depthwise:
  1HWO); a ``Flatten`` (or a ``Reshape`` to (N, -1)) feeding only ``Gemm`` / ``MatMul`` nodes is lowered
  to a plain ``RESHAPE`` of the NHWC tensor and the fully connected weight columns are permuted to H, W, C
  order instead; a ``Transpose`` NCHW <-> NHWC whose result is the TFLite tensor's own order (tf2onnx's
  NHWC inputs) writes nothing.
* ``Conv`` -> ``CONV_2D`` (group 1) or ``DEPTHWISE_CONV_2D`` (group == input channels), per-channel
  int8 weights, int32 bias with scale input_scale * weight_scale; ONNX pads equal to TFLite SAME
  (SAME_UPPER puts the extra pad at the end, as TFLite does) -> SAME, zero -> VALID, others -> ``PAD``.
  ``Gemm`` -> ``FULLY_CONNECTED``; ``Relu`` after a conv / fully connected op that nothing else reads,
  with unchanged quantization, is fused (``fused_activation_function = RELU``), otherwise ``RELU``.
* ``Clip`` with constant bounds (0, 6) / (-1, 1) / (0, inf) is fused the same way (``RELU6`` / ``RELU_N1_TO_1`` /
  ``RELU``), otherwise ``MAXIMUM`` / ``MINIMUM``; in int8 after requantizing to the output's grid, with the
  bounds quantized on it, which is exactly what the QuantizeLinear of the clipped value gives (bounds the int8
  range already enforces are left out). onnxruntime usually drops a Clip into the range of the QuantizeLinear
  before it; then there is nothing to lower.
* ``Softmax`` (last axis, or the channels) -> ``SOFTMAX``, ``Sigmoid`` -> ``LOGISTIC``, ``Tanh`` -> ``TANH``. Their
  int8 kernels write a fixed grid (scale 1/256 and zero point -128; ``TANH`` 1/128 and 0): an int8 output
  quantized otherwise is refused. onnxruntime's QDQ quantizer does not use that grid on its own (Softmax:
  [0, 1] / 255, else the calibrated range); ``QuantizeInt8`` sets it, so its files have int8 ones.
* ``MatMul`` by a constant 2-D matrix -> ``FULLY_CONNECTED`` (leading axes kept); ``MaxPool`` with pads TFLite's
  SAME does not produce, or ``ceil_mode``, pads with the lowest value first (``PADV2``).
* The ops other exporters write (``converters.tflite_foreign_ops``): ``LeakyRelu``, ``PRelu``, ``HardSwish``,
  ``Squeeze`` / ``Unsqueeze``, ``Split``, ``Resize``, ``ConvTranspose``. ``LSTM`` / ``GRU`` / ``RNN`` are refused
  with the reason (they stay float in ``QuantizeInt8`` and run in onnxruntime).
* ``GlobalAveragePool`` / ``ReduceMean`` -> ``MEAN`` (axes mapped to NHWC; an int8 spatial mean that rescales is
  a ``DEPTHWISE_CONV_2D`` with weights 1/(H*W) instead, which rounds once, as onnxruntime does), ``Transpose``
  -> ``TRANSPOSE`` (the ONNX perm composed with NHWC -> NCHW), ``Pad`` (constant 0) -> ``PAD``, ``Concat`` ->
  ``CONCATENATION``; in int8 the data-movement ops keep their input's quantization (a ``QUANTIZE`` to the
  output's grid after them, or, for ``Concat``, before them, as TFLite requires every input on the output's
  grid). In a QDQ graph from elsewhere that leaves them in float they are int8 only where their reader quantizes
  its input.
* Nodes the quantizer left in float (between a ``DequantizeLinear`` and a ``QuantizeLinear``) are
  lowered as float TFLite ops with ``DEQUANTIZE``/``QUANTIZE`` around them, which is what the ONNX
  graph computes; a fully int8 file needs the quantizer run without float exclusions. A graph without any
  QDQ (a float model) is lowered entirely in float.
* Spiking step graphs (``edge.families.snn``): every input and output keeps its ONNX name (state in and
  ``<state>.next`` out, ``spikes.*``, ``activity.*``). ``Greater`` -> ``GREATER`` (a bool tensor), ``Where``
  -> ``SELECT_V2`` (constants broadcast at the output's rank), ``Identity`` -> nothing (an alias); a graph
  output that aliases an input or another output gets its own tensor through a ``RESHAPE`` to its own shape
  (a copy every runtime accepts). Delay lines: ``Unsqueeze`` -> ``RESHAPE``, ``Concat`` -> ``CONCATENATION``,
  ``Slice`` -> ``STRIDED_SLICE``, ``ReduceSum`` -> ``SUM``. These ops run in float; none may touch the
  batch axis.

Preconditions: static shapes apart from a symbolic batch dimension (the file is written for batch 1, with
shape_signature -1 so LiteRT can resize it), int8 QDQ as written by ``QuantizeInt8``. Any node outside
``SUPPORTED_OPS`` raises ``PassError`` naming the op and the node, before anything is lowered; a lowering that
meets a form it did not foresee raises ``PassError`` naming the node, never a bare KeyError. The toolkit
metadata (``Meta.to_json()``) is stored in the TFLite metadata entry ``edge``; ``io="int8"`` drops the edge
QUANTIZE / DEQUANTIZE (for NPUs) and records the I/O scales there.

Numerics: TFLite kernels requantize with fixed-point multipliers and two roundings, onnxruntime with
a float multiplier and one, so in general a value lying just below a half step (within 2^-(R+1) of a
step for a multiplier in [2^-(R+1), 2^-R)) lands one step apart. ``QuantizeInt8`` (``integer_exact``, the
default) chooses weights and scales for which the two agree (``converters.integer_scales``): its
convolutions and fully connected layers export bit for bit. Exact ties in average pooling would part
ways systematically; the pool output scales are set so that none occur, and such a pool is lowered as a
depthwise convolution, which rounds once. What remains: a float model input exactly halfway between
two steps (QUANTIZE rounds it away from zero, onnxruntime to even), and ops whose TFLite kernels rescale
differently (ADD, MUL, MEAN, LUTs).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from converters.normalize import normalize_graph
from converters.unroll_recurrent import RECURRENT_CELLS, variable_length_cells, why_not_unrolled
from converters.tflite_foreign_ops import ForeignOps
from edge.artifact import METADATA_KEY, Artifact, Meta, PassRecord
from edge.errors import EdgeError, MetadataError, PassError

log = logging.getLogger("edge")

TFLITE_SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"

#: ONNX op types the exporter lowers, and what they become (the supported-ops table of the docs).
SUPPORTED_OPS = {
    "QuantizeLinear": "QUANTIZE (model input) or the quantization of an int8 tensor",
    "DequantizeLinear": "DEQUANTIZE (model output), int8 weights / int32 biases, or nothing",
    "Conv": "CONV_2D (group 1) or DEPTHWISE_CONV_2D (group == input channels), + PAD for asymmetric pads",
    "Gemm": "FULLY_CONNECTED (transA, alpha and beta folded by converters.normalize when B and C are constants)",
    "MatMul": "FULLY_CONNECTED (B a constant 2-D matrix; inputs of rank > 2 keep their leading axes)",
    "Relu": "fused RELU activation, or RELU",
    "Flatten": "RESHAPE (fully connected weights permuted to NHWC order), + TRANSPOSE if not feeding Gemm / MatMul; "
               "axis > 1 as a plain RESHAPE",
    "Reshape": "RESHAPE (constant shape)",
    "AveragePool": "AVERAGE_POOL_2D (2-D, no ceil_mode, VALID or SAME without counting pads); "
                   "DEPTHWISE_CONV_2D with weights 1/k when int8 and rescaling (see integer_scales)",
    "MaxPool": "MAX_POOL_2D (2-D, no ceil_mode, VALID or SAME; other pads as PADV2 with the lowest value first)",
    "Elu": "ELU (alpha = 1; int8 as a lookup table, which Vela also maps to the NPU)",
    "Add": "ADD",
    "Sub": "SUB (of two activations; Sub by a constant becomes Add in converters.normalize)",
    "Mul": "MUL",
    "Greater": "GREATER (float operands, bool result)",
    "Where": "SELECT_V2 (float values; constants broadcast at the output's rank)",
    "Identity": "nothing (an alias); RESHAPE copy when a graph output would share a tensor",
    "Unsqueeze": "RESHAPE (int8 or float; not on the batch axis)",
    "Squeeze": "RESHAPE (int8 or float; given axes, not the batch axis)",
    "LeakyRelu": "LEAKY_RELU",
    "PRelu": "PRELU (constant slope, broadcast in the tensor's layout)",
    "HardSwish": "HARD_SWISH (HardSigmoid becomes Mul + Add + Clip before quantizing)",
    "Split": "SPLIT_V (not on the batch axis; int8 outputs requantized to their own grids)",
    "Resize": "RESIZE_NEAREST_NEIGHBOR (asymmetric + floor, or half_pixel on integer upscales) or RESIZE_BILINEAR "
              "(align_corners, asymmetric, half_pixel, pytorch_half_pixel); H and W only",
    "ConvTranspose": "TRANSPOSE_CONV (2-D, group 1, pads TFLite's SAME or VALID reproduces)",
    "Concat": "CONCATENATION (int8 inputs requantized to the output's scale, or float; not on the batch axis)",
    "Slice": "STRIDED_SLICE (int8 or float; positive steps; not on the batch axis)",
    "ReduceSum": "SUM (float; constant axes, not the batch axis)",
    "Softmax": "SOFTMAX (last axis or channels; int8 output scale 1/256, zero point -128)",
    "Sigmoid": "LOGISTIC (int8 output scale 1/256, zero point -128)",
    "Tanh": "TANH (int8 output scale 1/128, zero point 0)",
    "Clip": "fused RELU6 / RELU_N1_TO_1 / RELU for bounds (0, 6) / (-1, 1) / (0, inf), or MAXIMUM and MINIMUM "
            "(constant bounds)",
    "GlobalAveragePool": "MEAN over the spatial axes",
    "ReduceMean": "MEAN (constant axes, not the batch axis)",
    "Transpose": "TRANSPOSE (not moving the batch axis)",
    "Pad": "PAD (constant mode with value 0, constant non-negative pads, not on the batch axis)",
}

#: Why an op has no lowering, where the reason is not simply "not written yet".
UNSUPPORTED_REASONS = {
    "LSTM": "recurrent cells are exported unrolled (converters.unroll_recurrent), when they can be",
    "GRU": "recurrent cells are exported unrolled (converters.unroll_recurrent), when they can be",
    "RNN": "recurrent cells are not exported (quantize-int8 keeps them in float; run the ONNX model in onnxruntime)",
}

_NHWC = (0, 2, 3, 1)
_NCHW = (0, 3, 1, 2)
#: The int8 output (scale, zero point) TFLite's kernels are written for.
_FIXED_OUTPUT = {"SOFTMAX": (1 / 256, -128), "LOGISTIC": (1 / 256, -128), "TANH": (1 / 128, 0)}


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:  # pragma: no cover - the dependency is declared
        raise PassError("the TFLite exporter needs the 'ai-edge-litert' package: pip install ai-edge-litert") from None
    return schema_py_generated


@dataclass
class _Value:
    """An ONNX activation as it exists in the TFLite graph."""

    tensor: int
    shape: tuple[int, ...]  # ONNX (NCHW) shape, batch 1
    dtype: str  # "int8", "float32" or "bool"
    layout: str = "plain"  # "nchw" (4-D, ONNX order), "nhwc" (4-D, TFLite order), "flat_hwc", "plain"
    scale: float | None = None
    zero_point: int | None = None
    producer: int | None = None  # index of the TFLite operator that writes it
    flat_chw: tuple[int, ...] | None = None  # for "flat_hwc": the (C, H, W) ONNX flattened


class _Exporter(ForeignOps):
    """One export: walks the ONNX graph once and fills a LiteRT ``ModelT``."""

    def __init__(self, artifact: Artifact, io: str) -> None:
        self.s = _schema()
        self.artifact = artifact
        self.io = io
        self.meta = copy.deepcopy(artifact.meta)
        # the sha256 of the ONNX model this file comes from, so an evaluation can verify the .onnx beside it
        self.meta.provenance.append(PassRecord("export-tflite", {"io": io}, artifact.sha256))
        for node in variable_length_cells(artifact.model):  # batch 1 below would fix its length to 1 too
            raise PassError(f"{node.op_type} {_node_label(node)} cannot be lowered to TFLite yet; recurrent cells are "
                            f"exported unrolled, and this one cannot be: its sequence length is not fixed (export the "
                            f"model with a fixed sequence length).")
        # batch 1 first: the normalisation then folds the Shape -> Reshape chains of legacy exporters
        self.model, notes = normalize_graph(_with_batch_one(artifact.model))
        for note in notes:
            log.info("tflite export: %s", note)
        graph = self.model.graph
        self.init = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}
        self.shapes = _shapes(self.model)
        original = artifact.model.graph
        self.symbolic_batch = {v.name for v in list(original.input) + list(original.output) if _symbolic_batch(v)}
        self.values: dict[str, _Value] = {}
        self.batch_one_only = False  # set by lowerings whose TFLite op fixes the batch at 1
        self.cache: dict[tuple[int, str], _Value] = {}
        self.done: set[str] = set()
        # LiteRT object model
        self.buffers = [self.s.BufferT()]  # buffer 0 stays empty (schema convention)
        self.tensors: list[Any] = []
        self.operators: list[Any] = []
        self.opcodes: list[Any] = []
        self.opcode_index: dict[int, int] = {}
        self.readers: dict[int, int] = {}  # tensor -> how many operators read it
        self.constants: dict[tuple[str, int, str], int] = {}  # (initializer, rank, layout) -> float tensor

    # -- errors -----------------------------------------------------------------------------------
    def _fail(self, node: onnx.NodeProto, why: str) -> PassError:
        return PassError(f"{node.op_type} {_node_label(node)} cannot be lowered to TFLite: {why}")

    # -- tensors and operators --------------------------------------------------------------------
    def _tensor(self, name: str, shape: tuple[int, ...], dtype: str, data: np.ndarray | None = None,
                scale: Any = None, zero_point: Any = None, axis: int = 0,
                signature: tuple[int, ...] | None = None) -> int:
        t = self.s.TensorT()
        t.name = name
        t.shape = [int(d) for d in shape]
        if signature is not None:
            t.shapeSignature = [int(d) for d in signature]
        t.type = {"float32": self.s.TensorType.FLOAT32, "int8": self.s.TensorType.INT8,
                  "int32": self.s.TensorType.INT32, "bool": self.s.TensorType.BOOL}[dtype]
        if data is not None:
            buffer = self.s.BufferT()
            buffer.data = np.ascontiguousarray(data, dtype=np.dtype(dtype)).tobytes()
            self.buffers.append(buffer)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = self.s.QuantizationParametersT()
            q.scale = [float(v) for v in np.atleast_1d(scale)]
            q.zeroPoint = [int(v) for v in np.atleast_1d(zero_point)]
            q.quantizedDimension = int(axis)
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def _op(self, code: str, inputs: list[int], outputs: list[int], options: Any = None) -> int:
        builtin = getattr(self.s.BuiltinOperator, code)
        if builtin not in self.opcode_index:
            oc = self.s.OperatorCodeT()
            oc.builtinCode = builtin
            oc.deprecatedBuiltinCode = min(builtin, 127)  # 127 = PLACEHOLDER_FOR_GREATER_OP_CODES
            oc.version = 1
            self.opcodes.append(oc)
            self.opcode_index[builtin] = len(self.opcodes) - 1
        op = self.s.OperatorT()
        op.opcodeIndex = self.opcode_index[builtin]
        op.inputs = list(inputs)
        op.outputs = list(outputs)
        if options is not None:
            op.builtinOptionsType = getattr(self.s.BuiltinOptions, type(options).__name__[:-1])
            op.builtinOptions = options
        for i in inputs:
            self.readers[i] = self.readers.get(i, 0) + 1
        self.operators.append(op)
        return len(self.operators) - 1

    def _like(self, value: _Value, name: str, shape: tuple[int, ...], layout: str, **changes: Any) -> _Value:
        """A new activation tensor with the quantization of ``value`` unless ``changes`` says otherwise."""
        dtype = changes.get("dtype", value.dtype)
        scale = changes.get("scale", value.scale) if dtype == "int8" else None
        zp = changes.get("zero_point", value.zero_point) if dtype == "int8" else None
        tflite_shape = tuple(shape[i] for i in _NHWC) if layout == "nhwc" else shape
        if layout == "flat_hwc":
            tflite_shape = shape
        index = self._tensor(name, tflite_shape, dtype, scale=scale, zero_point=zp)
        flat = value.flat_chw if layout == "flat_hwc" else None
        return _Value(index, tuple(shape), dtype, layout, scale, zp, flat_chw=flat)

    # -- layout and type conversions (cached) ------------------------------------------------------
    def _as(self, value: _Value, layout: str) -> _Value:
        if value.layout == layout or len(value.shape) != 4:
            return value
        key = (value.tensor, layout)
        if key not in self.cache:
            if value.layout == "flat_hwc":
                raise PassError("internal: a flattened NHWC tensor reached an op other than Gemm")
            perm = _NHWC if layout == "nhwc" else _NCHW
            out = self._like(value, f"{self.tensors[value.tensor].name}_{layout}", value.shape, layout)
            if value.shape[1] == 1 or value.shape[2] * value.shape[3] == 1:  # the bytes keep their order
                physical = [out.shape[i] for i in (_NHWC if layout == "nhwc" else range(4))]
                target = [-1, *physical[1:]]
                options = self.s.ReshapeOptionsT()
                options.newShape = target
                out.producer = self._op("RESHAPE", [value.tensor, self._const_i32(target)], [out.tensor], options)
            else:
                out.producer = self._op("TRANSPOSE", [value.tensor, self._const_i32(perm)], [out.tensor],
                                        self.s.TransposeOptionsT())
            self.cache[key] = out
        return self.cache[key]

    def _float(self, value: _Value) -> _Value:
        if value.dtype == "float32":
            return value
        key = (value.tensor, "float32")
        if key not in self.cache:
            name = f"{self.tensors[value.tensor].name}_dequantized"
            out = self._like(value, name, value.shape, value.layout, dtype="float32")
            out.producer = self._op("DEQUANTIZE", [value.tensor], [out.tensor])
            self.cache[key] = out
        return self.cache[key]

    def _requantize(self, value: _Value, scale: float, zero_point: int, name: str) -> _Value:
        if value.dtype == "int8" and np.float32(value.scale) == np.float32(scale) and value.zero_point == zero_point:
            return value
        out = self._like(value, name, value.shape, value.layout, dtype="int8", scale=scale, zero_point=zero_point)
        out.producer = self._op("QUANTIZE", [value.tensor], [out.tensor], self.s.QuantizeOptionsT())
        return out

    def _const_i32(self, values: Any) -> int:
        data = np.asarray(values, dtype=np.int32)
        return self._tensor(f"const_{len(self.tensors)}", data.shape, "int32", data=data)

    # -- ONNX helpers ------------------------------------------------------------------------------
    def _array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.init[name])

    def _constant(self, name: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, int]:
        """(data, scale, zero_point, axis) of a constant input: an initializer, or its DequantizeLinear."""
        if name in self.init:
            return self._array(name), None, None, 0
        node = self.producer.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in self.init:
            q = self._array(node.input[0])
            scale = self._array(node.input[1]).astype(np.float32)
            zp = self._array(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros_like(scale, np.int64)
            return q, scale, zp, _attr(node, "axis", 1)
        raise KeyError(name)

    def _weight_name(self, name: str) -> str:
        """The initializer behind a constant input, so TFLite and ONNX weights share names."""
        node = self.producer.get(name)
        return node.input[0] if node is not None and node.op_type == "DequantizeLinear" else name

    def _is_constant(self, name: str) -> bool:
        try:
            self._constant(name)
        except KeyError:
            return False
        return True

    def _float_constant(self, name: str) -> np.ndarray:
        data, scale, zp, axis = self._constant(name)
        if scale is None:
            return data.astype(np.float32)
        shape = [1] * data.ndim
        if scale.size > 1:
            shape[axis] = -1
        return ((data.astype(np.float64) - zp.reshape(shape)) * scale.reshape(shape)).astype(np.float32)

    def _input(self, node: onnx.NodeProto, index: int) -> _Value:
        name = node.input[index]
        if name not in self.values:
            raise self._fail(node, f"its input '{name}' is not an activation the exporter has lowered.")
        return self.values[name]

    def _output_quantization(self, name: str) -> tuple[float, int, str] | None:
        """The QuantizeLinear that is the only reader of ``name``: (scale, zero point, its output)."""
        readers = self.consumers.get(name, [])
        if len(readers) == 1 and readers[0].op_type == "QuantizeLinear" and name not in self.graph_outputs:
            q = readers[0]
            if len(q.input) < 3 or not q.input[2] or self.init[q.input[2]].data_type != onnx.TensorProto.INT8:
                return None  # not an int8 activation: the node is lowered in float, the Q then fails clearly
            scale = float(self._array(q.input[1]).reshape(-1)[0])
            zp = int(self._array(q.input[2]).reshape(-1)[0]) if len(q.input) > 2 and q.input[2] else 0
            return scale, zp, q.output[0]
        return None

    def _effective_readers(self, name: str) -> list[onnx.NodeProto | None]:
        """Nodes that read ``name`` looking through activation Q/DQ; None stands for a graph output."""
        found: list[onnx.NodeProto | None] = [None] if name in self.graph_outputs else []
        for node in self.consumers.get(name, []):
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                found.extend(self._effective_readers(node.output[0]))
            else:
                found.append(node)
        return found

    def _finish(self, node: onnx.NodeProto, value: _Value, out_q: tuple[float, int, str] | None) -> None:
        """Register the lowered output of ``node`` under its ONNX name (and its QuantizeLinear's)."""
        self.tensors[value.tensor].name = out_q[2] if out_q else node.output[0]
        self.values[node.output[0]] = value
        if out_q:
            self.values[out_q[2]] = value
            self.done.add(out_q[2])

    def _int8_inputs(self, node: onnx.NodeProto, activations: list[int]) -> bool:
        """Whether ``node`` runs in int8 in the ONNX graph: int8 activations in, a QuantizeLinear out."""
        ins = all(self.values.get(node.input[i]) is not None and self.values[node.input[i]].dtype == "int8"
                  and self.producer.get(node.input[i]) is not None
                  and self.producer[node.input[i]].op_type == "DequantizeLinear" for i in activations)
        return ins and self._output_quantization(node.output[0]) is not None

    # -- the walk ---------------------------------------------------------------------------------
    def run(self) -> bytes:
        graph = self.model.graph
        missing = [n for n in graph.node if n.domain or not hasattr(self, f"_lower_{n.op_type}")]
        # an op without any lowering is named before anything else (the I/O checks included); one with a known
        # reason (a recurrent cell) first, rather than the Shape plumbing around it
        missing.sort(key=lambda n: n.op_type not in UNSUPPORTED_REASONS)
        if missing:
            node = missing[0]
            known = f"the exporter supports {', '.join(sorted(SUPPORTED_OPS))}"
            reason = UNSUPPORTED_REASONS.get(node.op_type, known)
            if node.op_type in RECURRENT_CELLS and not node.domain:  # normalize_graph unrolls the ones it can
                why = why_not_unrolled(self.model, node)
                reason = f"recurrent cells are exported unrolled, and this one cannot be: {why}"
            domain = f" (domain '{node.domain}')" if node.domain else ""
            raise PassError(f"{node.op_type}{domain} {_node_label(node)} cannot be lowered to TFLite yet; {reason}.")
        inputs = []
        for spec in graph.input:
            if spec.name in self.init:
                continue
            if spec.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
                kind = onnx.helper.tensor_dtype_to_np_dtype(spec.type.tensor_type.elem_type).name \
                    if spec.type.tensor_type.elem_type else "of unknown type"
                raise PassError(f"the model input '{spec.name}' is {kind}; the TFLite exporter takes float32 inputs "
                                f"(an int8 file gets int8 inputs with io='int8').")
            shape = self.shapes[spec.name]
            signature = tuple(-1 if i == 0 and spec.name in self.symbolic_batch else d for i, d in enumerate(shape))
            layout = "nchw" if len(shape) == 4 else "plain"
            if self.io == "int8":
                scale, zp = self._input_quantization(spec.name)
                index = self._tensor(spec.name, shape, "int8", scale=scale, zero_point=zp, signature=signature)
                self.values[spec.name] = _Value(index, shape, "int8", layout, scale, zp)
                self._note_int8_io(self.meta.inputs, spec.name, scale, zp)
            else:
                index = self._tensor(spec.name, shape, "float32", signature=signature)
                self.values[spec.name] = _Value(index, shape, "float32", layout)
            inputs.append(index)
        for node in graph.node:
            if any(o in self.done for o in node.output):
                continue
            self._lower(getattr(self, f"_lower_{node.op_type}"), node)
        outputs: list[int] = []
        for spec in graph.output:
            outputs.append(self._graph_output(spec, taken=set(inputs) | set(outputs)))
        if self.batch_one_only:  # e.g. TRANSPOSE_CONV's constant output shape: declare the batch fixed
            for index in inputs + outputs:
                signature = self.tensors[index].shapeSignature
                if signature is not None and len(signature) and signature[0] == -1:
                    signature[0] = 1
        return self._serialise(inputs, outputs)

    def _lower(self, handler: Any, node: onnx.NodeProto) -> None:
        """Run one lowering; a pattern it did not foresee becomes a PassError naming the node, not a traceback."""
        try:
            handler(node)
        except EdgeError:
            raise
        except _MissingShape as exc:
            raise self._fail(node, f"the shape of '{exc.args[0]}' is not static (ONNX shape inference could not "
                                   f"infer it); export needs static shapes apart from the batch.") from None
        except (KeyError, IndexError, ValueError, TypeError, AttributeError, AssertionError) as exc:
            log.debug("lowering %s '%s' failed", node.op_type, node.name, exc_info=True)
            raise self._fail(node, f"the exporter does not handle this form of {node.op_type} "
                                   f"({type(exc).__name__}: {str(exc)[:120]}).") from None

    def _graph_output(self, spec: onnx.ValueInfoProto, taken: set[int]) -> int:
        if spec.name not in self.values:
            raise PassError(f"the model output '{spec.name}' was not produced by any lowered node.")
        value = self._as(self.values[spec.name], "nchw")
        if self.io == "int8":
            if value.dtype != "int8":
                raise PassError(f"int8 I/O needs the model output '{spec.name}' to come from a DequantizeLinear; "
                                f"it is computed in float. Export with io='float32'.")
            self._note_int8_io(self.meta.outputs, spec.name, value.scale, value.zero_point)
        elif value.dtype == "int8":
            value = self._float(value)
        shape = self.shapes[spec.name]
        if value.tensor in taken:  # an alias of an input or of another output: it needs a tensor of its own
            copy = self._like(value, spec.name, value.shape, value.layout)
            options = self.s.ReshapeOptionsT()
            options.newShape = [-1, *value.shape[1:]]
            copy.producer = self._op("RESHAPE", [value.tensor, self._const_i32(options.newShape)], [copy.tensor],
                                     options)
            value = copy
        signature = tuple(-1 if i == 0 and spec.name in self.symbolic_batch else d for i, d in enumerate(shape))
        tensor = self.tensors[value.tensor]
        tensor.name = spec.name
        tensor.shapeSignature = list(signature)
        return value.tensor

    def _input_quantization(self, name: str) -> tuple[float, int]:
        readers = self.consumers.get(name, [])
        quantization = self._output_quantization(name)
        if quantization is None or any(r.op_type != "QuantizeLinear" for r in readers):
            raise PassError(f"int8 I/O needs the model input '{name}' to feed one int8 QuantizeLinear and nothing "
                            f"else; it feeds {', '.join(r.op_type for r in readers) or 'nothing'}. "
                            f"Export with io='float32'.")
        return quantization[0], quantization[1]

    @staticmethod
    def _note_int8_io(specs: list[Any], name: str, scale: float, zero_point: int) -> None:
        """Record in the embedded metadata how a device quantizes the input / dequantizes the output."""
        for spec in specs:
            if spec.name == name:
                spec.dtype = "int8"
                spec.quantization = {"scheme": "int8", "io": "int8", "scale": float(np.float32(scale)),
                                     "zero_point": int(zero_point)}

    def _lower_QuantizeLinear(self, node: onnx.NodeProto) -> None:
        value = self._input(node, 0)
        scale = float(self._array(node.input[1]).reshape(-1)[0])
        zp = int(self._array(node.input[2]).reshape(-1)[0]) if len(node.input) > 2 and node.input[2] else 0
        zp_type = self.init[node.input[2]].data_type if len(node.input) > 2 and node.input[2] else onnx.TensorProto.UINT8
        if zp_type != onnx.TensorProto.INT8:
            raise self._fail(node, "only int8 activations are exported (quantize with activation type int8).")
        if value.dtype == "float32":
            out = self._like(value, node.output[0], value.shape, value.layout, dtype="int8", scale=scale, zero_point=zp)
            out.producer = self._op("QUANTIZE", [value.tensor], [out.tensor], self.s.QuantizeOptionsT())
        else:
            out = self._requantize(value, scale, zp, node.output[0])
        self.values[node.output[0]] = out

    def _lower_DequantizeLinear(self, node: onnx.NodeProto) -> None:
        if node.input[0] in self.init:
            return  # a weight or bias: read by the node that uses it
        value = self._input(node, 0)
        self.values[node.output[0]] = value  # stays int8; float readers add a DEQUANTIZE

    def _lower_Conv(self, node: onnx.NodeProto) -> None:
        x = self._as(self._input(node, 0), "nhwc")
        if len(x.shape) != 4:
            raise self._fail(node, f"only 2-D convolutions are supported; the input has shape {list(x.shape)}.")
        if not self._is_constant(node.input[1]):
            raise self._fail(node, "the weights are not a constant.")
        n, c_in, h, w = x.shape
        weights, w_scale, w_zp, _ = self._constant(node.input[1])
        c_out, c_per_group, kh, kw = weights.shape
        group = _attr(node, "group", 1)
        strides = _attr(node, "strides", [1, 1])
        dilations = _attr(node, "dilations", [1, 1])
        out_shape = self.shapes[node.output[0]]
        quantized = self._int8_inputs(node, [0]) and w_scale is not None and weights.dtype == np.int8
        if group == 1:
            code, options = "CONV_2D", self.s.Conv2DOptionsT()
            kernel = weights.transpose(0, 2, 3, 1)  # OIHW -> OHWI
            q_axis = 0
        elif group == c_in and c_per_group == 1 and c_out % c_in == 0:
            code, options = "DEPTHWISE_CONV_2D", self.s.DepthwiseConv2DOptionsT()
            options.depthMultiplier = c_out // c_in
            kernel = weights.transpose(1, 2, 3, 0)  # O1HW -> 1HWO
            q_axis = 3
        else:
            raise self._fail(node, f"grouped convolution with group={group} (neither 1 nor the {c_in} input channels).")
        padding = self._padding(node, x, (kh, kw), strides, dilations)
        if isinstance(padding, tuple):  # explicit pads: a PAD op, then VALID
            top, left, bottom, right = padding
            padded_shape = (n, c_in, h + top + bottom, w + left + right)
            padded = self._like(x, f"{node.name}_pad", padded_shape, "nhwc")
            padded.producer = self._op("PAD", [x.tensor, self._const_i32([[0, 0], [top, bottom], [left, right], [0, 0]])],
                                       [padded.tensor], self.s.PadOptionsT())
            x, padding = padded, self.s.Padding.VALID
        options.padding = padding
        options.strideH, options.strideW = int(strides[0]), int(strides[1])
        options.dilationHFactor, options.dilationWFactor = int(dilations[0]), int(dilations[1])
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        out_q = self._output_quantization(node.output[0]) if quantized else None
        if quantized:
            if np.any(w_zp != 0):
                raise self._fail(node, "int8 weights must be symmetric (zero point 0) for TFLite.")
            scales = np.broadcast_to(w_scale.reshape(-1), (c_out,)).astype(np.float32)
            w_index = self._tensor(self._weight_name(node.input[1]), kernel.shape, "int8", data=kernel, scale=scales,
                                   zero_point=np.zeros(c_out, np.int64), axis=q_axis)
            b_index = self._int32_bias(bias_name, x.scale, scales, c_out, f"{node.name}_bias")
            out = self._like(x, node.output[0], out_shape, "nhwc", scale=out_q[0], zero_point=out_q[1])
        else:
            x = self._float(x)
            kernel = self._float_constant(node.input[1])
            kernel = kernel.transpose(0, 2, 3, 1) if group == 1 else kernel.transpose(1, 2, 3, 0)
            w_index = self._tensor(node.input[1], kernel.shape, "float32", data=kernel)
            bias = self._float_constant(bias_name) if bias_name else np.zeros(c_out, np.float32)
            b_index = self._tensor(f"{node.name}_bias", bias.shape, "float32", data=bias)
            out = self._like(x, node.output[0], out_shape, "nhwc", dtype="float32")
        out.producer = self._op(code, [x.tensor, w_index, b_index], [out.tensor], options)
        self._finish(node, out, out_q)

    def _padding(self, node: onnx.NodeProto, x: _Value, kernel: tuple[int, int], strides: list[int],
                 dilations: list[int]) -> int | tuple[int, int, int, int]:
        """TFLite padding for ``node``: SAME, VALID, or explicit (top, left, bottom, right)."""
        _, _, h, w = x.shape
        auto_pad = _attr(node, "auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        same = []
        for size, k, s, d in zip((h, w), kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            same.append((total // 2, total - total // 2))  # TFLite: the extra pad goes at the end
        if auto_pad == "SAME_UPPER":
            return self.s.Padding.SAME
        if auto_pad == "SAME_LOWER":
            pads = [same[0][1], same[1][1], same[0][0], same[1][0]]
        elif auto_pad == "VALID":
            return self.s.Padding.VALID
        else:
            pads = list(_attr(node, "pads", [0, 0, 0, 0]))
        if not any(pads):
            return self.s.Padding.VALID
        if pads == [same[0][0], same[1][0], same[0][1], same[1][1]]:
            return self.s.Padding.SAME
        return (pads[0], pads[1], pads[2], pads[3])

    def _int32_bias(self, name: str | None, x_scale: float, w_scales: np.ndarray, count: int, fallback: str) -> int:
        scales = (np.float32(x_scale) * w_scales.astype(np.float32)).astype(np.float32)
        if name is None:
            data = np.zeros(count, np.int32)
        else:
            q, scale, zp, _ = self._constant(name)
            if scale is not None and q.dtype == np.int32 and np.allclose(scale, scales, rtol=1e-6, atol=0):
                data = (q.astype(np.int64) - zp).astype(np.int32)
            else:  # float bias, or one quantized with another scale: requantize to input * weight scale
                data = np.clip(np.round(self._float_constant(name).astype(np.float64) / scales), -2**31, 2**31 - 1)
                data = data.astype(np.int32)
        return self._tensor(self._weight_name(name) if name else fallback, (count,), "int32", data=data, scale=scales,
                            zero_point=np.zeros(count, np.int64))

    def _lower_Gemm(self, node: onnx.NodeProto) -> None:
        if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
            raise self._fail(node, "only transA=0, alpha=1 and beta=1 map to FULLY_CONNECTED (the normalisation "
                                   "folds them when B and C are constants).")
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias_name and not self._is_constant(bias_name):
            raise self._fail(node, "the bias C is not a constant.")
        if bias_name:
            out_features = self._constant(node.input[1])[0].shape[0 if _attr(node, "transB", 0) else 1]
            if self._float_constant(bias_name).size not in (1, out_features):
                raise self._fail(node, "the bias C does not broadcast along the output features only.")
        self._fully_connected(node, bool(_attr(node, "transB", 0)), bias_name)

    def _lower_MatMul(self, node: onnx.NodeProto) -> None:
        if not self._is_constant(node.input[1]) or self._constant(node.input[1])[0].ndim != 2:
            raise self._fail(node, "only a MatMul by a constant 2-D matrix maps to FULLY_CONNECTED.")
        self._fully_connected(node, False, None)

    def _fully_connected(self, node: onnx.NodeProto, trans_b: bool, bias_name: str | None) -> None:
        """FULLY_CONNECTED for x @ op(B) + C (Gemm, or MatMul without bias), int8 or float."""
        x = self._input(node, 0)
        if self._is_constant(node.input[0]):
            raise self._fail(node, "its input A is a constant (fold it before export).")
        if not self._is_constant(node.input[1]):
            raise self._fail(node, "the weights are not a constant.")
        weights, w_scale, w_zp, _ = self._constant(node.input[1])
        quantized = self._int8_inputs(node, [0]) and w_scale is not None and weights.dtype == np.int8
        if not quantized:
            weights = self._float_constant(node.input[1])
        if not trans_b:
            weights = weights.T
        out_features, in_features = weights.shape
        if x.layout == "flat_hwc":  # ONNX flattened C, H, W; the TFLite tensor is H, W, C
            c, h, w = x.flat_chw
            weights = weights.reshape(out_features, c, h, w).transpose(0, 2, 3, 1).reshape(out_features, in_features)
        elif len(x.shape) != 2:
            x = self._as(x, "nchw")
        out_shape = self.shapes[node.output[0]]
        options = self.s.FullyConnectedOptionsT()
        options.keepNumDims = len(out_shape) > 2  # MatMul over (N, ..., K): FULLY_CONNECTED keeps the leading axes
        out_q = self._output_quantization(node.output[0]) if quantized else None
        if quantized:
            if np.any(w_zp != 0):
                raise self._fail(node, "int8 weights must be symmetric (zero point 0) for TFLite.")
            scales = np.broadcast_to(w_scale.reshape(-1), (out_features,)).astype(np.float32)
            per_channel = scales.size > 1 and not np.all(scales == scales[0])
            w_index = self._tensor(self._weight_name(node.input[1]), weights.shape, "int8", data=weights,
                                   scale=scales if per_channel else scales[:1],
                                   zero_point=np.zeros(out_features if per_channel else 1, np.int64))
            b_index = self._int32_bias(bias_name, x.scale, scales if per_channel else scales[:1].repeat(out_features),
                                       out_features, f"{node.name}_bias")
            if not per_channel:  # per-tensor bias quantization carries one scale
                self.tensors[b_index].quantization.scale = self.tensors[b_index].quantization.scale[:1]
                self.tensors[b_index].quantization.zeroPoint = [0]
            out = self._like(x, node.output[0], out_shape, "plain", scale=out_q[0], zero_point=out_q[1])
        else:
            x = self._float(x)
            w_index = self._tensor(node.input[1], weights.shape, "float32", data=weights)
            bias = np.broadcast_to(self._float_constant(bias_name).reshape(-1), (out_features,)) if bias_name \
                else np.zeros(out_features, np.float32)
            b_index = self._tensor(f"{node.name}_bias", bias.shape, "float32", data=bias)
            out = self._like(x, node.output[0], out_shape, "plain", dtype="float32")
        out.producer = self._op("FULLY_CONNECTED", [x.tensor, w_index, b_index], [out.tensor], options)
        self._finish(node, out, out_q)

    def _lower_Relu(self, node: onnx.NodeProto) -> None:
        x = self._input(node, 0)
        out_q = self._output_quantization(node.output[0]) if x.dtype == "int8" else None
        if x.dtype == "int8" and out_q is None:
            raise self._fail(node, "an int8 input needs a QuantizeLinear on the output.")
        if self._fuse(node, x, out_q, "RELU"):
            return
        kwargs = {"scale": out_q[0], "zero_point": out_q[1]} if out_q else {}
        out = self._like(x, node.output[0], x.shape, x.layout, **kwargs)
        out.producer = self._op("RELU", [x.tensor], [out.tensor])
        self._finish(node, out, out_q)

    def _fuse(self, node: onnx.NodeProto, x: _Value, out_q: tuple[float, int, str] | None, activation: str) -> bool:
        """Fold ``node`` into the op that wrote ``x`` as its fused ``activation``, if that is the same computation.

        It is when nothing else reads ``x`` and the quantization is unchanged: a fused int8 activation clamps
        the producer's own output grid at the quantized bounds, which is what Q(clamp(DQ(x))) gives.
        """
        fusable = x.producer is not None and self.readers.get(x.tensor, 0) == 0 and \
            len(self._effective_readers(self._source(node.input[0]))) == 1
        op = self.operators[x.producer] if x.producer is not None else None
        same_q = out_q is None or (np.float32(out_q[0]) == np.float32(x.scale) and out_q[1] == x.zero_point)
        if not (fusable and op is not None and same_q and hasattr(op.builtinOptions, "fusedActivationFunction")
                and op.builtinOptions.fusedActivationFunction == self.s.ActivationFunctionType.NONE):
            return False
        op.builtinOptions.fusedActivationFunction = getattr(self.s.ActivationFunctionType, activation)
        self._finish(node, x, out_q)
        return True

    def _source(self, name: str) -> str:
        """The output of the compute node behind ``name``, looking back through activation Q/DQ."""
        node = self.producer.get(name)
        while node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            name = node.input[0]
            node = self.producer.get(name)
        return name

    def _reshape(self, node: onnx.NodeProto, x: _Value, shape: tuple[int, ...], layout: str) -> None:
        out_q = self._output_quantization(node.output[0]) if x.dtype == "int8" else None
        if x.dtype == "int8" and out_q is None:  # the quantizer left the reshape in float
            x = self._float(x)
        out = self._like(x, f"{node.output[0]}_reshaped" if out_q else node.output[0], shape, layout)
        options = self.s.ReshapeOptionsT()
        options.newShape = [-1, *shape[1:]]
        out.producer = self._op("RESHAPE", [x.tensor, self._const_i32(options.newShape)], [out.tensor], options)
        if out_q:
            out = self._requantize(out, out_q[0], out_q[1], out_q[2])
        if layout == "flat_hwc":
            out.layout, out.flat_chw = "flat_hwc", tuple(x.shape[1:])
        self._finish(node, out, out_q)

    def _lower_Flatten(self, node: onnx.NodeProto) -> None:
        x = self._input(node, 0)
        axis = _attr(node, "axis", 1) % max(len(x.shape), 1)
        if axis == 0:
            raise self._fail(node, "axis=0 folds the batch axis into the features, which the TFLite file leaves free.")
        if axis != 1:  # (N * C * ..., rest): RESHAPE's -1 takes whatever batch comes
            self._reshape(node, self._as(x, "nchw"), self.shapes[node.output[0]], "plain")
            return
        self._flatten(node, x, (x.shape[0], int(np.prod(x.shape[1:]))))

    def _flatten(self, node: onnx.NodeProto, x: _Value, shape: tuple[int, ...]) -> None:
        """(N, C, H, W) -> (N, C*H*W): a plain RESHAPE of the NHWC tensor when only fully connected layers read it."""
        if x.layout == "nhwc" and x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1:
            readers = self._effective_readers(node.output[0])
            if readers and all(r is not None and r.op_type in ("Gemm", "MatMul") and not _attr(r, "transA", 0)
                               and r.input[0] != r.input[1] and self._is_constant(r.input[1]) for r in readers):
                self._reshape(node, x, shape, "flat_hwc")
                return
            x = self._as(x, "nchw")
        self._reshape(node, x, shape, "plain")

    def _lower_Reshape(self, node: onnx.NodeProto) -> None:
        x = self._input(node, 0)
        shape = self.shapes[node.output[0]]
        if len(x.shape) == 4 and len(shape) == 2 and shape[0] == x.shape[0]:  # x.view(N, -1)
            self._flatten(node, x, shape)
            return
        self._reshape(node, self._as(x, "nchw"), shape, "nchw" if len(shape) == 4 else "plain")

    def _pool(self, node: onnx.NodeProto, code: str) -> None:
        x = self._as(self._input(node, 0), "nhwc")
        ceil_mode = _attr(node, "ceil_mode", 0)
        if len(x.shape) != 4 or (ceil_mode and code != "MAX_POOL_2D"):
            raise self._fail(node, "only 2-D pooling is supported, and ceil_mode only for MaxPool.")
        kernel = _attr(node, "kernel_shape", None)
        strides = _attr(node, "strides", [1, 1])
        if _attr(node, "dilations", [1, 1]) != [1, 1]:
            raise self._fail(node, "dilated pooling is not supported.")
        padding = self._padding(node, x, tuple(kernel), strides, [1, 1])
        if ceil_mode:  # the last, partial windows: pad the end with the lowest value as far as they reach
            padding = self._explicit_pads(node, x, padding)
            out_h, out_w = self.shapes[node.output[0]][2:]
            top, left, bottom, right = padding
            bottom += max((out_h - 1) * strides[0] + kernel[0] - (x.shape[2] + top + bottom), 0)
            right += max((out_w - 1) * strides[1] + kernel[1] - (x.shape[3] + left + right), 0)
            padding = (top, left, bottom, right) if any((top, left, bottom, right)) else self.s.Padding.VALID
        if isinstance(padding, tuple) and code == "MAX_POOL_2D":  # pad with the lowest value, then VALID
            x, padding = self._pad_lowest(node, x, padding), self.s.Padding.VALID
        if isinstance(padding, tuple):
            raise self._fail(node, f"pads {list(padding)} are neither VALID nor TFLite SAME.")
        if code == "AVERAGE_POOL_2D" and padding == self.s.Padding.SAME and _attr(node, "count_include_pad", 0):
            raise self._fail(node, "count_include_pad=1 with padding; TFLite averages over the real elements only.")
        options = self.s.Pool2DOptionsT()
        options.padding = padding
        options.strideH, options.strideW = int(strides[0]), int(strides[1])
        options.filterHeight, options.filterWidth = int(kernel[0]), int(kernel[1])
        out_q = self._output_quantization(node.output[0]) if x.dtype == "int8" else None
        if x.dtype == "int8" and out_q is None:
            x = self._float(x)
        rescaled = out_q is not None and (np.float32(out_q[0]), out_q[1]) != (np.float32(x.scale), x.zero_point)
        if code == "AVERAGE_POOL_2D" and rescaled and padding == self.s.Padding.VALID:
            self._finish(node, self._average_as_depthwise(node, x, tuple(kernel), tuple(strides), out_q), out_q)
            return
        # int8 pooling keeps the input's quantization; a different output scale is a QUANTIZE after it
        out = self._like(x, f"{node.output[0]}_pooled" if out_q else node.output[0], self.shapes[node.output[0]], "nhwc")
        out.producer = self._op(code, [x.tensor], [out.tensor], options)
        if out_q:
            out = self._requantize(out, out_q[0], out_q[1], out_q[2])
        self._finish(node, out, out_q)

    def _explicit_pads(self, node: onnx.NodeProto, x: _Value, padding: Any) -> tuple[int, int, int, int]:
        """``padding`` (SAME, VALID or explicit) as explicit (top, left, bottom, right) pads."""
        if isinstance(padding, tuple):
            return padding
        if padding == self.s.Padding.VALID:
            return (0, 0, 0, 0)
        kernel, strides = _attr(node, "kernel_shape", [1, 1]), _attr(node, "strides", [1, 1])
        pads = []
        for size, k, stride in zip(x.shape[2:], kernel, strides):
            out = -(-size // stride)
            total = max((out - 1) * stride + k - size, 0)
            pads.append((total // 2, total - total // 2))
        return (pads[0][0], pads[1][0], pads[0][1], pads[1][1])

    def _pad_lowest(self, node: onnx.NodeProto, x: _Value, pads: tuple[int, int, int, int]) -> _Value:
        """PADV2 of an NHWC tensor with its lowest value (-128 in int8, -FLT_MAX in float): max pooling's padding."""
        top, left, bottom, right = pads
        n, c, h, w = x.shape
        padded = self._like(x, f"{node.name}_pad", (n, c, h + top + bottom, w + left + right), "nhwc")
        if x.dtype == "int8":
            value = self._tensor(f"{node.name}_pad_value", (), "int8", data=np.array(-128, np.int8), scale=x.scale,
                                 zero_point=x.zero_point)
        else:
            value = self._tensor(f"{node.name}_pad_value", (), "float32",
                                 data=np.array(np.finfo(np.float32).min, np.float32))
        paddings = self._const_i32([[0, 0], [top, bottom], [left, right], [0, 0]])
        padded.producer = self._op("PADV2", [x.tensor, paddings, value], [padded.tensor], self.s.PadV2OptionsT())
        return padded

    def _average_as_depthwise(self, node: onnx.NodeProto, x: _Value, kernel: tuple[int, int],
                              strides: tuple[int, int], out_q: tuple[float, int, str]) -> _Value:
        """A rescaling int8 average pool as DEPTHWISE_CONV_2D with weights 1/k: one rounding, not two.

        TFLite's AVERAGE_POOL_2D cannot change scale, and a QUANTIZE after it rounds a second time.
        Windows that tile a row (kernel height 1, kernel width = stride, width divisible) are turned into
        a stride-1 convolution over a RESHAPE, which the Ethos-U takes (it limits depthwise strides to 3).
        """
        n, c, h, w = x.shape
        (kh, kw), (sh, sw) = kernel, strides
        out_shape = self.shapes[node.output[0]]
        tiled = kh == 1 and sh == 1 and kw == sw and w % kw == 0
        source = x
        if tiled:
            source = self._like(x, f"{node.name}_windows", (n, c, h * w // kw, kw), "nhwc")
            source.producer = self._op("RESHAPE", [x.tensor, self._const_i32([-1, h * w // kw, kw, c])],
                                       [source.tensor], self.s.ReshapeOptionsT())
            kh, sh, sw = 1, 1, 1  # the window width stays kw
        window = kh * kw
        weight_scale = np.full(c, 1.0 / (127 * window), np.float32)
        weights = self._tensor(f"{node.name}_weights", (1, kh, kw, c), "int8",
                               data=np.full((1, kh, kw, c), 127, np.int8), scale=weight_scale,
                               zero_point=np.zeros(c, np.int64), axis=3)
        bias = self._tensor(f"{node.name}_bias", (c,), "int32", data=np.zeros(c, np.int32),
                            scale=(np.float32(x.scale) * weight_scale).astype(np.float32),
                            zero_point=np.zeros(c, np.int64))
        options = self.s.DepthwiseConv2DOptionsT()
        options.padding = self.s.Padding.VALID
        options.strideH, options.strideW = int(sh), int(sw)
        options.depthMultiplier = 1
        options.dilationHFactor = options.dilationWFactor = 1
        conv_shape = (n, c, h * w // kernel[1], 1) if tiled else out_shape
        out = self._like(x, f"{node.name}_mean" if tiled else node.output[0], conv_shape, "nhwc",
                         scale=out_q[0], zero_point=out_q[1])
        out.producer = self._op("DEPTHWISE_CONV_2D", [source.tensor, weights, bias], [out.tensor], options)
        if tiled:
            pooled = self._like(out, node.output[0], out_shape, "nhwc")
            pooled.producer = self._op("RESHAPE", [out.tensor, self._const_i32([-1] + [out_shape[i] for i in _NHWC[1:]])],
                                       [pooled.tensor], self.s.ReshapeOptionsT())
            out = pooled
        return out

    def _lower_AveragePool(self, node: onnx.NodeProto) -> None:
        self._pool(node, "AVERAGE_POOL_2D")

    def _lower_MaxPool(self, node: onnx.NodeProto) -> None:
        if len(node.output) > 1 and node.output[1]:
            raise self._fail(node, "the Indices output has no TFLite equivalent.")
        self._pool(node, "MAX_POOL_2D")

    def _lower_Elu(self, node: onnx.NodeProto) -> None:
        if _attr(node, "alpha", 1.0) != 1.0:
            raise self._fail(node, f"TFLite ELU has alpha 1; got alpha={_attr(node, 'alpha', 1.0)}.")
        x = self._input(node, 0)
        out_q = self._output_quantization(node.output[0]) if x.dtype == "int8" else None
        if x.dtype == "int8" and out_q is None:
            x = self._float(x)
        kwargs = {"scale": out_q[0], "zero_point": out_q[1]} if out_q else {}
        out = self._like(x, node.output[0], x.shape, x.layout, **kwargs)
        out.producer = self._op("ELU", [x.tensor], [out.tensor])
        self._finish(node, out, out_q)

    # -- activations with a bounded range, Clip --------------------------------------------------------
    def _bounded(self, node: onnx.NodeProto, x: _Value, code: str, options: Any = None) -> None:
        """SOFTMAX, LOGISTIC or TANH, int8 when the ONNX graph quantizes the output, float otherwise.

        TFLite's int8 kernels write a fixed output grid (``_FIXED_OUTPUT``), so another output quantization is
        refused: LiteRT and TFLite Micro refuse such a SOFTMAX, LiteRT such a LOGISTIC, and TFLite Micro's
        LOGISTIC and TANH ignore it (measured 1 and 2 steps off with onnxruntime's calibrated scales).
        """
        out_q = self._output_quantization(node.output[0]) if x.dtype == "int8" else None
        if x.dtype == "int8" and out_q is None:
            x = self._float(x)
        if out_q:
            scale, zero_point = _FIXED_OUTPUT[code]
            if np.float32(out_q[0]) != np.float32(scale) or out_q[1] != zero_point:
                raise self._fail(node, f"TFLite's int8 {code} writes scale 1/{round(1 / scale)} and zero point "
                                       f"{zero_point}; the QuantizeLinear after it has scale {out_q[0]:.6g} and zero "
                                       f"point {out_q[1]}. Quantize that tensor with TFLite's scale and zero point "
                                       f"(onnxruntime: TensorQuantOverrides), or exclude the node reading it from "
                                       f"quantization so that {node.op_type} runs in float.")
        kwargs = {"scale": out_q[0], "zero_point": out_q[1]} if out_q else {}
        out = self._like(x, node.output[0], x.shape, x.layout, **kwargs)
        out.producer = self._op(code, [x.tensor], [out.tensor], options)
        self._finish(node, out, out_q)

    def _lower_Sigmoid(self, node: onnx.NodeProto) -> None:
        self._bounded(node, self._input(node, 0), "LOGISTIC")

    def _lower_Tanh(self, node: onnx.NodeProto) -> None:
        self._bounded(node, self._input(node, 0), "TANH")

    def _lower_Softmax(self, node: onnx.NodeProto) -> None:
        x = self._input(node, 0)
        rank = len(x.shape)
        opset = next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 13)
        axis = _attr(node, "axis", -1 if opset >= 13 else 1) % rank
        if opset < 13 and axis != rank - 1:
            raise self._fail(node, "before opset 13 Softmax normalises over every axis from 'axis' on.")
        if rank == 4 and axis == 1:  # channels: the last axis in NHWC
            x = self._as(x, "nhwc")
        elif axis == rank - 1:
            x = self._as(x, "nchw")
        else:
            raise self._fail(node, f"TFLite SOFTMAX normalises the last axis (or the channels); got axis {axis} "
                                   f"of a rank-{rank} tensor.")
        options = self.s.SoftmaxOptionsT()
        options.beta = 1.0
        self._bounded(node, x, "SOFTMAX", options)

    def _lower_Clip(self, node: onnx.NodeProto) -> None:
        low, high = self._clip_bounds(node)
        if low == -np.inf and high == np.inf:
            raise self._fail(node, "it has neither min nor max (a no-op: remove it before export).")
        x = self._input(node, 0)
        out_q = self._output_quantization(node.output[0]) if x.dtype == "int8" else None
        if x.dtype == "int8" and out_q is None:  # a float clip: a fused int8 clamp would round its bounds
            x = self._float(x)
        fused = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1", (0.0, np.inf): "RELU"}.get((low, high))
        if fused and self._fuse(node, x, out_q, fused):
            return
        if out_q:  # requantize first: clamping at bounds quantized with the output scale is then exact
            x = self._requantize(x, out_q[0], out_q[1], f"{node.output[0]}_requantized")
        for code, bound in (("MAXIMUM", low), ("MINIMUM", high)):
            if np.isfinite(bound):
                x = self._clamp(node, x, code, bound)
        self._finish(node, x, out_q)

    def _clip_bounds(self, node: onnx.NodeProto) -> tuple[float, float]:
        """Constant (min, max) of a Clip, from its inputs (opset >= 11) or attributes; absent is infinite."""
        bounds = [_attr(node, "min", -np.inf), _attr(node, "max", np.inf)]
        for i in (1, 2):
            if len(node.input) > i and node.input[i]:
                if not self._is_constant(node.input[i]):
                    raise self._fail(node, "its min and max must be constants.")
                bounds[i - 1] = self._float_constant(node.input[i]).reshape(-1)[0]
        return float(bounds[0]), float(bounds[1])

    def _clamp(self, node: onnx.NodeProto, x: _Value, code: str, bound: float) -> _Value:
        """``code`` (MAXIMUM / MINIMUM) of ``x`` and a constant broadcast at its rank, quantized like ``x``.

        An int8 bound at or beyond the end of the int8 range clamps nothing and is left out.
        """
        shape = (1,) * len(x.shape)
        if x.dtype == "int8":  # rounded half to even, as ONNX's QuantizeLinear rounds the clipped value
            q = np.round(np.float32(bound) / np.float32(x.scale)) + x.zero_point
            if (code == "MAXIMUM" and q <= -128) or (code == "MINIMUM" and q >= 127):
                return x
            const = self._tensor(f"{node.name}_{code.lower()}", shape, "int8", data=np.full(shape, q),
                                 scale=x.scale, zero_point=x.zero_point)
        else:
            const = self._tensor(f"{node.name}_{code.lower()}", shape, "float32", data=np.full(shape, bound))
        out = self._like(x, f"{node.output[0]}_{code.lower()}", x.shape, x.layout)
        out.producer = self._op(code, [x.tensor, const], [out.tensor])
        return out

    # -- int8 or float data movement and means ------------------------------------------------------
    def _moved_input(self, node: onnx.NodeProto, x: _Value) -> tuple[_Value, tuple[float, int, str] | None]:
        """``x`` as a data-movement op reads it, and the op's output quantization.

        TFLite's int8 TRANSPOSE and PAD copy bytes, so their output keeps the input's quantization and
        ``_moved_output`` requantizes to the ONNX output's; an int8 input whose output the ONNX graph does not
        quantize is dequantized first.
        """
        out_q = self._output_quantization(node.output[0]) if x.dtype == "int8" else None
        return (self._float(x) if x.dtype == "int8" and out_q is None else x), out_q

    def _moved_output(self, node: onnx.NodeProto, out: _Value, out_q: tuple[float, int, str] | None) -> None:
        if out_q:
            out = self._requantize(out, out_q[0], out_q[1], out_q[2])
        self._finish(node, out, out_q)

    def _lower_Transpose(self, node: onnx.NodeProto) -> None:
        x, out_q = self._moved_input(node, self._input(node, 0))
        rank = len(x.shape)
        perm = [int(p) for p in _attr(node, "perm", range(rank - 1, -1, -1))]
        if perm[0] != 0:
            raise self._fail(node, f"perm {perm} moves the batch axis, which the TFLite file leaves free.")
        relabelled = {("nchw", (0, 3, 1, 2)): "nhwc", ("nhwc", (0, 2, 3, 1)): "nchw"}.get((x.layout, tuple(perm)))
        if rank == 4 and relabelled:  # e.g. tf2onnx's NHWC input -> NCHW: the bytes are already in TFLite's order
            alias = _Value(x.tensor, self.shapes[node.output[0]], x.dtype, relabelled, x.scale, x.zero_point,
                           producer=x.producer)
            out = self._requantize(alias, out_q[0], out_q[1], out_q[2]) if out_q else alias
            if out.tensor != x.tensor:
                self._finish(node, out, out_q)
                return
            self.values[node.output[0]] = out  # no new tensor: keep the one that exists under its own name
            if out_q:
                self.values[out_q[2]] = out
                self.done.add(out_q[2])
            return
        if x.layout == "nhwc":  # axis a of the ONNX tensor is axis _NCHW[a] of the NHWC one
            perm = [_NCHW[p] for p in perm]
        shape = self.shapes[node.output[0]]
        out = self._like(x, node.output[0], shape, "nchw" if len(shape) == 4 else "plain")
        out.producer = self._op("TRANSPOSE", [x.tensor, self._const_i32(perm)], [out.tensor],
                                self.s.TransposeOptionsT())
        self._moved_output(node, out, out_q)

    def _lower_Pad(self, node: onnx.NodeProto) -> None:
        mode = _attr(node, "mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise self._fail(node, f"mode '{mode}' has no TFLite PAD equivalent; only constant padding is lowered.")
        for i in (1, 2, 3):
            if len(node.input) > i and node.input[i] and not self._is_constant(node.input[i]):
                raise self._fail(node, "its pads, constant value and axes must be constants.")
        value = float(self._float_constant(node.input[2]).reshape(-1)[0]) if len(node.input) > 2 and node.input[2] \
            else float(_attr(node, "value", 0.0))
        if value != 0.0:  # TFLite's int8 PAD fills with the zero point, i.e. 0
            raise self._fail(node, f"it pads with {value:g}; only 0 (the zero point in int8) is lowered.")
        x, out_q = self._moved_input(node, self._input(node, 0))
        rank = len(x.shape)
        pads = self._constant(node.input[1])[0].reshape(-1).tolist() if len(node.input) > 1 \
            else list(_attr(node, "pads", []))
        axes = self._axes(node, 3, rank) or list(range(rank))
        begin, end = dict(zip(axes, pads[:len(axes)])), dict(zip(axes, pads[len(axes):]))
        if begin.get(0) or end.get(0):
            raise self._fail(node, "it pads the batch axis, which the TFLite file leaves free.")
        if any(p < 0 for p in pads):
            raise self._fail(node, f"negative pads (cropping) are not supported; got {pads}.")
        order = _NHWC if x.layout == "nhwc" else range(rank)
        paddings = [[int(begin.get(a, 0)), int(end.get(a, 0))] for a in order]
        out = self._like(x, node.output[0], self.shapes[node.output[0]], x.layout)
        out.producer = self._op("PAD", [x.tensor, self._const_i32(paddings)], [out.tensor], self.s.PadOptionsT())
        self._moved_output(node, out, out_q)

    def _mean(self, node: onnx.NodeProto, axes: list[int], keepdims: bool) -> None:
        """MEAN over ``axes`` (ONNX numbering); an int8 MEAN rescales to the output quantization itself."""
        if 0 in axes:
            raise self._fail(node, "it averages over the batch axis, which the TFLite file leaves free.")
        x = self._input(node, 0)
        kept = [a for a in _NHWC if a not in axes]
        if x.layout == "nhwc" and not keepdims and kept != sorted(kept):  # the result would be in NHWC order
            x = self._as(x, "nchw")
        out_q = self._output_quantization(node.output[0]) if x.dtype == "int8" else None
        if x.dtype == "int8" and out_q is None:
            x = self._float(x)
        if out_q and keepdims and len(x.shape) == 4 and sorted(axes) == [2, 3] and x.shape[2] * x.shape[3] > 1:
            # TFLite's int8 MEAN rescales, then divides with a second rounding (measured: 28 % of outputs a step
            # off onnxruntime); a depthwise convolution with weights 1/(H*W) rounds once, as onnxruntime does
            x = self._as(x, "nhwc")
            self._finish(node, self._average_as_depthwise(node, x, tuple(x.shape[2:]), (1, 1), out_q), out_q)
            return
        if out_q and not keepdims and len(x.shape) == 4 and sorted(axes) == [2, 3] and x.shape[2] * x.shape[3] > 1:
            # the same one-rounding depthwise mean (PyTorch's x.mean([2, 3])), then the [N, C] result
            x = self._as(x, "nhwc")
            kept = onnx.helper.make_node("GlobalAveragePool", node.input[:1], [f"{node.output[0]}_keepdims"],
                                         name=node.name)
            self.shapes[kept.output[0]] = (x.shape[0], x.shape[1], 1, 1)
            pooled = self._average_as_depthwise(kept, x, tuple(x.shape[2:]), (1, 1), out_q)
            out = self._like(pooled, node.output[0], self.shapes[node.output[0]], "plain")
            options = self.s.ReshapeOptionsT()
            options.newShape = [-1, x.shape[1]]
            out.producer = self._op("RESHAPE", [pooled.tensor, self._const_i32(options.newShape)], [out.tensor],
                                    options)
            self._finish(node, out, out_q)
            return
        options = self.s.ReducerOptionsT()
        options.keepDims = keepdims
        kwargs = {"scale": out_q[0], "zero_point": out_q[1]} if out_q else {}
        out = self._like(x, node.output[0], self.shapes[node.output[0]], x.layout if keepdims else "plain", **kwargs)
        tflite_axes = sorted(_NHWC.index(a) for a in axes) if x.layout == "nhwc" else sorted(axes)
        out.producer = self._op("MEAN", [x.tensor, self._const_i32(tflite_axes)], [out.tensor], options)
        self._finish(node, out, out_q)

    def _lower_GlobalAveragePool(self, node: onnx.NodeProto) -> None:
        self._mean(node, list(range(2, len(self._input(node, 0).shape))), True)

    def _lower_ReduceMean(self, node: onnx.NodeProto) -> None:
        rank = len(self._input(node, 0).shape)
        axes = self._axes(node, 1, rank)
        if not axes and _attr(node, "noop_with_empty_axes", 0):
            self.values[node.output[0]] = self._input(node, 0)
            return
        self._mean(node, axes or list(range(rank)), bool(_attr(node, "keepdims", 1)))

    def _binary(self, node: onnx.NodeProto, code: str, options: Any) -> None:
        operands = []
        for i in range(2):
            name = node.input[i]
            operands.append(None if self._is_constant(name) else self._input(node, i))
        if operands[0] is None and operands[1] is None:
            raise self._fail(node, "both operands are constants (fold them before export).")
        active = [v for v in operands if v is not None]
        layout = "nhwc" if any(v.layout == "nhwc" for v in active) else "nchw"
        active_int8 = all(v.dtype == "int8" for v in active)
        out_q = self._output_quantization(node.output[0]) if active_int8 else None
        quantized = out_q is not None and all(
            self._constant(node.input[i])[1] is not None for i in range(2) if operands[i] is None)
        tensors = []
        for i, v in enumerate(operands):
            if v is not None:
                v = self._as(v, layout)
                tensors.append((v if quantized else self._float(v)).tensor)
                continue
            data, scale, zp, _ = self._constant(node.input[i])
            if quantized and scale.size != 1:
                raise self._fail(node, "a per-channel quantized constant operand is not supported.")
            if not quantized:
                data, scale, zp = self._float_constant(node.input[i]), None, None
            rank = len(self.shapes[node.output[0]])
            data = data.reshape((1,) * (rank - data.ndim) + data.shape) if data.ndim < rank else data
            if layout == "nhwc" and data.ndim == 4:
                data = data.transpose(_NHWC)
            tensors.append(self._tensor(node.input[i], data.shape, "int8" if quantized else "float32", data=data,
                                        scale=None if scale is None else scale.reshape(-1)[:1],
                                        zero_point=None if zp is None else zp.reshape(-1)[:1]))
        kwargs = {"scale": out_q[0], "zero_point": out_q[1]} if quantized else {"dtype": "float32"}
        template = active[0]
        out_layout = layout if len(self.shapes[node.output[0]]) == 4 else "plain"
        out = self._like(template, node.output[0], self.shapes[node.output[0]], out_layout, **kwargs)
        out.producer = self._op(code, tensors, [out.tensor], options)
        self._finish(node, out, out_q if quantized else None)

    def _lower_Add(self, node: onnx.NodeProto) -> None:
        self._binary(node, "ADD", self.s.AddOptionsT())

    def _lower_Mul(self, node: onnx.NodeProto) -> None:
        self._binary(node, "MUL", self.s.MulOptionsT())

    def _lower_Sub(self, node: onnx.NodeProto) -> None:
        self._binary(node, "SUB", self.s.SubOptionsT())

    # -- float ops of spiking step graphs ----------------------------------------------------------
    def _new(self, name: str, shape: tuple[int, ...], dtype: str, layout: str) -> _Value:
        """A fresh activation tensor of ONNX shape ``shape`` (layout only matters for 4-D tensors)."""
        layout = layout if len(shape) == 4 else "plain"
        tflite_shape = tuple(shape[i] for i in _NHWC) if layout == "nhwc" else tuple(shape)
        return _Value(self._tensor(name, tflite_shape, dtype), tuple(shape), dtype, layout)

    def _float_operands(self, node: onnx.NodeProto) -> tuple[list[int], str]:
        """The inputs of an elementwise float op in one layout: int8 dequantized, constants at the output's rank."""
        rank = len(self.shapes[node.output[0]])
        active = {i: self._input(node, i) for i, name in enumerate(node.input) if not self._is_constant(name)}
        if not active:
            raise self._fail(node, "every operand is a constant (fold them before export).")
        layout = "nhwc" if any(v.layout == "nhwc" for v in active.values()) else "nchw"
        tensors = []
        for i, name in enumerate(node.input):
            if i in active:
                value = self._as(active[i], layout)
                tensors.append((self._float(value) if value.dtype == "int8" else value).tensor)
                continue
            key = (name, rank, layout)
            if key not in self.constants:
                data = self._float_constant(name)
                data = data.reshape((1,) * (rank - data.ndim) + data.shape)  # same rank: every kernel broadcasts it
                if layout == "nhwc" and data.ndim == 4:
                    data = data.transpose(_NHWC)
                self.constants[key] = self._tensor(name, data.shape, "float32", data=data)
            tensors.append(self.constants[key])
        return tensors, layout

    def _float_input(self, node: onnx.NodeProto, index: int) -> _Value:
        """Input ``index`` of a float data-movement op, in ONNX (NCHW) order and float32."""
        if self._is_constant(node.input[index]):
            raise self._fail(node, f"its input '{node.input[index]}' is a constant (fold it before export).")
        value = self._as(self._input(node, index), "nchw")
        return self._float(value) if value.dtype == "int8" else value

    def _axes(self, node: onnx.NodeProto, index: int, rank: int) -> list[int] | None:
        """Constant axes given as input ``index`` (opset >= 13) or attribute, non-negative, in order; None if absent."""
        if len(node.input) > index and node.input[index]:
            if not self._is_constant(node.input[index]):
                raise self._fail(node, "the axes are not a constant.")
            axes = self._constant(node.input[index])[0].reshape(-1).tolist()
        else:
            axes = _attr(node, "axes", None)
        if axes is None:
            return None
        axes = [int(a) % rank for a in axes]
        if 0 in axes:
            raise self._fail(node, "it acts on the batch axis, which the TFLite file leaves free.")
        return axes

    def _lower_Greater(self, node: onnx.NodeProto) -> None:
        tensors, layout = self._float_operands(node)
        out = self._new(node.output[0], self.shapes[node.output[0]], "bool", layout)
        out.producer = self._op("GREATER", tensors, [out.tensor])
        self.values[node.output[0]] = out

    def _lower_Where(self, node: onnx.NodeProto) -> None:
        condition = None if self._is_constant(node.input[0]) else self._input(node, 0)
        if condition is None or condition.dtype != "bool":
            raise self._fail(node, "the condition must be a computed bool tensor (a Greater's output).")
        tensors, layout = self._float_operands(node)
        out = self._new(node.output[0], self.shapes[node.output[0]], "float32", layout)
        out.producer = self._op("SELECT_V2", tensors, [out.tensor], self.s.SelectV2OptionsT())
        self.values[node.output[0]] = out

    def _lower_Identity(self, node: onnx.NodeProto) -> None:
        if self._is_constant(node.input[0]):
            raise self._fail(node, "it copies a constant (fold it before export).")
        self.values[node.output[0]] = self._input(node, 0)  # graph outputs that alias get a copy at the end

    def _lower_Concat(self, node: onnx.NodeProto) -> None:
        shape = self.shapes[node.output[0]]
        axis = _attr(node, "axis", 0) % len(shape)
        if axis == 0:
            raise self._fail(node, "it concatenates along the batch axis, which the TFLite file leaves free.")
        if self._int8_inputs(node, list(range(len(node.input)))):  # every input requantized to the output's grid
            out_q = self._output_quantization(node.output[0])
            values = [self._input(node, i) for i in range(len(node.input))]
            layout = "nhwc" if len(shape) == 4 and any(v.layout == "nhwc" for v in values) else "nchw"
            values = [self._requantize(self._as(v, layout), out_q[0], out_q[1], f"{node.name}_input{i}")
                      for i, v in enumerate(values)]
        else:
            out_q, layout = None, "nchw"
            values = [self._float_input(node, i) for i in range(len(node.input))]
        out = self._like(values[0], node.output[0], shape, layout if len(shape) == 4 else "plain")
        options = self.s.ConcatenationOptionsT()
        options.axis = _NHWC.index(axis) if out.layout == "nhwc" else axis
        out.producer = self._op("CONCATENATION", [v.tensor for v in values], [out.tensor], options)
        self._finish(node, out, out_q)

    def _lower_Slice(self, node: onnx.NodeProto) -> None:
        if self._is_constant(node.input[0]):
            raise self._fail(node, f"its input '{node.input[0]}' is a constant (fold it before export).")
        x, out_q = self._moved_input(node, self._input(node, 0))  # int8 STRIDED_SLICE copies bytes
        rank = len(x.shape)
        if not all(self._is_constant(n) for n in node.input[1:] if n):
            raise self._fail(node, "starts, ends, axes and steps must be constants.")
        starts, ends = (self._constant(node.input[i])[0].reshape(-1).tolist() for i in (1, 2))
        axes = self._axes(node, 3, rank) or list(range(len(starts)))
        if 0 in axes:
            raise self._fail(node, "it acts on the batch axis, which the TFLite file leaves free.")
        steps = self._constant(node.input[4])[0].reshape(-1).tolist() if len(node.input) > 4 and node.input[4] \
            else [1] * len(axes)
        if any(s < 1 for s in steps):
            raise self._fail(node, f"only positive steps are supported; got {steps}.")
        begin, end, strides = [0] * rank, [0] * rank, [1] * rank
        whole = (1 << rank) - 1  # mask bit set: that axis is taken whole (the batch axis always is)
        for axis, start, stop, step in zip(axes, starts, ends, steps, strict=True):
            size = x.shape[axis]
            begin[axis] = int(min(max(start + size if start < 0 else start, 0), size))
            end[axis] = int(min(max(stop + size if stop < 0 else stop, 0), size))
            strides[axis] = int(step)
            whole &= ~(1 << axis)
        if x.layout == "nhwc":  # slice the NHWC tensor where it is: axis a of ONNX is axis _NHWC.index(a)
            begin, end, strides = ([v[a] for a in _NHWC] for v in (begin, end, strides))
            whole = sum(1 << i for i, a in enumerate(_NHWC) if whole & (1 << a))
        options = self.s.StridedSliceOptionsT()
        options.beginMask = options.endMask = whole
        out = self._like(x, node.output[0], self.shapes[node.output[0]], x.layout)
        out.producer = self._op("STRIDED_SLICE", [x.tensor, self._const_i32(begin), self._const_i32(end),
                                                  self._const_i32(strides)], [out.tensor], options)
        self._moved_output(node, out, out_q)

    def _lower_ReduceSum(self, node: onnx.NodeProto) -> None:
        x = self._float_input(node, 0)
        axes = self._axes(node, 1, len(x.shape))
        if not axes and _attr(node, "noop_with_empty_axes", 0):
            self.values[node.output[0]] = x
            return
        if not axes:
            raise self._fail(node, "it sums over every axis, the batch axis included.")
        options = self.s.ReducerOptionsT()
        options.keepDims = bool(_attr(node, "keepdims", 1))
        out = self._new(node.output[0], self.shapes[node.output[0]], "float32", "nchw")
        out.producer = self._op("SUM", [x.tensor, self._const_i32(axes)], [out.tensor], options)
        self.values[node.output[0]] = out

    # -- writing ----------------------------------------------------------------------------------
    def _serialise(self, inputs: list[int], outputs: list[int]) -> bytes:
        import flatbuffers

        subgraph = self.s.SubGraphT()
        subgraph.tensors = self.tensors
        subgraph.inputs = inputs
        subgraph.outputs = outputs
        subgraph.operators = self.operators
        subgraph.name = self.model.graph.name or "main"
        meta_buffer = self.s.BufferT()
        meta_buffer.data = self.meta.to_json().encode("utf-8")
        self.buffers.append(meta_buffer)
        metadata = self.s.MetadataT()
        metadata.name = METADATA_KEY
        metadata.buffer = len(self.buffers) - 1
        model = self.s.ModelT()
        model.version = TFLITE_SCHEMA_VERSION
        quantized = any(t.type == self.s.TensorType.INT8 for t in self.tensors)
        source = "int8 export of a QDQ ONNX model" if quantized else "float32 export of an ONNX model"
        model.description = f"edge: {source}, {self.io} I/O"
        model.operatorCodes = self.opcodes
        model.subgraphs = [subgraph]
        model.buffers = self.buffers
        model.metadata = [metadata]
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())


def _node_label(node: onnx.NodeProto) -> str:
    """How a message names a node: by its name, or by the tensor it writes when it has none (dynamo leaves some)."""
    return f"node '{node.name}'" if node.name else f"node writing '{node.output[0] if node.output else '?'}'"


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _symbolic_batch(spec: onnx.ValueInfoProto) -> bool:
    dims = spec.type.tensor_type.shape.dim
    return bool(dims) and not dims[0].HasField("dim_value")


def _with_batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose symbolic input dimensions are 1, so shape inference gives every tensor a static shape."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    init = {t.name for t in copy.graph.initializer}
    for spec in copy.graph.input:
        if spec.name in init:
            continue
        for dim in spec.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    return copy


class _MissingShape(KeyError):
    """A tensor whose static shape shape inference did not find."""


class _Shapes(dict):
    """Static shapes by tensor name; a missing one raises ``_MissingShape`` (turned into a sentence)."""

    def __missing__(self, name: str) -> tuple[int, ...]:
        raise _MissingShape(name)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise PassError(f"TFLite export needs static shapes; ONNX shape inference failed: {str(exc).splitlines()[0]}") \
            from None
    shapes = _Shapes()
    for spec in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = spec.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[spec.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


IO_TYPES = ("float32", "int8")


def export_tflite(artifact: Artifact, *, io: str = "float32") -> bytes:
    """The bytes of an int8 TFLite model equivalent to ``artifact``'s QDQ ONNX graph, metadata included.

    ``io="float32"`` keeps the artifact's float input and output (QUANTIZE / DEQUANTIZE inside the file);
    ``io="int8"`` drops them so the whole graph can run on an int8-only NPU, and records the input and
    output scale and zero point in the embedded metadata (``inputs[i].quantization``).

    >>> data = export_tflite(QuantizeInt8(exclude=[])(artifact, calibration))  # doctest: +SKIP
    """
    if io not in IO_TYPES:
        raise PassError(f"The 'io' parameter of export_tflite must be one of {', '.join(IO_TYPES)}; got {io!r}.")
    try:
        data = _Exporter(artifact, io).run()
    except (KeyError, IndexError, ValueError, TypeError, AttributeError, AssertionError) as exc:
        # the node lowerings name their node themselves; this catches the graph-level steps (inputs, outputs)
        log.debug("tflite export failed", exc_info=True)
        raise PassError(f"the TFLite exporter does not handle this graph's inputs or outputs "
                        f"({type(exc).__name__}: {str(exc)[:120]}).") from None
    log.info("tflite export: %d bytes", len(data))
    return data


def read_tflite_meta(data: bytes) -> Meta:
    """The toolkit metadata stored in the ``edge`` entry of a TFLite file written by ``export_tflite``."""
    s = _schema()
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise MetadataError("not a TFLite file (no TFL3 identifier).")
    model = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_KEY:
            raw = bytes(bytearray(model.buffers[entry.buffer].data))
            return Meta.from_json(raw.decode("utf-8"))
    raise MetadataError(f"the TFLite file has no '{METADATA_KEY}' metadata entry.")

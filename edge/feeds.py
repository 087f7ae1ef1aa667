"""Data into what a model's input takes, integer outputs back to numbers, any batch size: one rule for every engine.

The dtype and quantization of an input are read from the model, never guessed:

- data of the input's own dtype passes unchanged (int8 data for an int8 input is fed as is);
- float data for a float input is cast to the input's float type (float64 to float32, float32 to float16);
- float data for a quantized input (int8, uint8 or int16 with a scale) is quantized once with that input's own scale
  and zero point, ``q = clip(round(x / scale) + zero_point)``, rounding as the model's own engine would: half away
  from zero for TFLite files (TFLite's QUANTIZE kernel uses ``std::round`` on ``x / scale`` in float32), half to even
  for ONNX graphs (``QuantizeLinear``);
- integer data for an integer input that carries no scale (token ids, indices) is widened when no value can change
  (int32 ids for an int64 input);
- anything else is refused with one sentence naming both sides: integer data for a float input, integer data of
  another type for a quantized input (uint8 or int16 data for an int8 input), float data for an integer input
  without a scale.

Outputs of type int8, uint8 or int16 that carry a scale are dequantized to float32 with their own scale and zero
point; :func:`output_note` and :func:`input_note` say in words what was done, for the results document.

The batch dimension is read from the model too: :func:`run_batched` runs any number of trials through a model
whose batch is fixed at B (a TFLite file, an opset-8 era ONNX export) in chunks of B, the last one padded by
repeating its last trial and the padding dropped from the outputs; a symbolic batch runs all trials at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge.errors import EngineError

QUANTIZED_TYPES = ("int8", "uint8", "int16")


@dataclass(frozen=True)
class TensorFormat:
    """What one model input or output holds: dtype, per-tensor quantization and batch dimension (None: any)."""

    name: str
    dtype: np.dtype
    scale: float | None = None
    zero_point: int = 0
    batch: int | None = None
    rounding: str = "half-away"

    @property
    def quantized(self) -> bool:
        """Whether this is an integer tensor with a scale (an affine-quantized real number)."""
        return self.dtype.name in QUANTIZED_TYPES and self.scale is not None and self.scale > 0

    def describe(self) -> str:
        """``int8 (scale 0.0286, zero point -4)`` or ``float32``."""
        if self.quantized:
            return f"{self.dtype.name} (scale {self.scale:.6g}, zero point {self.zero_point})"
        if self.dtype.name in QUANTIZED_TYPES:
            return f"{self.dtype.name} (no scale)"
        return self.dtype.name


def per_tensor(scales: Sequence[float] | np.ndarray, zero_points: Sequence[int] | np.ndarray,
               where: str) -> tuple[float | None, int]:
    """One (scale, zero point) from a tensor's quantization arrays; None when it has none.

    Per-channel quantization of a model input or output cannot be fed with one scale, so it is refused.
    """
    scales = np.asarray(scales, dtype=np.float64).ravel()
    zero_points = np.asarray(zero_points, dtype=np.int64).ravel()
    if scales.size == 0 or not np.any(scales > 0):
        return None, 0
    if np.any(scales != scales[0]) or (zero_points.size and np.any(zero_points != zero_points[0])):
        raise EngineError(f"{where} is quantized per channel ({scales.size} scales); the toolkit feeds and reads "
                          "inputs and outputs with one scale and zero point.")
    return float(scales[0]), int(zero_points[0]) if zero_points.size else 0


def to_input(x: np.ndarray, fmt: TensorFormat) -> np.ndarray:
    """``x`` as input ``fmt`` takes it (see the module docstring), contiguous; refused with one sentence if unsafe."""
    x = np.asarray(x)
    data, want = x.dtype, fmt.dtype
    if data == want:
        return np.ascontiguousarray(x)
    data_float, want_float = np.issubdtype(data, np.floating), np.issubdtype(want, np.floating)
    if data_float and want_float:
        return np.ascontiguousarray(x, dtype=want)
    if data_float and fmt.quantized:
        return quantize(x, fmt)
    if data_float:
        raise EngineError(f"the model's input '{fmt.name}' is {fmt.describe()} and has no scale to quantize "
                          f"{data.name} data with; give {want.name} data.")
    if not np.issubdtype(data, np.integer) and data != np.bool_:
        raise EngineError(f"the model's input '{fmt.name}' is {fmt.describe()}; got {data.name} data.")
    if want_float:
        raise EngineError(f"the model's input '{fmt.name}' is {fmt.describe()} but the data are {data.name}: "
                          f"integer data are not converted to float silently; give float data (or a model with a "
                          f"{data.name} input).")
    if fmt.quantized:
        raise EngineError(f"the model's input '{fmt.name}' is {fmt.describe()} but the data are {data.name}: "
                          f"{data.name} values are not {want.name} values of that scale; give {want.name} data "
                          f"quantized with it, or float data.")
    if np.can_cast(data, want, casting="safe"):
        return np.ascontiguousarray(x, dtype=want)
    raise EngineError(f"the model's input '{fmt.name}' is {fmt.describe()} but the data are {data.name}, which "
                      f"{want.name} cannot hold without changing values; give {want.name} data.")


def quantize(x: np.ndarray, fmt: TensorFormat) -> np.ndarray:
    """Float ``x`` quantized with ``fmt``'s scale and zero point, rounded the way ``fmt.rounding`` says."""
    info = np.iinfo(fmt.dtype)
    if fmt.rounding == "half-away":  # TFLite: float32 division, std::round
        scaled = (np.asarray(x, dtype=np.float32) / np.float32(fmt.scale)).astype(np.float64)
        rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)  # exact in float64 for any float32 value
    else:  # ONNX QuantizeLinear: round half to even
        rounded = np.rint(np.asarray(x, dtype=np.float32) / np.float32(fmt.scale))
    return np.ascontiguousarray(np.clip(rounded.astype(np.float64) + fmt.zero_point, info.min, info.max),
                                dtype=fmt.dtype)


def dequantize(y: np.ndarray, fmt: TensorFormat) -> np.ndarray:
    """An integer output as float32 with its own scale and zero point; anything else unchanged."""
    y = np.asarray(y)
    if not fmt.quantized or y.dtype != fmt.dtype:
        return y
    return ((y.astype(np.float32) - np.float32(fmt.zero_point)) * np.float32(fmt.scale)).astype(np.float32)


def input_note(data: np.dtype, fmt: TensorFormat) -> str:
    """What feeding ``data`` to ``fmt`` does, in words (for the results document)."""
    data = np.dtype(data)
    if data == fmt.dtype:
        return f"input '{fmt.name}' {fmt.describe()}: {data.name} data fed as is"
    if np.issubdtype(data, np.floating) and fmt.quantized:
        how = "half away from zero, as TFLite" if fmt.rounding == "half-away" else "half to even, as QuantizeLinear"
        return (f"input '{fmt.name}' {fmt.describe()}: {data.name} data quantized once with the model's scale and "
                f"zero point (rounded {how})")
    return f"input '{fmt.name}' {fmt.describe()}: {data.name} data cast to {fmt.dtype.name}"


def output_note(fmt: TensorFormat) -> str:
    """What is done to output ``fmt`` before it is returned, in words."""
    if fmt.quantized:
        return f"output '{fmt.name}' {fmt.describe()}: dequantized to float32 with the model's scale and zero point"
    return f"output '{fmt.name}' {fmt.describe()}: returned as the model computes it"


def fixed_batch(formats: Iterable[TensorFormat]) -> int | None:
    """The batch the inputs fix, when those that fix one agree; None when none does (or they disagree: the engine
    then says what it makes of the feeds)."""
    batches = {fmt.batch for fmt in formats} - {None}
    return batches.pop() if len(batches) == 1 else None


def run_batched(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], feeds: dict[str, np.ndarray],
                batch: int | None) -> list[np.ndarray]:
    """``run(feeds)`` for any number of trials on a model whose batch is fixed at ``batch`` (None: any).

    Every feed carries the trials on its first axis. A fixed batch B runs in chunks of B trials; the last chunk is
    padded with copies of its last trial (real data, so no padding value can upset the model), and the padded
    rows are dropped from every output, which must then carry the batch on its first axis too. A batch-1 model
    whose output drops the batch axis (old exporters squeeze it) gets it back, so every output has a row per trial.
    """
    arrays = {name: np.asarray(v) for name, v in feeds.items()}
    counts = {len(v) if v.ndim else -1 for v in arrays.values()}
    if batch is None or len(counts) != 1 or -1 in counts:
        return run(feeds)  # nothing to split on: the engine says what it makes of the feeds
    (trials,) = counts
    if trials == 0:
        raise EngineError("there are no trials to run.")
    chunks: list[list[np.ndarray]] = []
    for start in range(0, trials, batch):
        stop = min(start + batch, trials)
        outputs = run({name: padded(v[start:stop], batch) for name, v in arrays.items()})
        if batch == 1:
            outputs = [o if o.ndim and o.shape[0] == 1 else np.asarray(o)[None] for o in outputs]
        bad = [o.shape for o in outputs if o.ndim == 0 or o.shape[0] != batch]
        if bad:
            raise EngineError(f"the model takes a fixed batch of {batch} but an output has shape {bad[0]}, without "
                              f"that batch on its first axis, so {trials} trials cannot be run {batch} at a time.")
        chunks.append([o[: stop - start] for o in outputs])
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def padded(x: np.ndarray, batch: int) -> np.ndarray:
    """``x`` filled up to ``batch`` rows with copies of its last row."""
    if len(x) == batch:
        return x
    return np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])


def engine_message(explanation: str, exc: BaseException) -> str:
    """The toolkit's one-line explanation, then the engine's own message whole, indented below it."""
    text = str(exc).strip() or type(exc).__name__
    body = "\n".join("    " + line.rstrip() for line in text.splitlines() if line.strip())
    return f"{explanation.rstrip('.:')}. The engine said:\n{body}"


# -- ONNX graphs: formats read from the graph itself ------------------------------------------------------------

#: ops that only move an integer tensor's values around, so its scale is that of the tensor before or after them
_SHAPE_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity")
#: (scale, zero point) input positions of the quantized output written by each op
_OUTPUT_SCALE = {"QuantizeLinear": (1, 2), "QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QLinearAdd": (6, 7),
                 "QLinearMul": (6, 7), "QLinearConcat": (0, 1)}


def onnx_formats(model: onnx.ModelProto) -> tuple[list[TensorFormat], list[TensorFormat]]:
    """Formats of an ONNX graph's data inputs and of its outputs, read from the graph.

    The batch is the first dimension when it is a fixed number (``dim_value``), else None (``dim_param`` or
    unknown). An integer input's scale and zero point are those of the DequantizeLinear or QLinear* node that reads
    it, an integer output's those of the QuantizeLinear or QLinear* node that writes it (through reshapes); when
    readers disagree or none has constant parameters, the tensor has no scale.
    """
    constants = _constants(model.graph)
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    producers: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))
        for name in node.output:
            producers[name] = node
    initializers = {t.name for t in model.graph.initializer}

    def fmt(value: onnx.ValueInfoProto, scale_zero: tuple[float | None, int]) -> TensorFormat:
        tensor = value.type.tensor_type
        dims = tensor.shape.dim if tensor.HasField("shape") else []
        batch = int(dims[0].dim_value) if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value > 0 \
            else None
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)) if tensor.elem_type else np.dtype("float32")
        scale, zero = scale_zero if dtype.name in QUANTIZED_TYPES else (None, 0)
        return TensorFormat(value.name, dtype, scale, zero, batch, "half-even")

    inputs = [fmt(v, _reader_scale(v.name, consumers, constants)) for v in model.graph.input
              if v.name not in initializers]
    outputs = [fmt(v, _writer_scale(v.name, producers, constants)) for v in model.graph.output]
    return inputs, outputs


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attribute in node.attribute:
                if attribute.name == "value":
                    arrays[node.output[0]] = numpy_helper.to_array(attribute.t)
    return arrays


def _parameters(node: onnx.NodeProto, scale_at: int, zero_at: int,
                constants: dict[str, np.ndarray]) -> tuple[float, int] | None:
    """(scale, zero point) from the node's inputs at those positions, when both are per-tensor constants."""
    if len(node.input) <= scale_at or node.input[scale_at] not in constants:
        return None
    scale = np.asarray(constants[node.input[scale_at]], dtype=np.float64).ravel()
    zero_name = node.input[zero_at] if len(node.input) > zero_at else ""
    zero = np.asarray(constants.get(zero_name, np.zeros(1)), dtype=np.int64).ravel()
    if scale.size != 1 or zero.size > 1 or not scale[0] > 0:
        return None
    return float(scale[0]), int(zero[0]) if zero.size else 0


def _reader_scale(name: str, consumers: dict[str, list[tuple[onnx.NodeProto, int]]],
                  constants: dict[str, np.ndarray]) -> tuple[float | None, int]:
    found: set[tuple[float, int] | None] = set()
    pending, seen = [name], set()
    while pending:
        tensor = pending.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        for node, position in consumers.get(tensor, []):
            if node.op_type in _SHAPE_OPS and position == 0:
                pending.extend(node.output[:1])
            elif node.op_type == "DequantizeLinear" and position == 0:
                found.add(_parameters(node, 1, 2, constants))
            elif node.op_type.startswith("QLinear"):  # every QLinear op lists each input as (x, x_scale, x_zero)
                found.add(_parameters(node, position + 1, position + 2, constants))
    return found.pop() if len(found) == 1 and None not in found else (None, 0)


def _writer_scale(name: str, producers: dict[str, onnx.NodeProto],
                  constants: dict[str, np.ndarray]) -> tuple[float | None, int]:
    node = producers.get(name)
    while node is not None and node.op_type in _SHAPE_OPS:
        node = producers.get(node.input[0])
    if node is None or not (node.op_type in _OUTPUT_SCALE or node.op_type.startswith("QLinear")):
        return None, 0
    scale_at, zero_at = _OUTPUT_SCALE.get(node.op_type, (3, 4))  # one-input QLinear ops: (x, s, z, y_s, y_z)
    return _parameters(node, scale_at, zero_at, constants) or (None, 0)

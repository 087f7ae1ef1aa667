"""Quantization passes through ``onnxruntime.quantization``.

- ``QuantizeInt8`` (``quantize-int8``): static QDQ. Weights int8 (per output channel or per tensor),
  activations int8 or int16 (``activations="int16"``: int8 weights with 16-bit activations, which ORT
  writes as opset-21 QuantizeLinear/DequantizeLinear) with ranges calibrated on real trials by MinMax,
  Entropy or Percentile. Nodes named in ``exclude`` stay in float: for the Guney SSVEP network keeping
  the 3-weight sub-band combination layer in float recovers most of what plain int8 loses (DESIGN.md).
  Distribution calibration is refused: onnxruntime meant it for float8, and it ruins integer models.
  With ``integer_exact`` (the default) the int8 convolutions and fully connected layers get even weights
  and multipliers 1/(2q), q odd (``converters.integer_scales``): one bit of weight resolution buys
  TFLite / TFLite Micro / Ethos-U files that compute exactly what the ONNX QDQ model computes. An int8 Mul's
  output scale is widened by at most 1/32 so that x * sigmoid(x) and x * constant round alike in every
  engine; any other Mul gets a multiplier just above 1/q, q even, where the three engines differ on a few
  of the 65,536 int8 pairs (a few tenths of a percent with the calibrated scale).
  Sigmoid, Tanh and Softmax outputs take the fixed int8 grids TFLite's kernels assume (1/256 or 1/128)
  instead of calibrated ones, so they export as int8 LOGISTIC / TANH / SOFTMAX.
- ``QuantizeDynamicInt8`` (``quantize-dynamic-int8``): int8 weights, activation ranges computed at run
  time (``quantize_dynamic``); needs no calibration. Worth it for MatMul/Gemm-heavy graphs only.
- ``QuantizeInt4Weights`` (``quantize-int4-weights``): weight-only blockwise int4 for MatMul with a
  constant weight, as ``com.microsoft.MatMulNBits``. A model without such a MatMul is returned unchanged
  (the pass does not fire; the reason is logged and recorded in provenance).

Before quantizing, the graph is normalised (``converters.normalize``) so graphs from other exporters quantize:
old opsets upgraded to 13, initializers listed as inputs made constants, constants and BatchNormalization folded.
Add, Sub, Mul, LeakyRelu, PRelu and HardSwish are quantized too (``EXTRA_QDQ_OP_TYPES``), so residual and
squeeze-excite networks export fully int8. GRU / LSTM with a fixed sequence length are unrolled by the
normalisation into per-step primitives and quantize like them; others (and RNN) stay in float with a warning.

Mixed precision under an accuracy budget lives in ``converters.mixed_precision``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from converters.integer_scales import exact_activation_products, exact_requantization, tie_free_average_pools
from converters.normalize import fuse_hard_swish, normalize_graph
from edge.artifact import Artifact
from edge.errors import PassError

log = logging.getLogger("edge")

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: Ops onnxruntime's QDQ quantizer leaves in float by default that int8 engines run in integer (lookup tables,
#: MEAN, CONCATENATION); without them an EEGNet's ELU (and the pooling after it) would stay float between DQ and Q.
EXTRA_QDQ_OP_TYPES = ("Elu", "Sigmoid", "Tanh", "Softmax", "Concat", "GlobalAveragePool", "ReduceMean", "Add", "Sub",
                      "Mul", "LeakyRelu", "PRelu", "HardSwish")
#: The int8 output quantization TFLite's kernels fix for these ops (scale, zero point); calibrating them
#: instead would give a file LiteRT refuses.
FIXED_OUTPUT_QUANTIZATION = {"Sigmoid": (1 / 256, -128), "Softmax": (1 / 256, -128), "Tanh": (1 / 128, 0)}
ACTIVATION_TYPES = ("int8", "int16")
#: Recurrent cells the normalisation could not unroll: quantize-int8 leaves them in float (onnxruntime only).
RECURRENT_OPS = ("LSTM", "GRU", "RNN")


def check_calibrate_method(owner: str, calibrate: str) -> None:
    """Refuse an unknown calibration method, and Distribution (float8 only) with the reason."""
    if calibrate == "distribution":
        raise PassError(
            f"The 'calibrate' parameter of {owner} must be one of {', '.join(CALIBRATION_METHODS)}; got "
            "'distribution', which onnxruntime meant for float8 and which ruins integer (int8/int16) models."
        )
    if calibrate not in CALIBRATION_METHODS:
        raise PassError(
            f"The 'calibrate' parameter of {owner} must be one of {', '.join(CALIBRATION_METHODS)}; "
            f"got '{calibrate}'."
        )


def _plain_model(artifact: Artifact) -> onnx.ModelProto:
    """A copy of the graph without our metadata, at an IR version onnxruntime reads."""
    model = onnx.ModelProto()
    model.CopyFrom(artifact.model)
    del model.metadata_props[:]
    model.ir_version = min(model.ir_version, 10)
    return model


def _normalized_model(artifact: Artifact, owner: str) -> onnx.ModelProto:
    """``_plain_model`` normalised for the quantizer (``converters.normalize``), with what changed logged."""
    model, notes = normalize_graph(_plain_model(artifact))
    for note in notes:
        log.info("%s: %s", owner, note)
    recurrent = [f"{n.op_type} '{n.name}'" for n in model.graph.node if n.op_type in RECURRENT_OPS]
    if recurrent:
        log.warning("%s: recurrent cells stay in float (they could not be unrolled; onnxruntime's static quantizer "
                    "has no int8 ones and the TFLite exporter does not lower them): %s", owner, ", ".join(recurrent))
    return model


def _unshare_layer_constants(path: Path) -> None:
    """Give each Conv / Gemm / MatMul its own weight and bias, where onnxruntime's optimizer merged equal ones.

    Its constant sharing merges equal small initializers (the biases of an unrolled GRU's steps, hidden size
    8 or less); a shared weight or bias gets one scale, so ``exact_requantization`` could not fit each layer.
    """
    model = onnx.load(path)
    inits = {t.name: t for t in model.graph.initializer}
    seen: set[str] = set()
    copies = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        for i in (1, 2):
            name = node.input[i] if len(node.input) > i else ""
            if name not in inits:
                continue
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}_for_{node.name or node.output[0]}"
                model.graph.initializer.append(copy)
                node.input[i] = copy.name
                copies += 1
            seen.add(name)
    if copies:
        onnx.save(model, path)


def _calibration_feed(artifact: Artifact, calibration: np.ndarray, owner: str) -> tuple[np.ndarray, int]:
    """The trials in the model input's own dtype, and how many the model takes at once (its fixed batch, or 1)."""
    graph = artifact.model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise PassError(f"{owner} calibrates models with one input; this one has {len(inputs)} "
                        f"({', '.join(i.name for i in inputs)}).")
    tensor_type = inputs[0].type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type) if tensor_type.elem_type else np.float32
    if not np.issubdtype(dtype, np.floating):
        raise PassError(f"{owner} quantizes models with a float input; the input '{inputs[0].name}' is "
                        f"{np.dtype(dtype).name} (the model is already integer, or takes token ids).")
    dims = tensor_type.shape.dim
    wanted = [d.dim_value if d.HasField("dim_value") else None for d in dims][1:]
    got = list(calibration.shape[1:])
    if dims and (len(wanted) != len(got) or any(w is not None and w != g for w, g in zip(wanted, got))):
        shown = ", ".join(str(d.dim_value) if d.HasField("dim_value") else "N" for d in dims)
        raise PassError(f"{owner}: the calibration trials have shape {tuple(got)} each; the model input "
                        f"'{inputs[0].name}' takes ({shown}). Give data in the model's input layout.")
    batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 1 else 1
    if len(calibration) < batch:
        raise PassError(f"{owner}: the model takes batches of exactly {batch} trials; the calibration data has "
                        f"{len(calibration)}.")
    return calibration.astype(dtype), batch


def _undo_hard_swish_inlining(path: Path) -> None:
    """Fuse back the HardSwish that onnxruntime's optimizer inlined, so it quantizes as one int8 op."""
    model = onnx.load(path)
    if fuse_hard_swish(model):
        onnx.save(model, path)


def _check_node_names(owner: str, artifact: Artifact, names: list[str], what: str) -> None:
    known = {n.name for n in artifact.model.graph.node}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PassError(f"{owner}: no node named '{unknown[0]}' to {what}; node names are shown by 'edge inspect'.")


def quantize_static_model(
    artifact: Artifact,
    calibration: np.ndarray,
    *,
    owner: str,
    per_channel: bool = True,
    calibrate: str = "minmax",
    activations: str = "int8",
    exclude: list[str] | None = None,
    only: list[str] | None = None,
    activation_overrides: dict[str, str] | None = None,
    integer_exact: bool = True,
) -> onnx.ModelProto:
    """Static QDQ quantization of ``artifact``'s graph, calibrated on ``calibration`` (already sliced).

    ``only`` restricts quantization to those nodes (``nodes_to_quantize``); ``activation_overrides`` maps
    activation tensor names to "int16" for per-tensor 16-bit activations in an otherwise int8 model.
    ``integer_exact`` puts the weights of int8 layers on the even grid of ``converters.integer_scales``, so
    TFLite, TFLite Micro and the Ethos-U compute the same int8 values as onnxruntime.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.registry import QDQRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = artifact.meta.inputs[0].name
    trials, batch = _calibration_feed(artifact, calibration, owner)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(trials[i : i + batch] for i in range(0, len(trials) - batch + 1, batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibrate]
    qtypes = {"int8": QuantType.QInt8, "int16": QuantType.QInt16}
    extra: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True}
    overrides: dict[str, list[dict[str, Any]]] = {}
    normalized = _normalized_model(artifact, owner)
    if activations == "int8":
        for node in normalized.graph.node:  # the normalised graph: unrolled recurrent cells add Sigmoid / Tanh
            if node.op_type in FIXED_OUTPUT_QUANTIZATION and node.name not in (exclude or []):
                scale, zero_point = FIXED_OUTPUT_QUANTIZATION[node.op_type]
                overrides[node.output[0]] = [{"scale": np.array(scale, np.float32),
                                              "zero_point": np.array(zero_point, np.int8)}]
    overrides.update({t: [{"quant_type": qtypes[q]}] for t, q in (activation_overrides or {}).items()})
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    with tempfile.TemporaryDirectory(prefix="edge-quantize-") as tmp:
        source, prepared, output = (Path(tmp) / n for n in ("in.onnx", "prep.onnx", "out.onnx"))
        onnx.save(normalized, source)
        chatter = io.StringIO()  # onnxruntime's calibrators print progress to stdout
        try:
            # stderr too: quant_pre_process logs a traceback of its optimizer's failure before raising
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
                _undo_hard_swish_inlining(prepared)
                _unshare_layer_constants(prepared)
                # 16-bit activations make quantize_static move the graph to opset 21, whose standard
                # QuantizeLinear/DequantizeLinear take int16: no contrib ops needed, ORT CPU runs it.
                quantize_static(
                    str(prepared),
                    str(output),
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=sorted(set(QDQRegistry) | set(EXTRA_QDQ_OP_TYPES)),
                    per_channel=per_channel,
                    activation_type=qtypes[activations],
                    weight_type=QuantType.QInt8,
                    nodes_to_quantize=list(only) if only is not None else None,
                    nodes_to_exclude=list(exclude or []),
                    calibrate_method=method,
                    extra_options=extra,
                )
        except Exception as exc:
            log.debug("onnxruntime.quantization output:\n%s", chatter.getvalue())
            raise PassError(f"{owner} failed in onnxruntime.quantization: {str(exc).splitlines()[0]}") from None
        quantized = onnx.load(output)
        float_weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(prepared).graph.initializer}
    log.debug("onnxruntime.quantization output:\n%s", chatter.getvalue())
    if activations == "int8":
        changed = tie_free_average_pools(quantized)
        if changed:
            log.info("%s: output scale of %s widened by 1/32 so integer kernels round as onnxruntime does",
                     owner, ", ".join(changed))
    if integer_exact:
        # first the Mul output scales: the layers reading them take their multipliers from the new scales
        exact, engines_only = exact_activation_products(quantized)
        if exact or engines_only:
            log.info("%s: Mul output scales chosen so integer kernels round as onnxruntime in %d of %d int8 Muls "
                     "(TFLite Micro as LiteRT in all)", owner, len(exact), len(exact) + len(engines_only))
        changed = exact_requantization(quantized, float_weights)
        if changed:
            log.info("%s: even weights and exact multipliers in %d layers, so integer kernels round as onnxruntime",
                     owner, len(changed))
    return quantized


@dataclass
class QuantizeInt8:
    """Parameters of the static int8 quantization pass (int8 weights, int8 or int16 activations)."""

    per_channel: bool = True
    calibrate: str = "minmax"
    exclude: list[str] = field(default_factory=list)
    calibration_trials: int = 256
    activations: str = "int8"
    integer_exact: bool = True
    name: str = "quantize-int8"

    def __post_init__(self) -> None:
        check_calibrate_method(self.name, self.calibrate)
        if self.calibration_trials < 1:
            raise PassError(f"The 'calibration_trials' parameter of {self.name} must be >= 1; got {self.calibration_trials}.")
        if self.activations not in ACTIVATION_TYPES:
            raise PassError(
                f"The 'activations' parameter of {self.name} must be one of {', '.join(ACTIVATION_TYPES)}; "
                f"got '{self.activations}'."
            )

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None) -> Artifact:
        """Quantize ``artifact`` using ``calibration`` trials in its input layout."""
        if calibration is None or len(calibration) == 0:
            raise PassError(f"{self.name} needs calibration data; pass --calib DATASPEC.")
        _check_node_names(self.name, artifact, self.exclude, "exclude")
        trials = calibration[: self.calibration_trials]
        quantized = quantize_static_model(
            artifact, trials, owner=self.name, per_channel=self.per_channel, calibrate=self.calibrate,
            activations=self.activations, exclude=list(self.exclude), integer_exact=self.integer_exact,
        )
        log.info("%s: %s activations, %d nodes excluded, calibrated on %d trials",
                 self.name, self.activations, len(self.exclude), len(trials))
        child = artifact.derive(quantized, self.name, self.params())
        scheme = "int8-qdq-internal" if self.activations == "int8" else "int8w-int16a-qdq-internal"
        for spec in child.meta.inputs + child.meta.outputs:
            spec.quantization = {"scheme": scheme, "io": "float32"}
        return child


@dataclass
class QuantizeDynamicInt8:
    """Parameters of the dynamic int8 pass: int8 weights, activation ranges computed at run time."""

    per_channel: bool = False
    op_types: list[str] = field(default_factory=lambda: ["MatMul", "Gemm"])
    exclude: list[str] = field(default_factory=list)
    name: str = "quantize-dynamic-int8"

    def __post_init__(self) -> None:
        allowed = ("MatMul", "Gemm", "Conv", "Attention", "LSTM", "Gather")
        wrong = [t for t in self.op_types if t not in allowed]
        if wrong or not self.op_types:
            raise PassError(f"The 'op_types' parameter of {self.name} must list op types among "
                            f"{', '.join(allowed)}; got {self.op_types}.")

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None = None) -> Artifact:
        """Quantize ``artifact``'s weights to int8; ``calibration`` is ignored (ranges are dynamic)."""
        from onnxruntime.quantization import QuantType, quantize_dynamic

        _check_node_names(self.name, artifact, self.exclude, "exclude")
        with tempfile.TemporaryDirectory(prefix="edge-quantize-") as tmp:
            source, output = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
            onnx.save(_normalized_model(artifact, self.name), source)
            try:
                quantize_dynamic(str(source), str(output), op_types_to_quantize=list(self.op_types),
                                 per_channel=self.per_channel, weight_type=QuantType.QInt8,
                                 nodes_to_exclude=list(self.exclude))
            except Exception as exc:
                raise PassError(f"{self.name} failed in onnxruntime.quantization: {str(exc).splitlines()[0]}") from None
            quantized = onnx.load(output)
        log.info("%s: weights of %s quantized to int8", self.name, ", ".join(self.op_types))
        child = artifact.derive(quantized, self.name, self.params())
        for spec in child.meta.inputs + child.meta.outputs:
            spec.quantization = {"scheme": "int8-dynamic", "io": "float32"}
        return child


@dataclass
class QuantizeInt4Weights:
    """Parameters of the weight-only int4 pass for MatMul (``com.microsoft.MatMulNBits``)."""

    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int | None = None
    exclude: list[str] = field(default_factory=list)
    name: str = "quantize-int4-weights"

    def __post_init__(self) -> None:
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise PassError(f"The 'block_size' parameter of {self.name} must be a power of two >= 16; "
                            f"got {self.block_size}.")
        if self.accuracy_level not in (None, 0, 1, 2, 3, 4):
            raise PassError(f"The 'accuracy_level' parameter of {self.name} must be one of 0, 1, 2, 3, 4 or "
                            f"unset; got {self.accuracy_level}.")

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def _candidates(self, model: onnx.ModelProto) -> list[str]:
        """MatMul nodes whose weight (input B) is a 2-D constant: the only ones MatMulNBits replaces."""
        weights = {t.name: t for t in model.graph.initializer}
        return [n.name for n in model.graph.node
                if n.op_type == "MatMul" and n.name not in self.exclude
                and n.input[1] in weights and len(weights[n.input[1]].dims) == 2]

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None = None) -> Artifact:
        """Replace constant-weight MatMuls by 4-bit blockwise MatMulNBits; ``calibration`` is ignored."""
        _check_node_names(self.name, artifact, self.exclude, "exclude")
        candidates = self._candidates(artifact.model)
        if not candidates:
            reason = "no MatMul with a constant 2-D weight; the model is left unchanged"
            log.info("%s did not fire: %s", self.name, reason)
            return artifact.derive(_copy(artifact.model), self.name, {**self.params(), "fired": False, "reason": reason})
        try:
            from onnxruntime.quantization.matmul_nbits_quantizer import (
                MatMulNBitsQuantizer,
            )
        except ImportError as exc:
            raise PassError(f"{self.name} needs the package '{exc.name}' (pip install onnx-ir).") from None
        try:
            # The quantizer logs every node at INFO on its own handler; keep the user's terminal readable.
            logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
            quantizer = MatMulNBitsQuantizer(_plain_model(artifact), bits=4, block_size=self.block_size,
                                             is_symmetric=self.symmetric, accuracy_level=self.accuracy_level,
                                             nodes_to_exclude=list(self.exclude), op_types_to_quantize=("MatMul",))
            quantizer.process()
        except Exception as exc:
            raise PassError(f"{self.name} failed in onnxruntime.quantization: {str(exc).splitlines()[0]}") from None
        quantized = quantizer.model.model
        replaced = sum(n.op_type == "MatMulNBits" for n in quantized.graph.node)
        log.info("%s: %d of %d MatMul nodes now MatMulNBits (block %d)", self.name, replaced, len(candidates),
                 self.block_size)
        child = artifact.derive(quantized, self.name, {**self.params(), "fired": replaced > 0,
                                                       "nodes": replaced})
        for spec in child.meta.inputs + child.meta.outputs:
            spec.quantization = {"scheme": "int4-weight-only", "io": "float32"}
        return child


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out

"""Static int8 QDQ of a spiking step graph's connections, neurons and state left in float32 (``quantize-snn``).

The rewrite: the connection ops (``Gemm``, ``MatMul``, ``Conv``: dense, convolution and sum-pooling layers),
and a ``Reshape``/``Flatten`` whose only compute readers are such ops, get int8 weights (symmetric, per
output channel unless ``per_channel=False``) and int8 input and output activations, calibrated by
onnxruntime.quantization. The neuron arithmetic (``Mul``, ``Add``, ``Greater``, ``Where``), the delay lines and
every state tensor stay float32: thresholds are compared as in the float graph, and spikes change only where
an int8 synaptic current moves a membrane across its threshold.

Calibration: a step graph takes its state as inputs, so the float graph is first run with onnxruntime over
the calibration sequences ``[n, T, *input]`` from the zero state, all sequences as one batch, and the feeds
of ``calibration_steps`` steps spread evenly over T (``x[:, t]`` and the state at step t) are what the
quantizer calibrates on.

Preconditions: an artifact of family ``snn`` written by ``edge.families.snn.export.export_snn`` (its
``meta.task`` lists the state). Export the result with ``converters.tflite.export_tflite``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from converters.integer_scales import exact_requantization
from converters.quantize import _plain_model, check_calibrate_method
from edge.artifact import Artifact
from edge.errors import PassError
from edge.families.snn.export import is_snn

log = logging.getLogger("edge")

#: op types that carry synapses; their weights and activations become int8
CONNECTION_OPS = ("Gemm", "MatMul", "Conv")
#: data movement quantized with the connection it feeds (an int8 tensor stays int8 through it)
RESHAPE_OPS = ("Reshape", "Flatten")


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes ``QuantizeSpiking`` quantizes: connections, and reshapes that only feed connections."""
    connections = {n.name for n in model.graph.node if n.op_type in CONNECTION_OPS}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    reshapes = []
    for node in model.graph.node:
        if node.op_type not in RESHAPE_OPS:
            continue
        compute = [r for r in readers.get(node.output[0], []) if r.op_type != "Identity"]  # Identity: an output copy
        if compute and all(r.name in connections for r in compute):
            reshapes.append(node.name)
    return [n.name for n in model.graph.node if n.name in connections or n.name in reshapes]


def record_step_feeds(artifact: Artifact, sequences: np.ndarray, steps: int) -> list[dict[str, np.ndarray]]:
    """Feeds of the float step graph at ``steps`` steps spread over T, running ``sequences`` from the zero state."""
    import onnxruntime as ort

    session = ort.InferenceSession(_plain_model(artifact).SerializeToString(), providers=["CPUExecutionProvider"])
    slots = artifact.meta.task["state"]
    x_name = artifact.meta.task.get("input", "x")
    outputs = [o.name for o in session.get_outputs()]
    x = sequences.astype(np.float32)
    state = {s["input"]: np.zeros((len(x), *s["shape"]), np.float32) for s in slots}
    time_steps = x.shape[1]
    chosen = set(np.linspace(0, time_steps - 1, min(steps, time_steps)).round().astype(int).tolist())
    feeds = []
    for t in range(time_steps):
        feed = {x_name: np.ascontiguousarray(x[:, t]), **state}
        if t in chosen:
            feeds.append(feed)
        result = dict(zip(outputs, session.run(None, feed), strict=True))
        state = {s["input"]: result[s["output"]] for s in slots}
    return feeds


@dataclass
class QuantizeSpiking:
    """Parameters of the int8 connection quantization of a spiking step graph (neurons and state float32)."""

    per_channel: bool = True
    calibrate: str = "minmax"
    calibration_trials: int = 64
    calibration_steps: int = 32
    name: str = "quantize-snn"

    def __post_init__(self) -> None:
        check_calibrate_method(self.name, self.calibrate)
        for key in ("calibration_trials", "calibration_steps"):
            if getattr(self, key) < 1:
                raise PassError(f"The '{key}' parameter of {self.name} must be >= 1; got {getattr(self, key)}.")

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None) -> Artifact:
        """Quantize ``artifact``'s connections, calibrated on input spike trains ``calibration`` [n, T, *input]."""
        if not is_snn(artifact):
            raise PassError(f"{self.name} needs a spiking step graph (family 'snn' with a state list); "
                            f"got family '{artifact.meta.family}'. Use quantize-int8 for other networks.")
        x_name = artifact.meta.task.get("input", "x")
        x_shape = next((s.shape[1:] for s in artifact.meta.inputs if s.name == x_name), None)
        if x_shape is None:
            raise PassError(f"{self.name}: the step graph has no input '{x_name}' as its metadata says.")
        if calibration is None or len(calibration) == 0:
            raise PassError(f"{self.name} needs calibration spike trains [n, T, {', '.join(map(str, x_shape))}].")
        calibration = np.asarray(calibration)
        if calibration.ndim != 2 + len(x_shape) or list(calibration.shape[2:]) != list(x_shape):
            raise PassError(f"{self.name} needs calibration spike trains of shape [n, T, "
                            f"{', '.join(map(str, x_shape))}]; got {list(calibration.shape)}.")
        if not any(n.op_type in CONNECTION_OPS for n in artifact.model.graph.node):
            raise PassError(f"{self.name} found no Gemm, MatMul or Conv to quantize in the step graph.")
        nodes = quantized_nodes(artifact.model)
        trials = calibration[: self.calibration_trials]
        feeds = record_step_feeds(artifact, trials, self.calibration_steps)
        quantized = self._quantize(artifact, feeds, nodes)
        log.info("%s: %d nodes int8, neurons and state float32, calibrated on %d trials x %d steps",
                 self.name, len(nodes), len(trials), len(feeds))
        child = artifact.derive(quantized, self.name, {**self.params(), "int8_nodes": nodes})
        child.meta.task["precision"] = {
            "weights": f"int8 symmetric {'per-channel' if self.per_channel else 'per-tensor'}",
            "activations": "int8 at connection inputs and outputs",
            "neurons": "float32", "state": "float32",
        }
        data_io = (x_name, artifact.meta.task.get("output", "y"))  # state, spikes and activity: see "precision"
        for spec in child.meta.inputs + child.meta.outputs:
            if spec.name in data_io:
                spec.quantization = {"scheme": "int8-connections-qdq", "io": "float32"}
        return child

    def _quantize(self, artifact: Artifact, feeds: list[dict[str, np.ndarray]], nodes: list[str]) -> onnx.ModelProto:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._feeds = iter(feeds)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self._feeds, None)

        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[self.calibrate]
        with tempfile.TemporaryDirectory(prefix="edge-quantize-snn-") as tmp:
            source, prepared, output = (Path(tmp) / n for n in ("in.onnx", "prep.onnx", "out.onnx"))
            onnx.save(_plain_model(artifact), source)
            chatter = io.StringIO()  # onnxruntime's calibrators print progress to stdout
            try:
                with contextlib.redirect_stdout(chatter):
                    # no graph optimisation: it could fuse or rename the nodes chosen above
                    quant_pre_process(str(source), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
                    quantize_static(
                        str(prepared), str(output), Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(CONNECTION_OPS + RESHAPE_OPS), nodes_to_quantize=nodes,
                        per_channel=self.per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=method,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                    )
            except Exception as exc:  # noqa: BLE001 - onnxruntime.quantization raises anything; say so once
                log.debug("onnxruntime.quantization output:\n%s", chatter.getvalue())
                raise PassError(f"{self.name} failed in onnxruntime.quantization: {str(exc).splitlines()[0]}") from None
            log.debug("onnxruntime.quantization output:\n%s", chatter.getvalue())
            quantized = onnx.load(output)
            float_weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(prepared).graph.initializer}
        exact_requantization(quantized, float_weights)  # connections export bit for bit (converters.integer_scales)
        return quantized

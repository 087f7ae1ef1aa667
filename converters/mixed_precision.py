"""Mixed-precision quantization under an accuracy budget.

``sensitivity`` quantizes one layer (Conv, Gemm, MatMul) at a time to int8 and measures, against the
float model on evaluation trials, the accuracy drop in points and the output SQNR in dB.
``QuantizeMixed`` (``quantize-mixed``) quantizes every layer to int8, then, while the measured drop
exceeds ``max_drop``, takes the most sensitive layer still in int8 and gives it 16-bit activations if
that meets the budget, else keeps it in float. The child records each layer's precision and the
measured drop in provenance; if the budget cannot be met with even one layer quantized, it raises a
``PassError`` naming the layers it could not quantize within the budget.

Accuracy is top-1 against labels when the evaluation data has them, otherwise top-1 agreement with
the float model's predictions. A layer's 16-bit activations are its input and output activation
tensors; a tensor shared with a neighbouring layer is 16-bit for both.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from converters.quantize import check_calibrate_method, quantize_static_model
from edge.artifact import Artifact
from edge.errors import PassError

log = logging.getLogger("edge")

QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")


@dataclass
class LayerSensitivity:
    """How much quantizing one layer alone to int8 costs."""

    layer: str
    op_type: str
    accuracy: float  # top-1 in [0, 1] with only this layer in int8
    drop_points: float  # float accuracy minus ``accuracy``, in percentage points
    sqnr_db: float  # output signal-to-quantization-noise ratio vs the float model


def run_model(model: onnx.ModelProto, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The first output of ``model`` for every trial, on the onnxruntime CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = x.astype(np.float32)
    return np.concatenate([session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)])


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10 of signal power over error power; inf when identical."""
    noise = float(np.sum((reference.astype(np.float64) - test) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise)


def _accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(outputs.reshape(len(outputs), -1).argmax(1) == y))


def _plain(artifact: Artifact) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(artifact.model)
    model.ir_version = min(model.ir_version, 10)
    return model


def quantizable_layers(artifact: Artifact) -> list[onnx.NodeProto]:
    """The nodes whose weights a static pass quantizes: Conv, Gemm and MatMul."""
    return [n for n in artifact.model.graph.node if n.op_type in QUANTIZABLE_OPS]


def sensitivity(
    artifact: Artifact,
    calibration_x: np.ndarray,
    eval_x: np.ndarray,
    eval_y: np.ndarray | None = None,
    *,
    per_channel: bool = True,
    calibrate: str = "minmax",
    calibration_trials: int = 128,
) -> list[LayerSensitivity]:
    """Quantize each layer alone to int8 and measure accuracy drop and output SQNR vs float, in graph order."""
    check_calibrate_method("sensitivity", calibrate)
    reference = run_model(_plain(artifact), eval_x)
    labels = reference.reshape(len(reference), -1).argmax(1) if eval_y is None else np.asarray(eval_y)
    float_accuracy = _accuracy(reference, labels)
    rows = []
    for node in quantizable_layers(artifact):
        model = quantize_static_model(artifact, calibration_x[:calibration_trials], owner="sensitivity",
                                      per_channel=per_channel, calibrate=calibrate, only=[node.name])
        outputs = run_model(model, eval_x)
        accuracy = _accuracy(outputs, labels)
        rows.append(LayerSensitivity(node.name, node.op_type, accuracy, 100 * (float_accuracy - accuracy),
                                     sqnr_db(reference, outputs)))
        log.debug("sensitivity of %s: drop %.2f points, SQNR %.1f dB", node.name, rows[-1].drop_points,
                  rows[-1].sqnr_db)
    return rows


def rank_by_sensitivity(rows: list[LayerSensitivity]) -> list[LayerSensitivity]:
    """Most sensitive first: larger accuracy drop, then lower SQNR."""
    return sorted(rows, key=lambda r: (-round(r.drop_points, 6), r.sqnr_db))


def format_sensitivity_table(rows: list[LayerSensitivity], precision: dict[str, str] | None = None) -> str:
    """A plain-text table of per-layer sensitivity, most sensitive first, with the chosen precision if given."""
    ranked = rank_by_sensitivity(rows)
    headers = ["rank", "layer", "op", "int8 acc %", "drop (pts)", "SQNR (dB)"] + (["precision"] if precision else [])
    body = [
        [str(i + 1), r.layer, r.op_type, f"{100 * r.accuracy:.2f}", f"{r.drop_points:+.2f}", f"{r.sqnr_db:.1f}"]
        + ([precision.get(r.layer, "-")] if precision else [])
        for i, r in enumerate(ranked)
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    right = {0, 3, 4, 5}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(b) for b in body])


@dataclass
class QuantizeMixed:
    """Parameters of the mixed-precision pass: int8 where the accuracy budget allows, int16 or float elsewhere."""

    max_drop: float = 0.5
    per_channel: bool = True
    calibrate: str = "minmax"
    calibration_trials: int = 128
    allow_int16: bool = True
    always_analyse: bool = True
    eval_data: str | None = None
    integer_exact: bool = True
    name: str = "quantize-mixed"

    def __post_init__(self) -> None:
        # learned state (not parameters): the table to print and the precision chosen by the last call
        self.sensitivity_: list[LayerSensitivity] = []
        self.precision_: dict[str, str] = {}
        check_calibrate_method(self.name, self.calibrate)
        if self.calibration_trials < 1:
            raise PassError(f"The 'calibration_trials' parameter of {self.name} must be >= 1; got {self.calibration_trials}.")
        if not np.isfinite(self.max_drop):
            raise PassError(f"The 'max_drop' parameter of {self.name} must be a finite number of accuracy points; "
                            f"got {self.max_drop}.")

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def _evaluation(self, artifact: Artifact) -> tuple[np.ndarray, np.ndarray | None]:
        from edge.data.labels import class_indices, model_classes
        from edge.data.registry import load_dataset

        spec = self.eval_data or artifact.meta.extra.get("heldout_data")
        if not spec:
            raise PassError(f"{self.name} needs evaluation data to measure the accuracy drop; give its "
                            "'eval_data' parameter a data spec (e.g. 'synthetic-ssvep:subjects=31-32,seed=0').")
        data = load_dataset(spec, artifact.meta)
        return data.x, None if data.y is None else class_indices(data.y, model_classes(artifact.meta), spec)

    def _build(self, artifact: Artifact, trials: np.ndarray, precision: dict[str, str]) -> onnx.ModelProto:
        nodes = {n.name: n for n in artifact.model.graph.node}
        weights = {t.name for t in artifact.model.graph.initializer}
        overrides = {}
        for layer, p in precision.items():
            if p == "int16":
                node = nodes[layer]
                for tensor in [node.input[0], *node.output]:
                    if tensor and tensor not in weights:
                        overrides[tensor] = "int16"
        return quantize_static_model(
            artifact, trials, owner=self.name, per_channel=self.per_channel, calibrate=self.calibrate,
            exclude=[layer for layer, p in precision.items() if p == "float"], activation_overrides=overrides,
            integer_exact=self.integer_exact,
        )

    def __call__(
        self,
        artifact: Artifact,
        calibration: np.ndarray | None,
        evaluation: tuple[np.ndarray, np.ndarray | None] | None = None,
    ) -> Artifact:
        """Quantize ``artifact`` within ``max_drop`` points on ``evaluation`` = (x, y) (default: ``eval_data``)."""
        if calibration is None or len(calibration) == 0:
            raise PassError(f"{self.name} needs calibration data; pass --calib DATASPEC.")
        layers = quantizable_layers(artifact)
        if not layers:
            raise PassError(f"{self.name}: the model has no {', '.join(QUANTIZABLE_OPS)} node to quantize.")
        eval_x, eval_y = evaluation if evaluation is not None else self._evaluation(artifact)
        trials = calibration[: self.calibration_trials]
        reference = run_model(_plain(artifact), eval_x)
        labels = reference.reshape(len(reference), -1).argmax(1) if eval_y is None else np.asarray(eval_y)
        float_accuracy = _accuracy(reference, labels)

        def measure(precision: dict[str, str]) -> tuple[onnx.ModelProto, float]:
            model = self._build(artifact, trials, precision)
            drop = 100 * (float_accuracy - _accuracy(run_model(model, eval_x), labels))
            log.debug("%s: %s -> drop %.2f points", self.name, precision, drop)
            return model, drop

        precision = {n.name: "int8" for n in layers}
        model, drop = measure(precision)
        self.sensitivity_ = []
        if drop > self.max_drop or self.always_analyse:
            self.sensitivity_ = sensitivity(artifact, trials, eval_x, labels, per_channel=self.per_channel,
                                            calibrate=self.calibrate, calibration_trials=self.calibration_trials)
        if drop > self.max_drop:
            for row in rank_by_sensitivity(self.sensitivity_):
                quantized = [name for name, p in precision.items() if p != "float"]
                if self.allow_int16:
                    trial = {**precision, row.layer: "int16"}
                    candidate, candidate_drop = measure(trial)
                    if candidate_drop <= self.max_drop:
                        precision, model, drop = trial, candidate, candidate_drop
                        break
                if len(quantized) == 1:
                    break  # moving the last quantized layer to float would leave nothing quantized
                precision = {**precision, row.layer: "float"}
                model, drop = measure(precision)
                if drop <= self.max_drop:
                    break
            if drop > self.max_drop:
                floated = [name for name, p in precision.items() if p == "float"]
                left = [name for name, p in precision.items() if p != "float"]
                raise PassError(
                    f"{self.name} could not quantize within the budget of {self.max_drop:g} points: "
                    f"{', '.join(floated + left)}; with only {', '.join(left)} quantized (int8 or int16 "
                    f"activations) the drop is still {drop:.2f} points. Raise --max-drop or keep the model in float."
                )
        self.precision_ = precision
        log.info("%s: %s; accuracy drop %.2f points (budget %g)", self.name,
                 ", ".join(f"{k}={v}" for k, v in precision.items()), drop, self.max_drop)
        record = {
            **self.params(),
            "precision": dict(precision),
            "float_accuracy": float_accuracy,
            "accuracy": float_accuracy - drop / 100,
            "drop_points": drop,
            "eval_trials": len(eval_x),
            "sensitivity": [
                {"layer": r.layer, "drop_points": round(r.drop_points, 4),
                 "sqnr_db": round(r.sqnr_db, 2) if np.isfinite(r.sqnr_db) else None}
                for r in self.sensitivity_
            ],
        }
        child = artifact.derive(model, self.name, record)
        scheme = "mixed-int8-int16-float-qdq-internal"
        for spec in child.meta.inputs + child.meta.outputs:
            spec.quantization = {"scheme": scheme, "io": "float32"}
        return child


__all__ = ["LayerSensitivity", "QuantizeMixed", "format_sensitivity_table",
           "quantizable_layers", "rank_by_sensitivity", "run_model", "sensitivity", "sqnr_db"]

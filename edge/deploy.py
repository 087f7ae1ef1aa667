"""Put a model on a target: read it (ONNX, zoo name or TFLite), bring it into a format the target runs, deploy.

>>> target, deployed, report = deploy("ssvep_int8.onnx", "npu:ethos-u55-128")
>>> report["summary"]["inference_time_s"]

An int8 (QDQ) ONNX model given to a target that runs TFLite (``mcu``, ``npu``, ``serial``, ``sim``) is
exported on the fly, exactly as ``edge convert --export tflite`` would (int8 input and output for the NPU,
so the whole graph can run there; float I/O elsewhere). A TFLite file given to a target that runs only ONNX
(``gpu``) is refused: there is no way back.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import Artifact
from edge.errors import EdgeError, TargetError
from edge.feeds import TensorFormat, dequantize, onnx_formats
from edge.models import resolve_model
from edge.tflite_model import TfliteModel, is_tflite, read_tflite

Model = Artifact | TfliteModel


def load_model(model: str | Path) -> tuple[Path | None, Model]:
    """(path, model) for an ONNX file, a zoo name or a TFLite file (recognised by its identifier, not its name)."""
    if is_tflite(model):
        return Path(model), read_tflite(model)
    return resolve_model(model)


def model_format(model: Model) -> str:
    return "tflite" if isinstance(model, TfliteModel) else "onnx"


def for_target(model: Model, target: Any, spec: str) -> Model:
    """The model in a format ``target`` runs (exporting an int8 ONNX model to TFLite when it needs that)."""
    formats = getattr(target, "formats", ("onnx",))
    if model_format(model) in formats:
        return model
    if isinstance(model, TfliteModel):
        raise TargetError(f"{spec} runs ONNX models; give the .onnx file this TFLite file was exported from.")
    from converters.tflite import export_tflite

    io = "int8" if spec.startswith("npu") else "float32"
    try:
        data = export_tflite(model, io=io)
    except EdgeError as exc:
        raise TargetError(f"{spec} runs int8 TFLite files and this model cannot be exported to one ({exc}); "
                          "quantize it first: edge convert MODEL --quantize int8 --export tflite.") from None
    return TfliteModel.from_bytes(data, where=f"{getattr(model, 'where', None) or 'model'} (exported for {spec})")


def input_format(model: Model) -> TensorFormat:
    """The model's first data input as the engines read it: dtype, quantization, batch dimension."""
    if isinstance(model, TfliteModel):
        from runtimes.litert_session import tflite_format

        return tflite_format(model.input_details)
    inputs, _ = onnx_formats(model.model)
    if not inputs:
        raise TargetError("the model has no data input.")
    return inputs[0]


def timed_batch(model: Model) -> int:
    """The batch one timed inference of a single trial runs at: the model's fixed batch, else 1."""
    try:
        return input_format(model).batch or 1
    except EdgeError:  # no data input to read: the latency code path reports its own problem
        return 1


def reference_data(x: np.ndarray, model: Model, reference: Model) -> np.ndarray:
    """``x``, stored for ``model``, as ``reference`` takes it: integer data quantized for ``model``'s input become
    the float values they stand for when ``reference`` has a float input (the float ONNX file beside an
    int8-input TFLite file); anything else is left for the engines' own checks."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        return x
    try:
        data, reference_input = input_format(model), input_format(reference)
    except EdgeError:  # no single data input to read: the engines say what they make of the data
        return x
    if x.dtype == data.dtype and data.quantized and np.issubdtype(reference_input.dtype, np.floating):
        return dequantize(x, data)
    return x


def deploy(model: str | Path | Model, device: str) -> tuple[Any, Model, dict[str, Any]]:
    """Create the target ``device`` names, deploy the model on it; returns (target, deployed model, report)."""
    from devices import get_target

    if not isinstance(model, (Artifact, TfliteModel)):
        model = load_model(model)[1]
    target = get_target(device)
    deployed = for_target(model, target, device)
    start = time.perf_counter()
    try:
        report = dict(target.deploy(deployed) or {})
    except BaseException:
        _close(target)
        raise
    report.setdefault("seconds", time.perf_counter() - start)
    report["format"] = model_format(deployed)
    report["sha256"] = deployed.sha256
    return target, deployed, report


def _close(target: Any) -> None:
    close = getattr(target, "close", None)
    if close is not None:
        close()

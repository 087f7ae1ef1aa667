"""ONNX Runtime on the CPU, the reference engine."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort

from edge.artifact import Artifact, TensorSpec
from edge.errors import EngineError

_IR_LIMIT = re.compile(r"max supported IR version: (\d+)")


class OnnxRuntimeSession:
    """One onnxruntime InferenceSession with the artifact's input and output specs."""

    def __init__(self, artifact: Artifact, *, threads: int | None = None, providers: list[str] | None = None) -> None:
        self.inputs: list[TensorSpec] = artifact.meta.inputs
        self.outputs: list[TensorSpec] = artifact.meta.outputs
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._session = _create(artifact.model, options, providers or ["CPUExecutionProvider"])
        self._output_names = [o.name for o in self._session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; feeds map input names to arrays of the input dtype."""
        try:
            return self._session.run(self._output_names, feeds)
        except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidArgument
            first = str(exc).strip().splitlines()[0]
            raise EngineError(f"onnxruntime could not run the model: {first}") from None

    def run_named(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for named feeds (multi-input models such as spiking step graphs)."""
        return dict(zip(self._output_names, self.run(feeds), strict=True))


def _create(model: onnx.ModelProto, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    """Create a session, lowering the IR version stamp if this onnxruntime is older than onnx."""
    data = model.SerializeToString()
    try:
        return ort.InferenceSession(data, options, providers=providers)
    except Exception as exc:
        match = _IR_LIMIT.search(str(exc))
        if not match:
            raise EngineError(f"onnxruntime refused the model: {_short(exc)}") from None
    # The IR version only stamps the container format; an older stamp is safe for the ops we emit.
    downgraded = onnx.ModelProto()
    downgraded.CopyFrom(model)
    downgraded.ir_version = int(match.group(1))
    try:
        return ort.InferenceSession(downgraded.SerializeToString(), options, providers=providers)
    except Exception as exc:
        raise EngineError(f"onnxruntime refused the model: {_short(exc)}") from None


def _short(exc: Exception) -> str:
    """The useful last part of an onnxruntime error message."""
    text = str(exc).strip().splitlines()[0]
    return text.split(") ")[-1] if ") " in text else text

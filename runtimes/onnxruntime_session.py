"""ONNX Runtime on the CPU, the reference engine."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort

from edge.artifact import Artifact, TensorSpec
from edge.errors import EngineError
from edge.feeds import (
    TensorFormat,
    dequantize,
    engine_message,
    fixed_batch,
    input_note,
    onnx_formats,
    output_note,
    run_batched,
    to_input,
)

_IR_LIMIT = re.compile(r"max supported IR version: (\d+)")


class OnnxRuntimeSession:
    """One onnxruntime InferenceSession with the artifact's input and output specs.

    Feeds are converted as :mod:`edge.feeds` says (input dtype and quantization read from the graph; integer data of
    the input's own type fed as is), integer outputs with a scale come back dequantized, and a graph with a fixed
    batch dimension runs any number of trials in chunks of that batch. :attr:`notes` says what was done.
    """

    def __init__(self, artifact: Artifact, *, threads: int | None = None, providers: list[str] | None = None) -> None:
        self.inputs: list[TensorSpec] = artifact.meta.inputs
        self.outputs: list[TensorSpec] = artifact.meta.outputs
        options = ort.SessionOptions()
        options.log_severity_level = 4  # errors reach the user whole in the EngineError, not also on stderr
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._session = _create(artifact.model, options, providers or ["CPUExecutionProvider"])
        self._output_names = [o.name for o in self._session.get_outputs()]
        inputs, outputs = onnx_formats(artifact.model)
        self.input_formats: dict[str, TensorFormat] = {f.name: f for f in inputs}
        self.output_formats: dict[str, TensorFormat] = {f.name: f for f in outputs}
        self.notes: dict[str, str] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; feeds map input names to arrays (converted to each input's dtype as edge.feeds says)."""
        arrays = {}
        for name, x in feeds.items():
            fmt = self.input_formats.get(name)
            if fmt is None:  # not a graph input: let onnxruntime name the problem
                arrays[name] = np.asarray(x)
                continue
            arrays[name] = to_input(x, fmt)
            self.notes[name] = input_note(np.asarray(x).dtype, fmt)
        outputs = run_batched(self._run_once, arrays, self._fixed_batch(arrays))
        results = []
        for name, y in zip(self._output_names, outputs, strict=True):
            fmt = self.output_formats.get(name)
            if fmt is not None:
                self.notes[name] = output_note(fmt)
                y = dequantize(y, fmt)
            results.append(y)
        return results

    def run_named(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for named feeds (multi-input models such as spiking step graphs)."""
        return dict(zip(self._output_names, self.run(feeds), strict=True))

    def _fixed_batch(self, feeds: dict[str, np.ndarray]) -> int | None:
        """The fixed batch of the fed inputs, when those that have one agree (else None: run as given)."""
        return fixed_batch(self.input_formats[name] for name in feeds if name in self.input_formats)

    def _run_once(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(self._output_names, feeds)
        except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidArgument
            given = ", ".join(f"'{name}' {x.dtype.name} {tuple(x.shape)}" for name, x in feeds.items())
            raise EngineError(engine_message(f"onnxruntime could not run the model on {given}", exc)) from None


def _create(model: onnx.ModelProto, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    """Create a session, lowering the IR version stamp if this onnxruntime is older than onnx."""
    data = model.SerializeToString()
    try:
        return ort.InferenceSession(data, options, providers=providers)
    except Exception as exc:
        match = _IR_LIMIT.search(str(exc))
        if not match:
            raise EngineError(engine_message("onnxruntime refused the model", exc)) from None
    # The IR version only stamps the container format; an older stamp is safe for the ops we emit.
    downgraded = onnx.ModelProto()
    downgraded.CopyFrom(model)
    downgraded.ir_version = int(match.group(1))
    try:
        return ort.InferenceSession(downgraded.SerializeToString(), options, providers=providers)
    except Exception as exc:
        raise EngineError(engine_message("onnxruntime refused the model", exc)) from None

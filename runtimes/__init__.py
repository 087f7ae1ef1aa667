"""Execution engines behind one ``Session`` interface.

>>> from runtimes import open_session
>>> session = open_session(artifact, engine="onnxruntime", threads=1)
>>> outputs = session.run({session.inputs[0].name: x})
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edge.artifact import Artifact, TensorSpec
from edge.errors import EngineError
from edge.feeds import TensorFormat

ENGINES = ("onnxruntime",)


class Session(Protocol):
    """A loaded model ready to run numpy feeds of any number of trials (see edge.feeds for the dtype rules)."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: each data input's dtype, quantization and batch dimension, read from the model
    input_formats: dict[str, TensorFormat]
    #: what was done to each input and output on the last run, in words
    notes: dict[str, str]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once and return the outputs in graph order."""
        ...


def open_session(artifact: Artifact, engine: str = "onnxruntime", *, threads: int | None = None) -> Session:
    """Load an artifact into the named engine."""
    if engine == "onnxruntime":
        from runtimes.onnxruntime_session import OnnxRuntimeSession

        return OnnxRuntimeSession(artifact, threads=threads)
    raise EngineError(f"unknown engine '{engine}'; available: {', '.join(ENGINES)}.")


__all__ = ["ENGINES", "Session", "open_session"]

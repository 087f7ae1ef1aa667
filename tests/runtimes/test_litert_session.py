from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_conv_model
from converters.tflite import export_tflite
from edge.artifact import Artifact
from edge.errors import EngineError
from runtimes import open_session
from runtimes.litert_session import LiteRTSession


def test_float_tflite_matches_onnxruntime_for_any_batch() -> None:
    artifact = Artifact.from_model(tiny_conv_model(ir_version=10))
    session = LiteRTSession(export_tflite(artifact))
    for batch in (1, 5, 1):
        x = np.random.default_rng(batch).normal(size=(batch, 2, 1, 8)).astype(np.float32)
        (got,) = session.run({"x": x})
        (want,) = open_session(artifact).run({"x": x})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bad_bytes_and_kernels_are_engine_errors() -> None:
    with pytest.raises(EngineError, match="LiteRT refused the model"):
        LiteRTSession(b"not a flatbuffer at all")
    with pytest.raises(EngineError, match="kernels must be one of"):
        LiteRTSession(b"", kernels="gpu")

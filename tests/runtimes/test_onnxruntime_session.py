from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import tiny_conv_model
from edge.artifact import Artifact
from edge.errors import EngineError
from runtimes import open_session


def _reference_forward(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The tiny model computed with numpy."""
    w, b, fc, fc_b = (onnx.numpy_helper.to_array(t) for t in model.graph.initializer)
    n = x.shape[0]
    conv = np.zeros((n, 3, 1, 6), np.float32)
    for t in range(6):
        conv[:, :, 0, t] = np.einsum("nck,ock->no", x[:, :, 0, t : t + 3], w[:, :, 0, :]) + b
    return np.maximum(conv, 0).reshape(n, -1) @ fc + fc_b


@pytest.mark.parametrize("ir_version", [8, 10, 14])
def test_runs_models_stamped_with_any_ir_version(ir_version: int) -> None:
    model = tiny_conv_model(ir_version=ir_version)
    session = open_session(Artifact.from_model(model), threads=1)
    x = np.random.default_rng(1).normal(size=(5, 2, 1, 8)).astype(np.float32)
    (y,) = session.run({"x": x})
    np.testing.assert_allclose(y, _reference_forward(model, x), rtol=1e-5, atol=1e-5)
    assert [s.name for s in session.inputs] == ["x"]
    assert session.outputs[0].shape == ["N", 4]


def test_wrong_input_shape_is_an_engine_error() -> None:
    session = open_session(Artifact.from_model(tiny_conv_model()))
    with pytest.raises(EngineError, match="could not run"):
        session.run({"x": np.zeros((1, 3, 1, 8), np.float32)})


def test_unknown_engine() -> None:
    with pytest.raises(EngineError, match="unknown engine 'tensorflow'"):
        open_session(Artifact.from_model(tiny_conv_model()), engine="tensorflow")

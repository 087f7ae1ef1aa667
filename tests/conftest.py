"""Shared fixtures: tiny ONNX models built inline and the shipped reference model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.artifact import Artifact, read_artifact
from edge.zoo import zoo_path

REFERENCE = "ssvep-guney-9ch-0.4s"


def tiny_conv_model(ir_version: int | None = None) -> onnx.ModelProto:
    """(N, 2, 1, 8) -> Conv(3 filters, 1x3) -> Relu -> Flatten -> Gemm(4): a small classifier."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(3, 2, 1, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    fc = numpy_helper.from_array(rng.normal(size=(18, 4)).astype(np.float32), "fc")
    fc_bias = numpy_helper.from_array(np.zeros(4, np.float32), "fc_b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [weight, bias, fc, fc_bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if ir_version is not None:
        model.ir_version = ir_version
    return model


@pytest.fixture
def tiny_model_path(tmp_path: Path) -> Path:
    """A plain ONNX file (no toolkit metadata) on disk."""
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_conv_model(), path)
    return path


@pytest.fixture(scope="session")
def reference() -> Artifact:
    """The shipped reference SSVEP model."""
    return read_artifact(zoo_path(REFERENCE))


@pytest.fixture(scope="session")
def reference_path() -> Path:
    return zoo_path(REFERENCE)

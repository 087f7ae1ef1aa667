"""Tiny models for the dtype and batch tests: a conv/gemm classifier, fixed or symbolic batch, ONNX and TFLite."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converters.quantize import QuantizeInt8
from converters.tflite import export_tflite
from edge.artifact import Artifact


def conv_gemm(batch: int | str, *, reshape: bool = True) -> onnx.ModelProto:
    """(B, 2, 1, 8) -> Conv -> Relu -> Reshape(B, 18) or Flatten -> Gemm(4); B fixed as old exporters write it."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(3, 2, 1, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b"),
             numpy_helper.from_array(rng.normal(size=(4, 18)).astype(np.float32), "fc"),
             numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "fc_b")]
    flatten = helper.make_node("Flatten", ["r"], ["f"])
    if reshape:
        inits.append(numpy_helper.from_array(np.array([batch, 18], np.int64), "shape"))
        flatten = helper.make_node("Reshape", ["r", "shape"], ["f"])
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["r"]), flatten,
             helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "conv_gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def trials(n: int = 10, seed: int = 1) -> np.ndarray:
    """``n`` float trials of shape (2, 1, 8)."""
    return np.random.default_rng(seed).normal(size=(n, 2, 1, 8)).astype(np.float32)


def quantized_conv_gemm() -> Artifact:
    """The conv/gemm network (symbolic batch) quantized to int8 QDQ."""
    return QuantizeInt8(exclude=[])(Artifact.from_model(conv_gemm("N", reshape=False)), trials(32, seed=7))


def conv_gemm_tflite(batch: int | None, io: str = "int8", quantized: Artifact | None = None) -> bytes:
    """The quantized network as a TFLite file with a fixed batch (or a resizable one for None)."""
    quantized = quantized or quantized_conv_gemm()
    if batch is None:
        return export_tflite(quantized, io=io)
    model = onnx.ModelProto()
    model.CopyFrom(quantized.model)
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = batch
    del model.graph.value_info[:]
    return export_tflite(Artifact(model, quantized.meta), io=io)

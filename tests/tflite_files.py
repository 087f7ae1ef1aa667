"""TFLite files for the tests, written with LiteRT's flatbuffer schema: plain files as other tools make them."""

from __future__ import annotations

import flatbuffers
import numpy as np


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def pack(model) -> bytes:
    """Serialise a ``ModelT`` with the TFLite file identifier."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def single_zero_point(data: bytes) -> bytes:
    """The file with every per-channel tensor's zero points cut to one value, as TFLite Micro allows (it reads
    one zero point as the zero point of every channel) and LiteRT refuses ("QuantizationParam has 1 zero_point
    values and 3 scale values")."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    for tensor in model.subgraphs[0].tensors:
        q = tensor.quantization
        if q is not None and q.scale is not None and len(q.scale) > 1:
            q.zeroPoint = [int(q.zeroPoint[0])]
    return pack(model)


def relu_model(shape: tuple[int, ...]) -> bytes:
    """One float32 RELU on a tensor of ``shape``: a file of a few hundred bytes whose activations are as large
    as one likes (the arena a model needs has nothing to do with its file size)."""
    schema = _schema()
    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.RELU
    code.version = 1
    model.operatorCodes = [code]
    tensors = []
    for name in ("x", "y"):
        tensor = schema.TensorT()
        tensor.name, tensor.shape, tensor.type, tensor.buffer = name, list(shape), schema.TensorType.FLOAT32, 0
        tensors.append(tensor)
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, [0], [1]
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = tensors, [0], [1], [operator]
    model.subgraphs = [graph]
    model.buffers = [schema.BufferT()]
    return pack(model)


def trials(shape: tuple[int, ...], n: int = 1, seed: int = 0) -> np.ndarray:
    """``n`` float32 trials of the input ``shape`` (leading batch dimension dropped)."""
    return np.random.default_rng(seed).normal(size=(n, *shape[1:])).astype(np.float32)

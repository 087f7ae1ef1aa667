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


def relu_model(shape: tuple[int, ...], op: str = "RELU") -> bytes:
    """One float32 RELU (or another one-input operator, e.g. GELU) on a tensor of ``shape``: a file of a few
    hundred bytes whose activations are as large as one likes (the arena has nothing to do with file size)."""
    schema = _schema()
    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = getattr(schema.BuiltinOperator, op)
    code.deprecatedBuiltinCode = min(code.builtinCode, 127)  # the old byte field stops at PLACEHOLDER (127)
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


def depthwise_and_batch_matmul_model() -> bytes:
    """float32 x[1,4,4,2] -> DEPTHWISE_CONV_2D(3x3, VALID) -> [1,2,2,2] -> RESHAPE [1,2,4] -> BATCH_MATMUL with
    a constant [1,4,5] -> y[1,2,5]. MACs by hand: depthwise 8 outputs x 9 taps = 72; matmul 10 outputs x 4 = 40."""
    schema = _schema()
    rng = np.random.default_rng(0)
    model = schema.ModelT()
    model.version = 3
    codes = []
    for op in ("DEPTHWISE_CONV_2D", "RESHAPE", "BATCH_MATMUL"):
        code = schema.OperatorCodeT()
        code.builtinCode = getattr(schema.BuiltinOperator, op)
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)
        code.version = 1
        codes.append(code)
    model.operatorCodes = codes
    buffers = [schema.BufferT()]

    def tensor(name: str, shape: list[int], values: np.ndarray | None = None, kind: int | None = None):
        t = schema.TensorT()
        t.name, t.shape = name, shape
        t.type = schema.TensorType.FLOAT32 if kind is None else kind
        t.buffer = 0
        if values is not None:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(values).tobytes(), np.uint8)
            buffers.append(buffer)
            t.buffer = len(buffers) - 1
        return t

    tensors = [
        tensor("x", [1, 4, 4, 2]),
        tensor("dw_filter", [1, 3, 3, 2], rng.normal(size=(1, 3, 3, 2)).astype(np.float32)),
        tensor("dw_bias", [2], rng.normal(size=2).astype(np.float32)),
        tensor("dw_out", [1, 2, 2, 2]),
        tensor("shape", [3], np.array([1, 2, 4], np.int32), schema.TensorType.INT32),
        tensor("rows", [1, 2, 4]),
        tensor("rhs", [1, 4, 5], rng.normal(size=(1, 4, 5)).astype(np.float32)),
        tensor("y", [1, 2, 5]),
    ]
    depthwise = schema.OperatorT()
    depthwise.opcodeIndex, depthwise.inputs, depthwise.outputs = 0, [0, 1, 2], [3]
    depthwise.builtinOptionsType = schema.BuiltinOptions.DepthwiseConv2DOptions
    options = schema.DepthwiseConv2DOptionsT()
    options.padding, options.strideW, options.strideH, options.depthMultiplier = schema.Padding.VALID, 1, 1, 1
    options.dilationWFactor = options.dilationHFactor = 1
    depthwise.builtinOptions = options
    reshape = schema.OperatorT()
    reshape.opcodeIndex, reshape.inputs, reshape.outputs = 1, [3, 4], [5]
    matmul = schema.OperatorT()
    matmul.opcodeIndex, matmul.inputs, matmul.outputs = 2, [5, 6], [7]
    matmul.builtinOptionsType = schema.BuiltinOptions.BatchMatMulOptions
    matmul.builtinOptions = schema.BatchMatMulOptionsT()
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs = tensors, [0], [7]
    graph.operators = [depthwise, reshape, matmul]
    model.subgraphs = [graph]
    model.buffers = buffers
    return pack(model)

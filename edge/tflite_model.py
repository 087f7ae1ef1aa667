"""A TFLite flatbuffer as a model the toolkit evaluates and deploys: ours (with embedded metadata) or anyone's.

>>> model = read_tflite("ssvep_int8.tflite")
>>> model.meta.inputs[0].shape, model.input_details["dtype"]
>>> [(w.name, w.dtype, w.offset) for w in model.weight_buffers()]

A file written by ``edge convert --export tflite`` carries the toolkit metadata in its ``edge`` metadata
entry; a plain file gets its input and output specs from the flatbuffer (float data are quantized with
the input's scale and zero point by every engine, so the specs always say float32).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import METADATA_KEY, Meta, TensorSpec
from edge.errors import MetadataError, ModelReadError

FILE_IDENTIFIER = b"TFL3"
#: Builtin operators whose constant inputs 1 (weights) and 2 (bias) are the weight memory faults target.
WEIGHT_OPERATORS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")
_NUMPY_TYPES = {"FLOAT32": "float32", "INT8": "int8", "INT16": "int16", "INT32": "int32", "UINT8": "uint8",
                "INT64": "int64", "FLOAT16": "float16", "BOOL": "bool"}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


@dataclass
class WeightBuffer:
    """One constant tensor of the flatbuffer: its name, element type, shape and where its bytes lie in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # byte offset of element 0 in the file
    count: int

    @property
    def nbytes(self) -> int:
        return self.count * np.dtype(self.dtype).itemsize


@dataclass
class TfliteModel:
    """The bytes of a TFLite file plus the toolkit metadata (embedded or read from the flatbuffer)."""

    data: bytes
    meta: Meta
    embedded_meta: bool = False
    where: str | None = field(default=None, repr=False)

    @classmethod
    def from_bytes(cls, data: bytes, where: str | None = None) -> TfliteModel:
        """Parse a flatbuffer, refusing anything that is not a TFLite model."""
        data = bytes(data)
        if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
            raise ModelReadError("not a TFLite file (no TFL3 identifier); is it truncated?", where=where)
        try:
            model = _schema().ModelT.InitFromPackedBuf(bytearray(data), 0)
        except Exception:  # noqa: BLE001 - flatbuffers raises bare struct/index errors on damaged files
            raise ModelReadError("the TFLite flatbuffer is damaged (it does not parse).", where=where) from None
        if not model.subgraphs:
            raise ModelReadError("the TFLite file has no subgraph.", where=where)
        meta, embedded = _meta(model, where)
        return cls(data, meta, embedded, where)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def to_bytes(self) -> bytes:
        return self.data

    @cached_property
    def _model(self) -> Any:
        return _schema().ModelT.InitFromPackedBuf(bytearray(self.data), 0)

    @property
    def flatbuffer(self) -> Any:
        """The parsed file as LiteRT's schema object (``ModelT``): read it, do not change it."""
        return self._model

    @cached_property
    def input_details(self) -> dict[str, Any]:
        """The first input as LiteRT describes it (``dtype``, ``shape``, ``quantization_parameters``)."""
        return _details(self._model, self._model.subgraphs[0].inputs[0])

    @cached_property
    def output_details(self) -> dict[str, Any]:
        """The first output as LiteRT describes it."""
        return _details(self._model, self._model.subgraphs[0].outputs[0])

    def operators(self) -> list[str]:
        """Builtin operator names in execution order (``CUSTOM:<name>`` for custom ones, e.g. ``CUSTOM:ethos-u``)."""
        schema = _schema()
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        codes = []
        for code in self._model.operatorCodes:
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if names.get(builtin) == "CUSTOM":
                custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
                codes.append(f"CUSTOM:{custom}")
            else:
                codes.append(names.get(builtin, str(builtin)))
        return [codes[op.opcodeIndex] for op in self._model.subgraphs[0].operators or []]

    def weight_buffers(self) -> list[WeightBuffer]:
        """Weights (input 1) and biases (input 2) of every weight operator, in execution order, with file offsets."""
        schema = _schema()
        names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        graph = self._model.subgraphs[0]
        raw = schema.Model.GetRootAs(self.data, 0)
        seen: set[int] = set()
        found = []
        for op, kind in zip(graph.operators or [], self.operators(), strict=True):
            if kind not in WEIGHT_OPERATORS:
                continue
            for position in (1, 2):
                if op.inputs is None or position >= len(op.inputs) or op.inputs[position] < 0:
                    continue
                index = int(op.inputs[position])
                tensor = graph.tensors[index]
                dtype = _NUMPY_TYPES.get(names.get(tensor.type, ""), None)
                if index in seen or dtype is None or tensor.buffer <= 0:
                    continue
                offset = _buffer_offset(raw, tensor.buffer)
                if offset is None:
                    continue  # not a constant (computed weights) or stored outside the file
                seen.add(index)
                shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else []))
                name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
                count = int(np.prod(shape)) if shape else 1
                found.append(WeightBuffer(name, dtype, shape, offset, count))
        return found

    def weights(self) -> dict[str, np.ndarray]:
        """Copies of the weight buffers as numpy arrays in their stored layout, by tensor name."""
        return {w.name: np.frombuffer(self.data, w.dtype, w.count, w.offset).reshape(w.shape).copy()
                for w in self.weight_buffers()}

    def with_weights(self, arrays: dict[str, np.ndarray]) -> bytes:
        """The file with the named weight buffers overwritten in place (same size, same layout)."""
        patched = bytearray(self.data)
        for w in self.weight_buffers():
            if w.name in arrays:
                values = np.ascontiguousarray(arrays[w.name], dtype=w.dtype).reshape(-1)
                patched[w.offset : w.offset + w.nbytes] = values.tobytes()
        return bytes(patched)


def tensor_type_names() -> dict[int, str]:
    """TFLite tensor type codes to their schema names (``FLOAT32``, ``INT8``, ...)."""
    return {v: k for k, v in vars(_schema().TensorType).items() if not k.startswith("_")}


def read_tflite(path: str | os.PathLike[str]) -> TfliteModel:
    """Read a .tflite file from disk."""
    path = Path(path)
    if not path.is_file():
        raise ModelReadError("no such file." if not path.exists() else "it is a folder, not a model file.",
                             where=str(path))
    return TfliteModel.from_bytes(path.read_bytes(), where=str(path))


def is_tflite(path: str | os.PathLike[str]) -> bool:
    """Whether the file exists and carries the TFLite identifier (whatever its suffix)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8)[4:8] == FILE_IDENTIFIER
    except OSError:
        return False


def _buffer_offset(raw: Any, buffer_index: int) -> int | None:
    """Absolute byte offset of the data vector of buffer ``buffer_index``, or None when it has no inline data."""
    buffer = raw.Buffers(buffer_index)
    if buffer is None or buffer.DataLength() == 0:
        return None
    table = buffer._tab
    field_offset = table.Offset(4)  # Buffer.data is field 0 (vtable slot 4)
    return int(table.Vector(field_offset)) if field_offset else None


def _details(model: Any, tensor_index: int) -> dict[str, Any]:
    schema = _schema()
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    tensor = model.subgraphs[0].tensors[tensor_index]
    q = tensor.quantization
    scales = np.asarray(q.scale if q is not None and q.scale is not None else [], dtype=np.float32)
    zero_points = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], dtype=np.int32)
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
    return {
        "name": name,
        "index": int(tensor_index),
        "dtype": np.dtype(_NUMPY_TYPES.get(names.get(tensor.type, ""), "float32")),
        "shape": np.asarray(tensor.shape if tensor.shape is not None else [], dtype=np.int32),
        "quantization_parameters": {"scales": scales, "zero_points": zero_points,
                                    "quantized_dimension": int(q.quantizedDimension) if q is not None else 0},
    }


def _meta(model: Any, where: str | None) -> tuple[Meta, bool]:
    """The embedded toolkit metadata, or specs read from the flatbuffer's first subgraph."""
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_KEY:
            raw = bytes(bytearray(model.buffers[entry.buffer].data))
            try:
                return Meta.from_json(raw.decode("utf-8"), where=where), True
            except UnicodeDecodeError:
                raise MetadataError("the 'edge' entry is not UTF-8 text.", where=where) from None
    graph = model.subgraphs[0]

    def spec(index: int) -> TensorSpec:
        details = _details(model, index)
        tensor = graph.tensors[index]
        signature = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
        shape: list[int | str] = [int(d) if int(d) > 0 else "N" for d in (signature if signature is not None else [])]
        if shape and shape[0] == 1:
            shape[0] = "N"  # TFLite files are written for batch 1; every engine here runs one trial at a time
        params = details["quantization_parameters"]
        quant = ({"scale": float(params["scales"][0]), "zero_point": int(params["zero_points"][0]),
                  "dtype": str(details["dtype"])} if len(params["scales"]) else None)
        return TensorSpec(details["name"], shape, "float32", None, quant)

    return Meta(inputs=[spec(int(i)) for i in graph.inputs], outputs=[spec(int(i)) for i in graph.outputs]), False

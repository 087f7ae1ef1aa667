"""Artifact: a standard ONNX model with the toolkit's metadata embedded as JSON.

The metadata lives in ``metadata_props["edge"]`` so that any ONNX tool opens our files unchanged.
A plain ONNX file without it is still an artifact: its input and output specs are read from the
graph and the family is ``unknown``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from edge import __version__
from edge.errors import MetadataError, ModelReadError, ModelWriteError

SCHEMA_VERSION = 1
METADATA_KEY = "edge"


@dataclass
class TensorSpec:
    """Name, shape, dtype and layout of one model input or output."""

    name: str
    shape: list[int | str]
    dtype: str = "float32"
    layout: str | None = None
    quantization: dict[str, Any] | None = None


@dataclass
class Preprocessing:
    """What a device must do to raw signals before feeding the model."""

    sample_rate: float | None = None
    channels: list[str] = field(default_factory=list)
    window_s: float | None = None
    latency_s: float = 0.0
    filter_bank: list[list[float]] = field(default_factory=list)
    filter: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassRecord:
    """One step of provenance: a pass, its parameters and the sha256 of its input."""

    name: str
    params: dict[str, Any]
    parent_sha256: str | None
    toolkit_version: str = __version__


@dataclass
class Meta:
    """The toolkit metadata embedded in every artifact."""

    family: str = "unknown"
    task: dict[str, Any] = field(default_factory=dict)
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    labels: list[str] = field(default_factory=list)
    provenance: list[PassRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """Serialise to the JSON stored in the model file."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str | None = None) -> Meta:
        """Parse the stored JSON, refusing malformed or newer-schema documents."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MetadataError(f"the 'edge' entry is not valid JSON ({exc.msg}).", where=where) from None
        if not isinstance(doc, dict):
            raise MetadataError("the 'edge' entry is not a JSON object.", where=where)
        version = doc.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise MetadataError(
                f"schema_version {version!r} is not supported; this toolkit reads up to "
                f"{SCHEMA_VERSION}. Upgrade edge to read this file.",
                where=where,
            )
        try:
            return cls(
                family=doc.get("family", "unknown"),
                task=doc.get("task", {}),
                inputs=[TensorSpec(**t) for t in doc.get("inputs", [])],
                outputs=[TensorSpec(**t) for t in doc.get("outputs", [])],
                preprocessing=Preprocessing(**doc.get("preprocessing", {})),
                labels=list(doc.get("labels", [])),
                provenance=[PassRecord(**p) for p in doc.get("provenance", [])],
                extra=doc.get("extra", {}),
                schema_version=version,
            )
        except TypeError as exc:
            raise MetadataError(f"the 'edge' entry has an unexpected field ({exc}).", where=where) from None


_DTYPES = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.DOUBLE: "float64",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.INT16: "int16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.BOOL: "bool",
}


def specs_from_graph(values: Any, initializers: set[str] = frozenset()) -> list[TensorSpec]:
    """Read tensor specs (name, shape, dtype) from ONNX graph inputs or outputs."""
    specs = []
    for value in values:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape: list[int | str] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim
        ]
        specs.append(TensorSpec(value.name, shape, _DTYPES.get(tensor_type.elem_type, "unknown")))
    return specs


@dataclass
class Artifact:
    """An ONNX model plus its toolkit metadata; the unit every pass consumes and produces."""

    model: onnx.ModelProto
    meta: Meta

    @classmethod
    def from_model(cls, model: onnx.ModelProto, where: str | None = None) -> Artifact:
        """Wrap a model, reading embedded metadata or deriving specs from the graph."""
        stored = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY in stored:
            meta = Meta.from_json(stored[METADATA_KEY], where=where)
        else:
            meta = Meta()
        initializers = {t.name for t in model.graph.initializer}
        if not meta.inputs:
            meta.inputs = specs_from_graph(model.graph.input, initializers)
        if not meta.outputs:
            meta.outputs = specs_from_graph(model.graph.output)
        return cls(model, meta)

    def to_bytes(self) -> bytes:
        """Serialise the model with the metadata embedded."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        props = [p for p in model.metadata_props if p.key != METADATA_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(props)
        model.metadata_props.add(key=METADATA_KEY, value=self.meta.to_json())
        return model.SerializeToString()

    @property
    def sha256(self) -> str:
        """Hex sha256 of the serialised file."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def derive(self, model: onnx.ModelProto, pass_name: str, params: dict[str, Any]) -> Artifact:
        """A child artifact: new graph, same metadata, one more provenance record."""
        meta = copy.deepcopy(self.meta)
        meta.provenance.append(PassRecord(pass_name, copy.deepcopy(params), self.sha256))
        initializers = {t.name for t in model.graph.initializer}
        meta.inputs = _merge_specs(self.meta.inputs, specs_from_graph(model.graph.input, initializers))
        meta.outputs = _merge_specs(self.meta.outputs, specs_from_graph(model.graph.output))
        return Artifact(model, meta)


def _merge_specs(old: list[TensorSpec], new: list[TensorSpec]) -> list[TensorSpec]:
    """Keep layout and quantization notes of specs whose name survived a pass."""
    by_name = {s.name: s for s in old}
    merged = []
    for spec in new:
        if spec.name in by_name:
            spec = dataclasses.replace(spec, layout=by_name[spec.name].layout)
        merged.append(spec)
    return merged


def read_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read an ONNX file (ours or anyone's) and check it is a usable model."""
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise ModelReadError("no such file.", where=where)
    if not path.is_file():
        raise ModelReadError("it is a folder, not a model file.", where=where)
    data = path.read_bytes()
    if path.suffix.lower() == ".tflite" and data[4:8] != b"TFL3":
        raise ModelReadError("named .tflite but not a TFLite file (no TFL3 identifier); is it truncated?",
                             where=where)
    if data[4:8] == b"TFL3":
        raise ModelReadError("it is a TFLite file and this step needs the ONNX model it was exported from (edge "
                             "inspect, eval, flash and resilience take TFLite files; edge convert does not).",
                             where=where)
    if not data:
        raise ModelReadError("the file is empty.", where=where)
    try:
        model = onnx.load_model_from_string(data)
    except Exception:  # protobuf raises DecodeError, which onnx does not re-export
        raise ModelReadError(
            "not an ONNX model, or the file is truncated (protobuf parse failed).", where=where
        ) from None
    if not model.graph.node or not model.opset_import:
        raise ModelReadError("not an ONNX model (no graph nodes or opset); is the file truncated?", where=where)
    _load_external_data(model, path)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ModelReadError(f"the ONNX checker rejects it: {first_line}", where=where) from None
    return Artifact.from_model(model, where=where)


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Embed external weights, refusing locations that leave the model's folder."""
    folder = path.parent.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        target = (folder / info.get("location", "")).resolve()
        if folder not in target.parents:
            raise ModelReadError(
                f"tensor '{tensor.name}' points at external data '{info.get('location')}' outside the model's folder; refusing to read it.",
                where=str(path),
            )
        if not target.is_file():
            raise ModelReadError(
                f"tensor '{tensor.name}' needs external data file '{info.get('location')}', which is missing.",
                where=str(path),
            )
    onnx.load_external_data_for_model(model, str(folder))


def write_artifact(artifact: Artifact, path: str | os.PathLike[str], *, inputs: tuple[Path, ...] = ()) -> Path:
    """Write atomically (temporary name, then rename); refuse to overwrite any of ``inputs``."""
    path = Path(path)
    for source in inputs:
        if Path(source).exists() and path.exists() and path.resolve() == Path(source).resolve():
            raise ModelWriteError(
                "the output path is the input model; choose another -o so the original is kept.", where=str(path)
            )
    if path.is_dir():
        raise ModelWriteError("the output path is a folder; give a file name ending in .onnx.", where=str(path))
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ModelWriteError(f"the folder '{folder}' does not exist.", where=str(path))
    write_bytes_atomic(path, artifact.to_bytes())
    return path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write bytes to a temporary file in the same folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

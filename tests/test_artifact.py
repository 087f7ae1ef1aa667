from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import tiny_conv_model
from edge.artifact import SCHEMA_VERSION, Artifact, Meta, read_artifact, write_artifact
from edge.errors import MetadataError, ModelReadError, ModelWriteError


def test_plain_onnx_reads_with_specs_from_graph(tiny_model_path: Path) -> None:
    artifact = read_artifact(tiny_model_path)
    assert artifact.meta.family == "unknown"
    assert [(s.name, s.shape, s.dtype) for s in artifact.meta.inputs] == [("x", ["N", 2, 1, 8], "float32")]
    assert [(s.name, s.shape) for s in artifact.meta.outputs] == [("y", ["N", 4])]


def test_metadata_round_trip_is_embedded_in_standard_onnx(tmp_path: Path) -> None:
    artifact = Artifact.from_model(tiny_conv_model())
    artifact.meta.family = "ssvep"
    artifact.meta.labels = ["a", "b", "c", "d"]
    artifact.meta.preprocessing.sample_rate = 250.0
    artifact.meta.preprocessing.channels = ["OZ", "O1"]
    path = write_artifact(artifact, tmp_path / "m.onnx")

    plain = onnx.load(path)  # any ONNX tool sees a normal model with one metadata entry
    stored = json.loads({p.key: p.value for p in plain.metadata_props}["edge"])
    assert stored["schema_version"] == SCHEMA_VERSION
    again = read_artifact(path)
    assert again.meta == artifact.meta
    assert again.sha256 == artifact.sha256


def test_derive_records_the_pass_and_parent_hash() -> None:
    parent = Artifact.from_model(tiny_conv_model())
    child = parent.derive(tiny_conv_model(), "quantize-int8", {"per_channel": True})
    assert [p.name for p in child.meta.provenance] == ["quantize-int8"]
    assert child.meta.provenance[0].parent_sha256 == parent.sha256
    assert child.meta.provenance[0].params == {"per_channel": True}
    assert parent.meta.provenance == []


def test_newer_schema_is_refused() -> None:
    text = json.dumps({"schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(MetadataError, match="schema_version .* not supported"):
        Meta.from_json(text, where="m.onnx")


def test_malformed_metadata_is_refused(tmp_path: Path) -> None:
    model = tiny_conv_model()
    model.metadata_props.add(key="edge", value="{not json")
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(MetadataError, match="not valid JSON"):
        read_artifact(tmp_path / "bad.onnx")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"this is a text file, not a model\n" * 20, "not an ONNX model"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelReadError, match=message) as info:
        read_artifact(path)
    assert str(path) in str(info.value)


def test_truncated_onnx_is_refused(tmp_path: Path, tiny_model_path: Path) -> None:
    data = tiny_model_path.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelReadError, match="truncated|checker"):
        read_artifact(path)


def test_folder_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelReadError, match="folder"):
        read_artifact(tmp_path)


def test_output_equal_to_input_is_refused_and_input_kept(tiny_model_path: Path) -> None:
    before = tiny_model_path.read_bytes()
    artifact = read_artifact(tiny_model_path)
    with pytest.raises(ModelWriteError, match="is the input model"):
        write_artifact(artifact, tiny_model_path, inputs=(tiny_model_path,))
    assert tiny_model_path.read_bytes() == before


def test_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_artifact(Artifact.from_model(tiny_conv_model()), tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_write_into_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelWriteError, match="does not exist"):
        write_artifact(Artifact.from_model(tiny_conv_model()), tmp_path / "nope" / "out.onnx")


def _with_external_weight(tmp_path: Path, location: str) -> Path:
    model = tiny_conv_model()
    weight = numpy_helper.to_array(model.graph.initializer[2])
    (tmp_path / "ext").mkdir(exist_ok=True)
    target = (tmp_path / "ext" / location).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(weight.astype(np.float32).tobytes())
    tensor = model.graph.initializer[2]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    path = tmp_path / "ext" / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_in_the_model_folder_is_embedded(tmp_path: Path) -> None:
    artifact = read_artifact(_with_external_weight(tmp_path, "weights.bin"))
    reference = numpy_helper.to_array(tiny_conv_model().graph.initializer[2])
    loaded = numpy_helper.to_array(artifact.model.graph.initializer[2])
    np.testing.assert_array_equal(loaded, reference)
    assert b"weights.bin" not in artifact.to_bytes()


def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    path = _with_external_weight(tmp_path, "../outside.bin")
    with pytest.raises(ModelReadError, match="outside the model's folder"):
        read_artifact(path)


def test_written_files_get_ordinary_permissions(tmp_path: Path) -> None:
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = write_artifact(Artifact.from_model(tiny_conv_model()), tmp_path / "out.onnx")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

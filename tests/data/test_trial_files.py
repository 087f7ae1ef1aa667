"""Trials the user prepared, in the layouts they are published in: .npz, .npy/.bin folders with a labels CSV,
EEMBC / MLPerf Tiny accuracy sets (raw binary inputs + y_labels.csv). Data and labels stay as stored."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edge.artifact import Artifact
from edge.cli import main
from edge.data.registry import load_dataset
from edge.errors import DataError

TRIAL = (4, 3)  # values per trial, after the batch axis
CLASSES = 5
WEIGHTS = np.random.default_rng(1).normal(size=(12, CLASSES)).astype(np.float32)


def linear_model(input_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """(N, 4, 3) of ``input_type`` -> Cast -> Flatten -> MatMul -> (N, 5) class scores."""
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Flatten", ["xf"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("x", input_type, ["N", *TRIAL])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", CLASSES])],
                              [numpy_helper.from_array(WEIGHTS, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def predictions(x: np.ndarray) -> np.ndarray:
    return (x.reshape(len(x), -1).astype(np.float32) @ WEIGHTS).argmax(axis=1)


def write_eembc_set(folder: Path, x: np.ndarray, labels: np.ndarray, n_classes: int = CLASSES) -> list[str]:
    """One raw file per trial named as in MLPerf Tiny's kws01 set, and y_labels.csv without a header."""
    folder.mkdir(exist_ok=True)
    names = []
    with (folder / "y_labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        for i, (trial, label) in enumerate(zip(x, labels, strict=True)):
            name = f"tst_{i:06d}_Word_{label}.bin"
            (folder / name).write_bytes(trial.astype(trial.dtype.newbyteorder("<")).tobytes())
            writer.writerow([name, n_classes, int(label)])
            names.append(name)
    return names


def meta_of(input_type: int = TensorProto.FLOAT):
    return Artifact.from_model(linear_model(input_type)).meta


def test_eembc_int8_set_is_read_as_stored(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(-128, 128, size=(6, *TRIAL)).astype(np.int8)
    labels = np.array([4, 0, 2, 2, 1, 3])
    write_eembc_set(tmp_path, x, labels)
    (tmp_path / "README.txt").write_text("stray files beside the set are ignored")
    data = load_dataset(str(tmp_path), meta_of(TensorProto.INT8))
    assert data.x.dtype == np.int8  # no cast to float32
    np.testing.assert_array_equal(data.x, x)
    assert data.y.tolist() == labels.tolist()


def test_eembc_float32_set_and_uint8_override(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(3, *TRIAL)).astype(np.float32)
    write_eembc_set(tmp_path / "f", x, np.array([0, 1, 2]))
    data = load_dataset(str(tmp_path / "f"), meta_of())
    assert data.x.dtype == np.float32
    np.testing.assert_array_equal(data.x, x)
    pixels = np.arange(36, dtype=np.uint8).reshape(3, *TRIAL) + 200
    write_eembc_set(tmp_path / "u", pixels, np.array([0, 1, 2]))
    data = load_dataset(f"{tmp_path / 'u'}:dtype=uint8", meta_of(TensorProto.INT8))
    assert data.x.dtype == np.uint8 and int(data.x.max()) == 235  # read as uint8, not wrapped into int8


def test_eembc_wrong_sized_file_names_file_size_and_expected_size(tmp_path: Path) -> None:
    x = np.zeros((2, *TRIAL), np.int8)
    names = write_eembc_set(tmp_path, x, np.array([0, 1]))
    (tmp_path / names[1]).write_bytes(bytes(11))
    with pytest.raises(DataError, match=rf"'{names[1]}' holds 11 bytes but one trial of the model input is "
                                        r"int8 x \(4, 3\) = 12 bytes"):
        load_dataset(str(tmp_path), meta_of(TensorProto.INT8))
    # the same 12-byte files are too short for a float32 model
    (tmp_path / names[1]).write_bytes(bytes(12))
    with pytest.raises(DataError, match=r"holds 12 bytes .* float32 x \(4, 3\) = 48 bytes"):
        load_dataset(str(tmp_path), meta_of())


def test_eembc_class_count_and_labels_are_checked(tmp_path: Path) -> None:
    x = np.zeros((2, *TRIAL), np.int8)
    write_eembc_set(tmp_path / "a", x, np.array([0, 1]), n_classes=12)
    with pytest.raises(DataError, match="gives 12 classes but the model's first output has 5 values"):
        load_dataset(str(tmp_path / "a"), meta_of(TensorProto.INT8))
    write_eembc_set(tmp_path / "b", x, np.array([0, 7]))
    with pytest.raises(DataError, match="labels run from 0 to 7 but the model has 5 outputs"):
        load_dataset(str(tmp_path / "b"), meta_of(TensorProto.INT8))


def test_anomaly_detection_rows_give_unlabelled_windows(tmp_path: Path) -> None:
    values = np.arange(30, dtype=np.float32)  # 120 bytes: windows of 12 values every 6 values
    (tmp_path / "normal_id_01.bin").write_bytes(values.tobytes())
    (tmp_path / "anomaly_id_01.bin").write_bytes(values[:12].tobytes())
    (tmp_path / "y_labels.csv").write_text("normal_id_01.bin,2,0,48,24\nanomaly_id_01.bin,2,1,48,24\n")
    data = load_dataset(str(tmp_path), meta_of())
    assert data.x.shape == (5, 4, 3)  # windows at 0, 6, 12, 18 and the one of the short file
    np.testing.assert_array_equal(data.x[1].reshape(-1), values[6:18])
    assert data.y is None  # per-recording anomaly labels are not the class of each window
    assert data.groups.tolist() == ["normal_id_01.bin"] * 4 + ["anomaly_id_01.bin"]
    assert "anomaly labels per recording" in data.notes[0]
    (tmp_path / "y_labels.csv").write_text("normal_id_01.bin,2,0,40,24\n")
    with pytest.raises(DataError, match="windows of 40 bytes every 24 do not fit the model input"):
        load_dataset(str(tmp_path), meta_of())


@pytest.mark.parametrize("header", [True, False])
def test_npy_folder_with_or_without_header_keeps_int8(tmp_path: Path, header: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(3, *TRIAL)).astype(np.int8)
    rows = [["file", "label"]] if header else []
    for i in range(3):
        np.save(tmp_path / f"t{i}.npy", x[i])
        rows.append([f"t{i}.npy", str(i + 1)])
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    data = load_dataset(str(tmp_path), meta_of(TensorProto.INT8))
    assert data.x.dtype == np.int8
    np.testing.assert_array_equal(data.x, x)
    assert data.y.tolist() == [1, 2, 3]


def test_bin_folder_with_labels_csv_and_class_names(tmp_path: Path) -> None:
    meta = meta_of()
    meta.labels = ["a", "b", "c", "d", "e"]
    x = np.random.default_rng(0).normal(size=(2, *TRIAL)).astype(np.float32)
    for i in range(2):
        (tmp_path / f"t{i}.bin").write_bytes(x[i].tobytes())
    (tmp_path / "labels.csv").write_text("t0.bin,c\nt1.bin,e\n")
    data = load_dataset(str(tmp_path), meta)
    np.testing.assert_array_equal(data.x, x)
    assert data.y.tolist() == [2, 4]
    (tmp_path / "labels.csv").write_text("t0.bin,c\nt1.bin,z\n")
    with pytest.raises(DataError, match="label 'z' is neither a class index nor a class name"):
        load_dataset(str(tmp_path), meta)


def test_npz_keeps_integer_x_and_labels_as_stored(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(-128, 128, size=(4, *TRIAL)).astype(np.int8)
    one_hot = np.eye(CLASSES, dtype=np.float32)[[0, 3, 1, 4]]
    np.savez(tmp_path / "d.npz", x=x, y=one_hot)
    data = load_dataset(str(tmp_path / "d.npz"), meta_of(TensorProto.INT8))
    assert data.x.dtype == np.int8
    assert data.y.shape == (4, CLASSES) and data.y.dtype == np.float32  # one-hot kept: evaluation tells it apart
    np.savez(tmp_path / "f.npz", x=x.astype(np.float64), y=np.array([0.0, 1.0, 2.0, 3.0]))
    data = load_dataset(str(tmp_path / "f.npz"), meta_of())
    assert data.x.dtype == np.float32 and data.y.dtype == np.float64


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((0, *TRIAL), np.float32), "y": np.zeros(0)}, r"x holds no trials \(shape \(0, 4, 3\)\)"),
        ({"x": np.zeros((3, *TRIAL), np.float32), "y": np.zeros(2)}, "x has 3 trials but y has 2 label"),
        ({"x": np.float32(1.0)}, "x is a single number"),
        ({"x": np.zeros((3, *TRIAL), np.float32), "groups": np.array(["a", "b"])}, "groups has shape \\(2,\\)"),
    ],
)
def test_npz_refusals(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(str(tmp_path / "d.npz"), meta_of())


def test_folder_refusals(tmp_path: Path) -> None:
    (tmp_path / "y_labels.csv").write_text("missing.bin,5,1\n")
    with pytest.raises(DataError, match="y_labels.csv names 'missing.bin', which is not in the folder"):
        load_dataset(str(tmp_path), meta_of())
    (tmp_path / "y_labels.csv").write_text("a.bin,5\nb.bin,5,1\n")
    with pytest.raises(DataError, match=r"rows have \[2, 3\] columns"):
        load_dataset(str(tmp_path), meta_of())
    with pytest.raises(DataError, match="takes the parameter dtype; not 'shape'"):
        load_dataset(f"{tmp_path}:shape=3", meta_of())
    (tmp_path / "y_labels.csv").write_text("a.bin,5,1\n")
    (tmp_path / "a.bin").write_bytes(bytes(12))
    with pytest.raises(DataError, match="dtype='int7' is not a numpy element type"):
        load_dataset(f"{tmp_path}:dtype=int7", meta_of())


# --- through the CLI: `edge eval MODEL --data FOLDER`, one line and exit 1 on bad data ---


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    """``edge eval ARGS`` with its run folder under ``tmp_path``, never in the checkout."""
    result = CliRunner().invoke(main, ["eval", *args, "--out-dir", str(tmp_path / "runs")])
    return result.exit_code, result.output


def assert_one_line(code: int, output: str, message: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], output


@pytest.fixture
def float_model(tmp_path: Path) -> Path:
    path = tmp_path / "linear.onnx"
    onnx.save(linear_model(), path)
    return path


def test_cli_scores_an_eembc_set_against_its_labels(tmp_path: Path, float_model: Path) -> None:
    x = np.random.default_rng(3).normal(size=(8, *TRIAL)).astype(np.float32)
    labels = predictions(x)
    labels[:2] = (labels[:2] + 1) % CLASSES  # two wrong on purpose: accuracy must be exactly 6/8
    write_eembc_set(tmp_path / "set", x, labels)
    code, out = run(tmp_path, str(float_model), "--data", str(tmp_path / "set"), "--json", "--no-memory",
                    "--runs", "2")
    assert code == 0, out
    metrics = json.loads(out[out.index("{"):])["metrics"]
    assert metrics["accuracy"]["value"] == pytest.approx(6 / 8)


def test_cli_refuses_bad_data_in_one_line(tmp_path: Path, float_model: Path) -> None:
    names = write_eembc_set(tmp_path / "set", np.zeros((2, *TRIAL), np.float32), np.array([0, 1]))
    (tmp_path / "set" / names[0]).write_bytes(bytes(40))
    code, out = run(tmp_path, str(float_model), "--data", str(tmp_path / "set"))
    assert_one_line(code, out, f"'{names[0]}' holds 40 bytes but one trial of the model input is float32")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, *TRIAL), np.float32), y=np.zeros(0))
    code, out = run(tmp_path, str(float_model), "--data", str(tmp_path / "empty.npz"))
    assert_one_line(code, out, "x holds no trials")
    (tmp_path / "set" / "y_labels.csv").write_text("gone.bin,5,1\n")
    code, out = run(tmp_path, str(float_model), "--data", str(tmp_path / "set"))
    assert_one_line(code, out, "names 'gone.bin', which is not in the folder")
    np.savez(tmp_path / "soft.npz", x=np.zeros((2, *TRIAL), np.float32), y=np.array([0.37, 1.0]))
    code, out = run(tmp_path, str(float_model), "--data", str(tmp_path / "soft.npz"), "--no-memory", "--runs", "2")
    assert_one_line(code, out, "y holds non-integer values (e.g. 0.37)")


def test_byte_files_say_which_byte_type_they_were_read_as(tmp_path: Path) -> None:
    write_eembc_set(tmp_path, np.zeros((2, *TRIAL), np.int8), np.array([0, 1]))
    data = load_dataset(str(tmp_path), meta_of(TensorProto.INT8))
    assert data.notes == ["raw trials read as int8, the model input's type; if the files hold uint8 values "
                          "(MLPerf Tiny's image sets store uint8 pixels), give :dtype=uint8"]
    assert load_dataset(f"{tmp_path}:dtype=int8", meta_of(TensorProto.INT8)).notes == []


def test_cli_one_hot_labels_score_as_their_class_indices(tmp_path: Path, float_model: Path) -> None:
    x = np.random.default_rng(4).normal(size=(10, *TRIAL)).astype(np.float32)
    labels = predictions(x)
    labels[:3] = (labels[:3] + 2) % CLASSES  # three wrong: accuracy 7/10 either way
    np.savez(tmp_path / "one_hot.npz", x=x, y=np.eye(CLASSES, dtype=np.float32)[labels])
    code, out = run(tmp_path, str(float_model), "--data", str(tmp_path / "one_hot.npz"), "--json", "--no-memory",
                    "--runs", "2")
    assert code == 0, out
    doc = json.loads(out[out.index("{"):])
    assert doc["metrics"]["accuracy"]["value"] == pytest.approx(7 / 10)
    assert "y is one-hot; read as class indices" in doc["notes"]


def test_cli_table_shows_the_readers_notes(tmp_path: Path, float_model: Path) -> None:
    values = np.arange(24, dtype=np.float32)
    (tmp_path / "normal_id_01.bin").write_bytes(values.tobytes())
    (tmp_path / "y_labels.csv").write_text("normal_id_01.bin,2,0,48,48\n")
    code, out = run(tmp_path, str(float_model), "--data", str(tmp_path), "--no-memory", "--runs", "2")
    assert code == 0, out
    assert "accuracy" not in out  # the per-recording anomaly labels are not scored as classes of the windows
    assert "note: y_labels.csv holds anomaly labels per recording" in out


def test_eembc_set_for_an_int8_tflite_model_takes_its_input_type(tmp_path: Path, tiny_tflite_int8_io: bytes) -> None:
    from edge.tflite_model import TfliteModel

    meta = TfliteModel.from_bytes(tiny_tflite_int8_io).meta
    x = np.random.default_rng(0).integers(-128, 128, size=(3, 2, 1, 8)).astype(np.int8)
    write_eembc_set(tmp_path, x, np.array([3, 0, 1]), n_classes=4)
    data = load_dataset(str(tmp_path), meta)
    assert data.x.dtype == np.int8 and data.x.shape == (3, 2, 1, 8)
    np.testing.assert_array_equal(data.x, x)
    (tmp_path / "tst_000000_Word_3.bin").write_bytes(bytes(17))
    with pytest.raises(DataError, match=r"holds 17 bytes but one trial of the model input is int8 x \(2, 1, 8\) = 16"):
        load_dataset(str(tmp_path), meta)

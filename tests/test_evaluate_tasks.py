"""Outputs that are not class scores, labels as stored, and which model fidelity is measured against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edge.cli import main
from edge.data.labels import class_indices
from edge.errors import DataError
from edge.metrics import delong_interval, roc_auc


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def autoencoder(path: Path, features: int = 8) -> Path:
    """y = 0.9 x + 0.05: a reconstruction whose error grows with the input's size."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "gain"], ["scaled"]), helper.make_node("Add", ["scaled", "shift"], ["y"])],
        "autoencoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", features])],
        [numpy_helper.from_array(np.array(0.9, np.float32), "gain"),
         numpy_helper.from_array(np.array(0.05, np.float32), "shift")])
    return _save(graph, path)


def linear(path: Path, weight: np.ndarray) -> Path:
    """y = x @ weight: one value per trial (regression) or several (class scores)."""
    features, outputs = weight.shape
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")])
    return _save(graph, path)


def _eval(tmp_path: Path, *args: str) -> tuple[int, str, dict]:
    result = CliRunner().invoke(main, ["eval", *args, "--runs", "2", "--no-memory",
                                       "--out-dir", str(tmp_path / "runs")])
    folder = sorted((tmp_path / "runs").glob("*-eval*")) if (tmp_path / "runs").is_dir() else []
    doc = json.loads((folder[-1] / "results.json").read_text()) if folder and result.exit_code == 0 else {}
    return result.exit_code, result.output, doc


def test_roc_auc_matches_pairwise_counting_with_ties() -> None:
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
    positive = np.array([0, 0, 1, 1, 1, 0], bool)
    pairs = [(p, n) for p in scores[positive] for n in scores[~positive]]
    by_hand = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert roc_auc(scores, positive) == pytest.approx(by_hand)  # 5.5 / 9
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)) == pytest.approx(0.75)
    lo, hi = delong_interval(scores, positive)
    assert 0.0 <= lo < by_hand < hi <= 1.0


def test_autoencoder_gets_reconstruction_error_and_roc_auc(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (60, 8)).astype(np.float32)
    y = np.zeros(60, np.int64)
    y[::4] = 1
    x[y == 1] *= rng.uniform(1.0, 3.0, (15, 1)).astype(np.float32)  # anomalies are larger, so reconstruct worse
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, out, doc = _eval(tmp_path, str(autoencoder(tmp_path / "ae.onnx")), "--data", str(tmp_path / "d.npz"))
    assert code == 0, out
    error = np.mean((0.9 * x.astype(np.float64) + 0.05 - x) ** 2, axis=1)
    pairs = [(p, n) for p in error[y == 1] for n in error[y == 0]]
    by_hand = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    anomaly = doc["metrics"]["anomaly"]
    assert doc["task"]["kind"] == "anomaly" and "input's shape" in doc["task"]["decided_by"]
    assert anomaly["roc_auc"]["value"] == pytest.approx(by_hand, abs=1e-6)
    assert anomaly["mean"]["value"] == pytest.approx(error.mean(), rel=1e-4)
    assert "accuracy" not in doc["metrics"] and "accuracy" not in out
    assert "ROC AUC" in out and "reconstruction MSE" in out


def test_regression_model_gets_error_metrics_not_accuracy(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(4, 1))
    x = rng.normal(size=(50, 4)).astype(np.float32)
    target = (x @ weight)[:, 0] + rng.normal(0, 0.1, 50)
    np.savez(tmp_path / "d.npz", x=x, y=target)
    code, out, doc = _eval(tmp_path, str(linear(tmp_path / "reg.onnx", weight)), "--data", str(tmp_path / "d.npz"))
    assert code == 0, out
    reg = doc["metrics"]["regression"]
    predicted = (x.astype(np.float64) @ weight)[:, 0]
    assert reg["mse"]["value"] == pytest.approx(np.mean((predicted - target) ** 2), rel=1e-4)
    assert reg["r2"]["value"] > 0.9
    assert reg["mse"]["ci95"][0] <= reg["mse"]["value"] <= reg["mse"]["ci95"][1]
    assert "accuracy" not in out and "MSE" in out and "R²" in out


def test_single_value_with_binary_labels_asks_for_task(tmp_path: Path) -> None:
    x = np.random.default_rng(2).normal(size=(20, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 2)
    model = str(linear(tmp_path / "logit.onnx", np.ones((4, 1))))
    code, out, _ = _eval(tmp_path, model, "--data", str(tmp_path / "d.npz"))
    assert code == 1 and "--task" in out and "Traceback" not in out
    code, out, doc = _eval(tmp_path, model, "--data", str(tmp_path / "d.npz"), "--task", "anomaly")
    assert code == 0, out
    assert doc["metrics"]["anomaly"]["score"] == "the model's output value"


def test_float_labels_are_refused_with_one_sentence(tmp_path: Path) -> None:
    x = np.random.default_rng(3).normal(size=(20, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.linspace(0.1, 2.9, 20))
    model = str(linear(tmp_path / "clf.onnx", np.eye(4, 3)))
    code, out, _ = _eval(tmp_path, model, "--data", str(tmp_path / "d.npz"))
    assert code == 1
    assert "non-integer values" in out and "Traceback" not in out and len(out.strip().splitlines()) == 1


def test_one_hot_labels_are_read_as_class_indices(tmp_path: Path) -> None:
    x = np.random.default_rng(4).normal(size=(200, 4)).astype(np.float32)
    labels = x[:, :3].argmax(1)
    np.savez(tmp_path / "d.npz", x=x, y=np.eye(3)[labels])
    model = str(linear(tmp_path / "clf.onnx", np.eye(4, 3)))
    code, out, doc = _eval(tmp_path, model, "--data", str(tmp_path / "d.npz"))
    assert code == 0, out
    assert doc["metrics"]["accuracy"]["value"] == 1.0 and doc["metrics"]["accuracy"]["n"] == 200
    assert "y is one-hot; read as class indices" in doc["notes"] and "note: y is one-hot" in out
    assert "800" not in out


def test_missing_labels_say_task_metrics_are_skipped(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 4), np.float32))
    model = str(linear(tmp_path / "clf.onnx", np.eye(4, 3)))
    code, out, doc = _eval(tmp_path, model, "--data", str(tmp_path / "d.npz"))
    assert code == 0, out
    assert "task metrics skipped: the data have no labels (y)" in doc["notes"]
    assert "note: task metrics skipped" in out


def test_class_indices_rules() -> None:
    assert class_indices(np.array([0.0, 2.0, 1.0]), 3).tolist() == [0, 2, 1]
    assert class_indices(np.eye(3)[[2, 0]], 3).tolist() == [2, 0]
    with pytest.raises(DataError, match="non-integer values"):
        class_indices(np.array([0.5, 1.0]), 3)
    with pytest.raises(DataError, match="labels run from 0 to 3"):
        class_indices(np.array([0, 3]), 3)


def test_sibling_onnx_is_used_only_when_its_sha256_is_the_exported_parent(tmp_path: Path) -> None:
    from converters.tflite import export_tflite
    from edge.deploy import load_model
    from edge.evaluate import host_reference

    weight = np.random.default_rng(5).normal(size=(4, 3))
    parent = linear(tmp_path / "m.onnx", weight)
    _, artifact = load_model(parent)
    (tmp_path / "m.tflite").write_bytes(export_tflite(artifact))
    (tmp_path / "m.onnx").write_bytes(artifact.to_bytes())  # the exact bytes the export records
    path, tflite = load_model(tmp_path / "m.tflite")
    used, notes = host_reference(path, tflite, None, "cpu")
    assert used is not None and "sha256 verified" in used[0] and not notes
    linear(tmp_path / "m.onnx", weight * 2)  # an unrelated model of the same name
    used, notes = host_reference(path, tflite, None, "cpu")
    assert used is None
    assert any("m.onnx beside it was not used" in n and "sha256" in n for n in notes)
    assert any(n.startswith("fidelity not measured") for n in notes)
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 4), np.float32), y=np.zeros(6, np.int64))
    code, out, doc = _eval(tmp_path, str(tmp_path / "m.tflite"), "--data", str(tmp_path / "d.npz"))
    assert code == 0, out
    assert "fidelity" not in doc["metrics"] and "not used" in out and "fidelity not measured" in out


def _lif_net(threshold: float, dt: float | None) -> Any:
    """Input 4 -> Affine -> LIF 6 -> Affine -> LI 3, its dt in the metadata when given."""
    import nir

    rng = np.random.default_rng(6)
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "fc1": nir.Affine(weight=rng.normal(0, 1, (6, 4)), bias=np.zeros(6)),
             "lif": nir.LIF(tau=np.full(6, 0.02), r=np.full(6, 20.0), v_leak=np.zeros(6),
                            v_threshold=np.full(6, threshold), v_reset=np.zeros(6)),
             "fc2": nir.Affine(weight=rng.normal(0, 1, (3, 6)), bias=np.array([0.0, 0.5, 0.0])),
             "li": nir.LI(tau=np.full(3, 0.02), r=np.full(3, 20.0), v_leak=np.zeros(3)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "li"), ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": dt} if dt else {})


def test_silent_spiking_network_warns_names_dt_and_exits_1(tmp_path: Path) -> None:
    import nir

    nir.write(str(tmp_path / "silent.nir"), _lif_net(threshold=1e9, dt=1e-3))
    x = (np.random.default_rng(7).random((12, 20, 4)) < 0.3).astype(np.float32)
    np.savez(tmp_path / "spikes.npz", x=x, y=np.arange(12) % 3)
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "silent.nir"), "--data", str(tmp_path / "spikes.npz"),
                                       "--runs", "2", "--out-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    warning = "WARNING: layer 'lif' emitted no spike over the whole data (dt 0.001 s (the file's metadata))"
    assert warning in result.output
    assert "MEANINGLESS" in result.output and "Traceback" not in result.output
    doc = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())
    assert doc["meaningless"] and doc["metrics"]["accuracy"]["meaningless"] and doc["warnings"]


def test_explicit_dt_that_differs_from_the_file_is_reported(tmp_path: Path) -> None:
    import nir

    nir.write(str(tmp_path / "net.nir"), _lif_net(threshold=1.0, dt=1e-3))
    out = tmp_path / "net.onnx"
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "net.nir"), "--dt", "2e-4", "--time-steps", "20",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "dt: 0.0002 s (--dt; the file's own is 0.001 s)" in result.output
    from edge.artifact import read_artifact

    task = read_artifact(out).meta.task
    assert task["dt"] == 2e-4 and task["file_dt"] == 1e-3


def test_rockpool_written_nir_file_reads_and_simulates(tmp_path: Path) -> None:
    """The HDF5 layout Rockpool 3.1 writes (nir <= 1.0.4 via nirtorch): float32 arrays, the input and output
    shapes with a batch dimension, LIF without v_reset, r = tau exp(-dt/tau) / dt, no dt in the metadata."""
    import h5py

    from converters.nir_import import read_nir
    from edge.families.snn.simulate import simulate

    dt, rng = 1e-3, np.random.default_rng(8)
    tau, tau_out = np.full(5, 0.02, np.float32), np.full(2, 0.01, np.float32)
    nodes = {
        "input": {"type": "Input", "shape": np.array([1, 3])},
        "0_LinearTorch": {"type": "Affine", "weight": rng.normal(0, 2, (5, 3)).astype(np.float32),
                          "bias": np.zeros(5, np.float32)},
        "1_LIFNeuronTorch": {"type": "LIF", "tau": tau, "r": (tau * np.exp(-dt / tau) / dt).astype(np.float32),
                             "v_leak": np.zeros(5, np.float32), "v_threshold": np.full(5, 0.5, np.float32)},
        "2_LinearTorch": {"type": "Linear", "weight": rng.normal(0, 1, (2, 5)).astype(np.float32)},
        "3_ExpSynTorch": {"type": "LI", "tau": tau_out, "r": (tau_out * np.exp(-dt / tau_out) / dt).astype(np.float32),
                          "v_leak": np.zeros(2, np.float32)},
        "output": {"type": "Output", "shape": np.array([1, 2])},
    }
    names = list(nodes)
    with h5py.File(tmp_path / "rockpool.nir", "w") as f:
        f.create_dataset("version", data="1.0.4")
        node = f.create_group("node")
        node.create_dataset("type", data="NIRGraph")
        node.create_dataset("edges", data=np.array([[a, b] for a, b in zip(names[:-1], names[1:], strict=True)],
                                                   dtype=object), dtype=h5py.string_dtype())
        group = node.create_group("nodes")
        for name, fields in nodes.items():
            g = group.create_group(name)
            for key, value in fields.items():
                g.create_dataset(key, data=value)
    graph = read_nir(tmp_path / "rockpool.nir")
    assert graph.input_shape == (3,) and graph.dt == pytest.approx(dt, rel=1e-5)
    assert "Rockpool" in graph.dt_source and graph.file_dt == pytest.approx(dt, rel=1e-5)
    assert any("batch dimension" in n for n in graph.notes)
    x = (rng.random((6, 30, 3)) < 0.5).astype(np.float32)
    run = simulate(graph, x)
    assert run.y.shape == (6, 30, 2) and run.spikes["1_LIFNeuronTorch"].sum() > 0


def test_shipped_nir_file_runs_at_its_own_dt_with_spikes_and_accuracy(tmp_path: Path) -> None:
    """The README's NIR example: the shipped .nir file, its input spikes written by snn_reference --spikes."""
    from edge.snn import evaluate_spiking_model
    from edge.snn_reference import write_spikes

    nir_file = Path(__file__).resolve().parents[1] / "edge" / "zoo" / "snn_ssvep_delta.nir"
    write_spikes("synthetic-ssvep:subjects=32-32,blocks=1", tmp_path / "spikes.npz")
    results = evaluate_spiking_model(nir_file, str(tmp_path / "spikes.npz"), runs=5)
    assert results["model_info"]["dt"] == 0.008 and results["model_info"]["dt_source"] == "the file's metadata"
    assert not results["warnings"] and results["meaningless"] is None
    assert results["metrics"]["spike_rates"]["lif1"]["rate"] > 0.01
    assert results["metrics"]["accuracy"]["value"] > 0.5  # 40 classes: chance is 2.5 %


def test_eval_of_a_nir_file_at_another_dt_says_so(tmp_path: Path) -> None:
    import nir

    nir.write(str(tmp_path / "net.nir"), _lif_net(threshold=0.05, dt=1e-3))
    x = (np.random.default_rng(9).random((12, 20, 4)) < 0.5).astype(np.float32)
    np.savez(tmp_path / "spikes.npz", x=x, y=np.arange(12) % 3)
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "net.nir"), "--data", str(tmp_path / "spikes.npz"),
                                       "--dt", "5e-4", "--runs", "2", "--out-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "dt 0.0005 s (--dt; the file's own is 0.001 s)" in result.output
    assert "note: dt 0.0005 s differs from the NIR file's own 0.001 s" in result.output

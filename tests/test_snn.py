"""Spiking networks through the user-facing API and CLI: NIR files and step-graph artifacts on the targets."""

from __future__ import annotations

import itertools
import json

import nir
import numpy as np
import pytest
from click.testing import CliRunner

from converters.nir_import import from_nir, write_nir
from edge.artifact import read_artifact, write_artifact
from edge.cli import main
from edge.data.events import synthetic_nmnist_events, write_nmnist, write_shd
from edge.data.spiking import load_spike_dataset
from edge.errors import DataError, EngineError
from edge.families.snn.export import export_snn
from edge.families.snn.simulate import simulate
from edge.snn import evaluate_spiking_model, format_spiking_results, import_nir_file, spiking_resilience

DT = 1e-3


@pytest.fixture(scope="module")
def spiking_files(tmp_path_factory, nir_graphs):
    """A feed-forward LIF net as a NIR file and as an artifact, and labelled input spikes."""
    folder = tmp_path_factory.mktemp("snn")
    rng = np.random.default_rng(0)
    graph = nir_graphs["feedforward-lif"](rng)
    write_nir(from_nir(graph, dt=DT), folder / "net.nir")  # the file carries its time step in the metadata
    artifact = export_snn(from_nir(graph, dt=DT), time_steps=40)
    write_artifact(artifact, folder / "net.onnx")
    x = (rng.random((24, 40, 16)) < 0.2).astype(np.float32)
    reference = simulate(from_nir(graph, dt=DT), x).y.mean(axis=1).argmax(1)
    np.savez(folder / "spikes.npz", x=x, y=reference)  # labels = the reference's own predictions
    return folder


def test_evaluation_reports_the_figures_of_the_field(spiking_files) -> None:
    results = evaluate_spiking_model(spiking_files / "net.onnx", str(spiking_files / "spikes.npz"), runs=20)
    m = results["metrics"]
    assert m["accuracy"]["value"] == 1.0  # labels are the reference simulation's predictions
    assert set(m["spike_rates"]) == {"lif1", "lif2"}
    ops = m["operations"]
    assert 0 < ops["synops_per_sample"] < ops["dense_macs"] == 40 * (16 * 32 + 32 * 4)
    assert ops["effective_macs"] == 0  # both connections receive spikes only
    assert ops["energy"]["snn_nj"] == pytest.approx(ops["effective_acs"] * 0.9e-3)
    assert "estimate" in ops["energy"]["source"]
    assert m["latency_per_step"]["median_us"] > 0
    text = format_spiking_results(results)
    for word in ("accuracy", "spike rate", "SynOps", "dense equivalent", "energy (estimate)", "latency per step"):
        assert word in text


def test_plain_nir_file_works_like_an_artifact(spiking_files) -> None:
    """The NIR file is evaluated directly (imported with the dt its metadata gives) and decides as the artifact."""
    assert import_nir_file(spiking_files / "net.nir").meta.task["dt"] == DT
    from_file = evaluate_spiking_model(spiking_files / "net.nir", str(spiking_files / "spikes.npz"), runs=5)
    from_artifact = evaluate_spiking_model(spiking_files / "net.onnx", str(spiking_files / "spikes.npz"), runs=5)
    assert from_file["predictions"] == from_artifact["predictions"] == np.load(spiking_files / "spikes.npz")["y"].tolist()
    assert from_file["metrics"]["spike_rates"] == from_artifact["metrics"]["spike_rates"]


def test_microcontroller_target_runs_the_step_graph(spiking_files) -> None:
    """The float step graph exported to TFLite on TFLite Micro, batch 1, state carried by the host."""
    pytest.importorskip("tflite_micro")
    host = evaluate_spiking_model(spiking_files / "net.onnx", str(spiking_files / "spikes.npz"), runs=5)
    mcu = evaluate_spiking_model(spiking_files / "net.onnx", str(spiking_files / "spikes.npz"), device="mcu:tflm",
                                 runs=5)
    assert mcu["predictions"] == host["predictions"]
    assert mcu["metrics"]["spike_rates"] == host["metrics"]["spike_rates"]


def test_fault_sweep_reports_accuracy_and_spike_rate(spiking_files) -> None:
    doc = spiking_resilience(spiking_files / "net.onnx", str(spiking_files / "spikes.npz"), bers=[1e-3, 5e-2], maps=3)
    assert doc["clean_accuracy"] == 1.0
    assert any(t.endswith(".threshold") for t in doc["targets"]) and any(t.endswith(".weight") for t in doc["targets"])
    low, high = doc["points"]
    assert low["mean_flips"] < high["mean_flips"]
    assert high["agreement_mean"] < 1.0  # thousands of flipped bits change decisions


def test_spike_data_from_event_files(nir_graphs, tmp_path) -> None:
    conv = export_snn(from_nir(nir_graphs["conv-if-sumpool"](np.random.default_rng(0)), dt=DT), time_steps=10)
    for label in (0, 1):
        (tmp_path / "Test" / str(label)).mkdir(parents=True)
        write_nmnist(tmp_path / "Test" / str(label) / "00001.bin", synthetic_nmnist_events(label, seed=label))
    with pytest.raises(DataError, match="N-MNIST frames are"):  # 2 x 34 x 34 frames, a 2 x 12 x 12 net
        load_spike_dataset(str(tmp_path), conv.meta)
    frames_meta = export_snn(from_nir(_linear_net((2, 34, 34)), dt=DT), time_steps=15).meta
    frames = load_spike_dataset(f"{tmp_path}:split=Test,duration_ms=300", frames_meta)
    assert frames.x.shape == (2, 15, 2, 34, 34) and frames.y.tolist() == [0, 1]
    assert set(np.unique(frames.x)) <= {0.0, 1.0} and frames.x.sum() > 100
    shd_meta = export_snn(from_nir(_linear_net(140), dt=DT), time_steps=25).meta
    times = [np.array([0.01, 0.5, 0.99], np.float32), np.array([0.2], np.float32)]
    units = [np.array([0, 5, 699], np.uint16), np.array([3], np.uint16)]
    write_shd(tmp_path / "shd.h5", list(zip(times, units, strict=True)), np.array([1, 7]))
    data = load_spike_dataset(str(tmp_path / "shd.h5"), shd_meta)
    assert data.x.shape == (2, 25, 140) and data.x.sum() == 4 and data.y.tolist() == [1, 7]
    synthetic = load_spike_dataset("synthetic-events:samples=12,classes=3,seed=1", shd_meta)
    assert synthetic.x.shape == (12, 25, 140) and set(synthetic.y.tolist()) <= {0, 1, 2}


def _linear_net(shape: int | tuple[int, ...]) -> nir.NIRGraph:
    shape = (shape,) if isinstance(shape, int) else shape
    flat = {"flat": nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0)} if len(shape) > 1 else {}
    nodes = {"input": nir.Input(input_type={"input": np.array(shape)}), **flat,
             "fc": nir.Linear(weight=np.ones((3, int(np.prod(shape))), np.float32)),
             "lif": nir.LIF(tau=np.full(3, 0.02), r=np.full(3, 0.02 / DT), v_leak=np.zeros(3),
                            v_threshold=np.ones(3), v_reset=np.zeros(3)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    chain = ["input", *(["flat"] if flat else []), "fc", "lif", "output"]
    return nir.NIRGraph(nodes=nodes, edges=list(itertools.pairwise(chain)))


def test_cli_eval_inspect_and_clear_errors(spiking_files) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(spiking_files / "net.onnx"), "--data", str(spiking_files / "spikes.npz"),
                                  "--runs", "5", "--out-dir", str(spiking_files / "runs")])
    assert result.exit_code == 0, result.output
    assert "SynOps" in result.output and "energy (estimate)" in result.output
    result = runner.invoke(main, ["eval", str(spiking_files / "net.nir"), "--data", str(spiking_files / "spikes.npz"),
                                  "--runs", "5", "--json", "--out-dir", str(spiking_files / "runs")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["kind"] == "spiking-network"
    result = runner.invoke(main, ["inspect", str(spiking_files / "net.onnx")])
    assert result.exit_code == 0 and "spiking" in result.output and "state" in result.output
    result = runner.invoke(main, ["eval", str(spiking_files / "net.onnx"), "--data", "synthetic-ssvep:subjects=1",
                                  "--out-dir", str(spiking_files / "runs")])
    assert result.exit_code != 0 and "encoder" in result.output and "Traceback" not in result.output
    with pytest.raises(EngineError, match="spiking networks run on"):
        evaluate_spiking_model(spiking_files / "net.onnx", str(spiking_files / "spikes.npz"), device="sim")


def test_cli_spiking_eval_says_fidelity_was_not_measured_and_refuses_a_reference(spiking_files) -> None:
    """A --reference that would be ignored is refused; the output says no fidelity figure was measured."""
    runner = CliRunner()
    args = ["eval", str(spiking_files / "net.onnx"), "--data", str(spiking_files / "spikes.npz"), "--runs", "5",
            "--out-dir", str(spiking_files / "runs")]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "note: fidelity not measured" in result.output
    result = runner.invoke(main, [*args, "--reference", str(spiking_files / "net.nir")])
    assert result.exit_code == 2 and "--reference is not used for spiking networks" in result.output
    assert "Traceback" not in result.output


def test_cli_convert_imports_quantizes_and_exports_a_nir_file(spiking_files, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "net_int8.onnx"
    result = runner.invoke(main, ["convert", str(spiking_files / "net.nir"), "--dt", str(DT), "--time-steps", "40",
                                  "--quantize", "int8", "--calib", str(spiking_files / "spikes.npz"),
                                  "--export", "tflite", "-o", str(out)])
    assert result.exit_code == 0, result.output
    for step in ("quantize-snn", "tflite (LiteRT)", "tflite (TFLite Micro)"):
        assert f"{step}: top-1 agreement" in result.output
    assert out.is_file() and out.with_suffix(".tflite").is_file()
    assert read_artifact(out).meta.task["precision"]["state"] == "float32"
    result = runner.invoke(main, ["convert", str(spiking_files / "net.nir"), "--quantize", "int8", "-o",
                                  str(tmp_path / "x.onnx")])
    assert result.exit_code != 0 and "calibration spikes" in result.output and "Traceback" not in result.output

"""NIR graphs -> reference simulation -> ONNX step graph and Scan: spike for spike the same for 100 steps."""

from __future__ import annotations

import nir
import numpy as np
import onnxruntime as ort
import pytest

from converters.nir_import import from_nir, read_nir, write_nir
from edge.errors import DataError, PassError
from edge.families.snn.graph import discretise
from edge.families.snn.lower import scan_model, state_names, step_model
from edge.families.snn.simulate import Simulator, simulate

DT = 1e-3  # the time step the NIR test networks of conftest.py are built for
STEPS = 100
GRAPH_NAMES = ("conv-if-sumpool", "delay", "feedforward-lif", "recurrent-cubalif")


def _spikes(rng: np.random.Generator, shape: tuple[int, ...], rate: float = 0.2) -> np.ndarray:
    return (rng.random((3, STEPS) + shape) < rate).astype(np.float32)


def run_step_graph(model, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = state_names(model)
    outputs = [o.name for o in session.get_outputs()]
    state = {i.name: np.zeros((len(x),) + tuple(i.shape[1:]), np.float32) for i in session.get_inputs()[1:]}
    per_step: dict[str, list[np.ndarray]] = {}
    for t in range(x.shape[1]):
        result = dict(zip(outputs, session.run(None, {"x": x[:, t], **state}), strict=True))
        state = {n: result[f"{n}.next"] for n in names}
        for name, value in result.items():
            if not name.endswith(".next"):
                per_step.setdefault(name, []).append(value)
    return {k: np.stack(v, axis=1) for k, v in per_step.items()}


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_step_graph_and_scan_match_the_reference_spike_for_spike(name: str, nir_graphs, tmp_path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / f"{name}.nir"
    nir.write(str(path), nir_graphs[name](rng))
    graph = read_nir(path, dt=DT)
    x = _spikes(rng, graph.input_shape)
    reference = simulate(graph, x)
    total_spikes = sum(float(s.sum()) for s in reference.spikes.values())
    assert total_spikes > 100  # the nets are active: the comparison means something
    step = step_model(graph)
    stepped = run_step_graph(step, x)
    np.testing.assert_array_equal(stepped["y"], reference.y)
    for node, spikes in reference.spikes.items():
        np.testing.assert_array_equal(stepped[f"spikes.{node}"], spikes, err_msg=node)
    scanned = ort.InferenceSession(scan_model(step).SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in scanned.get_outputs()], scanned.run(None, {"x": x}), strict=True))
    np.testing.assert_array_equal(outputs["y"], reference.y)
    for node, spikes in reference.spikes.items():
        np.testing.assert_array_equal(outputs[f"spikes.{node}"], spikes, err_msg=node)


def test_recurrent_subgraph_is_flattened_with_a_previous_step_state(nir_graphs) -> None:
    graph = from_nir(nir_graphs["recurrent-cubalif"](np.random.default_rng(0)), dt=DT)
    assert ("rnn.w_rec", "rnn.lif") in graph.back_edges
    slots = {s.input for s in Simulator(graph).slots}
    assert slots == {"rnn.lif.i_syn", "rnn.lif.v", "li.v", "rnn.w_rec.previous"}


def test_recurrence_feeds_the_previous_step(nir_graphs) -> None:
    """Step 1 sees only the input; the recurrent term arrives one step later, as in snnTorch's RSynaptic."""
    rng = np.random.default_rng(0)
    graph = from_nir(nir_graphs["recurrent-cubalif"](rng), dt=DT)
    sim = Simulator(graph)
    x = np.ones((1, 8), np.float32)
    outputs, state = sim.step(x, sim.initial_state(1))
    w_rec = graph.nodes["rnn.w_rec"].params["weight"].astype(np.float32)
    np.testing.assert_array_equal(state["rnn.w_rec.previous"], outputs["rnn.lif"] @ w_rec.T)
    assert discretise(graph.nodes["rnn.lif"], DT).gs is None  # w_in = tau_syn / dt: unit synaptic gain
    np.testing.assert_array_equal(state["rnn.lif.i_syn"], outputs["fc1"])  # no recurrent term at step 1


def test_snntorch_leaky_conventions_discretise_to_beta_and_unit_gain() -> None:
    beta, dt = 0.9, 1e-4
    tau = dt / (1 - beta)
    lif = nir.LIF(tau=np.full(3, tau), r=np.full(3, tau / dt), v_leak=np.zeros(3), v_threshold=np.ones(3),
                  v_reset=np.zeros(3))
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}), "lif": lif,
                                "output": nir.Output(output_type={"output": np.array([3])})},
                         edges=[("input", "lif"), ("lif", "output")])
    c = discretise(from_nir(graph, dt=dt).nodes["lif"], dt)
    np.testing.assert_allclose(c.a, beta, rtol=1e-6)
    assert c.g is None and c.c is None  # unit gain and no leak drive: no operations emitted


def test_delay_outputs_the_input_of_d_steps_ago() -> None:
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}),
                                "delay": nir.Delay(delay=np.array([0, 1, 4]) * DT),
                                "output": nir.Output(output_type={"output": np.array([3])})},
                         edges=[("input", "delay"), ("delay", "output")])
    x = np.random.default_rng(0).random((2, 10, 3)).astype(np.float32)
    y = simulate(from_nir(graph, dt=DT), x).y
    np.testing.assert_array_equal(y[:, :, 0], x[:, :, 0])
    np.testing.assert_array_equal(y[:, 1:, 1], x[:, :-1, 1])
    np.testing.assert_array_equal(y[:, 4:, 2], x[:, :-4, 2])
    assert not y[:, :4, 2].any()


def test_synaptic_operations_follow_neurobench() -> None:
    """Non-zero input x non-zero weight pairs: a zero weight removes its synapse from the count."""
    w = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]], np.float32)
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}), "fc": nir.Linear(weight=w),
                                "output": nir.Output(output_type={"output": np.array([2])})},
                         edges=[("input", "fc"), ("fc", "output")])
    x = np.array([[[1, 1, 0], [0, 0, 1]]], np.float32)  # step 0: inputs 0, 1; step 1: input 2
    result = simulate(from_nir(graph, dt=DT), x, count_ops=True)
    assert result.synops["fc"] == 1 + 0 + 2  # input 0 has one synapse, input 1 none, input 2 two
    assert result.dense_ops["fc"] == 2 * (2 * 3)  # NeuroBench's dense: every input and weight, two steps


def test_nir_round_trip_keeps_the_network(nir_graphs, tmp_path) -> None:
    rng = np.random.default_rng(3)
    graph = from_nir(nir_graphs["recurrent-cubalif"](rng), dt=DT)
    write_nir(graph, tmp_path / "net.nir")
    again = read_nir(tmp_path / "net.nir")
    assert again.dt == DT
    x = _spikes(rng, graph.input_shape)
    np.testing.assert_array_equal(simulate(again, x).y, simulate(graph, x).y)


def test_unsupported_node_and_bad_files_are_named(tmp_path) -> None:
    class Mystery(nir.Scale):
        pass

    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                                "odd": Mystery(scale=np.ones(2)),
                                "output": nir.Output(output_type={"output": np.array([2])})},
                         edges=[("input", "odd"), ("odd", "output")], type_check=False)
    with pytest.raises(PassError, match="NIR node 'odd' has type Mystery"):
        from_nir(graph)
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="not a NIR graph file"):
        read_nir(bad)
    with pytest.raises(DataError, match="no such NIR file"):
        read_nir(tmp_path / "missing.nir")

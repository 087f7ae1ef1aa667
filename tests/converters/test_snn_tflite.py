"""Spiking step graphs as TFLite files: float spike for spike, int8 connections against the ONNX QDQ graph."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import NIR_DT
from onnx import TensorProto, helper, numpy_helper

from converters.nir_import import from_nir
from converters.snn_quantize import QuantizeSpiking
from converters.tflite import export_tflite, read_tflite_meta
from edge.artifact import Artifact
from edge.errors import EngineError, PassError
from runtimes.litert_session import LiteRTSession
from runtimes.tflm_session import TFLMSession

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")

STEPS = 100
Step = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def step_artifact(nir_graphs: dict, name: str) -> tuple[Artifact, np.ndarray, np.ndarray]:
    """The step-graph artifact of a NIR test network, calibration spike trains and test spike trains."""
    from edge.families.snn.export import export_snn

    rng = np.random.default_rng(1)
    graph = from_nir(nir_graphs[name](rng), dt=NIR_DT)
    artifact = export_snn(graph, time_steps=STEPS)
    calibration = (rng.random((16, STEPS) + graph.input_shape) < 0.2).astype(np.float32)
    x = (rng.random((2, STEPS) + graph.input_shape) < 0.2).astype(np.float32)
    return artifact, calibration, x


def onnx_step(artifact: Artifact) -> Step:
    session = ort.InferenceSession(artifact.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(None, feeds), strict=True))


def run_steps(step: Step, artifact: Artifact, x: np.ndarray) -> dict[str, np.ndarray]:
    """The host loop: feed x[:, t] and the state, carry ``<state>.next`` back; per-step outputs [batch, T, ...]."""
    slots = artifact.meta.task["state"]
    state = {s["input"]: np.zeros((len(x), *s["shape"]), np.float32) for s in slots}
    per_step: dict[str, list[np.ndarray]] = {}
    for t in range(x.shape[1]):
        result = step({"x": x[:, t], **state})
        state = {s["input"]: result[s["output"]] for s in slots}
        for name, value in result.items():
            if not name.endswith(".next"):
                per_step.setdefault(name, []).append(value)
    return {k: np.stack(v, axis=1) for k, v in per_step.items()}


def tflite_ops(data: bytes) -> list[str]:
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [names[c.builtinCode] for c in model.operatorCodes]
    return [codes[op.opcodeIndex] for op in model.subgraphs[0].operators]


@pytest.mark.parametrize("name", ["feedforward-lif", "conv-if-sumpool", "delay", "recurrent-cubalif"])
def test_float_step_graph_runs_spike_for_spike_in_litert_and_tflite_micro(name: str, nir_graphs) -> None:
    artifact, _, x = step_artifact(nir_graphs, name)
    data = export_tflite(artifact)
    ops = tflite_ops(data)
    assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops  # float only
    assert {"GREATER", "SELECT_V2"} <= set(ops)
    if name == "delay":
        assert {"CONCATENATION", "STRIDED_SLICE", "SUM"} <= set(ops)
    want = run_steps(onnx_step(artifact), artifact, x)
    assert sum(float(v.sum()) for k, v in want.items() if k.startswith("spikes.")) > 100  # an active network
    litert = LiteRTSession(data, kernels="reference")  # the whole batch in one call
    micro = TFLMSession(data)  # one trial at a time
    for session in (litert, micro):
        got = run_steps(session.run_named, artifact, x)
        assert got.keys() == want.keys()
        for key in want:  # y, spikes.*, activity.*: the same float32 arithmetic, bit for bit
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{type(session).__name__} {key}")


@pytest.mark.parametrize("name", ["feedforward-lif", "conv-if-sumpool"])
def test_int8_connections_agree_with_the_onnx_qdq_step_graph(name: str, nir_graphs, record_property) -> None:
    artifact, calibration, x = step_artifact(nir_graphs, name)
    int8 = QuantizeSpiking()(artifact, calibration)
    producers = {o: n for n in int8.model.graph.node for o in n.output}
    for node in int8.model.graph.node:  # neurons read float tensors only: no DequantizeLinear feeds them
        if node.op_type in ("Greater", "Where", "Mul"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    for slot in int8.meta.task["state"]:
        assert producers[slot["output"]].op_type in ("Add", "Where")  # the next state is computed in float
    data = export_tflite(int8)
    ops = tflite_ops(data)
    assert ops.count("QUANTIZE") >= 2 and "GREATER" in ops
    want = run_steps(onnx_step(int8), int8, x)
    spikes = [k for k in want if k.startswith("spikes.")]
    for session in (TFLMSession(data), LiteRTSession(data, kernels="reference")):
        got = run_steps(session.run_named, int8, x)
        agreement = np.concatenate([(got[k] == want[k]).reshape(-1) for k in spikes]).mean()
        record_property(f"spike_agreement_{type(session).__name__}", float(agreement))
        # the even weight grid (converters.integer_scales) makes the int8 connections exact, and the float
        # neurons run the same float32 operations in the same order: every spike agrees
        assert agreement == 1.0, type(session).__name__
    float_size = len(export_tflite(artifact))
    record_property("bytes", {"float32": float_size, "int8": len(data)})
    if name == "conv-if-sumpool":  # 1,512 weights; the 640 of the other net weigh less than per-channel scales
        assert len(data) < float_size


def test_tflite_metadata_keeps_the_spiking_task(nir_graphs) -> None:
    artifact, calibration, _ = step_artifact(nir_graphs, "feedforward-lif")
    int8 = QuantizeSpiking(calibration_steps=8)(artifact, calibration)
    meta = read_tflite_meta(export_tflite(int8))
    assert meta.family == "snn"
    assert meta.task["state"] == artifact.meta.task["state"] == [
        {"input": "lif1.v", "output": "lif1.v.next", "shape": [32]},
        {"input": "lif2.v", "output": "lif2.v.next", "shape": [4]}]
    assert meta.task["precision"]["state"] == meta.task["precision"]["neurons"] == "float32"
    assert meta.task["precision"]["weights"].startswith("int8")
    assert meta.provenance[-1].name == "export-tflite" and meta.provenance[-1].parent_sha256 == int8.sha256
    record = meta.provenance[-2]
    assert record.name == "quantize-snn" and record.params["int8_nodes"] == ["fc1", "fc2"]
    assert record.params["calibration_steps"] == 8


def test_run_named_keeps_every_name_and_refuses_a_missing_feed(nir_graphs) -> None:
    artifact, _, x = step_artifact(nir_graphs, "feedforward-lif")
    data = export_tflite(artifact)
    feeds = {"x": x[:, 0], "lif1.v": np.zeros((2, 32), np.float32), "lif2.v": np.zeros((2, 4), np.float32)}
    for session in (LiteRTSession(data), TFLMSession(data)):
        result = session.run_named(feeds)
        assert list(result) == [o.name for o in artifact.model.graph.output]
        np.testing.assert_array_equal(result["activity.fc1"], x[:, 0])  # an output that copies an input
        with pytest.raises(EngineError, match="no feed for input 'lif2.v'; its inputs are x, lif1.v, lif2.v"):
            session.run_named({"x": x[:, 0], "lif1.v": feeds["lif1.v"]})


def _replace_op(artifact: Artifact, name: str, op_type: str) -> Artifact:
    model = onnx.ModelProto()
    model.CopyFrom(artifact.model)
    next(n for n in model.graph.node if n.name == name).op_type = op_type
    return Artifact(model, artifact.meta)


def test_an_op_that_cannot_be_lowered_is_named(nir_graphs) -> None:
    artifact, _, _ = step_artifact(nir_graphs, "feedforward-lif")
    with pytest.raises(PassError, match=r"Less node 'lif1/fire' cannot be lowered to TFLite yet"):
        export_tflite(_replace_op(artifact, "lif1/fire", "Less"))
    batch_sum = helper.make_model(helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="over_batch")], "batch_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(np.array([0], np.int64), "axes")]), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(PassError, match=r"ReduceSum node 'over_batch' cannot be lowered to TFLite: it acts on the batch"):
        export_tflite(Artifact.from_model(batch_sum))


def test_quantize_snn_refuses_other_networks_and_misshapen_calibration(nir_graphs, tiny_model_path) -> None:
    artifact, calibration, _ = step_artifact(nir_graphs, "feedforward-lif")
    with pytest.raises(PassError, match=r"quantize-snn needs calibration spike trains of shape \[n, T, 16\]; got"):
        QuantizeSpiking()(artifact, calibration[:, 0])
    with pytest.raises(PassError, match="quantize-snn needs a spiking step graph .* Use quantize-int8"):
        QuantizeSpiking()(Artifact.from_model(onnx.load(tiny_model_path)), calibration)
    with pytest.raises(PassError, match="The 'calibration_steps' parameter of quantize-snn must be >= 1; got 0"):
        QuantizeSpiking(calibration_steps=0)

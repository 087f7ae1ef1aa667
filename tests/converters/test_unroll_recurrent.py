"""converters.unroll_recurrent: GRU / LSTM nodes unrolled into per-step primitives equal the cells in onnxruntime,
quantize to int8 and export fully int8 to TFLite, where TFLite Micro matches LiteRT's reference kernels bit for bit."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.normalize import normalize_graph
from converters.quantize import QuantizeInt8
from converters.tflite import export_tflite
from converters.unroll_recurrent import unroll_recurrent, why_not_unrolled
from edge.artifact import Artifact
from edge.errors import PassError
from runtimes.litert_session import LiteRTSession
from runtimes.tflm_session import TFLMSession

RNG = np.random.default_rng(16)
GATES = {"GRU": 3, "LSTM": 4}


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _cell_model(kind: str, *, steps: int = 5, batch: int = 2, features: int = 3, hidden: int = 4,
                direction: str = "forward", layout: int = 0, bias: bool = True, initial: bool = False,
                linear_before_reset: int = 0, outputs: tuple[int, ...] = (0, 1, 2),
                activations: list[str] | None = None) -> onnx.ModelProto:
    """x -> one GRU / LSTM node -> its outputs Y, Y_h (and Y_c), each a graph output."""
    directions = 2 if direction == "bidirectional" else 1
    gates = GATES[kind]
    constants = {"w": RNG.normal(size=(directions, gates * hidden, features)),
                 "r": RNG.normal(size=(directions, gates * hidden, hidden)) * 0.5}
    if bias:
        constants["b"] = RNG.normal(size=(directions, 2 * gates * hidden))
    x_shape = [batch, steps, features] if layout else [steps, batch, features]
    state_shape = [batch, directions, hidden] if layout else [directions, batch, hidden]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    names = ["x", "w", "r", "b" if bias else "", ""]
    if initial:
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, state_shape))
        names.append("h0")
        if kind == "LSTM":
            inputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, state_shape))
            names.append("c0")
    written = ["y", "y_h", "y_c"][:2 if kind == "GRU" else 3]
    node_outputs = [w if i in outputs else "" for i, w in enumerate(written)]
    attributes = {"hidden_size": hidden, "direction": direction, "layout": layout}
    if kind == "GRU":
        attributes["linear_before_reset"] = linear_before_reset
    if activations:
        attributes["activations"] = activations
    node = helper.make_node(kind, names, node_outputs, name="cell", **attributes)
    y_shape = [batch, steps, directions, hidden] if layout else [steps, directions, batch, hidden]
    outs = [helper.make_tensor_value_info(w, TensorProto.FLOAT, y_shape if w == "y" else state_shape)
            for w in node_outputs if w]
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in constants.items()]
    graph = helper.make_graph([node], "cell", inputs, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: RNG.normal(size=[d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}


def _layout_zero_twin(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same cell with layout 0 between Transposes (onnxruntime runs no layout-1 cell): the reference."""
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    cell = twin.graph.node[0]
    for attribute in cell.attribute:
        if attribute.name == "layout":
            attribute.i = 0
    before = [helper.make_node("Transpose", [name], [f"{name}_t"], perm=[1, 0, 2]) for name in cell.input
              if name in {i.name for i in twin.graph.input}]
    after = [helper.make_node("Transpose", [f"{name}_t"], [name], perm=[2, 0, 1, 3] if name == "y" else [1, 0, 2])
             for name in cell.output if name]
    cell.input[:] = [f"{n}_t" if n in {i.name for i in twin.graph.input} else n for n in cell.input]
    cell.output[:] = [f"{n}_t" if n else n for n in cell.output]
    nodes = before + [cell] + after
    del twin.graph.node[:]
    twin.graph.node.extend(nodes)
    return twin


def _check_unrolled(model: onnx.ModelProto) -> None:
    """The unrolled graph has no recurrent node left, passes the checker and equals the cell in onnxruntime."""
    unrolled = onnx.ModelProto()
    unrolled.CopyFrom(model)
    assert unroll_recurrent(unrolled) is not None
    onnx.checker.check_model(unrolled, full_check=True)
    assert not {n.op_type for n in unrolled.graph.node} & {"GRU", "LSTM"}
    assert {n.op_type for n in unrolled.graph.node} <= {"Split", "Squeeze", "Unsqueeze", "Gemm", "Add", "Sub", "Mul",
                                                        "Sigmoid", "Tanh", "Concat", "Identity"}
    feeds = _feeds(model)
    layout = next((a.i for a in model.graph.node[0].attribute if a.name == "layout"), 0)
    for want, got in zip(_run(_layout_zero_twin(model) if layout else model, feeds), _run(unrolled, feeds)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize(("bias", "initial"), [(True, False), (False, True), (True, True)])
def test_gru_unrolled_equals_the_cell(linear_before_reset: int, direction: str, bias: bool, initial: bool) -> None:
    _check_unrolled(_cell_model("GRU", direction=direction, bias=bias, initial=initial,
                                linear_before_reset=linear_before_reset))


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize(("bias", "initial"), [(True, False), (False, True), (True, True)])
def test_lstm_unrolled_equals_the_cell(direction: str, bias: bool, initial: bool) -> None:
    _check_unrolled(_cell_model("LSTM", direction=direction, bias=bias, initial=initial))


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
@pytest.mark.parametrize(("steps", "batch", "features", "hidden", "layout"),
                         [(1, 1, 1, 1, 0), (7, 3, 5, 6, 0), (4, 2, 3, 5, 1)])
def test_other_shapes_layouts_and_single_outputs(kind: str, steps: int, batch: int, features: int, hidden: int,
                                                 layout: int) -> None:
    for outputs in ((0,), (1,), (0, 1)):
        _check_unrolled(_cell_model(kind, steps=steps, batch=batch, features=features, hidden=hidden, layout=layout,
                                    outputs=outputs, initial=True))


def test_explicit_default_activations_are_unrolled_and_others_kept_with_the_reason() -> None:
    _check_unrolled(_cell_model("GRU", activations=["Sigmoid", "Tanh"]))
    model = _cell_model("GRU", activations=["Sigmoid", "Relu"])
    assert why_not_unrolled(model, model.graph.node[0]) == ("it uses the activations Sigmoid, Relu; only the defaults "
                                                            "(Sigmoid, Tanh) are unrolled")
    assert unroll_recurrent(model) is None and model.graph.node[0].op_type == "GRU"
    with pytest.raises(PassError, match=r"^GRU node 'cell' cannot be lowered to TFLite yet; recurrent cells are exported "
                                        r"unrolled, and this one cannot be: it uses the activations Sigmoid, Relu"):
        export_tflite(Artifact.from_model(model))


def _torch_classifier(kind: str, *, dynamic_batch: bool, dynamic_steps: bool = False, hidden: int = 16,
                      final_state: bool = False) -> onnx.ModelProto:
    """PyTorch's batch-first GRU / LSTM with a Linear head on the last step (or the final state), legacy exporter."""
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = (torch.nn.GRU if kind == "GRU" else torch.nn.LSTM)(3, hidden, batch_first=True)
            self.head = torch.nn.Linear(hidden, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if final_state:
                state = self.rnn(x)[1]
                return self.head((state if kind == "GRU" else state[0])[-1])
            return self.head(self.rnn(x)[0][:, -1])

    torch.manual_seed(0)
    axes = {"input": {**({0: "batch"} if dynamic_batch else {}), **({1: "steps"} if dynamic_steps else {})}}
    buffer = io.BytesIO()
    torch.onnx.export(Classifier().eval(), (torch.randn(1, 6, 3),), buffer, input_names=["input"],
                      output_names=["output"], opset_version=13, dynamo=False,
                      dynamic_axes=axes if axes["input"] else None)
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
@pytest.mark.parametrize(("dynamic_batch", "final_state"), [(False, False), (True, False), (True, True)])
def test_pytorch_last_step_classifier_picks_the_last_hidden_state(kind: str, dynamic_batch: bool,
                                                                  final_state: bool) -> None:
    """``rnn(x)[0][:, -1]`` (or ``h_n[-1]``) becomes the last step's state: no Concat, Transpose or Gather left."""
    model = _torch_classifier(kind, dynamic_batch=dynamic_batch, final_state=final_state)
    normalized, notes = normalize_graph(model)
    assert any("recurrent cells unrolled" in note for note in notes)
    ops = {n.op_type for n in normalized.graph.node}
    assert not ops & {"GRU", "LSTM", "Concat", "Transpose", "Gather", "Shape", "Expand"}
    x = RNG.normal(size=(3 if dynamic_batch else 1, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(normalized, {"input": x})[0], _run(model, {"input": x})[0], rtol=1e-5, atol=1e-6)


def test_a_variable_sequence_length_is_kept_and_its_export_refused_in_one_sentence() -> None:
    model = _torch_classifier("GRU", dynamic_batch=True, dynamic_steps=True)
    normalized, _ = normalize_graph(model)
    assert "GRU" in {n.op_type for n in normalized.graph.node}
    with pytest.raises(PassError, match=r"^GRU node '.*' cannot be lowered to TFLite yet; recurrent cells are "
                                        r"exported unrolled, and this one cannot be: its sequence length is not "
                                        r"fixed \(export the model with a fixed sequence length\)\.$"):
        export_tflite(Artifact.from_model(model))


@pytest.mark.parametrize(("kind", "hidden"), [("GRU", 16), ("LSTM", 16), ("GRU", 4)])
def test_quantized_cell_exports_fully_int8_and_tflite_micro_matches_litert_bit_for_bit(kind: str, hidden: int) -> None:
    """Hidden size 4: onnxruntime's optimizer merges the steps' equal 4-element biases, which quantize still takes."""
    model = _torch_classifier(kind, dynamic_batch=True, hidden=hidden)
    calibration = RNG.normal(size=(64, 6, 3)).astype(np.float32)
    int8 = QuantizeInt8()(Artifact.from_model(model), calibration)
    data = export_tflite(int8, io="int8")
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.ModelT.InitFromPackedBuf(bytearray(data), 0).subgraphs[0]
    assert {t.type for t in graph.tensors} <= {schema.TensorType.INT8, schema.TensorType.INT32}
    x = RNG.normal(size=(32, 6, 3)).astype(np.float32)
    want = np.concatenate([_run(int8.model, {"input": t[None]})[0] for t in x])
    session = LiteRTSession(data, kernels="reference")
    reference = np.concatenate([session.run({"x": t[None]})[0] for t in x])
    micro = TFLMSession(data).run({"x": x})[0]
    np.testing.assert_array_equal(micro, reference)
    assert np.mean(reference.argmax(1) == want.argmax(1)) >= 0.9


def test_every_step_read_keeps_the_whole_output_sequence() -> None:
    """A head over all steps (Flatten of Y) is no single step: Y is rebuilt with Concat and stays equal."""
    import torch

    class AllSteps(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(3, 5, batch_first=True)
            self.head = torch.nn.Linear(6 * 5, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0].flatten(1))

    torch.manual_seed(1)
    buffer = io.BytesIO()
    torch.onnx.export(AllSteps().eval(), (torch.randn(1, 6, 3),), buffer, input_names=["input"],
                      output_names=["output"], opset_version=13, dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    normalized, _ = normalize_graph(model)
    ops = [n.op_type for n in normalized.graph.node]
    assert "GRU" not in ops and "Concat" in ops
    x = RNG.normal(size=(1, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(normalized, {"input": x})[0], _run(model, {"input": x})[0], rtol=1e-5, atol=1e-6)

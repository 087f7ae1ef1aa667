"""Shared fixtures: tiny ONNX models built inline and the shipped reference model."""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.quantize import QuantizeInt8
from converters.tflite import export_tflite
from edge.artifact import Artifact, read_artifact
from edge.data.registry import load_dataset
from edge.zoo import zoo_path

REFERENCE = "ssvep-guney-9ch-0.4s"


def tiny_conv_model(ir_version: int | None = None) -> onnx.ModelProto:
    """(N, 2, 1, 8) -> Conv(3 filters, 1x3) -> Relu -> Flatten -> Gemm(4): a small classifier."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(3, 2, 1, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    fc = numpy_helper.from_array(rng.normal(size=(18, 4)).astype(np.float32), "fc")
    fc_bias = numpy_helper.from_array(np.zeros(4, np.float32), "fc_b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [weight, bias, fc, fc_bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if ir_version is not None:
        model.ir_version = ir_version
    return model


@pytest.fixture
def tiny_model_path(tmp_path: Path) -> Path:
    """A plain ONNX file (no toolkit metadata) on disk."""
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_conv_model(), path)
    return path


@pytest.fixture(scope="session")
def reference() -> Artifact:
    """The shipped reference SSVEP model."""
    return read_artifact(zoo_path(REFERENCE))


@pytest.fixture(scope="session")
def reference_path() -> Path:
    return zoo_path(REFERENCE)


# -- models for the device tests: int8 TFLite files of a tiny network and of the reference SSVEP one --

def _tiny_artifact() -> Artifact:
    """(N, 2, 1, 8) -> Conv(3, 1x3) -> Relu -> Flatten -> Gemm(4), with non-zero biases."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(3, 2, 1, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(size=(4, 18)).astype(np.float32), "fc"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return Artifact.from_model(model)


@pytest.fixture(scope="session")
def tiny_trials() -> np.ndarray:
    """64 float trials for the tiny network."""
    return np.random.default_rng(1).normal(size=(64, 2, 1, 8)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_int8(tiny_trials) -> Artifact:
    """The tiny network quantized to int8 (QDQ ONNX)."""
    return QuantizeInt8(exclude=[])(_tiny_artifact(), tiny_trials)


@pytest.fixture(scope="session")
def tiny_tflite(tiny_int8) -> bytes:
    """The tiny int8 network as a TFLite file with float input and output (a few KiB)."""
    return export_tflite(tiny_int8)


@pytest.fixture(scope="session")
def tiny_tflite_int8_io(tiny_int8) -> bytes:
    """The tiny int8 network as a TFLite file with int8 input and output (what NPUs take)."""
    return export_tflite(tiny_int8, io="int8")


@pytest.fixture(scope="session")
def ssvep_int8(reference) -> Artifact:
    """The reference SSVEP network, fully int8 (QDQ ONNX)."""
    calibration = load_dataset(reference.meta.extra["calibration_data"], reference.meta).x
    return QuantizeInt8(exclude=[])(reference, calibration)


@pytest.fixture(scope="session")
def ssvep_trials(reference) -> np.ndarray:
    """40 held-out synthetic trials (one block of subject 31)."""
    return load_dataset("synthetic-ssvep:subjects=31-31,blocks=1,seed=0", reference.meta).x


# --- LLM family: a tiny LLaMA trained for a few seconds on the first 64 KB of tinyshakespeare ---------------------

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    return SHAKESPEARE.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_llm(shakespeare_text) -> Artifact:
    """A 2-layer GQA char LLaMA (dim 64) trained for 250 steps: enough structure for pruning to rank methods."""
    from edge.families.llm.config import LlamaConfig
    from edge.families.llm.export import export_llm, llm_meta
    from edge.families.llm.model import to_numpy_weights
    from edge.families.llm.train import TrainConfig, train

    import hashlib
    import tempfile

    import edge.families.llm as family

    config = LlamaConfig(vocab_size=len(set(shakespeare_text)), dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                         hidden_dim=192, max_seq_len=128)
    cfg = TrainConfig(steps=250, batch_size=16, context=64, lr=3e-3, warmup=20)
    # Training takes seconds to a minute on 2 busy cores; reuse the result while the family's code is unchanged.
    folder = Path(family.__file__).parent
    sources = b"".join((folder / f"{name}.py").read_bytes() for name in ("config", "graph", "model", "train", "export"))
    key = hashlib.sha256(sources + repr((config, cfg)).encode()).hexdigest()[:16]
    cached = Path(tempfile.gettempdir()) / f"edge-test-tiny-llm-{key}.onnx"
    if cached.is_file():
        return read_artifact(cached)
    net, tokenizer, _ = train(shakespeare_text, config, cfg)
    artifact = export_llm(config, to_numpy_weights(net), llm_meta(config, tokenizer, 64, source="test"))
    from edge.artifact import write_artifact

    write_artifact(artifact, cached)
    return artifact


@pytest.fixture(scope="session")
def tiny_llm_windows(tiny_llm, shakespeare_text) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, evaluation) token windows of 64: 32 from the training text, 48 from the validation text."""
    from edge.families.llm.export import tokenizer_of
    from edge.families.llm.runner import text_windows
    from edge.families.llm.train import split_text

    tokenizer = tokenizer_of(tiny_llm.meta)
    train_text, val_text = split_text(shakespeare_text)
    return (text_windows(tokenizer.encode(train_text[:100_000]), 64, limit=32),
            text_windows(tokenizer.encode(val_text), 64, limit=48))


# -- spiking networks: NIR test graphs (built for a 1 ms time step), one of each shape the issue names --------------
NIR_DT = 1e-3


def _lif(n: int, tau: float = 20e-3, threshold: float = 1.0, leak: float = 0.0) -> nir.LIF:
    return nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / NIR_DT), v_leak=np.full(n, leak),
                   v_threshold=np.full(n, threshold), v_reset=np.zeros(n))


def _cubalif(n: int) -> nir.CubaLIF:
    return nir.CubaLIF(tau_syn=np.full(n, 5e-3), tau_mem=np.full(n, 20e-3), r=np.full(n, 20e-3 / NIR_DT),
                       v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n), w_in=np.full(n, 5e-3 / NIR_DT))


def feedforward_lif(rng: np.random.Generator) -> nir.NIRGraph:
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([16])}),
        "fc1": nir.Affine(weight=rng.normal(0, 0.5, (32, 16)).astype(np.float32),
                          bias=rng.normal(0, 0.1, 32).astype(np.float32)),
        "lif1": _lif(32),
        "fc2": nir.Linear(weight=rng.normal(0, 0.5, (4, 32)).astype(np.float32)),
        "lif2": _lif(4, tau=10e-3, leak=0.05),
        "output": nir.Output(output_type={"output": np.array([4])})},
        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")])


def conv_if_sumpool(rng: np.random.Generator) -> nir.NIRGraph:
    def dyadic(shape: tuple[int, ...], scale: float) -> np.ndarray:  # exact sums in any order
        return (np.round(rng.normal(0, scale, shape) * 64) / 64).astype(np.float32)

    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([2, 12, 12])}),
        "conv": nir.Conv2d(input_shape=(12, 12), weight=dyadic((4, 2, 3, 3), 0.6), stride=1, padding=1,
                           dilation=1, groups=1, bias=dyadic((4,), 0.1)),
        "if1": nir.IF(r=np.full((4, 12, 12), 1 / NIR_DT), v_threshold=np.ones((4, 12, 12)),
                      v_reset=np.zeros((4, 12, 12))),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([4, 6, 6])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=dyadic((10, 144), 0.3), bias=np.zeros(10, np.float32)),
        "if2": nir.IF(r=np.full(10, 1 / NIR_DT), v_threshold=np.full(10, 2.0), v_reset=np.zeros(10)),
        "output": nir.Output(output_type={"output": np.array([10])})},
        edges=[("input", "conv"), ("conv", "if1"), ("if1", "pool"), ("pool", "flat"), ("flat", "fc"),
               ("fc", "if2"), ("if2", "output")])


def recurrent_cubalif(rng: np.random.Generator) -> nir.NIRGraph:
    """snnTorch's RSynaptic export: a subgraph Input -> CubaLIF <-> Linear -> Output."""
    rnn = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([24])}),
        "lif": _cubalif(24),
        "w_rec": nir.Linear(weight=rng.normal(0, 0.3, (24, 24)).astype(np.float32)),
        "output": nir.Output(output_type={"output": np.array([24])})},
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([8])}),
        "fc1": nir.Affine(weight=rng.normal(0, 1.0, (24, 8)).astype(np.float32), bias=np.zeros(24, np.float32)),
        "rnn": rnn,
        "fc2": nir.Linear(weight=rng.normal(0, 0.5, (3, 24)).astype(np.float32)),
        "li": nir.LI(tau=np.full(3, 10e-3), r=np.full(3, 10e-3 / NIR_DT), v_leak=np.zeros(3)),
        "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("input", "fc1"), ("fc1", "rnn"), ("rnn", "fc2"), ("fc2", "li"), ("li", "output")])


def with_delay(rng: np.random.Generator) -> nir.NIRGraph:
    delays = rng.integers(0, 6, 12) * NIR_DT
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([6])}),
        "fc1": nir.Linear(weight=rng.normal(0, 1.0, (12, 6)).astype(np.float32)),
        "delay": nir.Delay(delay=delays),
        "scale": nir.Scale(scale=np.full(12, 0.75)),
        "lif": _lif(12),
        "fc2": nir.Affine(weight=rng.normal(0, 0.8, (5, 12)).astype(np.float32), bias=np.zeros(5, np.float32)),
        "integrator": nir.I(r=np.full(5, 0.5 / NIR_DT)),
        "threshold": nir.Threshold(threshold=np.full(5, 1.0)),
        "output": nir.Output(output_type={"output": np.array([5])})},
        edges=[("input", "fc1"), ("fc1", "delay"), ("delay", "scale"), ("scale", "lif"), ("lif", "fc2"),
               ("fc2", "integrator"), ("integrator", "threshold"), ("threshold", "output")])


@pytest.fixture(scope="session")
def nir_graphs() -> dict:
    """Builders (rng -> nir.NIRGraph) of a feed-forward LIF net, a conv IF net with sum pooling, a recurrent
    CubaLIF net (snnTorch's RSynaptic subgraph) and a net with Delay, Scale, I and Threshold nodes."""
    return {"feedforward-lif": feedforward_lif, "conv-if-sumpool": conv_if_sumpool,
            "recurrent-cubalif": recurrent_cubalif, "delay": with_delay}

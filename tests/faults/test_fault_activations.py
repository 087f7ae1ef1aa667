"""Activation faults inside the graph: golden runs unchanged, one independent flip per batch element."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import tiny_conv_model

from edge.artifact import Artifact
from edge.data.registry import Dataset, load_dataset
from edge.errors import PassError
from edge.faults import ActivationFaultEngine, run_activation_campaign
from edge.faults.activations import instrument_activations
from edge.faults.engine import create_session


@pytest.fixture(scope="module")
def block(reference: Artifact) -> Dataset:
    return load_dataset("synthetic-ssvep:subjects=31-31,blocks=1,seed=0", reference.meta)


@pytest.fixture(scope="module")
def int8_reference(reference: Artifact, block: Dataset) -> Artifact:
    from converters.quantize import QuantizeInt8

    return QuantizeInt8(exclude=[])(reference, block.x)


def _plain(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return create_session(model).run(None, {model.graph.input[0].name: x})[0]


def test_float_model_gets_bitcast_xor_at_opset_26_and_golden_runs_are_unchanged(reference: Artifact,
                                                                               block: Dataset) -> None:
    instrumented, sites = instrument_activations(reference.model, block.x[:2])
    assert [s.node for s in sites] == ["/sub_band/Conv", "/channel/Conv", "/time1/Conv", "/time2/Conv", "/fc/Gemm"]
    assert next(o.version for o in instrumented.opset_import if o.domain == "") == 26
    assert sum(n.op_type == "BitCast" for n in instrumented.graph.node) == 10
    onnx.checker.check_model(instrumented)
    engine = ActivationFaultEngine(reference.model, block.x[:2])
    assert np.array_equal(engine.run(block.x[:8]), _plain(reference.model, block.x[:8]))


def test_int8_model_gets_xor_on_quantized_activations(int8_reference: Artifact, block: Dataset) -> None:
    instrumented, sites = instrument_activations(int8_reference.model, block.x[:2])
    assert all(s.dtype == "int8" for s in sites) and len(sites) == 7
    assert not any(n.op_type == "BitCast" for n in instrumented.graph.node)
    engine = ActivationFaultEngine(int8_reference.model, block.x[:2])
    assert np.array_equal(engine.run(block.x[:8]), _plain(int8_reference.model, block.x[:8]))


def test_each_batch_element_gets_its_own_fault() -> None:
    model = tiny_conv_model()
    x = np.random.default_rng(0).normal(size=(3, 2, 1, 8)).astype(np.float32)
    engine = ActivationFaultEngine(model, x, layers=("fc",))  # the logits themselves: a graph output
    golden = engine.run(x)
    site, element, bit = np.array([0, 0, 0]), np.array([1, 3, 0]), np.array([31, 22, 0])
    faulty = engine.run(x, (site, element, bit))
    flipped = golden.view(np.uint32) ^ faulty.view(np.uint32)
    expected = np.zeros_like(flipped)
    expected[[0, 1, 2], [1, 3, 0]] = [1 << 31, 1 << 22, 1]
    assert np.array_equal(flipped, expected)


def test_campaign_is_seeded_and_independent_of_batch_size(reference: Artifact, block: Dataset) -> None:
    a = run_activation_campaign(reference, block.x, block.y, injections=300, seed=2, batch_size=64)
    b = run_activation_campaign(reference, block.x, block.y, injections=300, seed=2, batch_size=17)
    assert a.to_json() == b.to_json()
    doc = a.to_dict()
    assert doc["masked"]["count"] + doc["sdc"]["count"] + doc["due"]["count"] == 300
    assert sum(row["n"] for row in doc["per_layer"]) == 300 == sum(row["n"] for row in doc["per_bit"])
    lo, hi = doc["sdc"]["wilson95"]
    assert lo <= doc["sdc"]["rate"] <= hi
    assert doc["sdc"]["count"] > 0  # exponent flips in activations do change decisions


def test_bit_classes_restrict_activation_faults(reference: Artifact, int8_reference: Artifact, block: Dataset) -> None:
    doc = run_activation_campaign(reference, block.x, block.y, injections=100, bits="sign").to_dict()
    assert [row["bit"] for row in doc["per_bit"]] == [31]
    doc = run_activation_campaign(int8_reference, block.x, block.y, injections=100, bits="mantissa").to_dict()
    assert {row["bit"] for row in doc["per_bit"]} <= set(range(7))
    with pytest.raises(PassError, match="no activation bit matches"):
        run_activation_campaign(int8_reference, block.x, block.y, injections=10, bits="exponent")

"""The campaign engine: equal to rebuilding the session per map, independent of workers, resumable after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_conv_model

from edge.artifact import Artifact
from edge.data.registry import Dataset, load_dataset
from edge.errors import DataError, PassError
from edge.faults import CampaignResult, FaultMap, FaultModel, WeightFaultEngine, rebuild_and_run, run_campaign
from edge.faults.campaign import classify, vulnerability
from edge.faults.engine import create_session

ROOT = Path(__file__).resolve().parents[2]
BERS = (1e-4, 1e-3, 1e-2)


@pytest.fixture(scope="module")
def block(reference: Artifact) -> Dataset:
    """One synthetic block of one held-out subject: 40 trials, one per class."""
    return load_dataset("synthetic-ssvep:subjects=31-31,blocks=1,seed=0", reference.meta)


@pytest.fixture(scope="module")
def int8_reference(reference: Artifact, block: Dataset) -> Artifact:
    from converters.quantize import QuantizeInt8

    return QuantizeInt8(exclude=[])(reference, block.x)


@pytest.fixture(scope="module")
def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    """Inputs for the tiny model, labelled with its own predictions except every fourth (so some are wrong)."""
    x = np.random.default_rng(0).normal(size=(64, 2, 1, 8)).astype(np.float32)
    y = create_session(tiny_conv_model()).run(None, {"x": x})[0].argmax(1)
    y[::4] = (y[::4] + 1) % 4
    return x, y


def test_classify_counts_due_before_sdc_on_golden_correct_inputs() -> None:
    y = np.array([0, 1, 2, 3, 0])
    golden = np.array([0, 1, 2, 0, 0])  # input 3 is wrong in the clean model: it only counts for accuracy
    outputs = np.array([
        [5, 0, 0, 0],          # correct, masked
        [9, 0, 0, 0],          # SDC
        [0, 0, np.nan, 0],     # DUE (NaN)
        [0, 0, 0, 9],          # golden-wrong input now right: counts for accuracy only
        [np.inf, 0, 0, 0],     # DUE (Inf), even though argmax is still the label
    ], dtype=np.float32)
    assert classify(outputs, y, golden) == (2, 1, 1, 2)  # correct, masked, SDC, DUE


@pytest.mark.parametrize("fault", [FaultModel(), FaultModel(kind="stuck-at-1", burst=2), FaultModel(bits="mantissa")])
def test_engine_equals_rebuilding_the_session_float32(reference: Artifact, block: Dataset, fault: FaultModel) -> None:
    engine = WeightFaultEngine(reference.model, fault)
    x = block.x[:8]
    clean = engine.run(x)
    for m, ber in enumerate((1e-6, 1e-5, 1e-4)):
        fault_map = engine.sample(ber, [0, m])
        faulty = engine.run_map(fault_map, x)
        assert np.array_equal(faulty, rebuild_and_run(reference.model, fault_map, x), equal_nan=True)
    assert np.array_equal(engine.run(x), clean)  # weights restored


def test_engine_equals_rebuilding_the_session_int8_qdq(int8_reference: Artifact, block: Dataset) -> None:
    engine = WeightFaultEngine(int8_reference.model)
    x = block.x[:8]
    changed = 0
    for m, ber in enumerate((1e-5, 1e-4, 1e-3)):
        fault_map = engine.sample(ber, [1, m])
        faulty = engine.run_map(fault_map, x)
        assert np.array_equal(faulty, rebuild_and_run(int8_reference.model, fault_map, x))
        changed += not np.array_equal(faulty, engine.run(x))
    assert changed > 0


def test_engine_reaches_packed_int4_weights_of_matmulnbits() -> None:
    from converters.quantize import QuantizeInt4Weights

    rng = np.random.default_rng(0)
    weight = onnx.numpy_helper.from_array(rng.normal(size=(64, 16)).astype(np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 16])], [weight])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    int4 = QuantizeInt4Weights(block_size=32)(Artifact.from_model(model)).model
    engine = WeightFaultEngine(int4, FaultModel(bits="sign"))
    (target,) = engine.targets.tensors
    assert target.name == "w_Q4" and target.starts.tolist() == [3, 7]  # the sign bit of each packed nibble
    x = rng.normal(size=(5, 64)).astype(np.float32)
    fault_map = engine.sample(0.05, [0])
    faulty = engine.run_map(fault_map, x)
    assert not np.array_equal(faulty, engine.run(x))
    assert np.array_equal(faulty, rebuild_and_run(int4, fault_map, x))


def test_a_fault_map_replays_from_json_on_another_session(reference: Artifact, block: Dataset) -> None:
    engine = WeightFaultEngine(reference.model, FaultModel(bits="exponent"))
    fault_map = engine.sample(3e-5, [0, 0, 3])
    text = fault_map.to_json()
    replayed = FaultMap.from_json(text)
    other = WeightFaultEngine(reference.model, FaultModel(bits="exponent"))  # "another target"
    x = block.x[:4]
    assert np.array_equal(other.run_map(replayed, x), engine.run_map(fault_map, x), equal_nan=True)
    assert np.array_equal(rebuild_and_run(reference.model, replayed, x), engine.run_map(fault_map, x), equal_nan=True)


def test_campaign_summary_and_json_round_trip(reference: Artifact, block: Dataset) -> None:
    result = run_campaign(reference, block.x[:20], block.y[:20], bers=(0.0, 1e-5, 1e-3), maps=6, seed=1)
    clean = result.clean()
    zero, middle, high = result.points()
    assert zero["per_map"]["correct"] == [result.golden_correct] * 6 and zero["per_map"]["faults"] == [0] * 6
    assert zero["accuracy"]["ci95"] == [clean["accuracy"]] * 2 and zero["sdc"]["count"] == 0
    assert middle["faults"]["mean"] == pytest.approx(result.sites * 1e-5, rel=0.2)
    for point in (zero, middle, high):
        assert point["masked"]["count"] + point["sdc"]["count"] + point["due"]["count"] == 6 * result.golden_correct
        lo, hi = point["accuracy"]["ci95"]
        assert lo <= point["accuracy"]["mean"] <= hi
    assert high["accuracy"]["mean"] < clean["accuracy"]
    assert high["due"]["rate"] > 0.9  # at 1e-3 thousands of exponent flips reach Inf/NaN
    assert 0 < result.auc() < clean["accuracy"]
    replayed = result.fault_map(reference, 1, 4)  # the map a device would replay
    engine = WeightFaultEngine(reference.model)
    outputs = engine.run_map(replayed, block.x[:20])
    assert int(np.sum(outputs.argmax(1) == block.y[:20])) == middle["per_map"]["correct"][4]
    assert len(replayed) == middle["per_map"]["faults"][4]
    with pytest.raises(DataError, match="run on another model"):
        result.fault_map(tiny_conv_model(), 1, 4)
    again = CampaignResult.from_json(result.to_json())
    assert again.to_json() == result.to_json()
    json.loads(result.to_json(indent=1))


def test_worker_count_does_not_change_results(tiny_data) -> None:
    x, y = tiny_data
    kwargs = {"bers": BERS, "maps": 12, "seed": 5, "chunk_size": 3, "fault": FaultModel(kind="stuck-at-0")}
    one = run_campaign(tiny_conv_model(), x, y, workers=1, **kwargs)
    two = run_campaign(tiny_conv_model(), x, y, workers=2, **kwargs)
    assert two.to_json() == one.to_json()
    assert one.points()[2]["sdc"]["count"] > 0


SCRIPT = """
import sys, time
import numpy as np, onnx
from edge.faults import run_campaign
data = np.load(sys.argv[2])
run_campaign(onnx.load(sys.argv[1]), data["x"], data["y"], bers=(1e-4, 1e-3, 1e-2), maps=10, seed=3, chunk_size=2,
             state_path=sys.argv[3], progress=lambda done, total: time.sleep(0.25))
"""


def _chunks(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines()[1:] if line.endswith("}"))


def test_a_killed_campaign_resumes_to_exactly_the_uninterrupted_result(tmp_path: Path, tiny_data) -> None:
    x, y = tiny_data
    model_path, data_path, state = tmp_path / "tiny.onnx", tmp_path / "data.npz", tmp_path / "state.jsonl"
    onnx.save(tiny_conv_model(), model_path)
    np.savez(data_path, x=x, y=y)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(model_path), str(data_path), str(state)], env=env)
    try:
        deadline = time.time() + 60
        while _chunks(state) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the campaign ended before it could be killed"
    recorded = _chunks(state)
    assert 3 <= recorded < 15

    model = onnx.load(model_path)
    kwargs = {"bers": BERS, "maps": 10, "seed": 3, "chunk_size": 2}
    calls: list[int] = []
    resumed = run_campaign(model, x, y, state_path=state, progress=lambda done, total: calls.append(done), **kwargs)
    assert calls[0] >= 2 * recorded + 2  # the recorded maps were not run again
    assert resumed.to_json() == run_campaign(model, x, y, **kwargs).to_json()
    # Once complete, a rerun only reads the state file.
    assert run_campaign(model, x, y, state_path=state, **kwargs).to_json() == resumed.to_json()


def test_an_interrupted_pool_campaign_resumes_and_a_cut_line_is_dropped(tmp_path: Path, tiny_data) -> None:
    x, y = tiny_data
    state = tmp_path / "state.jsonl"
    kwargs = {"bers": BERS, "maps": 8, "seed": 9, "chunk_size": 2}

    def crash(done: int, total: int) -> None:
        if done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_campaign(tiny_conv_model(), x, y, workers=2, state_path=state, progress=crash, **kwargs)
    with open(state, "a") as fh:
        fh.write('{"maps": [[2, 7, 3, 1')  # a chunk cut short by the kill
    resumed = run_campaign(tiny_conv_model(), x, y, state_path=state, **kwargs)
    assert resumed.to_json() == run_campaign(tiny_conv_model(), x, y, **kwargs).to_json()
    assert all(json.loads(line) for line in state.read_text().splitlines())


def test_a_state_file_of_another_campaign_is_refused(tmp_path: Path, tiny_data) -> None:
    x, y = tiny_data
    state = tmp_path / "state.jsonl"
    run_campaign(tiny_conv_model(), x, y, bers=(1e-3,), maps=2, state_path=state)
    with pytest.raises(DataError, match=r"state file belongs to a campaign with other parameters \(maps, seed\)"):
        run_campaign(tiny_conv_model(), x, y, bers=(1e-3,), maps=3, seed=1, state_path=state)
    with pytest.raises(DataError, match=r"other parameters \(data_sha256, inputs\)"):
        run_campaign(tiny_conv_model(), x[:10], y[:10], bers=(1e-3,), maps=2, state_path=state)
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    with pytest.raises(DataError, match="not a fault-campaign state file"):
        run_campaign(tiny_conv_model(), x, y, bers=(1e-3,), maps=2, state_path=other)


def test_bad_campaign_input_is_refused(tiny_data) -> None:
    x, y = tiny_data
    with pytest.raises(DataError, match="one integer label per input"):
        run_campaign(tiny_conv_model(), x, y[:3])
    with pytest.raises(PassError, match="'maps' parameter of run_campaign must be an integer >= 1"):
        run_campaign(tiny_conv_model(), x, y, maps=0)
    with pytest.raises(PassError, match="bit error rates in"):
        run_campaign(tiny_conv_model(), x, y, bers=(2.0,))


def test_vulnerability_per_bit_and_per_layer(reference: Artifact, block: Dataset) -> None:
    x, y = block.x[:12], block.y[:12]
    rows = vulnerability(reference, x, y, by="bit", ber=2e-5, maps=8, fault=FaultModel(bits=(0, 30)))
    low, msb = rows
    assert (low["group"], msb["group"]) == (0, 30)
    assert low["sdc"]["count"] == 0 and low["due"]["count"] == 0  # a flipped mantissa LSB changes nothing here
    assert msb["accuracy"]["mean"] < low["accuracy"]["mean"]  # the exponent MSB wrecks the model
    layers = vulnerability(reference, x, y, by="layer", ber=1e-4, maps=4, fault=FaultModel(bits=(30,)))
    assert [r["group"] for r in layers] == [t for t in WeightFaultEngine(reference.model).targets.names]
    assert sum(r["sites"] for r in layers) == WeightFaultEngine(reference.model, FaultModel(bits=(30,))).targets.sites

"""The int8 SSVEP and EEGNet files predict the same on every target; eval prints Vela's figures; faults replay.

benchmarks/device_agreement.py runs the same comparison on 1,200 SSVEP trials and four EEGNet runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from converters.quantize import QuantizeInt8
from converters.tflite import export_tflite
from edge.cli import main
from edge.data.registry import load_dataset
from edge.deploy import deploy
from edge.evaluate import run_all
from edge.models import resolve_model
from edge.tflite_model import TfliteModel

pytestmark = pytest.mark.timeout(300)

DEVICES = ("cpu", "mcu:tflm", "sim", "npu:ethos-u55-128")
MMI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "eegmmidb_s001"


def top1_on_every_device(data: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    model = TfliteModel.from_bytes(data)
    predictions = {}
    for device in DEVICES:
        target, _, _ = deploy(model, device)
        try:
            predictions[device] = run_all(target, x).argmax(1)
        finally:
            target.close()
    return predictions


@pytest.fixture(scope="module")
def ssvep_file(ssvep_int8) -> bytes:
    return export_tflite(ssvep_int8, io="int8")


def test_int8_ssvep_gives_identical_top1_on_cpu_mcu_sim_and_npu(ssvep_file, reference) -> None:
    x = load_dataset("synthetic-ssvep:subjects=31-31,seed=0", reference.meta).x  # 240 held-out trials
    predictions = top1_on_every_device(ssvep_file, x)
    for device in DEVICES[1:]:
        np.testing.assert_array_equal(predictions[device], predictions["cpu"], err_msg=device)
    assert len(np.unique(predictions["cpu"])) > 20  # a real spread of decisions, not one constant class


def test_int8_eegnet_gives_identical_top1_on_cpu_mcu_sim_and_npu() -> None:
    if not MMI.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    _, eegnet = resolve_model("eegnet-mmi-s001")
    int8 = QuantizeInt8(exclude=[])(eegnet, load_dataset(f"{MMI}:runs=6+10", eegnet.meta).x)
    x = load_dataset(f"{MMI}:runs=4+14", eegnet.meta).x
    predictions = top1_on_every_device(export_tflite(int8, io="int8"), x)
    for device in DEVICES[1:]:
        np.testing.assert_array_equal(predictions[device], predictions["cpu"], err_msg=device)


def test_eval_on_the_npu_prints_vela_latency_and_memory(ssvep_int8, tmp_path: Path) -> None:
    from edge.artifact import write_artifact

    path = write_artifact(ssvep_int8, tmp_path / "ssvep_int8.onnx")
    result = CliRunner().invoke(main, ["eval", str(path), "--device", "npu:ethos-u55-128", "--runs", "5",
                                       "--data", "synthetic-ssvep:subjects=31-31,blocks=1,seed=0",
                                       "--out-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    rows = {line.split("  ")[0]: line for line in result.output.splitlines()}
    cycles = int(rows["NPU cycles (Vela)"].split()[-1].replace(",", ""))  # 408,153 measured
    assert 100_000 < cycles < 1_000_000 and "7 / 0" in rows["operators on NPU / CPU"]
    assert f"{1e3 * cycles / 500e6:.3f}" in rows["latency p50/p90/p99 ms (Vela static estimate)"]  # at 500 MHz
    assert float(rows["NPU SRAM KiB"].split()[-1]) > 0 and float(rows["flash KiB"].split()[-1]) > 0
    assert "fidelity to host: top-1 agreement %" in rows  # against the int8 ONNX model in onnxruntime


def test_faults_on_the_mcu_and_the_npu_replay_the_cpu_maps(ssvep_file, reference, tmp_path: Path) -> None:
    path = tmp_path / "ssvep_int8.tflite"
    path.write_bytes(ssvep_file)
    x = load_dataset("synthetic-ssvep:subjects=31-31,blocks=1,seed=0", reference.meta)
    np.savez(tmp_path / "d.npz", x=x.x, y=x.y)
    campaigns = {}
    for device in ("cpu", "mcu:tflm", "npu:ethos-u55-128"):
        result = CliRunner().invoke(main, ["eval", str(path), "--device", device, "--data", str(tmp_path / "d.npz"),
                                           "--runs", "3", "--no-memory", "--faults", "--ber", "1e-5,1e-3",
                                           "--maps", "3", "--json", "--out-dir", str(tmp_path / "runs")])
        assert result.exit_code == 0, result.output
        campaigns[device] = json.loads(result.output)["resilience"]["campaign"]
    cpu = campaigns["cpu"]
    assert cpu["targets"][-1] == "fc.bias_quantized" and cpu["sites"] > 3_000_000
    for device in ("mcu:tflm", "npu:ethos-u55-128"):
        # same seed, same stored tensors: the very same fault maps, and the same arithmetic, so the same outcomes
        assert campaigns[device]["params"] == cpu["params"] and campaigns[device]["targets"] == cpu["targets"]
        assert campaigns[device]["points"] == cpu["points"]
    assert max(cpu["points"][-1]["per_map"]["faults"]) > 1000  # BER 1e-3 really flipped thousands of bits

"""The Ethos-U NPU target: Vela's estimates for the int8 SSVEP network, TFLite Micro outputs, weight faults."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys

import numpy as np
import pytest

from converters.tflite import export_tflite
from devices.base import TargetSpec
from devices.npu import NpuTarget
from edge.errors import TargetError
from edge.faults import FaultModel, apply_fault_map, sample_fault_map
from edge.tflite_model import TfliteModel
from runtimes.litert_session import LiteRTSession
from runtimes.tflm_session import TFLMSession

pytestmark = pytest.mark.skipif(NpuTarget.check() is not None, reason=str(NpuTarget.check()))


@pytest.fixture(scope="module")
def int8_model(ssvep_int8) -> TfliteModel:
    """The SSVEP network with int8 input and output: every operator can go to the NPU."""
    return TfliteModel.from_bytes(export_tflite(ssvep_int8, io="int8"))


@pytest.fixture(scope="module")
def deployed(int8_model) -> tuple[NpuTarget, dict]:
    target = NpuTarget(TargetSpec.parse("npu:ethos-u55-128"))
    return target, target.deploy(int8_model)


@pytest.fixture(scope="module")
def target(deployed) -> NpuTarget:
    return deployed[0]


@pytest.fixture(scope="module")
def vela_csv(int8_model, tmp_path_factory) -> dict[str, str]:
    """Vela's summary CSV for the same file and configuration, from Vela's own command line."""
    folder = tmp_path_factory.mktemp("vela")
    (folder / "ssvep.tflite").write_bytes(int8_model.data)
    subprocess.run([sys.executable, "-c", "import sys; from ethosu.vela.vela import main; sys.exit(main())",
                    "--accelerator-config", "ethos-u55-128", "--config", "Arm/vela.ini",
                    "--system-config", "Ethos_U55_High_End_Embedded", "--memory-mode", "Shared_Sram",
                    "--output-dir", str(folder / "out"), str(folder / "ssvep.tflite")],
                   check=True, capture_output=True)
    with (folder / "out" / "ssvep_summary_Ethos_U55_High_End_Embedded.csv").open(newline="") as fh:
        return next(csv.DictReader(fh))


def test_the_int8_network_maps_entirely_onto_the_npu(deployed) -> None:
    target, report = deployed
    info = target.info()
    assert report["all_on_npu"] and info["all_on_npu"]
    assert info["cpu_operators"] == 0 and info["npu_operators"] >= 5 and info["cpu_operations"] == []
    assert info["macs"] == 8_990_700
    assert info["accelerator"] == "ethos-u55-128" and info["system_config"] == "Ethos_U55_High_End_Embedded"
    assert info["memory_mode"] == "Shared_Sram" and info["clock_hz"] == 500_000_000
    assert info["vela_version"] and 0 < info["cycles_npu"] <= info["cycles_total"]
    assert report["compiled_bytes"] == len(target.compiled) > 0
    assert "CUSTOM:ethos-u" in TfliteModel.from_bytes(target.compiled).operators()  # what no host engine runs
    layers = report["layers"]
    assert {layer["target"] for layer in layers} == {"NPU"}
    assert sum(layer["macs"] for layer in layers) == 8_990_700
    assert target.latency_source.startswith("Vela static estimate")


def test_latency_and_memory_are_vela_estimates(target, vela_csv, ssvep_trials) -> None:
    times = target.latency(ssvep_trials[0], runs=7)
    assert times.shape == (7,) and np.all(times == float(vela_csv["inference_time"])) and times[0] > 0
    assert target.info()["cycles_total"] == int(vela_csv["cycles_total"])
    memory = target.memory(ssvep_trials[0])
    assert memory["sram_bytes"] == round(float(vela_csv["sram_memory_used"]) * 1024) > 0
    assert memory["flash_bytes"] == round(float(vela_csv["off_chip_flash_memory_used"]) * 1024) > 0


def test_outputs_are_tflite_reference_arithmetic_on_the_uncompiled_file(target, int8_model, ssvep_trials) -> None:
    outputs = target.run(ssvep_trials)
    assert outputs.shape == (40, 40) and outputs.dtype == np.float32
    np.testing.assert_array_equal(outputs, TFLMSession(int8_model.data).run({"x": ssvep_trials})[0])
    reference_kernels = LiteRTSession(int8_model.data, kernels="reference").run({"x": ssvep_trials})[0]
    np.testing.assert_array_equal(outputs, reference_kernels)


def test_a_float_io_model_reports_its_cpu_fallback(ssvep_int8, caplog) -> None:
    target = NpuTarget("npu:ethos-u55-128")
    with caplog.at_level(logging.WARNING, logger="edge"):
        target.deploy(TfliteModel.from_bytes(export_tflite(ssvep_int8)))
    info = target.info()
    assert not info["all_on_npu"] and info["cpu_operators"] == 2
    assert {op["op"] for op in info["cpu_operations"]} == {"QUANTIZE", "DEQUANTIZE"}
    assert all(op["name"] and op["reason"] for op in info["cpu_operations"])
    assert "stay on the CPU" in caplog.text


@pytest.mark.parametrize(("spec", "system", "memory", "clock"), [
    ("npu:ethos-u65-256", "Ethos_U65_High_End", "Dedicated_Sram", 1_000_000_000),
    ("npu:ethos-u85-256", "Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram_384KB", 1_000_000_000),
    ("npu:ethos-u55-64?system=Ethos_U55_Deep_Embedded&memory=Shared_Sram", "Ethos_U55_Deep_Embedded", "Shared_Sram",
     200_000_000),
])
def test_other_npus_and_system_configs_compile(int8_model, spec, system, memory, clock) -> None:
    report = NpuTarget(spec).deploy(int8_model)
    assert (report["system_config"], report["memory_mode"], report["clock_hz"]) == (system, memory, clock)
    assert report["all_on_npu"] and report["latency_s"] > 0 and report["sram_kib"] > 0
    assert report["cycles_total"] == pytest.approx(report["latency_s"] * clock, rel=1e-6)


@pytest.mark.parametrize(("spec", "message"), [
    ("npu:ethos-u99", "unknown Ethos-U configuration 'ethos-u99'.*ethos-u55-128"),
    ("npu:ethos-u55-128?system=Fast", "unknown Vela system config 'Fast'.*Ethos_U55_High_End_Embedded"),
    ("npu:ethos-u55-128?memory=Huge", "unknown Vela memory mode 'Huge'.*Shared_Sram"),
    ("npu?clock=1", "unknown option 'clock'"),
])
def test_bad_specs_are_refused_in_one_sentence(spec, message) -> None:
    with pytest.raises(TargetError, match=message):
        NpuTarget(spec)


def test_nothing_runs_before_deploy_and_onnx_artifacts_are_refused(ssvep_int8, ssvep_trials) -> None:
    target = NpuTarget("npu")
    with pytest.raises(TargetError, match="nothing deployed"):
        target.run(ssvep_trials)
    with pytest.raises(TargetError, match="runs int8 TFLite files, not Artifact"):
        target.deploy(ssvep_int8)


def test_injected_weight_faults_match_litert_on_the_corrupted_file_and_restore(target, int8_model,
                                                                               ssvep_trials) -> None:
    clean = target.run(ssvep_trials)
    targets = target.fault_targets(FaultModel())
    assert set(targets.names) == set(int8_model.weights())
    fault_map = sample_fault_map(targets, ber=1e-2, seed=0)
    assert len(fault_map) > 100
    target.inject(fault_map)
    try:
        faulty = target.run(ssvep_trials)
    finally:
        target.restore()
    arrays = int8_model.weights()
    apply_fault_map(arrays, fault_map)
    expected = TFLMSession(int8_model.with_weights(arrays)).run({"x": ssvep_trials})[0]
    assert not np.array_equal(faulty, clean)
    np.testing.assert_array_equal(faulty, expected)
    np.testing.assert_array_equal(target.run(ssvep_trials), clean)



def test_cli_names_vela_where_the_npu_reports_no_engine(tiny_int8, tmp_path) -> None:
    """`edge flash` on the NPU says what compiled and ran the model, never an empty '()'."""
    from click.testing import CliRunner

    from edge.artifact import write_artifact
    from edge.cli import main

    onnx_path = write_artifact(tiny_int8, tmp_path / "tiny_int8.onnx")
    result = CliRunner().invoke(main, ["flash", str(onnx_path), "--device", "npu:ethos-u55-128",
                                       "-o", str(tmp_path / "vela.tflite")])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert "(Vela " in first and "()" not in first

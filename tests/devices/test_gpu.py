"""The GPU target (ONNX Runtime CUDA / TensorRT). Without an NVIDIA GPU and onnxruntime-gpu only the refusal runs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from devices.gpu import GpuTarget
from edge.errors import TargetError
from edge.faults import FaultModel, rebuild_and_run, sample_fault_map
from runtimes import open_session

REASON = GpuTarget.check()
needs_gpu = pytest.mark.skipif(REASON is not None, reason=f"no GPU target here: {REASON}")


def cpu_outputs(artifact, x: np.ndarray) -> np.ndarray:
    session = open_session(artifact, "onnxruntime", threads=1)
    return session.run({session.inputs[0].name: x})[0]


def assert_close_to_cpu(gpu: np.ndarray, cpu: np.ndarray) -> None:
    """GPU kernels (TF32 convolutions, float QDQ arithmetic) differ slightly from the CPU's: same decisions."""
    assert gpu.shape == cpu.shape and gpu.dtype == np.float32
    assert np.abs(gpu - cpu).max() <= 2e-2 * np.abs(cpu).max()
    assert np.mean(gpu.argmax(1) == cpu.argmax(1)) >= 0.95


@pytest.fixture(scope="module")
def cuda_target(tiny_int8):
    target = GpuTarget("gpu:0")
    report = target.deploy(tiny_int8)
    yield target, report
    target.close()


def test_without_a_gpu_deploy_is_one_clear_target_error(tiny_int8) -> None:
    if REASON is None:
        pytest.skip("a GPU target is available here")
    target = GpuTarget("gpu:0?provider=cuda")  # building the target only reads the spec
    with pytest.raises(TargetError, match=re.escape(REASON)) as caught:
        target.deploy(tiny_int8)
    assert "\n" not in str(caught.value) and "onnxruntime" in str(caught.value)
    with pytest.raises(TargetError, match="nothing deployed"):
        target.run(np.zeros((1, 2, 1, 8), np.float32))


@pytest.mark.parametrize(("spec", "message"), [
    ("gpu:first", "takes a device number"),
    ("gpu?provider=rocm", "'provider=rocm'.*cuda, tensorrt"),
    ("gpu?fp16=1", "fp16=1 needs provider=tensorrt"),
    ("gpu?threads=2", "unknown option 'threads'"),
])
def test_bad_specs_are_refused_everywhere(spec, message) -> None:
    with pytest.raises(TargetError, match=message):
        GpuTarget(spec)


@pytest.mark.gpu
@needs_gpu
def test_the_cuda_provider_is_the_one_in_use(cuda_target) -> None:
    target, report = cuda_target
    assert report["provider"] == "CUDAExecutionProvider"
    info = target.info()
    assert info["provider"] == "CUDAExecutionProvider" and info["device"]


@pytest.mark.gpu
@needs_gpu
def test_int8_outputs_are_close_to_cpu_onnxruntime(cuda_target, tiny_int8, tiny_trials) -> None:
    target, _ = cuda_target
    assert_close_to_cpu(target.run(tiny_trials), cpu_outputs(tiny_int8, tiny_trials))


@pytest.mark.gpu
@needs_gpu
def test_float_reference_outputs_are_close_to_cpu_onnxruntime(reference, ssvep_trials) -> None:
    target = GpuTarget("gpu")
    target.deploy(reference)
    try:
        assert_close_to_cpu(target.run(ssvep_trials), cpu_outputs(reference, ssvep_trials))
    finally:
        target.close()


@pytest.mark.gpu
@needs_gpu
def test_latency_uses_iobinding_and_keeps_end_to_end_times(cuda_target, tiny_trials) -> None:
    target, _ = cuda_target
    times = target.latency(tiny_trials[0], runs=100, warmup=5)
    assert times.shape == (100,) and np.all(times > 0)
    assert target.timings["end_to_end"].shape == (100,) and np.all(target.timings["end_to_end"] > 0)
    info = target.info()
    assert info["latency_device_p50_s"] > 0 and info["latency_end_to_end_p50_s"] > 0
    memory = target.memory(tiny_trials[0])
    assert memory["model_bytes"] > 0 and (memory["gpu_bytes"] is None or memory["gpu_bytes"] > 0)


@pytest.mark.gpu
@needs_gpu
def test_inject_and_restore_round_trip(cuda_target, tiny_int8, tiny_trials) -> None:
    target, _ = cuda_target
    clean = target.run(tiny_trials)
    fault_map = sample_fault_map(target.fault_targets(FaultModel()), ber=1e-2, seed=0)
    assert len(fault_map) > 0
    target.inject(fault_map)
    try:
        faulty = target.run(tiny_trials)
    finally:
        target.restore()
    assert not np.array_equal(faulty, clean)
    assert_close_to_cpu(faulty, rebuild_and_run(tiny_int8.model, fault_map, tiny_trials))
    np.testing.assert_array_equal(target.run(tiny_trials), clean)


@pytest.mark.gpu
@needs_gpu
def test_tensorrt_provider_builds_and_runs(reference, ssvep_trials) -> None:
    import onnxruntime

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime-gpu has no TensorRT provider")
    target = GpuTarget("gpu:0?provider=tensorrt")
    try:
        try:
            report = target.deploy(reference)
        except TargetError as exc:  # the onnxruntime-gpu wheel lists TensorRT even when its libraries are absent
            pytest.skip(str(exc))
        assert report["provider"] == "TensorrtExecutionProvider"
        assert_close_to_cpu(target.run(ssvep_trials), cpu_outputs(reference, ssvep_trials))
        assert np.all(target.latency(ssvep_trials[0], runs=20) > 0)
    finally:
        target.close()


@pytest.mark.gpu
@needs_gpu
def test_language_model_decodes_on_the_gpu_as_on_the_cpu(tiny_llm, tiny_llm_windows) -> None:
    from edge.families.llm.runner import LanguageModel, generate, perplexity
    from edge.llm import open_language_model

    lm, target = open_language_model(tiny_llm, "gpu")
    try:
        cpu = LanguageModel(tiny_llm)
        windows = tiny_llm_windows[1][:8]
        assert abs(perplexity(lm, windows)["perplexity"] / perplexity(cpu, windows)["perplexity"] - 1) < 1e-3
        prompt = windows[0][:16]
        assert np.array_equal(generate(lm, prompt, 32), generate(cpu, prompt, 32))
    finally:
        target.close()

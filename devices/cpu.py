"""The host CPU as a target, through ONNX Runtime."""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import Artifact
from edge.errors import TargetError
from runtimes import open_session


class CpuTarget:
    """Runs artifacts on this machine's CPU with a fixed thread count."""

    def __init__(self, argument: str | None = None, *, threads: int = 1) -> None:
        if argument:
            raise TargetError(f"the cpu target takes no argument; got 'cpu:{argument}'.")
        self.threads = threads
        self._artifact: Artifact | None = None
        self._session: Any = None

    def deploy(self, artifact: Artifact) -> None:
        """Load the artifact into an ONNX Runtime CPU session."""
        self._artifact = artifact
        self._session = open_session(artifact, "onnxruntime", threads=self.threads)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """First output of the model for one batch."""
        if self._session is None:
            raise TargetError("nothing deployed; call deploy(artifact) first.")
        return self._session.run({self._session.inputs[0].name: batch.astype(np.float32, copy=False)})[0]

    def latency(self, trial: np.ndarray, runs: int = 200, warmup: int = 20) -> np.ndarray:
        """Seconds per inference of one trial at batch 1, after warm-up runs."""
        batch = trial[None].astype(np.float32)
        for _ in range(warmup):
            self.run(batch)
        times = np.empty(runs)
        for i in range(runs):
            start = time.perf_counter()
            self.run(batch)
            times[i] = time.perf_counter() - start
        return times

    def peak_memory(self, trial: np.ndarray) -> int:
        """Bytes of resident memory added by loading and running the model, in a fresh process."""
        if self._artifact is None:
            raise TargetError("nothing deployed; call deploy(artifact) first.")
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            return pool.apply(_measure_peak_memory, (self._artifact.to_bytes(), trial[None].astype(np.float32)))

    def info(self) -> dict[str, Any]:
        """What this target is."""
        import onnxruntime

        return {
            "target": "cpu",
            "engine": f"onnxruntime {onnxruntime.__version__}",
            "processor": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": self.threads,
        }


def median_latency_ms(artifact: Artifact, trial: np.ndarray, runs: int = 200, warmup: int = 50) -> float:
    """Median single-trial latency (ms) of an artifact on the CPU target with one thread."""
    target = CpuTarget()
    target.deploy(artifact)
    return float(np.median(target.latency(trial, runs=runs, warmup=warmup)) * 1e3)


def _measure_peak_memory(model_bytes: bytes, batch: np.ndarray) -> int:
    """Child process: peak resident memory (bytes) added by creating the session and running it."""
    import onnx

    from edge.artifact import Artifact as _Artifact

    artifact = _Artifact.from_model(onnx.load_model_from_string(model_bytes))
    before = _resident_bytes("VmRSS")
    _reset_peak()
    session = open_session(artifact, "onnxruntime", threads=1)
    for _ in range(3):
        session.run({session.inputs[0].name: batch})
    return max(_resident_bytes("VmHWM") - before, 0)


def _resident_bytes(field: str) -> int:
    """A memory field of /proc/self/status (Linux), else the peak from getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark so VmHWM measures from here on (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass

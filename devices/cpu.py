"""The host CPU as a target: ONNX Runtime for ONNX models, LiteRT for TFLite files."""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
from pathlib import Path
from typing import Any

import numpy as np

from devices.base import TargetSpec, patched_tflite, tflite_fault_targets, time_calls
from edge.artifact import Artifact
from edge.errors import EngineError, TargetError
from edge.faults import FaultMap, FaultModel, FaultTargets
from edge.faults.engine import corrupted_model
from edge.tflite_model import TfliteModel
from runtimes import open_session
from runtimes.litert_session import RESOLVERS, LiteRTSession


class CpuTarget:
    """Runs models on this machine's CPU with a fixed thread count: ONNX in ONNX Runtime, TFLite in LiteRT.

    Options: ``threads`` (default 1); ``kernels`` for TFLite files: ``reference`` (TFLite's integer arithmetic
    exactly as TFLite Micro and the NPU target compute it), ``builtin`` (LiteRT's optimised kernels without
    XNNPACK, which round differently in places: on a file quantized without the even weight grid, 13 of 1,200
    SSVEP top-1 decisions differed from the reference kernels' 10), ``xnnpack``, or
    ``auto`` (the default): reference kernels when LiteRT has them for every operator of the file (it lacks
    ELU, for one), else builtin. ``info()["engine"]`` says which ran.
    """

    formats = ("onnx", "tflite")
    latency_source = "host wall clock"
    summary = "this machine's CPU: ONNX Runtime for .onnx, LiteRT for .tflite"
    example = "cpu?threads=1"

    def __init__(self, spec: TargetSpec | str | None = None, *, threads: int | None = None) -> None:
        spec = spec if isinstance(spec, TargetSpec) else TargetSpec.parse(f"cpu:{spec}" if spec else "cpu")
        if spec.argument:
            raise TargetError(f"the cpu target takes no argument; got '{spec.text}'.")
        spec.check_options(("threads", "kernels"))
        self.threads = threads or spec.option("threads", 1, int)
        self.requested_kernels = spec.option("kernels", "auto")
        if self.requested_kernels not in (*RESOLVERS, "auto"):
            raise TargetError(f"kernels must be one of auto, {', '.join(RESOLVERS)}; got '{self.requested_kernels}'.")
        self.kernels = self.requested_kernels
        self._model: Artifact | TfliteModel | None = None
        self._session: Any = None

    @classmethod
    def check(cls) -> str | None:
        return None

    def deploy(self, model: Artifact | TfliteModel) -> dict[str, Any]:
        """Load the model into an ONNX Runtime (or, for TFLite, a LiteRT) session."""
        self._model = model
        try:
            self._session = self._open(model.to_bytes() if isinstance(model, TfliteModel) else None)
        except EngineError as exc:
            if not isinstance(model, TfliteModel) or not str(exc).startswith("LiteRT refused"):
                raise
            from runtimes.tflite_support import litert_refusal

            # LiteRT checks some quantization parameters TFLite Micro accepts (one zero point for a per-channel
            # tensor), so the file may still run on the microcontroller targets.
            reason = litert_refusal(model.to_bytes()) or str(exc)
            raise TargetError(f"the cpu target runs TFLite files in LiteRT, which cannot load this one ({reason}); "
                              "TFLite Micro may: try --device mcu:tflm.") from None
        return {"engine": self.info()["engine"], "bytes": len(model.to_bytes())}

    def _open(self, tflite: bytes | None) -> Any:
        if tflite is not None:
            if self.requested_kernels == "auto":
                try:
                    session = LiteRTSession(tflite, kernels="reference", threads=self.threads)
                    self.kernels = "reference"
                    return session
                except EngineError as exc:
                    if "Didn't find op" not in str(exc):
                        raise
                    self.kernels = "builtin"
            return LiteRTSession(tflite, kernels=self.kernels, threads=self.threads)
        return open_session(self._deployed(), "onnxruntime", threads=self.threads)

    def _deployed(self) -> Any:
        if self._model is None:
            raise TargetError("nothing deployed; call deploy(model) first.")
        return self._model

    def run(self, batch: np.ndarray) -> np.ndarray:
        """First output of the model for one batch."""
        self._deployed()
        if isinstance(self._model, TfliteModel):
            return self._session.run({"x": batch})[0]
        name = next(iter(self._session.input_formats))  # the graph's first data input
        return self._session.run({name: batch})[0]

    def run_named(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for named feeds (stateful models: spiking step graphs)."""
        self._deployed()
        return self._session.run_named(feeds)

    def latency(self, trial: np.ndarray, runs: int = 200, warmup: int = 20) -> np.ndarray:
        """Seconds per inference of one trial at batch 1, after warm-up runs."""
        batch = np.asarray(trial)[None]  # in its own dtype: int8 data stay int8
        return time_calls(lambda: self.run(batch), runs, warmup)

    def memory(self, trial: np.ndarray) -> dict[str, Any]:
        """Model size and the peak resident memory loading and running it adds, measured in a fresh process."""
        model = self._deployed()
        out: dict[str, Any] = {"model_bytes": len(model.to_bytes())}
        if not isinstance(model, TfliteModel):
            out["peak_rss_bytes"] = self.peak_memory(trial)
        return out

    def peak_memory(self, trial: np.ndarray) -> int:
        """Bytes of resident memory added by loading and running the ONNX model, in a fresh process."""
        model = self._deployed()
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            return pool.apply(_measure_peak_memory, (model.to_bytes(), np.asarray(trial)[None]))

    def info(self) -> dict[str, Any]:
        """What this target is."""
        if isinstance(self._model, TfliteModel):
            from ai_edge_litert import __version__ as litert_version

            engine = f"LiteRT {litert_version} ({self.kernels} kernels)"
        else:
            import onnxruntime

            engine = f"onnxruntime {onnxruntime.__version__}"
        return {
            "target": "cpu",
            "engine": engine,
            "processor": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": self.threads,
            "io": list(getattr(self._session, "notes", {}).values()),
        }

    def fault_targets(self, fault: FaultModel) -> FaultTargets:
        """The weights ``fault`` may hit: ONNX initializers, or the TFLite file's weight buffers."""
        model = self._deployed()
        if isinstance(model, TfliteModel):
            return tflite_fault_targets(model, fault)
        return FaultTargets.from_model(model.model, fault)

    def inject(self, fault_map: FaultMap) -> None:
        """Reload the model with ``fault_map`` applied to its stored weights."""
        model = self._deployed()
        if isinstance(model, TfliteModel):
            self._session = self._open(patched_tflite(model, fault_map))
            return
        faulty = Artifact(corrupted_model(model.model, fault_map), model.meta)
        self._session = open_session(faulty, "onnxruntime", threads=self.threads)

    def restore(self) -> None:
        """Back to the pristine model."""
        model = self._deployed()
        self._session = self._open(model.to_bytes() if isinstance(model, TfliteModel) else None)

    def close(self) -> None:
        self._session = None


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
    name = next(iter(session.input_formats))
    for _ in range(3):
        session.run({name: batch})
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

"""An NVIDIA GPU as a target, through ONNX Runtime's CUDA or TensorRT execution provider.

``gpu[:N]?provider=cuda|tensorrt&fp16=0|1``: device N (default 0), the provider (default ``cuda``) and, for
TensorRT only, whether it may build float16 kernels. This needs ``onnxruntime-gpu`` (CUDA 12) and a visible
GPU; :meth:`GpuTarget.check` says which is missing. Nothing GPU-specific is imported at module import time.

Latency follows devices.md section 5.3: :meth:`GpuTarget.latency` times ``run_with_iobinding`` on inputs and
outputs already resident on the GPU, synchronising before and after each call (device time, no copies), after at
least 50 warm-up runs (cuDNN autotuning; TensorRT builds its engine on the first run). The end-to-end time of a
plain ``session.run`` (host-to-device and device-to-host copies included) is measured alongside it and kept in
:attr:`GpuTarget.timings` and :meth:`GpuTarget.info`.

ONNX Runtime silently falls back to the CPU when a provider cannot load (missing CUDA or cuDNN libraries):
:meth:`GpuTarget.deploy` checks the provider actually in use and refuses to go on with the CPU.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from devices.base import TargetSpec, time_calls
from edge.artifact import Artifact
from edge.errors import DataError, TargetError
from edge.feeds import (
    TensorFormat,
    dequantize,
    engine_message,
    input_note,
    onnx_formats,
    output_note,
    padded,
    run_batched,
    to_input,
)
from edge.faults.engine import corrupted_model
from edge.faults.models import FaultMap, FaultModel, FaultTargets

log = logging.getLogger("edge")

PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
IR_VERSION_LIMIT = 10  # onnx may stamp files newer than onnxruntime reads (DESIGN.md pitfalls)
MIN_WARMUP = 50


class GpuTarget:
    """Runs ONNX artifacts on one NVIDIA GPU with ONNX Runtime (CUDA or TensorRT provider)."""

    formats = ("onnx",)
    latency_source = "host wall clock around run_with_iobinding, GPU-resident tensors, synchronised"
    summary = "NVIDIA GPU through ONNX Runtime (CUDA or TensorRT provider); needs onnxruntime-gpu"
    example = "gpu:0?provider=cuda"
    #: where OrtValues for IOBinding live (ONNX Runtime's device name; also for the TensorRT provider)
    device_type = "cuda"

    def __init__(self, spec: TargetSpec | str = "gpu") -> None:
        spec = TargetSpec.parse(spec) if isinstance(spec, str) else spec
        spec.check_options(("provider", "fp16"))
        self.spec = spec
        try:
            self.device_id = int(spec.argument) if spec.argument is not None else 0
        except ValueError:
            self.device_id = -1
        if self.device_id < 0:
            raise TargetError(f"the gpu target takes a device number, e.g. gpu:0; got '{spec.text}'.")
        self.provider = spec.option("provider", "cuda").lower()
        if self.provider not in PROVIDERS:
            raise TargetError(f"option 'provider={self.provider}' of '{spec.text}' is not one of "
                              f"{', '.join(PROVIDERS)}.")
        fp16 = spec.option("fp16", "0")
        if fp16 not in ("0", "1"):
            raise TargetError(f"option 'fp16={fp16}' of '{spec.text}' must be 0 or 1.")
        self.fp16 = fp16 == "1"
        if self.fp16 and self.provider != "tensorrt":
            raise TargetError("fp16=1 needs provider=tensorrt; the CUDA provider runs the model in its own precision.")
        self.artifact: Artifact | None = None
        self.timings: dict[str, np.ndarray] = {}
        self.load_s: float | None = None
        self._pristine: Any = None
        self._session: Any = None
        self._cache: tempfile.TemporaryDirectory[str] | None = None
        self._formats: tuple[list[TensorFormat], list[TensorFormat]] = ([], [])
        self.notes: dict[str, str] = {}

    @classmethod
    def check(cls) -> str | None:
        """None when onnxruntime offers a GPU provider and a GPU is visible, else why the target cannot run."""
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed; install onnxruntime-gpu (CUDA 12) on a machine with an NVIDIA GPU."
        available = ort.get_available_providers()
        if not set(PROVIDERS.values()) & set(available):
            return (f"onnxruntime {ort.__version__} here has only {', '.join(available)}; install onnxruntime-gpu "
                    "(CUDA 12) on a machine with an NVIDIA GPU.")
        if not _gpu_names():
            return ("onnxruntime-gpu is installed but CUDA sees no NVIDIA GPU (nvidia-smi lists none, or "
                    "CUDA_VISIBLE_DEVICES hides them).")
        return None

    def deploy(self, artifact: Artifact) -> dict[str, Any]:
        """Create the ONNX Runtime session on the GPU; refuse it if ONNX Runtime fell back to the CPU."""
        if not isinstance(artifact, Artifact):
            raise TargetError(f"the gpu target runs ONNX artifacts, not {type(artifact).__name__}.")
        reason = self.check()
        if reason:
            raise TargetError(reason)
        gpus = _gpu_names()
        if self.device_id >= len(gpus):
            raise TargetError(f"there is no GPU {self.device_id}; this machine has {len(gpus)} ({', '.join(gpus)}).")
        import onnxruntime as ort

        if hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels or PyTorch, when present
            except Exception as exc:  # noqa: BLE001 - best effort: a missing library shows up as a CPU fallback below
                log.debug("gpu: onnxruntime.preload_dlls failed: %s", exc)
        self.close()
        self._cache = tempfile.TemporaryDirectory(prefix="edge-trt-") if self.provider == "tensorrt" else None
        start = time.perf_counter()
        self._pristine = self._session = self._create(artifact.model, engine_cache=True)
        self.load_s = time.perf_counter() - start
        self.artifact = artifact
        self._formats = onnx_formats(artifact.model)
        self.timings = {}
        return {"provider": self._session.get_providers()[0], "device_id": self.device_id, "load_s": self.load_s,
                "model_bytes": artifact.model.ByteSize()}

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's first output for ``batch`` (a plain ``session.run``: copies in and out included).

        The input is converted as :mod:`edge.feeds` says (dtype and quantization read from the graph), a fixed batch
        runs in chunks of its size, and an integer output with a scale comes back dequantized.
        """
        session = self._live()
        fmt = self._input_format()
        x = to_input(batch, fmt)
        self.notes = {fmt.name: input_note(np.asarray(batch).dtype, fmt)}
        (y,) = run_batched(lambda feeds: [self._run_once(session, feeds)], {fmt.name: x}, fmt.batch)
        out = self._formats[1][0] if self._formats[1] else None
        if out is not None:
            self.notes[out.name] = output_note(out)
            y = dequantize(y, out)
        return np.asarray(y, dtype=np.float32)

    def _run_once(self, session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            return session.run(None, feeds)[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            given = ", ".join(f"'{name}' {x.dtype.name} {tuple(x.shape)}" for name, x in feeds.items())
            raise TargetError(engine_message(f"onnxruntime could not run the model on GPU {self.device_id} on "
                                             f"{given}", exc)) from None

    def _input_format(self) -> TensorFormat:
        if not self._formats[0]:
            raise TargetError("the deployed model has no data input.")
        return self._formats[0][0]

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output, in graph order, for named feeds (multi-input models such as decoders with a KV cache)."""
        return self._live().run(None, feeds)

    def run_named(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for named feeds (stateful models: spiking step graphs)."""
        session = self._live()
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))

    def latency(self, trial: np.ndarray, runs: int = 200, warmup: int = 20) -> np.ndarray:
        """Seconds per GPU inference of one trial: IOBinding with GPU-resident input and outputs, synchronised.

        At least 50 warm-up runs go first whatever ``warmup`` says (cuDNN autotuning, TensorRT engine build). The
        end-to-end time of :meth:`run` on the same trial (host-device copies included) is measured next and
        kept in ``timings["end_to_end"]``.
        """
        import onnxruntime as ort

        session = self._live()
        fmt = self._input_format()
        name = fmt.name
        x = padded(to_input(np.asarray(trial)[None], fmt), fmt.batch or 1)
        outputs = session.run(None, {name: x})  # the shapes and types to allocate on the device
        binding = session.io_binding()
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, self.device_type, self.device_id))
        for meta, value in zip(session.get_outputs(), outputs, strict=True):
            binding.bind_ortvalue_output(meta.name, ort.OrtValue.ortvalue_from_shape_and_type(
                value.shape, value.dtype, self.device_type, self.device_id))
        warmup = max(warmup, MIN_WARMUP)
        times = np.empty(runs)
        for i in range(-warmup, runs):
            binding.synchronize_inputs()
            start = time.perf_counter_ns()
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()  # the launch is asynchronous: stop the clock only when it is done
            if i >= 0:
                times[i] = (time.perf_counter_ns() - start) * 1e-9
        self.timings = {"device": times}
        self.end_to_end_latency(trial, runs, warmup)
        return times

    def end_to_end_latency(self, trial: np.ndarray, runs: int = 200, warmup: int = 20) -> np.ndarray:
        """Seconds per plain ``run`` of one trial, host-to-device and device-to-host copies included."""
        times = time_calls(lambda: self.run(trial[None]), runs, max(warmup, MIN_WARMUP))
        self.timings["end_to_end"] = times
        return times

    def memory(self, trial: np.ndarray) -> dict[str, Any]:
        """The model's size and, where nvidia-smi reports it, the GPU memory this process holds after a run."""
        artifact = self._deployed()
        self.run(trial[None])
        return {"model_bytes": artifact.model.ByteSize(), "gpu_bytes": _process_gpu_bytes()}

    def info(self) -> dict[str, Any]:
        """Provider, device, versions and the medians of the last latency measurements."""
        import onnxruntime as ort

        gpus = _gpu_names()
        info: dict[str, Any] = {
            "target": f"gpu:{self.device_id}",
            "engine": f"onnxruntime {ort.__version__}",
            "provider": self._session.get_providers()[0] if self._session is not None else PROVIDERS[self.provider],
            "providers": self._session.get_providers() if self._session is not None else None,
            "device": gpus[self.device_id] if self.device_id < len(gpus) else None,
            "fp16": self.fp16,
            "load_s": self.load_s,
            "latency_source": self.latency_source,
            "io": list(self.notes.values()),
        }
        for kind, times in self.timings.items():
            info[f"latency_{kind}_p50_s"] = float(np.median(times))
        return info

    def fault_targets(self, fault: FaultModel) -> FaultTargets:
        """The initializers ``fault`` may hit in the deployed ONNX model, as they are stored."""
        return FaultTargets.from_model(self._deployed().model, fault)

    def inject(self, fault_map: FaultMap) -> None:
        """Rebuild the session with the initializers ``fault_map`` names corrupted (pristine plus faults).

        A rebuild costs a session creation (and, with TensorRT, an engine build of seconds; the corrupted engine
        is never cached, because TensorRT's cache key ignores weight values). Until :meth:`restore`.
        """
        try:
            faulty = corrupted_model(self._deployed().model, fault_map)
        except DataError as exc:
            raise TargetError(str(exc)) from None
        if self._session is not self._pristine:
            self._session = None  # free the previous faulty session's GPU memory before building the next
        self._session = self._create(faulty, engine_cache=False)

    def restore(self) -> None:
        """Back to the pristine session (kept alive, so nothing is rebuilt)."""
        self._session = self._pristine

    def close(self) -> None:
        """Drop the sessions and the TensorRT engine cache."""
        self._session = self._pristine = None
        if self._cache is not None:
            self._cache.cleanup()
            self._cache = None

    def _providers(self, engine_cache: bool) -> list[Any]:
        """The provider list: the requested GPU provider first, CUDA behind TensorRT, the CPU last."""
        cuda = ("CUDAExecutionProvider", {"device_id": self.device_id, "cudnn_conv_algo_search": "EXHAUSTIVE"})
        if self.provider == "cuda":
            return [cuda, "CPUExecutionProvider"]
        trt: dict[str, Any] = {"device_id": self.device_id, "trt_fp16_enable": self.fp16,
                               "trt_engine_cache_enable": engine_cache, "trt_timing_cache_enable": True}
        if self._cache is not None:
            trt["trt_engine_cache_path"] = trt["trt_timing_cache_path"] = self._cache.name
        return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]

    def _create(self, model: onnx.ModelProto, *, engine_cache: bool) -> Any:
        """An InferenceSession whose first provider is the requested one, or a TargetError."""
        import onnxruntime as ort

        data = model
        if model.ir_version > IR_VERSION_LIMIT:
            data = onnx.ModelProto()
            data.CopyFrom(model)
            data.ir_version = IR_VERSION_LIMIT
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(data.SerializeToString(), options, providers=self._providers(engine_cache))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise TargetError(engine_message(f"onnxruntime could not create a {self.provider} session on GPU "
                                             f"{self.device_id}", exc)) from None
        wanted, used = PROVIDERS[self.provider], session.get_providers()[0]
        if used != wanted:
            raise TargetError(f"onnxruntime fell back to {used} instead of {wanted} (are the CUDA 12 / cuDNN 9"
                              f"{' / TensorRT' if self.provider == 'tensorrt' else ''} libraries installed?).")
        return session

    def _live(self) -> Any:
        if self._session is None:
            raise TargetError("nothing deployed; call deploy(artifact) first.")
        return self._session

    def _deployed(self) -> Artifact:
        if self.artifact is None or self._session is None:
            raise TargetError("nothing deployed; call deploy(artifact) first.")
        return self.artifact


def _nvidia_smi(*arguments: str) -> list[str] | None:
    """Lines printed by ``nvidia-smi``, or None when it is missing or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        result = subprocess.run([smi, *arguments], check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else None


def _gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs CUDA sees, in CUDA's device order (nvidia-smi, else ONNX Runtime, else /dev)."""
    names = _nvidia_smi("--query-gpu=name", "--format=csv,noheader")
    if names is None:
        try:
            import onnxruntime as ort

            devices = ort.get_ep_devices() if hasattr(ort, "get_ep_devices") else []
            names = [d.device.vendor for d in devices if d.device.type == ort.OrtHardwareDeviceType.GPU
                     and d.ep_name in PROVIDERS.values()]
        except Exception:  # noqa: BLE001 - an optional probe: no answer means no GPU found
            names = []
        names = names or [f"NVIDIA GPU {p.name[6:]}" for p in sorted(Path("/dev").glob("nvidia[0-9]*"))]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and all(v.strip().isdigit() for v in visible.split(",") if v.strip()):
        # CUDA renumbers the listed devices from 0; nvidia-smi ignores the variable
        names = [names[int(v)] for v in visible.split(",") if v.strip() and int(v) < len(names)]
    return names


def _process_gpu_bytes() -> int | None:
    """GPU memory held by this process according to nvidia-smi (None where it cannot tell, e.g. in containers)."""
    lines = _nvidia_smi("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
    if lines is None:
        return None
    used = [int(mib) for pid, _, mib in (line.partition(",") for line in lines)
            if pid.strip() == str(os.getpid()) and mib.strip().isdigit()]
    return sum(used) * 1024 * 1024 if used else None

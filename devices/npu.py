"""An Arm Ethos-U NPU as a target: Vela compiles the int8 TFLite file and estimates its cost; TFLite Micro runs it.

``npu:ethos-u55-128?system=Ethos_U55_High_End_Embedded&memory=Shared_Sram``: the argument is any Vela
accelerator configuration (default ``ethos-u55-128``), ``system`` and ``memory`` a system config and a memory
mode of Vela's ``Arm/vela.ini`` (defaults per NPU family in :data:`runtimes.vela.DEFAULT_SYSTEMS`).

Nothing here runs on an NPU. Vela's output replaces the NPU subgraph with an ``ethos-u`` custom operator that
no host engine runs (neither LiteRT nor the TFLite Micro wheel; devices.md section 3), so:

- latency and memory are Vela's *static estimates* for the chosen system config, not measurements;
- outputs come from TFLite Micro's reference kernels on the *uncompiled* int8 file: the TFLite integer
  arithmetic the Ethos-U is designed to reproduce and the kernels its host Cortex-M runs for any operator Vela
  leaves on the CPU; only an FVP or the hardware can confirm them. (LiteRT's optimised builtin kernels round
  differently in places, and its reference resolver lacks ELU, so neither serves as the functional model.)

>>> target = NpuTarget(TargetSpec.parse("npu:ethos-u55-128"))
>>> target.deploy(read_tflite("ssvep_int8.tflite"))["latency_s"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import time
from typing import Any

import numpy as np

from devices.base import TargetSpec, patched_tflite, tflite_fault_targets
from edge.errors import TargetError
from edge.faults.models import FaultMap, FaultModel, FaultTargets
from edge.tflite_model import TfliteModel
from runtimes.tflm_session import TFLMSession
from runtimes.vela import ACCELERATORS, compile_for_npu, default_system, vela_configs

log = logging.getLogger("edge")


class NpuTarget:
    """An Arm Ethos-U NPU seen through Vela (estimates) and TFLite Micro (outputs)."""

    formats = ("tflite",)
    latency_source = "Vela static estimate (not measured)"
    summary = "Arm Ethos-U NPU (U55/U65/U85): Vela-compiled, static latency and memory estimates, outputs from TFLite Micro"
    example = "npu:ethos-u55-128"

    def __init__(self, spec: TargetSpec | str = "npu") -> None:
        spec = TargetSpec.parse(spec) if isinstance(spec, str) else spec
        spec.check_options(("system", "memory"))
        self.spec = spec
        self.accelerator = (spec.argument or "ethos-u55-128").lower()
        if self.accelerator not in ACCELERATORS:
            raise TargetError(f"unknown Ethos-U configuration '{spec.argument}' in '{spec.text}'; "
                              f"Vela knows {', '.join(ACCELERATORS)}.")
        default_config, default_mode = default_system(self.accelerator)
        self.system_config = spec.option("system", default_config)
        self.memory_mode = spec.option("memory", default_mode)
        if self.check() is None:
            systems, modes = vela_configs()
            if self.system_config not in systems:
                raise TargetError(f"unknown Vela system config '{self.system_config}' in '{spec.text}'; "
                                  f"choose one of {', '.join(systems)}.")
            if self.memory_mode not in modes:
                raise TargetError(f"unknown Vela memory mode '{self.memory_mode}' in '{spec.text}'; "
                                  f"choose one of {', '.join(modes)}.")
        self.model: TfliteModel | None = None
        self.compiled: bytes | None = None
        self.vela: dict[str, Any] = {}
        self._pristine: TFLMSession | None = None
        self._session: TFLMSession | None = None

    @classmethod
    def check(cls) -> str | None:
        """None when Vela and TFLite Micro are installed, else what to install."""
        needed = {"ethos-u-vela": "ethosu.vela", "tflite-micro": "tflite_micro"}
        missing = [package for package, module in needed.items() if not _importable(module)]
        return f"the npu target needs {' and '.join(missing)}: pip install {' '.join(missing)}." if missing else None

    def deploy(self, model: TfliteModel) -> dict[str, Any]:
        """Compile with Vela (keeping the compiled file and its summary) and load the int8 file into TFLite Micro."""
        if not isinstance(model, TfliteModel):
            raise TargetError(f"the npu target runs int8 TFLite files, not {type(model).__name__}; "
                              "export one with 'edge convert --export tflite'.")
        reason = self.check()
        if reason:
            raise TargetError(reason)
        start = time.perf_counter()
        self.compiled, self.vela = compile_for_npu(model.data, self.accelerator, system_config=self.system_config,
                                                   memory_mode=self.memory_mode)
        seconds = time.perf_counter() - start
        if not self.vela["all_on_npu"]:
            ops = ", ".join(o["op"] for o in self.vela["cpu_operations"]) or "unknown operators"
            log.warning("npu: %s operator(s) stay on the CPU (%s); Vela's latency estimate leaves them out.",
                        self.vela["cpu_operators"], ops)
        self.model = model
        self._pristine = self._session = TFLMSession(model.data)
        return {"compiled_bytes": len(self.compiled), "compiled_sha256": hashlib.sha256(self.compiled).hexdigest(),
                "compile_s": seconds, **self.vela}

    def run(self, batch: np.ndarray) -> np.ndarray:
        """TFLite Micro's first output for ``batch`` on the uncompiled int8 file (inputs as edge.feeds says)."""
        return self._live().run({"x": np.asarray(batch)})[0].astype(np.float32, copy=False)

    def run_named(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for named batch-1 feeds, from TFLite Micro on the uncompiled file."""
        return self._live().run_named(feeds)

    def latency(self, trial: np.ndarray, runs: int = 200, warmup: int = 20) -> np.ndarray:
        """Vela's estimated seconds per inference repeated ``runs`` times: a static estimate, nothing is timed.

        ``trial`` and ``warmup`` are ignored (the estimate does not depend on the data). When operators fall back
        to the CPU, the estimate leaves their time out.
        """
        self._live()
        if self.vela.get("latency_s") is None:
            raise TargetError("Vela gave no inference-time estimate for this model.")
        return np.full(runs, float(self.vela["latency_s"]))

    def memory(self, trial: np.ndarray) -> dict[str, Any]:
        """Vela's SRAM (tensor arena), flash and DRAM use of the compiled network, in bytes."""
        self._live()
        return {f"{key}_bytes": round((self.vela.get(f"{key}_kib") or 0.0) * 1024) for key in ("sram", "flash", "dram")}

    def info(self) -> dict[str, Any]:
        """The NPU configuration and what Vela made of the deployed model."""
        info: dict[str, Any] = {
            "target": f"npu:{self.accelerator}",
            "accelerator": self.accelerator,
            "system_config": self.system_config,
            "memory_mode": self.memory_mode,
            "latency_source": self.latency_source,
            "functional_engine": "TFLite Micro reference kernels on the uncompiled file",
            "io": list(self._session.notes.values()) if self._session is not None else [],
        }
        keys = ("vela_version", "clock_hz", "npu_operators", "cpu_operators", "all_on_npu", "cpu_operations",
                "cycles_npu", "cycles_total", "macs", "latency_s", "sram_kib", "flash_kib", "dram_kib", "weights_area")
        info.update({key: self.vela.get(key) for key in keys})
        return info

    def fault_targets(self, fault: FaultModel) -> FaultTargets:
        """The int8 weight and int32 bias buffers of the TFLite file (what Vela places in the NPU's flash)."""
        return tflite_fault_targets(self._deployed(), fault)

    def inject(self, fault_map: FaultMap) -> None:
        """Run on weights corrupted as ``fault_map`` says (on top of the pristine ones) until :meth:`restore`.

        The faults hit the int8/int32 buffers as the TFLite file stores them; Vela re-encodes weights for the NPU
        (compressed, with scales folded into bias words), and that encoding is not emulated.
        """
        self._session = TFLMSession(patched_tflite(self._deployed(), fault_map))

    def restore(self) -> None:
        """Back to the pristine weights."""
        self._session = self._pristine

    def close(self) -> None:
        """Drop the sessions and the deployed model."""
        self._session = self._pristine = None
        self.model = None

    def _live(self) -> TFLMSession:
        if self._session is None:
            raise TargetError("nothing deployed; call deploy(model) first.")
        return self._session

    def _deployed(self) -> TfliteModel:
        if self.model is None or self._session is None:
            raise TargetError("nothing deployed; call deploy(model) first.")
        return self.model


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False

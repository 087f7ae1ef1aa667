"""A microcontroller's inference engine on the host: the TFLite Micro interpreter (``mcu:tflm``).

The kernels are TFLite Micro's own reference kernels, so outputs are what a board running the same build
of TFLite Micro computes (bit for bit with LiteRT's reference kernels). Latency is host wall-clock time of
the x86 kernels, not a microcontroller's; use ``serial:`` with a board (or ``sim`` to develop the flow)
for on-device timing. Memory: the tensor arena (the smallest that runs the model, found by bisection up to
the microcontroller's RAM given as ``ram=KB``, else up to 8 MiB, unless ``arena=KB`` fixes it) and the flash
the model occupies. Arena sizes measured on a 64-bit host are upper bounds for a 32-bit microcontroller.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from devices.base import TargetSpec, patched_tflite, tflite_fault_targets, time_calls
from edge.errors import EngineError, TargetError
from edge.faults import FaultMap, FaultModel, FaultTargets
from edge.tflite_model import TfliteModel
from runtimes.tflite_support import tflm_refusal
from runtimes.tflm_session import TFLMSession, arena_fits, minimum_arena_bytes

ENGINES = ("tflm",)


class McuTarget:
    """TFLite Micro on the host, with an optional fixed arena (``mcu:tflm?arena=64`` for 64 KiB) and RAM size
    (``mcu:tflm?ram=256``: the arena search stops there and a model that does not fit is refused)."""

    formats = ("tflite",)
    latency_source = "host wall clock (x86 TFLite Micro kernels, not MCU timing)"
    summary = "TFLite Micro kernels run on the host: MCU outputs and arena size without a board"
    example = "mcu:tflm?arena=64"

    def __init__(self, spec: TargetSpec | str | None = None) -> None:
        spec = spec if isinstance(spec, TargetSpec) else TargetSpec.parse(f"mcu:{spec}" if spec else "mcu")
        engine = spec.argument or "tflm"
        if engine not in ENGINES:
            raise TargetError(f"unknown microcontroller engine '{engine}' in '{spec.text}'; available: "
                              f"{', '.join(ENGINES)}.")
        spec.check_options(("arena", "ram"))
        arena_kib = spec.option("arena", None, float)
        if arena_kib is not None and arena_kib <= 0:
            raise TargetError(f"the arena must be a positive number of KiB; got '{spec.options['arena']}'.")
        ram_kib = spec.option("ram", None, float)
        if ram_kib is not None and ram_kib <= 0:
            raise TargetError(f"the RAM must be a positive number of KiB; got '{spec.options['ram']}'.")
        if arena_kib and ram_kib and arena_kib > ram_kib:
            raise TargetError(f"an arena of {arena_kib:g} KiB does not fit in {ram_kib:g} KiB of RAM ('{spec.text}').")
        self.arena_bytes = int(arena_kib * 1024) if arena_kib else None
        self.ram_bytes = int(ram_kib * 1024) if ram_kib else None
        self._arena_text = spec.options.get("arena", "")
        self._model: TfliteModel | None = None
        self._session: TFLMSession | None = None
        self._minimum_arena: int | None = None

    @classmethod
    def check(cls) -> str | None:
        try:
            from tflite_micro.python.tflite_micro import runtime  # noqa: F401
        except ImportError:
            return "needs the tflite-micro package (pinned in pyproject.toml)"
        return None

    def deploy(self, model: TfliteModel) -> dict[str, Any]:
        """Create the interpreter; a model that does not fit the given arena is refused with the size it needs."""
        if not isinstance(model, TfliteModel):
            raise TargetError("mcu:tflm runs TFLite files; export one with `edge convert ... --export tflite`.")
        self._model = model
        self._minimum_arena = None
        refusal = tflm_refusal(model.data)  # in a child, with an arena that always suffices
        if refusal is not None:
            raise TargetError(f"TFLite Micro cannot run this model: {refusal}.")
        if self.arena_bytes is not None and not arena_fits(model.data, self.arena_bytes):
            # probed in a child process: some too-small arenas crash TFLite Micro instead of failing
            raise TargetError(f"the model does not fit a {self._arena_text} KiB arena (TFLite Micro "
                              "cannot allocate its tensors); raise ?arena= or leave it out to size it automatically.")
        report: dict[str, Any] = {"engine": "tflite-micro", "bytes": len(model.data)}
        if self.arena_bytes is None:
            # the host interpreter runs with a generous arena; what a board needs is the minimum, measured here
            # (once per model) so that `edge flash` reports it and a model too big for ?ram= is refused now
            self._minimum_arena = _minimum_arena(model, self.ram_bytes)
            report.update(arena_bytes=self._minimum_arena, arena="minimum that allocates the tensors (bisection, "
                                                                  "64-bit host)")
        else:
            report.update(arena_bytes=self.arena_bytes, arena="given")
        if self.ram_bytes is not None:
            report["ram_bytes"] = self.ram_bytes
        self._session = TFLMSession(model.data, arena_bytes=self.arena_bytes)
        return report

    def _deployed(self) -> TfliteModel:
        if self._model is None or self._session is None:
            raise TargetError("nothing deployed; call deploy(model) first.")
        return self._model

    def run(self, batch: np.ndarray) -> np.ndarray:
        self._deployed()
        return self._session.run({"x": batch})[0]

    def run_named(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for named batch-1 feeds (stateful models: spiking step graphs)."""
        self._deployed()
        return self._session.run_named(feeds)

    def latency(self, trial: np.ndarray, runs: int = 200, warmup: int = 20) -> np.ndarray:
        batch = np.asarray(trial)[None]  # in its own dtype: int8 data stay int8
        return time_calls(lambda: self.run(batch), runs, warmup)

    def memory(self, trial: np.ndarray) -> dict[str, Any]:
        """Arena (given, or the smallest that runs one trial) and flash (the model file) in bytes."""
        model = self._deployed()
        if self.arena_bytes is None and self._minimum_arena is None:
            self._minimum_arena = _minimum_arena(model, self.ram_bytes, trial)
        arena = self.arena_bytes or self._minimum_arena
        memory = {"arena_bytes": arena, "arena": "given" if self.arena_bytes else "minimum (bisection, 64-bit host)",
                  "flash_bytes": len(model.data)}
        if self.ram_bytes is not None:
            memory["ram_bytes"] = self.ram_bytes
        return memory

    def info(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {"target": "mcu:tflm", "engine": f"tflite-micro {version('tflite-micro')}",
                "kernels": "TFLite Micro reference kernels (x86 host build)",
                "io": list(self._session.notes.values()) if self._session is not None else []}

    def fault_targets(self, fault: FaultModel) -> FaultTargets:
        return tflite_fault_targets(self._deployed(), fault)

    def inject(self, fault_map: FaultMap) -> None:
        """A fresh interpreter on the model bytes with ``fault_map`` applied to the weight buffers."""
        self._session = TFLMSession(patched_tflite(self._deployed(), fault_map), arena_bytes=self._session.arena_bytes)

    def restore(self) -> None:
        model = self._deployed()
        self._session = TFLMSession(model.data, arena_bytes=self._session.arena_bytes)

    def close(self) -> None:
        self._session = None


_MINIMUM_ARENAS: dict[tuple[str, int | None], int] = {}


def _minimum_arena(model: TfliteModel, ram_bytes: int | None, trial: np.ndarray | None = None) -> int:
    """The smallest arena the model allocates in (searched up to ``ram_bytes``), measured once per model and RAM."""
    key = (model.sha256, ram_bytes)
    if key not in _MINIMUM_ARENAS:
        try:
            _MINIMUM_ARENAS[key] = minimum_arena_bytes(model.data, trial, upper=ram_bytes)
        except EngineError as exc:
            raise TargetError(str(exc)) from None
    return _MINIMUM_ARENAS[key]

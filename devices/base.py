"""What every deployment target provides, the spec-string grammar, and the pieces targets share.

A spec is ``name[:argument][?key=value&key=value]``: ``cpu``, ``gpu:0``, ``npu:ethos-u55-128``,
``mcu:tflm?arena=64``, ``serial:/dev/ttyACM0?baud=115200``, ``sim?faults=corrupt:0.01``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

import numpy as np

from edge.errors import TargetError

if TYPE_CHECKING:
    from edge.artifact import Artifact
    from edge.faults import FaultMap, FaultModel, FaultTargets
    from edge.tflite_model import TfliteModel

    Model = Artifact | TfliteModel


@dataclass
class TargetSpec:
    """A parsed spec string."""

    name: str
    argument: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> TargetSpec:
        head, _, query = text.partition("?")
        name, _, argument = head.partition(":")
        if not name:
            raise TargetError(f"'{text}' is not a device spec; write e.g. cpu, npu:ethos-u55-128 or mcu:tflm.")
        try:
            options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
        except ValueError:
            raise TargetError(f"the options of '{text}' are not key=value pairs joined by '&'.") from None
        return cls(name.strip().lower(), argument or None, options, text)

    def option(self, key: str, default: Any = None, kind: Callable[[str], Any] = str) -> Any:
        """An option converted with ``kind``; a value that does not convert is one clear error."""
        if key not in self.options:
            return default
        try:
            return kind(self.options[key])
        except ValueError:
            raise TargetError(f"option '{key}={self.options[key]}' of '{self.text}' is not a valid "
                              f"{getattr(kind, '__name__', 'value')}.") from None

    def check_options(self, known: tuple[str, ...]) -> None:
        """Refuse options this target does not know (a typo would otherwise be silently ignored)."""
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            allowed = ", ".join(known) if known else "none"
            raise TargetError(f"'{self.text}' has unknown option '{unknown[0]}'; this target takes: {allowed}.")


class Target(Protocol):
    """A place a model runs. Methods take trials in the model's own layout and in the data's own dtype (converted to
    the model input's dtype and quantization as :mod:`edge.feeds` says: int8 data for an int8 input as is, float data
    quantized once, mismatches refused), any number of them whatever batch the model fixes; outputs are float32
    (integer outputs dequantized). ``info()["io"]`` says in words what was done to inputs and outputs."""

    #: model formats the target runs, in order of preference: "onnx", "tflite"
    formats: tuple[str, ...]
    #: how latency() is obtained: "host wall clock", "device timer", "Vela static estimate", ...
    latency_source: str

    def deploy(self, model: Model) -> dict[str, Any]:
        """Load or flash the model; returns what happened (bytes sent, seconds, checksum...)."""
        ...

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's first output for every trial of ``batch`` (any count; dequantized to float32)."""
        ...

    def latency(self, trial: np.ndarray, runs: int = 200, warmup: int = 20) -> np.ndarray:
        """Seconds per inference of one trial at batch 1 (one value per timed run or timed window)."""
        ...

    def memory(self, trial: np.ndarray) -> dict[str, Any]:
        """Memory the deployed model needs here, in bytes (keys such as arena, flash, sram, peak_rss)."""
        ...

    def info(self) -> dict[str, Any]:
        """What the target is: engine, versions, clocks."""
        ...

    def fault_targets(self, fault: FaultModel) -> FaultTargets:
        """The stored tensors ``fault`` may hit, as this target stores them."""
        ...

    def inject(self, fault_map: FaultMap) -> None:
        """Corrupt the deployed model's weight memory with ``fault_map`` (on top of the pristine weights)."""
        ...

    def restore(self) -> None:
        """Put the pristine weights back."""
        ...

    def close(self) -> None:
        """Release the device (links, processes)."""
        ...


class TargetFaultEngine:
    """A target seen as a campaign engine: ``run`` and ``run_map`` (inject, run, restore) over its fault targets."""

    def __init__(self, target: Target, fault: FaultModel, batch_size: int = 64) -> None:
        self.target = target
        self.targets = target.fault_targets(fault)
        self.batch_size = batch_size

    def run(self, x: np.ndarray) -> np.ndarray:
        return run_batches(self.target, x, self.batch_size)

    def run_map(self, fault_map: FaultMap, x: np.ndarray) -> np.ndarray:
        self.target.inject(fault_map)
        try:
            return self.run(x)
        finally:
            self.target.restore()


def run_batches(target: Target, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """A deployed target's first output for every trial of ``x``, a batch at a time."""
    return np.concatenate([target.run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def time_calls(call: Callable[[], Any], runs: int, warmup: int) -> np.ndarray:
    """Seconds taken by each of ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    return times


def tflite_fault_targets(model: TfliteModel, fault: FaultModel) -> FaultTargets:
    """Fault targets over a TFLite file's weight buffers (weights and biases of every weight operator).

    ``fault.targets`` may be ``weights`` or ``all`` (the same buffers: a TFLite file stores nothing else a
    fault model covers) or a tuple of tensor names; ``fault.layers`` keeps the named tensors.
    """
    from edge.errors import PassError
    from edge.faults.models import (
        LAYOUTS_BY_DTYPE,
        FaultTargets,
        TargetTensor,
        bit_starts,
    )

    arrays = model.weights()
    names = list(arrays)
    if isinstance(fault.targets, tuple):
        missing = [n for n in fault.targets if n not in arrays]
        if missing:
            raise PassError(f"The fault model targets '{missing[0]}', which is not a weight buffer of the TFLite "
                            f"file (it has {', '.join(names)}).")
        names = list(fault.targets)
    if fault.layers is not None:
        names = [n for n in names if n in set(fault.layers)]
    tensors = []
    for name in names:
        array = arrays[name]
        if array.dtype.name not in LAYOUTS_BY_DTYPE:
            continue
        width, sign, exponent = LAYOUTS_BY_DTYPE[array.dtype.name]
        starts = bit_starts(fault, width, sign, exponent)
        if len(starts):
            tensors.append(TargetTensor(name, array, width, starts))
    return FaultTargets(tensors, fault)


def patched_tflite(model: TfliteModel, fault_map: FaultMap) -> bytes:
    """The file's bytes with ``fault_map`` applied to its weight buffers (the pristine model is left alone)."""
    from edge.faults import apply_fault_map

    arrays = model.weights()
    apply_fault_map(arrays, fault_map)
    return model.with_weights(arrays)

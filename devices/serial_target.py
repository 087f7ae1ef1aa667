"""Boards on a serial line (``serial:PORT``) and the virtual board on a local pty (``sim``), as targets.

Both speak the MLPerf Tiny monitor through :class:`devices.link.Link`. With a board that also answers
``edge-info`` (our firmware, the virtual board) the target flashes models, reads memory figures and flips
weight bits on the device; a plain MLPerf Tiny board can still be evaluated on the model it already holds.

>>> target = SimTarget(TargetSpec.parse("sim?faults=garbage=0.05,seed=1"))
>>> target.deploy(read_tflite("tiny.tflite"))  # {'bytes': 3104, 'chunks': 7, 'retries': 0, ...}
>>> target.run(x).argmax(1), target.latency(x[0]).mean()
>>> target.close()

Latency comes from the board's own microsecond timer: ``infer N W`` reports two timestamps around N
back-to-back inferences, so one value is one window's mean. N is chosen from a one-inference pilot so
that a window lasts at least 10 ms (the 1 µs timestamps then err by under 0.01 %), but never more than a
fifth of ``runs``; the windows then add up to about ``runs`` inferences, and there are at least five of
them (as MLPerf Tiny scores the median of five windows). A slow model thus gets one value per inference,
a fast one a few dozen well-timed windows. The first window is preceded by ``warmup`` inferences.

Inputs go as the raw bytes of input tensor 0 in its own type (int8 for an int8-input model, little-endian
float32 otherwise), in ``db`` chunks of 31 bytes on a plain MLPerf board (its 80-character command buffer)
and of as many as the board's ``max-cmd`` allows on ours (a dozen times fewer round trips per trial).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import zlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from devices.base import TargetSpec, tflite_fault_targets
from devices.link import DB_CHUNK, Inference, Link, LinkTimeout
from edge.errors import TargetError

if TYPE_CHECKING:
    from devices.virtual import VirtualDevice
    from edge.feeds import TensorFormat
    from edge.faults import FaultMap, FaultModel, FaultTargets
    from edge.tflite_model import TfliteModel

log = logging.getLogger("edge")

MIN_WINDOW_US = 10_000
MIN_WINDOWS = 5


class SerialTarget:
    """A board on a serial port: ``serial:/dev/ttyACM0?baud=115200&timeout=5&retries=3``.

    ``timeout`` is the seconds a command may take before the host resyncs the line; ``retries`` how often
    a failed input load or flash chunk is resent. The port opens on first use.
    """

    formats = ("tflite",)
    latency_source = "device timer (mean over N inferences per window)"
    summary = "a board on a serial port speaking the MLPerf Tiny monitor; flashes and flips bits with edge firmware"
    example = "serial:/dev/ttyACM0?baud=115200"
    options: tuple[str, ...] = ("baud", "timeout", "retries")

    def __init__(self, spec: TargetSpec) -> None:
        spec.check_options(self.options)
        self.spec = spec
        self.baud = _positive(spec, "baud", 115200, int)
        self.timeout = _positive(spec, "timeout", 5.0, float)
        self.retries = spec.option("retries", 3, int)
        if self.retries < 0:
            raise TargetError(f"option 'retries' of '{spec.text}' must be 0 or more; got {self.retries}.")
        self._link: Link | None = None
        self._info: dict[str, str] | None = None
        self._model: TfliteModel | None = None
        self._injected = False
        self.notes: dict[str, str] = {}

    @classmethod
    def check(cls) -> str | None:
        """None when pyserial is installed, else why this target cannot be used."""
        return None if importlib.util.find_spec("serial") else "needs pyserial: pip install pyserial."

    # -- connection ------------------------------------------------------------------------------------------

    def _connect(self) -> Link:
        if not self.spec.argument:
            raise TargetError(f"'{self.spec.text}' names no port; write e.g. serial:/dev/ttyACM0 or "
                              "serial:socket://127.0.0.1:5555.")
        return Link(self.spec.argument, baud=self.baud, timeout=self.timeout, retries=self.retries)

    @property
    def link(self) -> Link:
        """The open link (opened, and the board's edge-info read, on first use)."""
        if self._link is None:
            self._link = self._connect()
            self._info = self._link.edge_info()
        return self._link

    def _edge(self, what: str) -> dict[str, str]:
        """The board's edge-info; a plain MLPerf Tiny board cannot do ``what``."""
        link = self.link
        if self._info is None:
            raise TargetError(f"the board on '{link.url}' runs plain MLPerf Tiny firmware (no edge-info), so it "
                              f"cannot {what}; flash the edge firmware to use this.")
        return self._info

    def close(self) -> None:
        """Close the port."""
        if self._link is not None:
            self._link.close()
            self._link = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Target protocol ---------------------------------------------------------------------------------

    def deploy(self, model: Any, *, force: bool = False) -> dict[str, Any]:
        """Flash the TFLite model (skipped, weights restored, when the board already holds it and not ``force``).

        Returns bytes, chunks, retries, seconds, crc32 (hex) and flashed. A plain MLPerf Tiny board cannot be
        flashed: the model is then taken as the one it holds, with a warning and a note in the result.
        """
        model = _as_tflite(model)
        crc = f"{zlib.crc32(model.data):08x}"
        link = self.link
        self._injected = False
        if self._info is None:
            self._model = model
            log.warning("the board on '%s' runs plain MLPerf Tiny firmware (no edge-info): it cannot be flashed from "
                        "here and is assumed to hold this model already.", link.url)
            return {"bytes": 0, "chunks": 0, "retries": 0, "seconds": 0.0, "crc32": crc, "flashed": False,
                    "note": "plain MLPerf Tiny firmware: not flashed, assumed to hold this model"}
        if not force and self._info.get("model-crc32") == crc and self._info.get("model-bytes") == str(len(model.data)):
            link.restore()
            self._model = model
            return {"bytes": 0, "chunks": 0, "retries": 0, "seconds": 0.0, "crc32": crc, "flashed": False,
                    "note": "the board already holds this model"}
        report = link.upload(model.data, int(self._info["max-cmd"]))
        self._info = link.edge_info()
        if (self._info or {}).get("model-crc32") != crc:
            raise TargetError(f"the board on '{link.url}' reports model crc32 {(self._info or {}).get('model-crc32')} "
                              f"after flashing {crc}.")
        self._model = model  # only now: after a failed upload the board, and so the host, keep the previous model
        return {**report, "flashed": True}

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The first output for every trial: each batch of the file's size is loaded (``db``) and run (``infer 1 0``).

        Trials are converted once on the host as :mod:`edge.feeds` says (int8 data for an int8 input sent as is,
        float data quantized with the input's scale and zero point); a file with a fixed batch of B gets B trials per
        load, the last load padded.
        """
        from edge.feeds import input_note, run_batched, to_input

        fmt = self._input_format()
        x = to_input(batch, fmt)
        self.notes = {fmt.name: input_note(np.asarray(batch).dtype, fmt),
                      "output": "output as the board reports it (the virtual board dequantizes int8 outputs)"}
        return run_batched(lambda feeds: [self._run_chunk(feeds[fmt.name])], {fmt.name: x}, fmt.batch or 1)[0]

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        """Outputs of one load of the board's input tensor (``x`` already in its type and batch)."""
        shape = tuple(int(d) for d in self._require_model().output_details["shape"][1:])
        values = self._infer(x, 1, 0).results
        try:
            return values.reshape(len(x), *shape).astype(np.float32)
        except ValueError:
            raise TargetError(f"the board returned {values.size} values for {len(x)} trial(s); the deployed model has "
                              f"{int(np.prod(shape))} per trial. Does the board hold this model?") from None

    def latency(self, trial: np.ndarray, runs: int = 200, warmup: int = 20) -> np.ndarray:
        """Seconds per inference, one value per ``infer N W`` window (see the module docstring for N)."""
        from edge.feeds import padded, to_input

        fmt = self._input_format()
        pilot = self._infer(padded(to_input(np.asarray(trial)[None], fmt), fmt.batch or 1), 1, warmup) \
            .seconds_per_inference
        per_window = max(1, min(runs // MIN_WINDOWS, math.ceil(MIN_WINDOW_US / 1e6 / max(pilot, 1e-6))))
        windows = max(min(MIN_WINDOWS, runs), math.ceil(runs / per_window))
        timeout = self.timeout + 4 * per_window * pilot
        return np.array([self.link.infer(per_window, 0, timeout=timeout).seconds_per_inference
                         for _ in range(windows)])

    def memory(self, trial: np.ndarray) -> dict[str, Any]:
        """What the board reports: the TFLite Micro arena, the model's bytes in flash, the store and buffer sizes."""
        info = self._edge("report its memory")
        return {"arena_bytes": int(info["arena-bytes"]), "flash_bytes": int(info["model-bytes"]),
                "flash_capacity_bytes": int(info["flash-bytes"]), "input_buffer_bytes": int(info["input-bytes"])}

    def info(self) -> dict[str, Any]:
        """Name, profile, firmware, engine and clock (Hz; None when the board does not say) of the board."""
        profile = self.link.profile()
        edge = self._info or {}
        clock = int(edge.get("clock-hz", 0) or 0)
        return {"target": self.spec.text, "port": self.link.url, "name": self.link.name(),
                "profile": profile["profile"], "model": profile["model"],
                "firmware": edge.get("fw", "plain MLPerf Tiny"), "engine": edge.get("engine", "unknown"),
                "clock": clock or None, "io": list(self.notes.values())}

    def fault_targets(self, fault: FaultModel) -> FaultTargets:
        """The deployed file's weight buffers, as the board stores them."""
        return tflite_fault_targets(self._require_model(), fault)

    def inject(self, fault_map: FaultMap) -> None:
        """Flip the map's bits in the board's RAM copy of the model (on top of the pristine weights)."""
        if fault_map.kind != "flip":
            raise TargetError(f"the serial link can only flip bits (edge-flip); '{fault_map.kind}' faults need a "
                              "target that writes the weights itself, such as mcu:tflm on this machine.")
        info = self._edge("inject faults")
        pairs = _bit_positions(self._require_model(), fault_map)
        if self._injected:
            self.restore()
        self._injected = True
        try:
            self.link.flip(pairs, int(info["max-cmd"]))
        except LinkTimeout:
            self.restore()
            raise TargetError(f"the board on '{self.link.url}' did not confirm the bit flips in time; its weights were "
                              "restored.") from None

    def restore(self) -> None:
        """Put the pristine weights back (``edge-restore``)."""
        self._edge("restore weights")
        self.link.restore()
        self._injected = False

    # -- helpers ---------------------------------------------------------------------------------------------

    def _require_model(self) -> TfliteModel:
        if self._model is None:
            raise TargetError("nothing deployed; call deploy(model) first.")
        return self._model

    def _input_format(self) -> TensorFormat:
        """Input tensor 0 of the deployed file: dtype, scale, zero point and batch (the board cannot resize)."""
        from runtimes.litert_session import tflite_format

        fmt = tflite_format(self._require_model().input_details)
        return replace(fmt, batch=int(self._require_model().input_details["shape"][0]) or 1)

    def _infer(self, x: np.ndarray, count: int, warmup: int) -> Inference:
        """Load ``x`` (already in the input tensor's type and batch) as its raw bytes and run ``infer count warmup``."""
        data = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<")).tobytes()
        self.link.load(data, DB_CHUNK if self._info is None else max(DB_CHUNK, (int(self._info["max-cmd"]) - 3) // 2))
        return self.link.infer(count, warmup)


class SimTarget(SerialTarget):
    """The virtual board (TFLite Micro behind a local pty) in its own process: ``sim?faults=...&arena=KB``.

    ``faults`` are the virtual board's link faults (``garbage=0.1,stall=2@500,seed=1``, see
    :class:`devices.virtual.Faults`); ``arena`` its TFLite Micro arena and ``flash`` its model store, in KiB
    (default: an arena that always suffices, 1024 KiB of store). Each target starts a fresh
    board with an empty model store in a temporary folder; ``close()`` (or garbage collection, or exit)
    stops it.
    """

    summary = "a virtual board: TFLite Micro behind a local pty, with switchable link faults"
    example = "sim?faults=garbage=0.1,seed=1"
    options = ("faults", "arena", "flash", "timeout", "retries")

    def __init__(self, spec: TargetSpec) -> None:
        from devices.virtual import Faults

        super().__init__(spec)  # checks the options against SimTarget.options
        if spec.argument:
            raise TargetError(f"the sim target takes no argument; got '{spec.text}' (options go after '?').")
        self.faults = spec.option("faults", "")
        Faults.parse(self.faults)  # refuse a bad fault list now, not in the child process
        self.arena_kb = _positive(spec, "arena", None, int)
        self.flash_kb = _positive(spec, "flash", None, int)
        self.device: VirtualDevice | None = None

    @classmethod
    def check(cls) -> str | None:
        """None when ptys, pyserial and TFLite Micro are all available here."""
        if not hasattr(os, "openpty") or os.name != "posix":
            return "needs a POSIX system with pseudo-terminals."
        missing = [name for name in ("serial", "tflite_micro") if importlib.util.find_spec(name) is None]
        return f"needs {' and '.join(missing)} (pip install pyserial tflite-micro)." if missing else None

    def _connect(self) -> Link:
        from devices.virtual import spawn

        self.device = spawn(faults=self.faults, arena_kb=self.arena_kb, flash_kb=self.flash_kb)
        try:
            return Link(self.device.port, timeout=self.timeout, retries=self.retries)
        except TargetError:
            self.close()
            raise

    def close(self) -> None:
        """Close the link and stop the virtual board's process."""
        super().close()
        if self.device is not None:
            self.device.stop()
            self.device = None


def _positive(spec: TargetSpec, key: str, default: Any, kind: Any) -> Any:
    value = spec.option(key, default, kind)
    if value is not None and value <= 0:
        raise TargetError(f"option '{key}' of '{spec.text}' must be positive; got {value}.")
    return value


def _as_tflite(model: Any) -> TfliteModel:
    """The model as a TfliteModel (serial boards run TFLite files only)."""
    from edge.tflite_model import FILE_IDENTIFIER, TfliteModel

    if isinstance(model, TfliteModel):
        return model
    data = model if isinstance(model, bytes | bytearray) else None
    if data is not None and data[4:8] == FILE_IDENTIFIER:
        return TfliteModel.from_bytes(data)
    raise TargetError("serial boards run TFLite files; export the model first (edge convert --export tflite).")


def _bit_positions(model: TfliteModel, fault_map: FaultMap) -> list[tuple[int, int]]:
    """(byte offset in the file, bit within the byte) of every bit the map flips.

    Weights are little-endian words, so bit b of element i of a buffer at ``offset`` with ``itemsize``-byte
    elements is bit b % 8 of byte ``offset + i * itemsize + b // 8``; a burst covers bits b .. b + burst - 1.
    """
    buffers = {w.name: w for w in model.weight_buffers()}
    pairs: list[tuple[int, int]] = []
    for t in np.unique(fault_map.tensor):
        name = fault_map.tensors[int(t)]
        if name not in buffers:
            raise TargetError(f"the fault map hits '{name}', which is not a weight buffer of the deployed model.")
        buffer = buffers[name]
        itemsize = np.dtype(buffer.dtype).itemsize
        rows = fault_map.tensor == t
        index, low = fault_map.index[rows].astype(np.int64), fault_map.bit[rows].astype(np.int64)
        if len(index) and (index.min() < 0 or index.max() >= buffer.count
                           or low.max() + fault_map.burst > 8 * itemsize):
            raise TargetError(f"the fault map reaches outside tensor '{name}' ({buffer.count} elements of "
                              f"{8 * itemsize} bits).")
        bits = (low[:, None] + np.arange(fault_map.burst)).ravel()
        words = np.repeat(index, fault_map.burst)
        pairs += zip((buffer.offset + words * itemsize + bits // 8).tolist(), (bits % 8).tolist(), strict=True)
    return pairs

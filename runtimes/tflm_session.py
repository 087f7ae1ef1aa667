"""TensorFlow Lite Micro's Python interpreter: the microcontroller kernels, run on the host.

TFLite Micro allocates every tensor from one arena and its Python interpreter cannot report the
minimum; :func:`minimum_arena_bytes` finds it by bisection. Numbers measured on a 64-bit host are upper
bounds for a 32-bit microcontroller (pointers are twice as large here).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import re
import sys
from collections.abc import Iterator

import numpy as np

from edge.errors import EngineError
from edge.feeds import dequantize, engine_message, fixed_batch, input_note, output_note, run_batched, to_input
from runtimes.litert_session import check_feeds, tflite_format


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise EngineError("running TFLite Micro needs the tflite-micro package (pinned in pyproject.toml).") from None
    return runtime


#: Where the arena search stops when no microcontroller RAM is named: 8 MiB, more SRAM than Cortex-M parts carry
#: (the search's ceiling used to be 16x the file size, which a small model with large activations exceeds).
DEFAULT_ARENA_CAP = 8 * 2**20
#: Smaller arenas crash TFLite Micro's allocator (segmentation fault below about 500 bytes) instead of failing.
MIN_ARENA_BYTES = 1024


class TFLMSession:
    """One TFLite Micro interpreter; runs any number of trials in chunks of the file's batch (1 for most files).

    Without ``arena_bytes`` the arena is an upper bound read from the file (every activation tensor
    held at once, plus bookkeeping), as a host check needs no tight arena; :func:`minimum_arena_bytes`
    finds the smallest. Inputs are converted as :mod:`edge.feeds` says (int8 data for an int8 input fed as is,
    float data quantized once with the input's scale and zero point) and int8 outputs are returned dequantized;
    :attr:`notes` says what was done.
    """

    def __init__(self, data: bytes, *, arena_bytes: int | None = None) -> None:
        runtime = _runtime()
        if arena_bytes is not None and arena_bytes < MIN_ARENA_BYTES:
            raise EngineError(f"an arena of {arena_bytes} bytes is too small for TFLite Micro's own bookkeeping "
                              f"(at least {MIN_ARENA_BYTES} bytes).")
        self.arena_bytes = arena_bytes or upper_bound_arena_bytes(data)
        try:
            self._interpreter = runtime.Interpreter.from_bytes(bytes(data), arena_size=self.arena_bytes)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(engine_message("TFLite Micro refused the model", exc)) from None
        input_names, output_names = _io_names(data)
        self.input_formats = {name: tflite_format(self._interpreter.get_input_details(i), name)
                              for i, name in enumerate(input_names)}
        self.output_formats = [tflite_format(self._interpreter.get_output_details(i), name)
                               for i, name in enumerate(output_names)]
        self.notes: dict[str, str] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run every trial of the single input in ``feeds`` (any name) and return the first output."""
        (x,) = feeds.values()
        name = next(iter(self.input_formats))
        return [self.run_named({name: x})[self.output_formats[0].name]]

    def run_named(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Set every input by name, run, and return every output by name (int8 dequantized), a batch at a time."""
        check_feeds(feeds, self.input_formats)
        arrays = {}
        for name, fmt in self.input_formats.items():
            arrays[name] = to_input(feeds[name], fmt)
            self.notes[name] = input_note(np.asarray(feeds[name]).dtype, fmt)
        counts = {len(x) for x in arrays.values()}
        if len(counts) != 1:
            raise EngineError(f"every feed needs the same number of trials; got {sorted(counts)}.")
        outputs = run_batched(self._invoke, arrays, fixed_batch(self.input_formats.values()))
        results = {}
        for fmt, y in zip(self.output_formats, outputs, strict=True):
            self.notes[fmt.name] = output_note(fmt)
            results[fmt.name] = dequantize(y, fmt)
        return results

    def _invoke(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One invoke on arrays already in the inputs' types and of the file's batch."""
        try:
            for index, x in enumerate(arrays.values()):
                self._interpreter.set_input(x, index)
            self._interpreter.invoke()
        except (RuntimeError, ValueError) as exc:
            given = ", ".join(f"'{name}' {x.dtype.name} {tuple(x.shape)}" for name, x in arrays.items())
            raise EngineError(engine_message(f"TFLite Micro could not run the model on {given}", exc)) from None
        return [np.array(self._interpreter.get_output(i)) for i in range(len(self.output_formats))]


def _io_names(data: bytes) -> tuple[list[str], list[str]]:
    """Input and output tensor names of the main subgraph, in order: TFLite Micro's details leave them out."""
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAs(bytes(data), 0).Subgraphs(0)

    def name(index: int) -> str:
        return (graph.Tensors(index).Name() or b"").decode()

    return ([name(graph.Inputs(i)) for i in range(graph.InputsLength())],
            [name(graph.Outputs(i)) for i in range(graph.OutputsLength())])


def arena_fits(data: bytes, size: int, trial: np.ndarray | None = None) -> bool:
    """Whether the model allocates (and runs ``trial``) in a ``size``-byte arena, tried in a forked child.

    Some too-small arenas make TFLite Micro's allocator crash the process (a segmentation fault, seen at
    1.9 KB for a 3 KB model) instead of failing, so each probe runs where a crash costs nothing.
    """
    if size < MIN_ARENA_BYTES:
        return False
    if not hasattr(os, "fork"):
        return _fits(data, size, trial)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: report by exit status only, skip every Python-level cleanup
        code = 1
        try:
            faulthandler.disable()  # a crash here is an answer, not something to report
            code = 0 if _fits(data, size, trial) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _fits(data: bytes, size: int, trial: np.ndarray | None) -> bool:
    try:
        with _quiet_stderr():  # TFLite Micro prints every failed allocation to stderr
            session = TFLMSession(data, arena_bytes=size)
            if trial is not None:
                session.run({"x": trial[None]})
        return True
    except EngineError:
        return False


def minimum_arena_bytes(data: bytes, trial: np.ndarray | None, *, upper: int | None = None) -> int:
    """Smallest arena (to 16 bytes) in which the model allocates and runs one trial (probes isolated by fork).

    The search goes up to ``upper`` (the RAM of the microcontroller, when one is named) or else to
    :data:`DEFAULT_ARENA_CAP`; a model that does not run there is one error naming the size tried.
    """
    cap = upper or DEFAULT_ARENA_CAP
    high = min(cap, max(upper_bound_arena_bytes(data), MIN_ARENA_BYTES))
    if not arena_fits(data, high, trial):
        if high >= cap or not arena_fits(data, cap, trial):
            from runtimes.tflite_support import tflm_refusal

            reason = tflm_refusal(data, cap)
            if reason is not None and not is_arena_shortage(reason):  # a missing kernel, say: no arena helps
                raise EngineError(f"TFLite Micro cannot run the model: {reason}.")
            raise EngineError(arena_message(cap, upper is not None))
        high = cap
    if arena_fits(data, MIN_ARENA_BYTES, trial):
        return MIN_ARENA_BYTES
    low = MIN_ARENA_BYTES
    while high - low > 16:
        middle = (low + high) // 2
        low, high = (low, middle) if arena_fits(data, middle, trial) else (middle, high)
    return high


def is_arena_shortage(reason: str) -> bool:
    """Whether TFLite Micro's complaint is about arena space (rather than, say, a missing kernel)."""
    return bool(re.search(r"Failed to (allocate|resize)|[Aa]rena", reason))


def arena_message(tried: int, is_ram: bool) -> str:
    """Why the arena search gave up: the largest size it tried, where that limit came from, and what to do."""
    limit = "the RAM given with ?ram=" if is_ram else "the largest the search tries when no ?ram= is given"
    return (f"the model does not run in a {tried / 1024:g} KiB tensor arena ({limit}); TFLite Micro cannot allocate "
            "its tensors there. If the board has more RAM, give it with mcu:tflm?ram=KB, or set the arena itself with "
            "mcu:tflm?arena=KB.")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (C++ code writes there directly, past sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def upper_bound_arena_bytes(data: bytes) -> int:
    """An arena that always suffices: every non-constant tensor at once, aligned, plus bookkeeping.

    The bookkeeping (node structures, per-op data, tensor records) grows with the graph: 64 KiB plus 384 bytes
    an operator and 64 a tensor (an unrolled 49-step GRU, 829 operators, needs about 330 KiB of it).
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    item = {schema.TensorType.FLOAT32: 4, schema.TensorType.INT32: 4, schema.TensorType.INT8: 1,
            schema.TensorType.INT16: 2, schema.TensorType.UINT8: 1, schema.TensorType.INT64: 8}
    total = 0
    for graph in model.subgraphs:
        total += 384 * len(graph.operators or []) + 64 * len(graph.tensors or [])
        for tensor in graph.tensors:
            buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
            if buffer is not None and buffer.data is not None and len(buffer.data):
                continue  # constant: stays in flash
            elements = int(np.prod([max(int(d), 1) for d in (tensor.shape if tensor.shape is not None else [])]))
            total += (elements * item.get(tensor.type, 8) + 15) // 16 * 16
    return total + 65536

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
from runtimes.litert_session import check_feeds, from_output_type, to_input_type


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
    """One TFLite Micro interpreter; runs a batch one trial at a time (microcontroller models take batch 1).

    Without ``arena_bytes`` the arena is an upper bound read from the file (every activation tensor
    held at once, plus bookkeeping), as a host check needs no tight arena; :func:`minimum_arena_bytes`
    finds the smallest. Float inputs given to an int8-input model are quantized with the input's scale
    and zero point, and int8 outputs are returned dequantized, so float data works on either file.
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
            raise EngineError(f"TFLite Micro refused the model: {str(exc).splitlines()[0]}") from None
        self._input = self._interpreter.get_input_details(0)
        self._output = self._interpreter.get_output_details(0)
        self._names = _io_names(data)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run every trial of the single input in ``feeds`` and stack the first output."""
        (x,) = feeds.values()
        outputs = []
        for trial in np.asarray(x):
            try:
                self._interpreter.set_input(to_input_type(trial[None], self._input), 0)
                self._interpreter.invoke()
            except (RuntimeError, ValueError) as exc:
                raise EngineError(f"TFLite Micro could not run the model: {str(exc).splitlines()[0]}") from None
            outputs.append(from_output_type(np.array(self._interpreter.get_output(0)), self._output))
        return [np.concatenate(outputs)]

    def run_named(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Set every input by name, run, and return every output by name (int8 dequantized), one trial at a time."""
        input_names, output_names = self._names
        inputs = {name: self._interpreter.get_input_details(i) for i, name in enumerate(input_names)}
        check_feeds(feeds, inputs)
        batch = {len(np.asarray(x)) for x in feeds.values()}
        if len(batch) != 1:
            raise EngineError(f"every feed needs the same batch size; got {sorted(batch)}.")
        outputs = [self._interpreter.get_output_details(i) for i in range(len(output_names))]
        results: dict[str, list[np.ndarray]] = {name: [] for name in output_names}
        for trial in range(batch.pop()):
            try:
                for index, (name, details) in enumerate(inputs.items()):
                    x = np.asarray(feeds[name])[trial : trial + 1]
                    self._interpreter.set_input(to_input_type(x, details), index)
                self._interpreter.invoke()
            except (RuntimeError, ValueError) as exc:
                raise EngineError(f"TFLite Micro could not run the model: {str(exc).splitlines()[0]}") from None
            for index, (name, details) in enumerate(zip(output_names, outputs, strict=True)):
                results[name].append(from_output_type(np.array(self._interpreter.get_output(index)), details))
        return {name: np.concatenate(values) for name, values in results.items()}


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
    """An arena that always suffices: every non-constant tensor at once, aligned, plus 64 KiB of bookkeeping."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    item = {schema.TensorType.FLOAT32: 4, schema.TensorType.INT32: 4, schema.TensorType.INT8: 1,
            schema.TensorType.INT16: 2, schema.TensorType.UINT8: 1, schema.TensorType.INT64: 8}
    total = 0
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
            if buffer is not None and buffer.data is not None and len(buffer.data):
                continue  # constant: stays in flash
            elements = int(np.prod([max(int(d), 1) for d in (tensor.shape if tensor.shape is not None else [])]))
            total += (elements * item.get(tensor.type, 8) + 15) // 16 * 16
    return total + 65536

"""TensorFlow Lite Micro's Python interpreter: the microcontroller kernels, run on the host.

TFLite Micro allocates every tensor from one arena and its Python interpreter cannot report the
minimum; :func:`minimum_arena_bytes` finds it by bisection. Numbers measured on a 64-bit host are upper
bounds for a 32-bit microcontroller (pointers are twice as large here).
"""

from __future__ import annotations

import numpy as np

from edge.errors import EngineError


def _runtime():  # noqa: ANN202
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise EngineError("running TFLite Micro needs the tflite-micro package (pinned in pyproject.toml).") from None
    return runtime


class TFLMSession:
    """One TFLite Micro interpreter; runs a batch one trial at a time (microcontroller models take batch 1)."""

    def __init__(self, data: bytes, *, arena_bytes: int | None = None) -> None:
        runtime = _runtime()
        try:
            self._interpreter = runtime.Interpreter.from_bytes(bytes(data), arena_size=arena_bytes)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"TFLite Micro refused the model: {str(exc).splitlines()[0]}") from None
        self._input = self._interpreter.get_input_details(0)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run every trial of the single input in ``feeds`` and stack the first output."""
        (x,) = feeds.values()
        outputs = []
        for trial in np.asarray(x):
            try:
                self._interpreter.set_input(np.ascontiguousarray(trial[None], dtype=self._input["dtype"]), 0)
                self._interpreter.invoke()
            except (RuntimeError, ValueError) as exc:
                raise EngineError(f"TFLite Micro could not run the model: {str(exc).splitlines()[0]}") from None
            outputs.append(np.array(self._interpreter.get_output(0)))
        return [np.concatenate(outputs)]


def minimum_arena_bytes(data: bytes, trial: np.ndarray, *, upper: int | None = None) -> int:
    """Smallest arena (to 16 bytes) in which the model allocates and runs one trial."""

    def fits(size: int) -> bool:
        try:
            TFLMSession(data, arena_bytes=size).run({"x": trial[None]})
            return True
        except EngineError:
            return False

    high = upper or 16 * len(data) + 65536
    if not fits(high):
        raise EngineError(f"the model does not run even with a {high}-byte arena.")
    low = 0
    while high - low > 16:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high

"""LiteRT (TFLite) interpreter behind the Session interface, for checking exported .tflite files."""

from __future__ import annotations

import numpy as np

from edge.errors import EngineError

# BUILTIN_WITHOUT_DEFAULT_DELEGATES: LiteRT's optimised builtin kernels without XNNPACK, which can
# differ by a few quantization steps (DESIGN.md). BUILTIN_REF: the reference kernels TFLite Micro matches.
RESOLVERS = ("builtin", "reference", "xnnpack")


class LiteRTSession:
    """Runs a TFLite flatbuffer one batch at a time with the chosen kernel set."""

    def __init__(self, data: bytes, *, kernels: str = "builtin", threads: int | None = None) -> None:
        try:
            from ai_edge_litert import interpreter as litert
        except ImportError:
            raise EngineError("running TFLite files needs LiteRT: pip install ai-edge-litert.") from None
        if kernels not in RESOLVERS:
            raise EngineError(f"kernels must be one of {', '.join(RESOLVERS)}; got '{kernels}'.")
        resolver = {
            "builtin": litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            "reference": litert.OpResolverType.BUILTIN_REF,
            "xnnpack": litert.OpResolverType.AUTO,
        }[kernels]
        try:
            self._interpreter = litert.Interpreter(model_content=data, experimental_op_resolver_type=resolver,
                                                   num_threads=threads)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"LiteRT refused the model: {str(exc).splitlines()[0]}") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._shape: tuple[int, ...] | None = None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the single input in ``feeds`` (any name) and return the first output."""
        (x,) = feeds.values()
        x = to_input_type(x, self._input)
        try:
            if x.shape != self._shape:
                self._interpreter.resize_tensor_input(self._input["index"], x.shape)
                self._interpreter.allocate_tensors()
                self._shape = x.shape
            self._interpreter.set_tensor(self._input["index"], x)
            self._interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"LiteRT could not run the model: {str(exc).splitlines()[0]}") from None
        return [from_output_type(self._interpreter.get_tensor(self._output["index"]).copy(), self._output)]


def _quantization(details: dict) -> tuple[float, int]:
    params = details.get("quantization_parameters") or {}
    scales, zero_points = params.get("scales", []), params.get("zero_points", [])
    if len(scales):
        return float(scales[0]), int(zero_points[0])
    scale, zero_point = details.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


def to_input_type(x: np.ndarray, details: dict) -> np.ndarray:
    """``x`` as the input tensor's type: float data for an int8 input is quantized with its scale and zero point."""
    dtype = np.dtype(details["dtype"])
    x = np.asarray(x)
    if dtype == np.int8 and x.dtype != np.int8:
        scale, zero_point = _quantization(details)
        if scale == 0:
            raise EngineError("the model's int8 input has no quantization parameters to convert float data with.")
        x = np.clip(np.round(x / scale) + zero_point, -128, 127)
    return np.ascontiguousarray(x, dtype=dtype)


def from_output_type(y: np.ndarray, details: dict) -> np.ndarray:
    """An int8 output dequantized to float32 with its scale and zero point; others unchanged."""
    if y.dtype != np.int8:
        return y
    scale, zero_point = _quantization(details)
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32) if scale else y

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
        self._shapes: dict[str, tuple[int, ...]] | None = None  # per input, for run_named

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

    def run_named(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Set every input by name (any batch), run once, and return every output by name (int8 dequantized)."""
        inputs = {d["name"]: d for d in self._interpreter.get_input_details()}
        check_feeds(feeds, inputs)
        arrays = {name: to_input_type(feeds[name], details) for name, details in inputs.items()}
        try:
            shapes = {name: x.shape for name, x in arrays.items()}
            if shapes != self._shapes:
                for name, x in arrays.items():
                    self._interpreter.resize_tensor_input(inputs[name]["index"], x.shape)
                self._interpreter.allocate_tensors()
                self._shapes = shapes
            for name, x in arrays.items():
                self._interpreter.set_tensor(inputs[name]["index"], x)
            self._interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"LiteRT could not run the model: {str(exc).splitlines()[0]}") from None
        return {d["name"]: from_output_type(self._interpreter.get_tensor(d["index"]).copy(), d)
                for d in self._interpreter.get_output_details()}


def check_feeds(feeds: dict[str, np.ndarray], inputs: dict[str, dict]) -> None:
    """Refuse feeds that miss an input of the model or name one it does not have."""
    missing = [name for name in inputs if name not in feeds]
    unknown = [name for name in feeds if name not in inputs]
    if missing or unknown:
        problem = f"no feed for input '{missing[0]}'" if missing else f"no input named '{unknown[0]}'"
        raise EngineError(f"the model has {problem}; its inputs are {', '.join(inputs)}.")


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

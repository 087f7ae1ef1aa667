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
        x = np.ascontiguousarray(x, dtype=self._input["dtype"])
        try:
            if x.shape != self._shape:
                self._interpreter.resize_tensor_input(self._input["index"], x.shape)
                self._interpreter.allocate_tensors()
                self._shape = x.shape
            self._interpreter.set_tensor(self._input["index"], x)
            self._interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"LiteRT could not run the model: {str(exc).splitlines()[0]}") from None
        return [self._interpreter.get_tensor(self._output["index"]).copy()]

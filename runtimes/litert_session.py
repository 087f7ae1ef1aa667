"""LiteRT (TFLite) interpreter behind the Session interface, for checking exported .tflite files."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.errors import EngineError
from edge.feeds import (
    TensorFormat,
    dequantize,
    engine_message,
    fixed_batch,
    input_note,
    output_note,
    per_tensor,
    run_batched,
    to_input,
)

# BUILTIN_WITHOUT_DEFAULT_DELEGATES: LiteRT's optimised builtin kernels without XNNPACK, which can
# differ by a few quantization steps (DESIGN.md). BUILTIN_REF: the reference kernels TFLite Micro matches.
RESOLVERS = ("builtin", "reference", "xnnpack")


class LiteRTSession:
    """Runs a TFLite flatbuffer with the chosen kernel set, for any number of trials.

    Inputs are converted as :mod:`edge.feeds` says (int8 data for an int8 input fed as is, float data quantized
    once with the input's scale and zero point), int8/uint8/int16 outputs come back dequantized, and :attr:`notes`
    says what was done. A batch dimension the file declares resizable (shape signature -1) is resized to the
    trials given; a fixed one runs the trials in chunks of that batch.
    """

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
            raise EngineError(engine_message("LiteRT refused the model", exc)) from None
        self._inputs = {d["name"]: d for d in self._interpreter.get_input_details()}
        self._outputs = self._interpreter.get_output_details()
        self.input_formats = {name: tflite_format(d) for name, d in self._inputs.items()}
        self.output_formats = {d["name"]: tflite_format(d) for d in self._outputs}
        self.notes: dict[str, str] = {}
        self._shapes: dict[str, tuple[int, ...]] | None = None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the single input in ``feeds`` (any name) and return the first output."""
        (x,) = feeds.values()
        name = next(iter(self._inputs))
        return [self.run_named({name: x})[self._outputs[0]["name"]]]

    def run_named(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Set every input by name (any batch), run, and return every output by name (integer outputs dequantized)."""
        check_feeds(feeds, self._inputs)
        arrays = {}
        for name, fmt in self.input_formats.items():
            arrays[name] = to_input(feeds[name], fmt)
            self.notes[name] = input_note(np.asarray(feeds[name]).dtype, fmt)
        outputs = run_batched(self._invoke, arrays, fixed_batch(self.input_formats.values()))
        results = {}
        for details, y in zip(self._outputs, outputs, strict=True):
            fmt = self.output_formats[details["name"]]
            self.notes[fmt.name] = output_note(fmt)
            results[fmt.name] = dequantize(y, fmt)
        return results

    def _invoke(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One invoke on arrays already in the inputs' types, resizing resizable inputs when the shapes change."""
        try:
            shapes = {name: x.shape for name, x in arrays.items()}
            if shapes != self._shapes:
                for name, x in arrays.items():
                    if self.input_formats[name].batch is None:  # a fixed batch arrives in chunks of its size
                        self._interpreter.resize_tensor_input(self._inputs[name]["index"], x.shape, strict=True)
                self._interpreter.allocate_tensors()
                self._shapes = shapes
            for name, x in arrays.items():
                self._interpreter.set_tensor(self._inputs[name]["index"], x)
            self._interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            given = ", ".join(f"'{name}' {x.dtype.name} {tuple(x.shape)}" for name, x in arrays.items())
            raise EngineError(engine_message(f"LiteRT could not run the model on {given}", exc)) from None
        return [self._interpreter.get_tensor(d["index"]).copy() for d in self._outputs]


def tflite_format(details: dict[str, Any], name: str | None = None) -> TensorFormat:
    """An input's or output's format from LiteRT or TFLite Micro tensor details.

    The batch is resizable (None) only where the file's shape signature says -1; TFLite Micro's details carry no
    signature, and it cannot resize anyway, so there the batch is the shape's first dimension.
    """
    name = name or details.get("name") or "input"
    dtype = np.dtype(details["dtype"])
    params = details.get("quantization_parameters") or {}
    scales, zero_points = params.get("scales", []), params.get("zero_points", [])
    if not len(scales):
        legacy_scale, legacy_zero = details.get("quantization", (0.0, 0))
        scales, zero_points = [legacy_scale], [legacy_zero]
    scale, zero_point = per_tensor(scales, zero_points, f"tensor '{name}'")
    shape = [int(d) for d in details.get("shape", [])]
    signature = [int(d) for d in details.get("shape_signature", shape)]
    batch = None if not shape or (signature and signature[0] < 0) else shape[0]
    return TensorFormat(name, dtype, scale, zero_point, batch, "half-away")


def check_feeds(feeds: dict[str, np.ndarray], inputs: dict[str, dict]) -> None:
    """Refuse feeds that miss an input of the model or name one it does not have."""
    missing = [name for name in inputs if name not in feeds]
    unknown = [name for name in feeds if name not in inputs]
    if missing or unknown:
        problem = f"no feed for input '{missing[0]}'" if missing else f"no input named '{unknown[0]}'"
        raise EngineError(f"the model has {problem}; its inputs are {', '.join(inputs)}.")


def to_input_type(x: np.ndarray, details: dict) -> np.ndarray:
    """``x`` as the input tensor takes it (edge.feeds rules: same dtype as is, float quantized once, else refused)."""
    return to_input(x, tflite_format(details))


def from_output_type(y: np.ndarray, details: dict) -> np.ndarray:
    """An int8/uint8/int16 output dequantized to float32 with its scale and zero point; others unchanged."""
    return dequantize(y, tflite_format(details))

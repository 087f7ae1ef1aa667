"""A recipe: the ordered passes a conversion applies, from a TOML file or the equivalent CLI flags.

    [[pass]]
    name = "quantize-int8"
    per_channel = true
    calibrate = "minmax"
    exclude = ["/sub_band/Conv"]

    [export]
    formats = ["tflite", "c"]   # besides the ONNX output
    tflite_io = "float32"       # or "int8"

Passes run in file order; each gets the calibration trials and returns a child artifact whose
provenance records the pass and its parameters. Registered: prune-channels, prune-magnitude,
prune-nm and clip-ftclipact / clip-proact (fault tolerance; these need float weights, so they come
first), quantize-int8 (int8 or int16 activations),
quantize-dynamic-int8, quantize-int4-weights and quantize-mixed (per-layer precision under a budget).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from converters.clip import ClipActivations, ClipActivationsProAct
from converters.mixed_precision import QuantizeMixed
from converters.prune_channels import PruneChannels
from converters.quantize import QuantizeDynamicInt8, QuantizeInt4Weights, QuantizeInt8
from converters.sparsify import PruneMagnitude, PruneNM
from edge.artifact import Artifact
from edge.errors import PassError

# Pruning works on float weights, so prune/sparsify passes come before quantize-int8 in a recipe.
PASSES: dict[str, type] = {
    "clip-ftclipact": ClipActivations,
    "clip-proact": ClipActivationsProAct,
    "prune-channels": PruneChannels,
    "prune-magnitude": PruneMagnitude,
    "prune-nm": PruneNM,
    "quantize-int8": QuantizeInt8,
    "quantize-dynamic-int8": QuantizeDynamicInt8,
    "quantize-int4-weights": QuantizeInt4Weights,
    "quantize-mixed": QuantizeMixed,
}
QUANTIZE_MODES = {"int8": "quantize-int8", "int16": "quantize-int8", "dynamic-int8": "quantize-dynamic-int8",
                  "int4-weights": "quantize-int4-weights", "mixed": "quantize-mixed"}
EXPORT_FORMATS = ("tflite", "c")


def build_pass(name: str, params: dict[str, Any]) -> Any:
    """Instantiate a registered pass, naming the parameter that is wrong if any."""
    if name not in PASSES:
        raise PassError(f"unknown pass '{name}'; known passes: {', '.join(sorted(PASSES))}.")
    cls = PASSES[name]
    allowed = {f.name for f in fields(cls)} - {"name"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise PassError(f"pass '{name}' has no parameter '{unknown[0]}'; it takes {', '.join(sorted(allowed))}.")
    return cls(**params)


def load_recipe(path: str | Path) -> list[Any]:
    """Read a recipe TOML file into a list of passes."""
    path = Path(path)
    doc = _read_toml(path)
    steps = doc.get("pass", [])
    if not isinstance(steps, list) or not steps:
        raise PassError(f"recipe file '{path}' has no [[pass]] tables.")
    passes = []
    for step in steps:
        params = dict(step)
        name = params.pop("name", None)
        if not name:
            raise PassError(f"a [[pass]] in '{path}' has no name.")
        passes.append(build_pass(name, params))
    return passes


def load_exports(path: str | Path) -> tuple[tuple[str, ...], str]:
    """The ``[export]`` table of a recipe file: extra formats and the TFLite I/O type."""
    doc = _read_toml(Path(path))
    table = doc.get("export", {})
    formats = table.get("formats", [])
    io = table.get("tflite_io", "float32")
    if not isinstance(formats, list) or not all(f in EXPORT_FORMATS for f in formats):
        raise PassError(f"[export] formats in '{path}' must be a list drawn from {', '.join(EXPORT_FORMATS)}; got {formats!r}.")
    if io not in ("float32", "int8"):
        raise PassError(f"[export] tflite_io in '{path}' must be 'float32' or 'int8'; got {io!r}.")
    return tuple(formats), io


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PassError(f"recipe file '{path}' does not exist.")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PassError(f"recipe file '{path}' is not valid TOML ({exc}).") from None


def recipe_from_flags(quantize: str | None, exclude: tuple[str, ...] = (), calibrate: str = "minmax",
                      per_channel: bool = True, *, prune_channels: float | None = None,
                      prune_nodes: tuple[str, ...] = (), sparsity: float | None = None,
                      sparsity_scope: str = "layer", nm: str | None = None, max_drop: float = 0.5,
                      eval_data: str | None = None, block_size: int = 32) -> list[Any]:
    """The recipe the CLI flags describe: pruning first (float weights), then quantization."""
    passes: list[Any] = []
    if prune_channels is not None:
        passes.append(build_pass("prune-channels", {"ratio": prune_channels, "nodes": list(prune_nodes)}))
    if sparsity is not None:
        passes.append(build_pass("prune-magnitude", {"sparsity": sparsity, "scope": sparsity_scope}))
    if nm is not None:
        n, _, m = nm.partition(":")
        if not (n.isdigit() and m.isdigit()):
            raise PassError(f"--nm must look like 2:4 (keep N of every M weights); got '{nm}'.")
        passes.append(build_pass("prune-nm", {"n": int(n), "m": int(m)}))
    if quantize:
        if quantize not in QUANTIZE_MODES:
            raise PassError(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}; got '{quantize}'.")
        name = QUANTIZE_MODES[quantize]
        if name == "quantize-int8":
            params = {"exclude": list(exclude), "calibrate": calibrate, "per_channel": per_channel,
                      "activations": "int16" if quantize == "int16" else "int8"}
        elif name == "quantize-mixed":
            params = {"max_drop": max_drop, "calibrate": calibrate, "per_channel": per_channel, "eval_data": eval_data}
        elif name == "quantize-dynamic-int8":
            params = {"exclude": list(exclude)}
        else:
            params = {"block_size": block_size, "exclude": list(exclude)}
        passes.append(build_pass(name, params))
    return passes


def run_recipe(
    artifact: Artifact,
    passes: list[Any],
    calibration: np.ndarray | None,
    after_each: Callable[[Any, Artifact, Artifact], None] | None = None,
) -> Artifact:
    """Apply passes in order; ``after_each(pass, parent, child)`` checks each step (e.g. drift)."""
    current = artifact
    for step in passes:
        child = step(current, calibration)
        if after_each is not None:
            after_each(step, current, child)
        current = child
    return current

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
For language models: drop-modules (LLM-Drop), prune-heads, prune-ffn (structure), prune-llm (magnitude, Wanda,
SparseGPT; unstructured or N:M), sparsify-activations (TEAL, CHESS, WINA) and restrict-ranges (fault tolerance);
their calibration is token windows of text.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from converters.clip import ClipActivations, ClipActivationsProAct
from converters.llm_activation_sparsity import SparsifyActivations
from converters.llm_prune import PruneLLM
from converters.llm_range_restriction import RestrictRanges
from converters.llm_structure import DropModules, PruneFFN, PruneHeads
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
    # language models (token-window calibration)
    "drop-modules": DropModules,
    "prune-heads": PruneHeads,
    "prune-ffn": PruneFFN,
    "prune-llm": PruneLLM,
    "sparsify-activations": SparsifyActivations,
    "restrict-ranges": RestrictRanges,
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
                      eval_data: str | None = None, block_size: int = 32,
                      accuracy_level: int | None = None, integer_exact: bool = True) -> list[Any]:
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
                      "activations": "int16" if quantize == "int16" else "int8", "integer_exact": integer_exact}
        elif name == "quantize-mixed":
            params = {"max_drop": max_drop, "calibrate": calibrate, "per_channel": per_channel, "eval_data": eval_data,
                      "integer_exact": integer_exact}
        elif name == "quantize-dynamic-int8":
            params = {"exclude": list(exclude)}
        else:
            params = {"block_size": block_size, "exclude": list(exclude), "accuracy_level": accuracy_level}
        passes.append(build_pass(name, params))
    return passes


def llm_recipe_from_flags(quantize: str | None, *, method: str = "magnitude", sparsity: float | None = None,
                          nm: str | None = None, act_sparsity: float | None = None, act_method: str = "teal",
                          drop: str | None = None, prune_ffn: float | None = None, prune_heads: float | None = None,
                          restrict_ranges: bool = False, block_size: int = 32, accuracy_level: int | None = 4,
                          exclude: tuple[str, ...] = ()) -> list[Any]:
    """The recipe for a language model: structure first (drop, heads, FFN), then weight and activation sparsity,
    range restriction, and quantization last (int4 weights or dynamic int8)."""
    passes: list[Any] = []
    if drop:
        passes.append(build_pass("drop-modules", _drop_params(drop)))
    if prune_heads is not None:
        passes.append(build_pass("prune-heads", {"ratio": prune_heads}))
    if prune_ffn is not None:
        passes.append(build_pass("prune-ffn", {"ratio": prune_ffn}))
    if sparsity is not None or nm is not None:
        if nm is not None and not re.fullmatch(r"\d+:\d+", nm):
            raise PassError(f"--nm must look like 2:4 (keep N of every M weights); got '{nm}'.")
        params: dict[str, Any] = {"method": method, "nm": nm}
        if sparsity is not None:
            params["sparsity"] = sparsity
        passes.append(build_pass("prune-llm", params))
    if act_sparsity is not None:
        passes.append(build_pass("sparsify-activations", {"method": act_method, "sparsity": act_sparsity}))
    if restrict_ranges:
        passes.append(build_pass("restrict-ranges", {}))
    if quantize:
        if quantize == "int4-weights":
            passes.append(build_pass("quantize-int4-weights", {"block_size": block_size, "exclude": list(exclude),
                                                               "accuracy_level": accuracy_level}))
        elif quantize == "dynamic-int8":
            passes.append(build_pass("quantize-dynamic-int8", {"exclude": list(exclude)}))
        else:
            raise PassError(f"language models take --quantize int4-weights or dynamic-int8; got '{quantize}'.")
    return passes


def _drop_params(spec: str) -> dict[str, Any]:
    """``attn:2`` -> drop the 2 most redundant attention modules; ``attn.3,mlp.1`` -> drop those."""
    kind, sep, count = spec.partition(":")
    if sep:
        if kind not in ("attn", "mlp", "all") or not count.isdigit() or int(count) < 1:
            raise PassError(f"--drop must look like attn:2, mlp:1 or all:3, or list modules like attn.3,mlp.1; "
                            f"got '{spec}'.")
        return {"target": kind, "count": int(count)}
    modules = [m.strip() for m in spec.split(",") if m.strip()]
    if not modules or not all(re.fullmatch(r"(attn|mlp)\.\d+", m) for m in modules):
        raise PassError(f"--drop must look like attn:2, mlp:1 or all:3, or list modules like attn.3,mlp.1; got '{spec}'.")
    return {"modules": modules}


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

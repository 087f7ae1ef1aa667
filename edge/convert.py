"""Conversion as a library call: read a model, run a recipe of passes, check drift, write atomically.

>>> from edge.convert import convert
>>> child, drifts = convert("model.onnx", "int8.onnx", passes, calibration="synthetic-ssvep:subjects=1-2")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from converters.recipe import run_recipe
from edge.artifact import Artifact, write_artifact
from edge.data.registry import load_dataset
from edge.errors import ModelWriteError, PassError
from edge.evaluate import Drift, drift
from edge.models import resolve_model


def convert(
    model: str | Path,
    output: str | Path,
    passes: list[Any],
    *,
    calibration: str | None = None,
    on_pass: Callable[[str, Drift], None] | None = None,
) -> tuple[Artifact, list[tuple[str, Drift]]]:
    """Apply ``passes`` to ``model`` and write the result to ``output``; returns it and each pass's drift."""
    source_path, artifact = resolve_model(model)
    output = Path(output)
    if source_path is not None and output.exists() and output.resolve() == source_path.resolve():
        raise ModelWriteError("the output path is the input model; choose another -o so the original is kept.",
                              where=str(output))
    if not passes:
        raise PassError("the recipe is empty: give --quantize int8 or --recipe FILE.")
    spec = calibration or artifact.meta.extra.get("calibration_data")
    if not spec:
        raise PassError("quantization needs calibration data: pass --calib DATASPEC.")
    trials = load_dataset(spec, artifact.meta).x
    drifts: list[tuple[str, Drift]] = []

    def check(step: Any, parent: Artifact, child: Artifact) -> None:
        result = drift(parent, child, trials[: getattr(step, "calibration_trials", 256)])
        drifts.append((step.name, result))
        if on_pass is not None:
            on_pass(step.name, result)

    child = run_recipe(artifact, passes, trials, after_each=check)
    for record in child.meta.provenance[len(artifact.meta.provenance):]:
        record.params["calibration_data"] = spec
    write_artifact(child, output, inputs=(source_path,) if source_path else ())
    return child, drifts

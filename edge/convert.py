"""Conversion as a library call: read a model, run a recipe of passes, check drift, write atomically.

>>> from edge.convert import convert
>>> child, drifts = convert("model.onnx", "int8.onnx", passes, calibration="synthetic-ssvep:subjects=1-2")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from converters.recipe import run_recipe
from edge.artifact import Artifact, write_artifact, write_bytes_atomic
from edge.data.registry import load_dataset
from edge.errors import ModelWriteError, PassError
from edge.evaluate import Drift, compare_outputs, drift, predict
from edge.models import resolve_model


def convert(
    model: str | Path,
    output: str | Path,
    passes: list[Any],
    *,
    calibration: str | None = None,
    on_pass: Callable[[str, Drift], None] | None = None,
    exports: tuple[str, ...] = (),
    tflite_io: str = "float32",
) -> tuple[Artifact, list[tuple[str, Drift]]]:
    """Apply ``passes`` to ``model`` and write the result to ``output``; returns it and each step's drift.

    ``exports`` adds ``tflite`` (OUTPUT with .tflite, checked in LiteRT against the ONNX result) and
    ``c`` (a .h/.c pair holding the TFLite bytes for firmware builds).
    """
    source_path, artifact = resolve_model(model)
    output = Path(output)
    if source_path is not None and output.exists() and output.resolve() == source_path.resolve():
        raise ModelWriteError("the output path is the input model; choose another -o so the original is kept.",
                              where=str(output))
    if not passes:
        raise PassError("the recipe is empty: give --quantize int8, a pruning flag or --recipe FILE.")
    spec = calibration or artifact.meta.extra.get("calibration_data")
    if not spec:
        raise PassError("conversion needs calibration data (to quantize and to check each pass): pass --calib DATASPEC.")
    trials = load_dataset(spec, artifact.meta).x
    drifts: list[tuple[str, Drift]] = []

    def check(step: Any, parent: Artifact, child: Artifact) -> None:
        result = drift(parent, child, trials[: getattr(step, "calibration_trials", 256)])
        drifts.append((step.name, result))
        if on_pass is not None:
            on_pass(step.name, result)

    unknown = sorted(set(exports) - set(EXPORTS))
    if unknown:
        raise PassError(f"unknown export format '{unknown[0]}'; known: {', '.join(EXPORTS)}.")
    child = run_recipe(artifact, passes, trials, after_each=check)
    for record in child.meta.provenance[len(artifact.meta.provenance):]:
        record.params["calibration_data"] = spec
    write_artifact(child, output, inputs=(source_path,) if source_path else ())
    if exports:
        tflite_drift = _export_tflite(child, output, trials[:256], exports, tflite_io)
        if tflite_drift is not None:
            drifts.append(("tflite", tflite_drift))
            if on_pass is not None:
                on_pass("tflite", tflite_drift)
    return child, drifts


EXPORTS = ("tflite", "c")


def _export_tflite(child: Artifact, output: Path, trials: Any, exports: tuple[str, ...], io: str) -> Drift | None:
    """Write the TFLite file (and C array); with float I/O, measure it in LiteRT against the ONNX model."""
    import numpy as np

    from converters.c_array import write_c_array
    from converters.tflite import export_tflite
    from runtimes.litert_session import LiteRTSession

    data = export_tflite(child, io=io)
    tflite_path = output.with_suffix(".tflite")
    write_bytes_atomic(tflite_path, data)
    if "c" in exports:
        name = "".join(c if c.isalnum() else "_" for c in output.stem)
        write_c_array(data, output.parent, f"{name}_tflite" if name[:1].isalpha() else f"model_{name}")
    if io != "float32":
        return None  # int8 I/O takes quantized trials; the float check above does not apply
    session = LiteRTSession(data)
    tflite_out = np.concatenate([session.run({"x": t[None]})[0] for t in trials])
    onnx_out = predict(child, trials)
    return compare_outputs(onnx_out, tflite_out)

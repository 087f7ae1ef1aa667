"""Conversion as a library call: read a model, run a recipe of passes, check drift, write atomically.

>>> from edge.convert import convert
>>> child, drifts = convert("model.onnx", "int8.onnx", passes, calibration="synthetic-ssvep:subjects=1-2")
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.recipe import run_recipe
from edge.artifact import Artifact, write_artifact, write_bytes_atomic
from edge.data.labels import class_indices, model_classes
from edge.data.registry import load_dataset
from edge.data.text import load_token_windows
from edge.errors import EngineError, ModelWriteError, PassError
from edge.evaluate import Drift, compare_outputs, drift, predict
from edge.families.llm.export import is_llm
from edge.llm import language_model_drift
from edge.models import resolve_model

log = logging.getLogger("edge")


#: Passes that change the model's function on purpose; they meet a tolerance only when the user sets one.
FUNCTION_CHANGING = ("prune-magnitude", "prune-nm", "prune-channels", "clip-ftclipact", "clip-proact", "prune-llm",
                     "sparsify-activations", "drop-modules", "prune-ffn", "prune-heads", "restrict-ranges")
#: Top-1 agreement with the parent that quantization passes and exports must keep unless the user says otherwise.
DEFAULT_MIN_AGREEMENT = 0.90
EXPORTS = ("tflite", "c")
#: Trials each TFLite engine is checked on (TFLite Micro runs one trial at a time).
LITERT_CHECK_TRIALS, MICRO_CHECK_TRIALS = 256, 32
#: Calibration windows each language-model step is compared with its parent on.
LLM_CHECK_WINDOWS = 16


@dataclass
class Tolerance:
    """How far a step may move the outputs from its parent's; None leaves that measure unchecked."""

    min_agreement: float | None = None  # top-1 agreement, fraction
    min_sqnr_db: float | None = None

    def check(self, step: str, result: Drift) -> None:
        """Raise PassError naming the step and the measure when ``result`` is beyond the tolerance."""
        if self.min_agreement is not None and result.top1_agreement < self.min_agreement:
            raise PassError(f"after {step} the top-1 agreement with its parent is {100 * result.top1_agreement:.1f} % "
                            f"on {result.trials} calibration trials, below the tolerance of "
                            f"{100 * self.min_agreement:g} % (--min-agreement).")
        if self.min_sqnr_db is not None and result.sqnr_db < self.min_sqnr_db:
            raise PassError(f"after {step} the output SQNR against its parent is {result.sqnr_db:.1f} dB on "
                            f"{result.trials} calibration trials, below the tolerance of {self.min_sqnr_db:g} dB "
                            "(--min-sqnr).")


def step_tolerance(step: str, user: Tolerance | None) -> Tolerance:
    """The user's tolerance if given; else the default for quantization passes and exports, none for pruning."""
    if user is not None and (user.min_agreement is not None or user.min_sqnr_db is not None):
        return user
    return Tolerance() if step in FUNCTION_CHANGING else Tolerance(min_agreement=DEFAULT_MIN_AGREEMENT)


def convert(
    model: str | Path,
    output: str | Path,
    passes: list[Any],
    *,
    calibration: str | None = None,
    on_pass: Callable[[str, Drift], None] | None = None,
    exports: tuple[str, ...] = (),
    tflite_io: str = "float32",
    tolerance: Tolerance | None = None,
) -> tuple[Artifact, list[tuple[str, Drift]]]:
    """Apply ``passes`` to ``model`` and write the result to ``output``; returns it and each step's drift.

    Every pass is compared with its parent on the calibration trials (top-1 agreement, cosine, max abs
    error, SQNR) and must meet ``tolerance`` (default: quantization passes and exports keep 90 % top-1
    agreement; pruning is only held to a tolerance the user sets). ``exports`` adds ``tflite`` (OUTPUT
    with .tflite, run in LiteRT's builtin kernels and in TFLite Micro against the ONNX result) and ``c``
    (a .h/.c pair holding the TFLite bytes for firmware builds). Nothing is written unless every check
    passes.
    """
    source_path, artifact = resolve_model(model)
    output = Path(output)
    if source_path is not None and output.exists() and output.resolve() == source_path.resolve():
        raise ModelWriteError("the output path is the input model; choose another -o so the original is kept.",
                              where=str(output))
    if not output.parent.is_dir():  # found before the passes run, not after
        raise ModelWriteError(f"the folder '{output.parent}' does not exist.", where=str(output))
    if not passes:
        raise PassError("the recipe is empty: give --quantize int8, a pruning flag or --recipe FILE.")
    unknown = sorted(set(exports) - set(EXPORTS))
    if unknown:
        raise PassError(f"unknown export format '{unknown[0]}'; known: {', '.join(EXPORTS)}.")
    spec = calibration or artifact.meta.extra.get("calibration_data")
    if not spec:
        raise PassError("conversion needs calibration data (to quantize and to check each pass): pass --calib DATASPEC.")
    language_model = is_llm(artifact)
    if language_model:
        if exports:
            raise PassError("language models are exported as ONNX only (the KV-cache graph has no TFLite export yet).")
        trials = load_token_windows(spec, artifact.meta)
        dataset = None
    else:
        dataset = load_dataset(spec, artifact.meta)
        trials = dataset.x
    for step in passes:
        if hasattr(step, "search") and dataset is not None:  # the clip search scores accuracy: it needs labels
            step.calibration_labels = (None if dataset.y is None
                                       else class_indices(dataset.y, model_classes(artifact.meta), spec))
    drifts: list[tuple[str, Drift]] = []

    def record(name: str, result: Drift) -> None:
        drifts.append((name, result))
        if on_pass is not None:
            on_pass(name, result)
        step_tolerance(name.split(" ")[0], tolerance).check(name, result)

    def check(step: Any, parent: Artifact, child: Artifact) -> None:
        if language_model:  # next-token agreement and logit drift over every position of a few windows
            record(step.name, language_model_drift(parent, child, trials[:LLM_CHECK_WINDOWS]))
            return
        record(step.name, drift(parent, child, trials[: getattr(step, "calibration_trials", 256)]))

    child = run_recipe(artifact, passes, trials, after_each=check)
    for record_ in child.meta.provenance[len(artifact.meta.provenance):]:
        record_.params["calibration_data"] = spec
    tflite = None
    if exports:
        tflite = _export_tflite(child, trials, tflite_io, record)
    write_artifact(child, output, inputs=(source_path,) if source_path else ())
    if tflite is not None:
        write_tflite_exports(output, tflite, exports)
    return child, drifts


def write_tflite_exports(output: Path, tflite: bytes, exports: tuple[str, ...]) -> None:
    """OUTPUT with .tflite, and with ``c`` in ``exports`` a .h/.c pair of its bytes beside it."""
    write_bytes_atomic(output.with_suffix(".tflite"), tflite)
    if "c" in exports:
        from converters.c_array import write_c_array

        name = "".join(c if c.isalnum() else "_" for c in output.stem)
        write_c_array(tflite, output.parent, f"{name}_tflite" if name[:1].isalpha() else f"model_{name}")


def _export_tflite(child: Artifact, trials: np.ndarray, io: str, record: Callable[[str, Drift], None]) -> bytes:
    """The TFLite bytes, after running them in LiteRT (builtin kernels) and TFLite Micro against the ONNX model."""
    from converters.tflite import export_tflite
    from runtimes.litert_session import LiteRTSession
    from runtimes.tflm_session import TFLMSession

    data = export_tflite(child, io=io)
    onnx_out = predict(child, trials[:LITERT_CHECK_TRIALS])
    litert = LiteRTSession(data, kernels="builtin")
    litert_out = np.concatenate([litert.run({"x": t[None]})[0] for t in trials[:LITERT_CHECK_TRIALS]])
    record("tflite (LiteRT)", compare_outputs(onnx_out, litert_out))
    try:
        micro_out = TFLMSession(data).run({"x": trials[:MICRO_CHECK_TRIALS]})[0]
    except EngineError as exc:
        log.warning("the TFLite file was not checked in TFLite Micro: %s", exc)
        return data
    record("tflite (TFLite Micro)", compare_outputs(onnx_out[:MICRO_CHECK_TRIALS], micro_out))
    return data

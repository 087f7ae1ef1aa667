"""The demo: the reference SSVEP speller network, quantized to int8, both evaluated on held-out subjects."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from converters.recipe import recipe_from_flags
from edge.artifact import read_artifact
from edge.convert import convert
from edge.data.registry import load_dataset
from edge.evaluate import agreement, evaluate
from edge.report import format_table, new_run_folder, write_results
from edge.zoo import zoo_path

REFERENCE = "ssvep-guney-9ch-0.4s"


def run_demo(
    *,
    out_dir: str | Path = "runs",
    subjects: str = "31-35",
    runs: int = 200,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[str, Path]:
    """Run the whole flow and return the side-by-side table and the run folder."""
    step = progress or (lambda _fraction, _label: None)
    reference_path = zoo_path(REFERENCE)
    reference = read_artifact(reference_path)
    folder = new_run_folder(out_dir, "demo")

    step(0.02, "generating held-out data")
    spec = f"synthetic-ssvep:subjects={subjects},seed=0"
    dataset = load_dataset(spec, reference.meta)

    step(0.25, "quantizing to int8")
    passes = recipe_from_flags("int8", tuple(reference.meta.extra.get("keep_float", ())))
    int8_path = folder / "ssvep_int8.onnx"
    quantized, drifts = convert(reference_path, int8_path, passes)

    step(0.45, "evaluating fp32")
    fp32_results = evaluate(reference, dataset, latency_runs=runs, path=str(reference_path))
    step(0.70, "evaluating int8")
    int8_results = evaluate(quantized, dataset, latency_runs=runs, path=str(int8_path))
    int8_results["metrics"]["agreement_with_reference"] = agreement(reference, quantized, dataset.x)
    write_results(folder, fp32_results, "results_fp32.json")
    write_results(folder, int8_results, "results_int8.json")
    (folder / "drift.json").write_text(json.dumps({name: d.as_dict() for name, d in drifts}, indent=2) + "\n")
    step(1.0, "done")

    name, drift = drifts[-1]
    header = (
        f"{REFERENCE} on held-out synthetic subjects {subjects} ({len(dataset)} trials, "
        f"{reference.meta.preprocessing.window_s} s window)\n"
        f"{name} drift on calibration data: top-1 agreement {100 * drift.top1_agreement:.1f} %, "
        f"cosine {drift.cosine_similarity:.5f}\n"
    )
    return header + format_table({"fp32": fp32_results, "int8": int8_results}), folder

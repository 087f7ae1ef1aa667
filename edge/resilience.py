"""Resilience of a deployed model to bit flips in weight memory: accuracy (and ITR) against BER.

>>> from edge.resilience import run_resilience
>>> results, folder = run_resilience("int8.onnx", "synthetic-ssvep:subjects=31", bers=[1e-6, 1e-5], maps=100)

Each model is swept with the campaign engine of :mod:`edge.faults` on the same trials and the same
seeded fault maps; the curves, with 95 % intervals over maps, go to ``results.json`` and
``resilience.png`` in a fresh run folder.

A model is an ONNX file, a zoo name or a TFLite file, and ``--compare`` may mix them. An ONNX model on the
``cpu`` runs through onnxruntime's fast weight-fault engine; a TFLite file (or any model on another device,
such as ``mcu:tflm``) is deployed on the device and each map is injected into the weight buffers it stores,
run and restored. Each curve says which engine ran it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.data.labels import class_indices, model_classes
from edge.data.registry import load_dataset
from edge.errors import DataError, TargetError
from edge.families.ssvep.metrics import itr_bits_per_min


def parse_ber_range(text: str) -> list[float]:
    """``1e-7:1e-3`` -> one BER per decade (both ends included); ``1e-6,3e-6,1e-5`` -> that list."""
    try:
        if ":" in text:
            low, high = (float(v) for v in text.split(":"))
            if not 0 < low <= high < 1:
                raise ValueError
            decades = int(round(np.log10(high / low)))
            return [float(f"{low * 10**i:.3g}") for i in range(decades + 1)]
        values = [float(v) for v in text.split(",") if v.strip()]
        if not values or any(not 0 < v < 1 for v in values):
            raise ValueError
        return values
    except ValueError:
        raise DataError(f"--ber must look like 1e-7:1e-3 or 1e-6,1e-5 with rates between 0 and 1; got '{text}'.") \
            from None


def _itr(artifact: Any, accuracy: float) -> float | None:
    if artifact.meta.task.get("kind") != "ssvep-speller" or not artifact.meta.preprocessing.window_s:
        return None
    n_classes = int(np.prod([d for d in artifact.meta.outputs[0].shape[1:] if isinstance(d, int)]))
    return itr_bits_per_min(accuracy, n_classes, artifact.meta.preprocessing.window_s,
                            float(artifact.meta.task.get("gaze_shift_s", 0.5)))


def model_curve(artifact: Any, x: np.ndarray, y: np.ndarray, *, bers: list[float], maps: int, seed: int,
                fault: Any, workers: int, state_path: Path | None, engine: Any = None) -> dict[str, Any]:
    """One model's campaign summarised as a curve: clean accuracy, then accuracy (and ITR) per BER.

    ``engine`` (see :func:`edge.faults.run_campaign`) runs the maps on a device instead of onnxruntime.
    """
    from edge.faults import run_campaign

    result = run_campaign(artifact, x, y, bers=bers, maps=maps, seed=seed, fault=fault, workers=workers,
                          state_path=state_path, engine=engine)
    clean = result.clean()
    points = []
    for point in result.points():
        row = {"ber": point["ber"], "accuracy": point["accuracy"]["mean"], "ci95": point["accuracy"]["ci95"],
               "sdc_rate": point["sdc"]["rate"], "due_rate": point["due"]["rate"], "maps": point["maps"],
               "mean_faults": point["faults"]["mean"]}
        itr = _itr(artifact, row["accuracy"])
        if itr is not None:
            row["itr_bits_per_min"] = itr
        points.append(row)
    curve = {"clean_accuracy": clean["accuracy"], "clean_ci95": clean["ci95"], "points": points,
             "auc": result.auc(), "campaign": result.to_dict()}
    itr = _itr(artifact, clean["accuracy"])
    if itr is not None:
        curve["clean_itr_bits_per_min"] = itr
    return curve


def device_curve(model: Any, x: np.ndarray, y: np.ndarray, *, device: str, bers: list[float], maps: int, seed: int,
                 fault: Any, workers: int, state_path: Path | None) -> dict[str, Any]:
    """:func:`model_curve` of an ONNX or TFLite model on ``device``, with the engine that ran it named.

    An ONNX model on the plain ``cpu`` takes onnxruntime's fast weight-fault engine (and ``workers``); anything
    else is deployed on the device and every map is injected into its stored weights (one process).
    """
    from devices.base import TargetFaultEngine
    from edge.artifact import Artifact
    from edge.deploy import deploy

    if isinstance(model, Artifact) and device == "cpu":
        curve = model_curve(model, x, y, bers=bers, maps=maps, seed=seed, fault=fault, workers=workers,
                            state_path=state_path)
        return {**curve, "format": "onnx", "engine": "onnxruntime weight-fault engine"}
    if workers != 1:
        raise TargetError(f"a campaign on {device} (or on a TFLite file) injects its maps into one deployed model; "
                        "run it with --workers 1.")
    target, deployed, report = deploy(model, device)
    try:
        curve = model_curve(deployed, x, y, bers=bers, maps=maps, seed=seed, fault=fault, workers=1,
                            state_path=state_path, engine=TargetFaultEngine(target, fault))
        engine = target.info().get("engine") or report.get("engine") or device
    finally:
        target.close()
    return {**curve, "format": report.get("format"),
            "engine": f"{engine} on {device}, faults injected into the weight buffers it stores"}


def half_accuracy_ber(curve: dict[str, Any]) -> float | None:
    """The first swept BER at which the mean accuracy is at most half the clean accuracy."""
    for point in curve["points"]:
        if point["accuracy"] <= 0.5 * curve["clean_accuracy"]:
            return point["ber"]
    return None


def run_resilience(model: str, data_spec: str, *, bers: list[float], maps: int = 100, seed: int = 0,
                   compare: str | None = None, fault: Any = None, workers: int = 1,
                   out_dir: str | Path = "runs", device: str = "cpu") -> tuple[dict[str, Any], Path]:
    """Sweep ``model`` (and ``compare``) over ``bers`` on ``device``; returns the results and the run folder."""
    from edge.deploy import load_model
    from edge.faults import FaultModel
    from edge.report import new_run_folder, write_results

    fault = fault or FaultModel()
    names = [model] + ([compare] if compare else [])
    artifacts = {name: load_model(name)[1] for name in names}
    dataset = load_dataset(data_spec, artifacts[model].meta)
    if dataset.y is None:
        raise DataError("a resilience campaign needs labelled trials (accuracy under faults).", where=data_spec)
    y = class_indices(dataset.y, model_classes(artifacts[model].meta), data_spec)
    folder = new_run_folder(out_dir, "resilience")
    curves = {}
    for i, (name, artifact) in enumerate(artifacts.items()):
        curves[name] = device_curve(artifact, dataset.x, y, device=device, bers=bers, maps=maps, seed=seed,
                                    fault=fault, workers=workers, state_path=folder / f"campaign-{i}.jsonl")
    results = {"data": data_spec, "trials": len(dataset.y), "bers": bers, "maps": maps, "seed": seed,
               "device": device, "fault": fault.to_dict(), "models": curves}
    write_results(folder, results)
    plot_resilience(curves, folder / "resilience.png")
    return results, folder


def format_resilience(results: dict[str, Any]) -> str:
    """A text table: one row per BER, accuracy [95 % CI] (and ITR) per model."""
    models = list(results["models"])
    itr = all("clean_itr_bits_per_min" in results["models"][m] for m in models)
    header = f"{'BER':>8}" + "".join(f"  {Path(m).name[:28]:>28}" + (f" {'ITR':>6}" if itr else "") for m in models)
    lines = [header, "-" * len(header)]

    def cell(accuracy: float, ci: list[float] | None, itr_value: float | None) -> str:
        text = f"{100 * accuracy:5.1f} %" + (f" [{100 * ci[0]:4.1f}, {100 * ci[1]:4.1f}]" if ci else " " * 13)
        return f"  {text:>28}" + (f" {itr_value:6.1f}" if itr else "")

    row = f"{'clean':>8}"
    for m in models:
        curve = results["models"][m]
        row += cell(curve["clean_accuracy"], curve["clean_ci95"], curve.get("clean_itr_bits_per_min"))
    lines.append(row)
    for i, ber in enumerate(results["bers"]):
        row = f"{ber:>8.0e}"
        for m in models:
            point = results["models"][m]["points"][i]
            row += cell(point["accuracy"], point["ci95"], point.get("itr_bits_per_min"))
        lines.append(row)
    lines.append(f"{results['maps']} fault maps per BER on {results['trials']} trials; bit flips at the BER per "
                 f"stored bit of the weights and biases; 95 % t intervals over maps.")
    for m in models:
        if results["models"][m].get("engine"):
            lines.append(f"{Path(m).name} engine: {results['models'][m]['engine']}")
    for m in models:
        ber = half_accuracy_ber(results["models"][m])
        lines.append(f"{Path(m).name}: AUC {results['models'][m]['auc']:.3f}, accuracy halves at "
                     f"{'no swept BER' if ber is None else f'BER {ber:.0e}'}")
    return "\n".join(lines)


def plot_resilience(curves: dict[str, dict[str, Any]], path: Path) -> None:
    """Accuracy against BER (log axis) with the 95 % band of each model, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        bers = [p["ber"] for p in curve["points"]]
        mean = [100 * p["accuracy"] for p in curve["points"]]
        ax.plot(bers, mean, marker="o", label=f"{Path(name).name} (clean {100 * curve['clean_accuracy']:.1f} %)")
        ax.fill_between(bers, [100 * p["ci95"][0] for p in curve["points"]],
                        [100 * p["ci95"][1] for p in curve["points"]], alpha=0.2)
    ax.set(xscale="log", xlabel="bit error rate (per stored bit)", ylabel="accuracy (%)",
           title="accuracy under weight bit flips")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)

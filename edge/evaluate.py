"""On-device evaluation: task metrics with confidence intervals, fidelity, latency, size, memory.

>>> from edge.evaluate import evaluate
>>> results = evaluate(artifact, dataset, device="cpu")
>>> results["metrics"]["accuracy"]["value"]
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge import __version__
from edge.artifact import Artifact
from edge.data.labels import ONE_HOT_NOTE, class_indices, is_one_hot, model_classes
from edge.data.registry import Dataset
from edge.errors import DataError, EdgeError
from edge.families.ssvep.metrics import itr_bits_per_min, itr_per_group
from edge.metrics import (
    balanced_accuracy,
    bootstrap_mean_interval,
    cohen_kappa,
    confusion_matrix,
    mean_sd,
    wilson_interval,
)
from edge.tasks import NO_LABELS_NOTE, anomaly_metrics, regression_metrics, task_kind
from edge.tflite_model import TfliteModel

RESULTS_SCHEMA_VERSION = 1


@dataclass
class Drift:
    """How far a converted model's outputs moved from its parent's on the same trials."""

    top1_agreement: float
    cosine_similarity: float
    max_abs_error: float
    trials: int
    sqnr_db: float = math.inf  # signal-to-quantization-noise ratio of the child's outputs, in dB
    relative_l2: float = 0.0  # ||child - parent|| / ||parent|| over all outputs

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain JSON values (an infinite SQNR, for identical outputs, becomes null)."""
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}


def drift(parent: Artifact, child: Artifact, x: np.ndarray, device: str = "cpu") -> Drift:
    """Top-1 agreement, mean cosine similarity, max abs error and SQNR of child vs parent outputs."""
    return compare_outputs(predict(parent, x, device), predict(child, x, device))


def compare_outputs(a: np.ndarray, b: np.ndarray) -> Drift:
    """Top-1 agreement, mean cosine similarity, max abs error and SQNR of ``b`` against the reference ``a``.

    SQNR = 10 log10(sum a^2 / sum (a - b)^2) over all outputs (infinite when they are equal).
    """
    a2, b2 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    cosine = np.sum(a2 * b2, axis=1) / np.where(norms == 0, 1.0, norms)
    noise = float(np.sum((a2 - b2) ** 2))
    signal = float(np.sum(a2**2))
    return Drift(
        top1_agreement=float(np.mean(a2.argmax(1) == b2.argmax(1))),
        cosine_similarity=float(np.mean(cosine)),
        max_abs_error=float(np.max(np.abs(a2 - b2))),
        trials=len(a2),
        sqnr_db=math.inf if noise == 0 else float(10 * np.log10(max(signal, 1e-300) / noise)),
        relative_l2=0.0 if noise == 0 else float(math.sqrt(noise / max(signal, 1e-300))),
    )


def predict(model: Artifact | TfliteModel, x: np.ndarray, device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """The model's first output for every trial, run on ``device``."""
    from edge.deploy import deploy

    target, _, _ = deploy(model, device)
    try:
        return run_all(target, x, batch_size)
    finally:
        target.close()


def run_all(target: Any, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """A deployed target's first output for every trial, a batch at a time."""
    from devices.base import run_batches

    return run_batches(target, x, batch_size)


def environment() -> dict[str, Any]:
    """Versions and machine facts that results depend on."""
    import onnxruntime

    return {
        "edge": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


@dataclass
class FaultSweep:
    """A weight-fault campaign to run on the device after the clean evaluation (``edge eval --faults``)."""

    bers: list[float]
    maps: int = 20
    seed: int = 0
    fault: Any = None  # edge.faults.FaultModel; None = single bit flips anywhere in the weights


def evaluate(
    model: Artifact | TfliteModel,
    dataset: Dataset,
    *,
    device: str = "cpu",
    latency_runs: int = 200,
    warmup: int = 20,
    measure_memory: bool = True,
    path: str | None = None,
    progress: Callable[[str], None] | None = None,
    reference: tuple[str, np.ndarray] | None = None,
    faults: FaultSweep | None = None,
    state_dir: Any = None,
    task: str | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """Run ``dataset`` through ``model`` on ``device`` and collect every metric as one document.

    The task (class scores, regression, anomaly scores) is ``task`` when given, else the model's metadata, else
    read from the output shape and the labels (:func:`edge.tasks.task_kind`); the results say which and why.
    ``reference`` = (description, outputs of the host reference on ``dataset.x``) adds the fidelity block
    (top-1 agreement for class scores, cosine, relative L2 error, max error, SQNR). ``faults`` adds the
    resilience curve on the device, from the same seeded fault maps any other target storing the same tensors
    gets. ``notes`` are sentences the caller adds to the results' ``notes`` (what was not measured and why).
    """
    from edge.deploy import deploy, timed_batch

    if latency_runs < 1:
        raise DataError(f"latency_runs must be >= 1; got {latency_runs}.")
    step = progress or (lambda _msg: None)
    notes = list(notes or [])
    step(f"deploying on {device}")
    target, deployed, deploy_report = deploy(model, device)
    try:
        step("predicting")
        outputs = run_all(target, dataset.x)
        kind, decided_by = task_kind(tuple(outputs.shape[1:]), tuple(np.shape(dataset.x)[1:]), dataset.y,
                                     deployed.meta.task.get("kind"), task)
        metrics, task_notes = task_metrics(kind, outputs, dataset, deployed)
        notes += task_notes
        if reference is not None:
            name, expected = reference
            fidelity = {"reference": name, **compare_outputs(expected, outputs).as_dict()}
            if kind != "classification":
                fidelity["top1_agreement"] = None  # an argmax of regression values or reconstructions means nothing
            metrics["fidelity"] = fidelity
        step("timing")
        times_ms = target.latency(dataset.x[0], runs=latency_runs, warmup=warmup) * 1e3
        metrics["latency_ms"] = {
            "p50": float(np.percentile(times_ms, 50)),
            "p90": float(np.percentile(times_ms, 90)),
            "p99": float(np.percentile(times_ms, 99)),
            "mean": float(times_ms.mean()),
            "runs": len(times_ms),
            "warmup": warmup,
            "batch": timed_batch(deployed),  # a model with a fixed batch B runs one trial padded to B
            "source": getattr(target, "latency_source", "host wall clock"),
        }
        metrics["model_size_bytes"] = len(deployed.to_bytes())
        if measure_memory:
            step("measuring memory")
            memory = target.memory(dataset.x[0])
            metrics["memory"] = memory
            if "peak_rss_bytes" in memory:
                metrics["peak_memory_bytes"] = memory["peak_rss_bytes"]
        resilience = None
        if faults is not None:
            if dataset.y is None or kind != "classification":
                raise DataError("--faults measures accuracy under faults, so it needs class scores and labelled "
                                f"trials; this is a {kind} task{'' if dataset.y is not None else ' without labels'}.",
                                where=dataset.name)
            step("injecting faults")
            resilience = device_resilience(target, deployed, dataset, faults, state_dir)
        info = target.info()
    finally:
        target.close()
    results = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "artifact": {
            "path": path,
            "sha256": deployed.sha256,
            "format": deploy_report.get("format"),
            "family": deployed.meta.family,
            "provenance": [asdict(p) for p in deployed.meta.provenance],
        },
        "data": {"spec": dataset.name, "trials": len(dataset), "groups": len(np.unique(dataset.groups)),
                 **({"notes": list(dataset.notes)} if dataset.notes else {})},
        "device": {"spec": device, **info, "deploy": deploy_report},
        "task": {"kind": kind, "decided_by": decided_by},
        "metrics": metrics,
        "notes": notes,
    }
    if resilience is not None:
        results["resilience"] = resilience
    return results


def device_resilience(target: Any, model: Artifact | TfliteModel, dataset: Dataset, sweep: FaultSweep,
                      state_dir: Any = None) -> dict[str, Any]:
    """Accuracy against BER on a deployed target: ONNX on the cpu through the fast campaign engine, any other
    target by injecting each map into its weight memory, running every trial, and restoring."""
    from devices.base import TargetFaultEngine
    from devices.cpu import CpuTarget
    from edge.faults import FaultModel
    from edge.resilience import model_curve

    fault = sweep.fault or FaultModel()
    fast = isinstance(model, Artifact) and isinstance(target, CpuTarget)
    engine = None if fast else TargetFaultEngine(target, fault)
    state = Path(state_dir) / "campaign.jsonl" if state_dir is not None else None
    y = class_indices(dataset.y, model_classes(model.meta), dataset.name)
    curve = model_curve(model, dataset.x, y, bers=sweep.bers, maps=sweep.maps, seed=sweep.seed,
                        fault=fault, workers=1, state_path=state, engine=engine)
    curve["engine"] = "onnxruntime weight-fault engine" if fast else "faults injected into the device's weights"
    return curve


def task_metrics(kind: str, outputs: np.ndarray, dataset: Dataset,
                 artifact: Artifact | TfliteModel) -> tuple[dict[str, Any], list[str]]:
    """(metrics, notes) of the task ``kind``: class scores, regression values or anomaly scores."""
    if kind == "anomaly":
        return anomaly_metrics(outputs, dataset.x, dataset.y, dataset.name)
    if dataset.y is None:
        return {}, [NO_LABELS_NOTE]
    if kind == "regression":
        return regression_metrics(outputs, dataset.y, dataset.name), []
    notes = [ONE_HOT_NOTE] if is_one_hot(dataset.y) else []
    return classification_metrics(outputs, dataset, artifact), notes


def classification_metrics(outputs: np.ndarray, dataset: Dataset, artifact: Artifact) -> dict[str, Any]:
    """Accuracy with a Wilson interval, balanced accuracy, kappa, confusion, per-subject rows and, for spellers, ITR."""
    if dataset.y is None:
        raise DataError("the data have no labels, so accuracy cannot be computed.", where=dataset.name)
    scores = outputs.reshape(len(outputs), -1)
    n_classes = scores.shape[1]
    if n_classes < 2:
        raise DataError("the model gives one value per trial, which is not a set of class scores; pass --task "
                        "regression or --task anomaly.", where=dataset.name)
    y = class_indices(dataset.y, n_classes, dataset.name)
    window_s = artifact.meta.preprocessing.window_s
    speller = artifact.meta.task.get("kind") == "ssvep-speller" and bool(window_s)
    gaze = float(artifact.meta.task.get("gaze_shift_s", 0.5))
    groups = dataset.groups if len(dataset.groups) == len(y) else np.zeros(len(y), dtype=str)
    metrics = label_metrics(y, scores.argmax(axis=1), n_classes, groups,
                            itr_window_s=window_s if speller else None, gaze_shift_s=gaze)
    metrics["labels"] = artifact.meta.labels or [str(i) for i in range(n_classes)]
    return metrics


def label_metrics(
    y: np.ndarray,
    predicted: np.ndarray,
    n_classes: int,
    groups: np.ndarray,
    *,
    itr_window_s: float | None = None,
    gaze_shift_s: float = 0.5,
) -> dict[str, Any]:
    """Every metric of predicted vs true labels; groups are 'S<subject>/B<block>' or any per-trial tag."""
    correct = predicted == y
    confusion = confusion_matrix(y, predicted, n_classes)
    lo, hi = wilson_interval(int(correct.sum()), len(y))
    subjects = np.array([str(g).split("/")[0] for g in groups])
    per_subject = {
        s: {"accuracy": float(correct[subjects == s].mean()), "n": int(np.sum(subjects == s))}
        for s in dict.fromkeys(subjects.tolist())
    }
    metrics: dict[str, Any] = {
        "accuracy": {"value": float(correct.mean()), "ci95": [lo, hi], "n": len(y), "interval": "Wilson"},
        "balanced_accuracy": balanced_accuracy(confusion),
        "kappa": cohen_kappa(confusion),
        "chance": 1.0 / n_classes,
        "confusion_matrix": confusion.tolist(),
        "per_subject": per_subject,
    }
    if len(per_subject) > 1:
        mean, sd = mean_sd([row["accuracy"] for row in per_subject.values()])
        metrics["accuracy_over_subjects"] = {"mean": mean, "sd": sd, "subjects": len(per_subject)}
    if itr_window_s:
        per_group = itr_per_group(correct, groups, n_classes, itr_window_s, gaze_shift_s)
        lo, hi = bootstrap_mean_interval(per_group)
        metrics["itr_bits_per_min"] = {
            "value": float(per_group.mean()),
            "ci95": [lo, hi],
            "of_mean_accuracy": itr_bits_per_min(float(correct.mean()), n_classes, itr_window_s, gaze_shift_s),
            "convention": f"mean of per-(subject, block) ITRs; selection time = window {itr_window_s} s "
                          f"+ gaze shift {gaze_shift_s} s",
            "groups": len(per_group),
            "interval": "bootstrap over groups",
        }
        for s, row in per_subject.items():
            row["itr_bits_per_min"] = itr_bits_per_min(row["accuracy"], n_classes, itr_window_s, gaze_shift_s)
    return metrics


def run_evaluation(
    model: str,
    data_spec: str,
    *,
    device: str = "cpu",
    runs: int = 200,
    reference: str | None = None,
    out_dir: str = "runs",
    measure_memory: bool = True,
    baselines: tuple[str, ...] = (),
    faults: FaultSweep | None = None,
    progress: Callable[[str], None] | None = None,
    task: str | None = None,
) -> tuple[dict[str, Any], Any]:
    """Evaluate a model (ONNX file, zoo name or TFLite file) and classic baselines on a dataset spec.

    Fidelity is measured against the host reference (:func:`host_reference`): ``reference`` when given, else
    for a TFLite file the ONNX file beside it whose sha256 its provenance records, else the model itself on the
    host CPU when the device runs another engine; otherwise the results say it was not measured. Returns
    (results, run folder); the folder holds results.json (baselines under "baselines") and plots.
    """
    from edge.data.registry import load_dataset
    from edge.deploy import load_model, reference_data
    from edge.report import new_run_folder, write_results

    path, loaded = load_model(model)
    dataset = load_dataset(data_spec, loaded.meta)
    if baselines:
        from edge.families.ssvep.baselines import make_baseline

        for name in baselines:  # fail on a misspelt name before any work
            if name.lower() not in ("cca", "fbcca", "etrca"):
                make_baseline(name)
    host, notes = host_reference(path, loaded, reference, device)
    reference_outputs = None
    unavailable = None
    if host is not None:
        name, host_model = host
        unavailable = litert_unavailable(host_model) if host_model is loaded else None
        if unavailable is None:
            reference_outputs = (name, predict(host_model, reference_data(dataset.x, loaded, host_model), "cpu"))
    folder = new_run_folder(out_dir, "eval")
    results = evaluate(loaded, dataset, device=device, latency_runs=runs, measure_memory=measure_memory,
                       path=str(path) if path else model, reference=reference_outputs, faults=faults,
                       state_dir=folder, progress=progress, task=task, notes=notes)
    if unavailable is not None:
        # no silent fidelity: the document says there is no host check and why
        results["metrics"]["fidelity_unavailable"] = unavailable
    if baselines:
        speller = loaded.meta.task.get("kind") == "ssvep-speller"
        n_classes = int(np.prod([d for d in loaded.meta.outputs[0].shape[1:] if isinstance(d, int)]))
        results["baselines"] = {
            name.lower(): evaluate_baseline(
                name, dataset, n_classes=n_classes,
                window_s=loaded.meta.preprocessing.window_s if speller else None,
                gaze_shift_s=float(loaded.meta.task.get("gaze_shift_s", 0.5)),
                latency_runs=min(runs, 50),
            )
            for name in baselines
        }
    write_results(folder, results)
    if "resilience" in results:
        from edge.resilience import plot_resilience

        plot_resilience({f"{Path(model).name} on {device.replace('/', '_')}": results["resilience"]},
                        folder / "resilience.png")
    return results, folder


def host_reference(path: Any, model: Artifact | TfliteModel, reference: str | None,
                   device: str) -> tuple[tuple[str, Artifact | TfliteModel] | None, list[str]]:
    """What the device's outputs are compared with, ((description, model to run on the host CPU) or None, notes).

    Only a model the user named with ``reference``, or the parent the file's own provenance names (its sha256)
    found beside it, is a reference; a same-named sibling whose sha256 differs is never used. Off the host CPU,
    the model itself on the host engine is compared with the device's engine. On the host CPU with neither,
    fidelity is not measured: the model against itself on the same engine would be 100 % by construction.
    """
    from edge.deploy import load_model

    if reference is not None:
        ref_path, ref_model = load_model(reference)
        return (f"{Path(str(ref_path or reference)).name} on the host CPU (--reference)", ref_model), []
    notes: list[str] = []
    if isinstance(model, TfliteModel) and path is not None:
        found, note = provenance_parent(Path(path), model)
        if note:
            notes.append(note)
        if found is not None:
            return found, notes
    if device.split("?")[0] == "cpu":
        notes.append("fidelity not measured: no reference model (name one with --reference; the model against "
                     "itself on the host CPU would agree 100 % by construction)")
        return None, notes
    engine = "LiteRT" if isinstance(model, TfliteModel) else "onnxruntime"
    return (f"the same model in {engine} on the host CPU", model), notes


def provenance_parent(path: Path, model: TfliteModel) -> tuple[tuple[str, Artifact] | None, str | None]:
    """(reference, note): the ONNX file beside a TFLite file, used only when its sha256 is the one the TFLite
    file's provenance records as what it was exported from."""
    from edge.deploy import load_model

    sibling = path.with_suffix(".onnx")
    if not sibling.is_file() or sibling == path:
        return None, None
    records = model.meta.provenance
    expected = records[-1].parent_sha256 if records and records[-1].name == "export-tflite" else None
    if expected is None:
        return None, (f"{sibling.name} beside it was not used as the fidelity reference: the TFLite file does not "
                      "record the sha256 of the ONNX model it was exported from (name it with --reference)")
    actual = hashlib.sha256(sibling.read_bytes()).hexdigest()
    if actual != expected:
        return None, (f"{sibling.name} beside it was not used as the fidelity reference: its sha256 {actual[:12]} "
                      f"is not the {expected[:12]} the TFLite file was exported from")
    try:
        return (f"{sibling.name} (ONNX it was exported from, sha256 verified) on the host CPU",
                load_model(sibling)[1]), None
    except EdgeError as exc:
        return None, f"{sibling.name} beside it was not used as the fidelity reference: {exc}"


def litert_unavailable(model: Artifact | TfliteModel) -> str | None:
    """Why a TFLite file cannot be its own host reference (LiteRT refuses to load it), or None."""
    if not isinstance(model, TfliteModel):
        return None
    from runtimes.tflite_support import litert_refusal

    reason = litert_refusal(model.data)
    if reason is None:
        return None
    return (f"no host reference: LiteRT cannot load the file ({reason}), so the device's outputs are not checked "
            "against the host; give --reference MODEL (e.g. the ONNX model it came from) to check them.")


def agreement(reference: Artifact, candidate: Artifact, x: np.ndarray, device: str = "cpu") -> float:
    """Fraction of trials on which both models predict the same class."""
    a = predict(reference, x, device).reshape(len(x), -1).argmax(1)
    b = predict(candidate, x, device).reshape(len(x), -1).argmax(1)
    return float(np.mean(a == b))


def baseline_predictions(name: str, raw: np.ndarray, y: np.ndarray, groups: np.ndarray,
                         stim_freqs: list[float], sample_rate: float) -> np.ndarray:
    """Predictions of a classic SSVEP method; eTRCA is trained leave-one-block-out within each subject."""
    from edge.data.splits import per_subject
    from edge.families.ssvep.baselines import make_baseline

    key = name.lower()
    if key != "etrca":
        kwargs = {"stim_freqs": stim_freqs, "sample_rate": sample_rate}
        if key == "cca":
            kwargs["harmonics"] = 2
        return make_baseline(key, **kwargs).fit().predict(raw)
    subjects = np.array([str(g).split("/")[0] for g in groups])
    blocks = np.array([str(g).split("/")[-1] for g in groups])
    predicted = np.empty(len(y), dtype=np.int64)
    for _, train, test in per_subject(subjects, blocks=blocks):
        model = make_baseline("etrca", sample_rate=sample_rate).fit(raw[train], y[train])
        predicted[test] = model.predict(raw[test])
    return predicted


def evaluate_baseline(name: str, dataset: Dataset, *, n_classes: int, window_s: float | None = None,
                      gaze_shift_s: float = 0.5, latency_runs: int = 50) -> dict[str, Any]:
    """Task metrics and single-trial latency of a classic method on the dataset's raw windows."""
    import time

    if dataset.raw is None or not dataset.stim_freqs or dataset.y is None:
        raise DataError("baselines need SSVEP trials with stimulus frequencies (synthetic-ssvep, a Benchmark "
                        "folder or an SSVEPExo folder), not plain arrays.", where=dataset.name)
    sample_rate = float(dataset.sample_rate or 250.0)
    predicted = baseline_predictions(name, dataset.raw, dataset.y, dataset.groups, dataset.stim_freqs, sample_rate)
    metrics = label_metrics(dataset.y, predicted, n_classes, dataset.groups, itr_window_s=window_s,
                            gaze_shift_s=gaze_shift_s)
    if name.lower() in ("cca", "fbcca"):
        from edge.families.ssvep.baselines import make_baseline

        kwargs = {"harmonics": 2} if name.lower() == "cca" else {}
        model = make_baseline(name.lower(), stim_freqs=dataset.stim_freqs, sample_rate=sample_rate, **kwargs).fit()
        times = []
        for i in range(latency_runs):
            start = time.perf_counter()
            model.predict(dataset.raw[i % len(dataset.raw)][None])
            times.append((time.perf_counter() - start) * 1e3)
        metrics["latency_ms"] = {"p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90)),
                                 "p99": float(np.percentile(times, 99)), "mean": float(np.mean(times)),
                                 "runs": latency_runs, "warmup": 0, "batch": 1, "engine": "numpy/scipy"}
    return {"schema_version": RESULTS_SCHEMA_VERSION, "method": name.lower(), "environment": environment(),
            "data": {"spec": dataset.name, "trials": len(dataset)}, "metrics": metrics}


def window_sweep(spec: str, methods: list[str], windows: list[float], *, latency_s: float = 0.14,
                 gaze_shift_s: float = 0.5, channels: list[str] | None = None) -> dict[str, Any]:
    """Accuracy and ITR of classic methods at each window length on whole-trial SSVEP data."""
    from edge.data.registry import load_epochs

    epochs = load_epochs(spec, channels)
    if not epochs.stim_freqs:
        raise DataError("a window sweep needs stimulus frequencies.", where=spec)
    groups = np.array([f"S{s}/B{b + 1}" for s, b in zip(epochs.subject, epochs.block, strict=True)])
    n_classes = len(epochs.classes)
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    for window_s in windows:
        raw = epochs.window(latency_s, window_s)
        for method in methods:
            predicted = baseline_predictions(method, raw, epochs.y, groups, epochs.stim_freqs, epochs.sample_rate)
            m = label_metrics(epochs.y, predicted, n_classes, groups, itr_window_s=window_s, gaze_shift_s=gaze_shift_s)
            rows[method].append({"window_s": window_s, "accuracy": m["accuracy"]["value"],
                                 "itr_bits_per_min": m["itr_bits_per_min"]["value"],
                                 "itr_of_mean_accuracy": m["itr_bits_per_min"]["of_mean_accuracy"]})
    return {"schema_version": RESULTS_SCHEMA_VERSION, "environment": environment(),
            "data": {"spec": spec, "trials": len(epochs), "classes": n_classes},
            "itr_convention": f"mean of per-(subject, block) ITRs; selection time = window + {gaze_shift_s} s",
            "latency_s": latency_s, "methods": rows}

"""Spiking networks end to end: import NIR, evaluate on a target (accuracy, spike rates, SynOps, energy estimate,
latency per time step), and report.

A spiking artifact is the stateful step graph (see :mod:`edge.families.snn.lower`); the host loop carries the
state, so the same file runs on ``cpu`` (ONNX Runtime, or LiteRT for .tflite), ``gpu``, ``mcu:tflm`` and
``npu:...`` (both through its TFLite export, batch 1). A plain NIR file from snnTorch, Norse, Sinabs, Rockpool
or Spyx works wherever an artifact does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import Artifact
from edge.data.labels import ONE_HOT_NOTE, class_indices, is_one_hot
from edge.errors import DataError, EngineError
from edge.families.snn.export import export_snn, is_snn
from edge.families.snn.runner import run_sequence, scores, spike_rates, synaptic_operations
from edge.metrics import wilson_interval
from edge.tflite_model import TfliteModel

SNN_DEVICES = ("cpu", "gpu", "mcu", "npu")
#: time steps a NIR file (which has none) is given until the data say otherwise
DEFAULT_TIME_STEPS = 100


def import_nir_file(path: str | Path, *, dt: float | None = None, time_steps: int = DEFAULT_TIME_STEPS,
                    labels: list[str] | None = None) -> Artifact:
    """The artifact of a NIR file, discretised with ``dt`` or else the file's own (``task.dt_source`` says which)."""
    from converters.nir_import import read_nir

    graph = read_nir(path, dt=dt)
    artifact = export_snn(graph, time_steps=time_steps, labels=labels,
                          params={"file": Path(path).name, "dt": graph.dt, "dt_source": graph.dt_source,
                                  "file_dt": graph.file_dt, "notes": graph.notes})
    artifact.meta.task.update(dt_source=graph.dt_source, file_dt=graph.file_dt)
    return artifact


def dt_description(task: dict[str, Any]) -> str:
    """'0.008 s (the file's metadata)': the time step a spiking network runs at and where it came from."""
    dt = task.get("dt")
    text = "unknown" if dt is None else f"{dt:g} s"
    return f"{text} ({task['dt_source']})" if task.get("dt_source") else text


def silence_warnings(rates: dict[str, dict[str, float]], outputs_vary: bool, task: dict[str, Any]) -> tuple[
        list[str], str | None]:
    """(one warning per spiking layer that never fired, the reason the predictions are meaningless or None).

    A layer silent over the whole data, or an output that is the same for every sample, is what a time step
    that does not suit the network looks like; the warning names dt and where it came from.
    """
    dt = dt_description(task)
    silent = [name for name, r in rates.items() if r["spikes_per_sample"] == 0]
    warnings = [f"layer '{name}' emitted no spike over the whole data (dt {dt})" for name in silent]
    # fewer than one spike per sample in a whole layer carries next to nothing: the same symptom, nearly
    warnings += [f"layer '{name}' is nearly silent: {r['spikes_per_sample']:.2g} spikes per sample over "
                 f"{r['neurons']} neurons (dt {dt})" for name, r in rates.items() if 0 < r["spikes_per_sample"] < 1]
    if rates and len(silent) == len(rates):
        return warnings, (f"no spiking layer fired on any sample at dt {dt}, so the predictions do not depend on "
                          "the input and the accuracy is meaningless")
    if not outputs_vary:
        return warnings, (f"the output is the same for every sample at dt {dt}, so the predictions do not depend "
                          "on the input and the accuracy is meaningless")
    return warnings, None


def load_spiking_model(model: str | Path, dt: float | None = None) -> tuple[Path | None, Artifact | TfliteModel]:
    """(path, model) of a spiking artifact, its TFLite export, a zoo name or a plain NIR file (run at ``dt`` when
    given, else the file's own; a converted network keeps the dt it was converted with)."""
    from edge.deploy import load_model

    text = str(model)
    if text.lower().endswith(".nir"):
        return Path(text), import_nir_file(text, dt=dt)
    if dt is not None:
        raise DataError("--dt applies to NIR files; a converted spiking network keeps the dt it was converted with "
                        "(convert the NIR file again with --dt).", where=text)
    path, loaded = load_model(model)
    if not is_snn(loaded):
        raise DataError("this model is not a spiking network (a NIR file, or an ONNX/TFLite step graph of family "
                        "snn written by the toolkit).", where=text)
    return path, loaded


def is_spiking_model(model: str | Path) -> bool:
    """True when MODEL names a spiking network (NIR file, or our snn ONNX/TFLite)."""
    text = str(model)
    if text.lower().endswith(".nir"):
        return True
    try:
        from edge.deploy import load_model

        return is_snn(load_model(model)[1])
    except Exception:  # noqa: BLE001 - whatever cannot be read is not a spiking network; the caller reports it
        return False


def open_target(model: Artifact | TfliteModel, device: str) -> tuple[Any, int]:
    """(deployed target, batch size per call): ONNX on cpu/gpu, a float-I/O TFLite export on mcu/npu."""
    from edge.deploy import deploy

    name = device.split(":")[0].split("?")[0]
    if name not in SNN_DEVICES:
        raise EngineError(f"spiking networks run on the {', '.join(SNN_DEVICES)} targets (the host carries the state "
                          f"between steps); '{device}' is not one of them.")
    if name in ("mcu", "npu") and isinstance(model, Artifact):
        from converters.tflite import export_tflite

        model = TfliteModel.from_bytes(export_tflite(model, io="float32"), where=f"step graph (exported for {device})")
    target, _, _ = deploy(model, device)
    return target, (64 if name in ("cpu", "gpu") and isinstance(model, Artifact) else 1)


def step_latency(target: Any, meta: Any, runs: int, device: str) -> dict[str, Any]:
    """Seconds per time step at batch 1: timed on the host, or Vela's estimate for an NPU."""
    if device.startswith("npu"):
        info = target.info()
        seconds = info.get("latency_s")
        return {"median_us": None if seconds is None else seconds * 1e6,
                "source": f"{target.latency_source}; {info.get('npu_operators')} operators on the NPU, "
                          f"{info.get('cpu_operators')} on the CPU and not in the estimate"}
    from devices.base import time_calls

    shape = next(s.shape for s in meta.inputs if s.name == "x")[1:]
    feeds = {"x": np.zeros((1, *shape), np.float32)}
    feeds.update({s["input"]: np.zeros((1, *s["shape"]), np.float32) for s in meta.task["state"]})
    times = time_calls(lambda: target.run_named(feeds), runs, max(5, runs // 10))
    return {"median_us": float(np.median(times) * 1e6), "p95_us": float(np.percentile(times, 95) * 1e6),
            "runs": runs, "source": getattr(target, "latency_source", "host wall clock")}


def evaluate_spiking_model(model: str | Path, data_spec: str, *, device: str = "cpu", runs: int = 200,
                           limit: int | None = None, progress: Callable[[str], None] | None = None,
                           dt: float | None = None) -> dict[str, Any]:
    """Accuracy (95 % CI), spike rate per layer, synaptic operations, dense MACs, energy estimate and latency per
    time step of a spiking network on ``device`` (a NIR file at ``dt`` when given, else at its own)."""
    from edge.data.spiking import describe, load_spike_dataset
    from edge.evaluate import environment

    say = progress or (lambda _msg: None)
    path, loaded = load_spiking_model(model, dt)
    meta = loaded.meta
    dataset = load_spike_dataset(data_spec, meta)
    if limit:
        dataset.x, dataset.y = dataset.x[:limit], None if dataset.y is None else dataset.y[:limit]
    target, batch = open_target(loaded, device)
    try:
        say(f"{len(dataset)} samples x {dataset.x.shape[1]} steps on {device}")
        recording = run_sequence(target.run_named, meta, dataset.x, batch=batch)
        say("latency per step")
        latency = step_latency(target, meta, runs, device)
        engine = target.info().get("engine", "")
    finally:
        target.close()
    readout = scores(recording)
    predicted = readout.argmax(axis=1)
    rates = spike_rates(recording)
    warnings, meaningless = silence_warnings(rates, bool(len(readout) < 2 or np.ptp(readout, axis=0).max() > 0),
                                             meta.task)
    metrics: dict[str, Any] = {"spike_rates": rates, "operations": synaptic_operations(recording, meta),
                               "latency_per_step": latency}
    # Said, as for other models without a reference, so that no figure reads as checked against a parent.
    notes = ["fidelity not measured: edge eval does not compare a spiking network with a reference (edge convert "
             "checks each step spike for spike)"]
    if dataset.y is not None:
        y = class_indices(dataset.y, readout.shape[1], dataset.name)
        correct = int((predicted == y).sum())
        low, high = wilson_interval(correct, len(y))
        metrics["accuracy"] = {"value": correct / len(y), "ci95": [low, high], "n": len(y)}
        if meaningless:
            metrics["accuracy"]["meaningless"] = meaningless
        if is_one_hot(dataset.y):
            notes.append(ONE_HOT_NOTE)
    else:
        notes.append("task metrics skipped: the data have no labels (y)")
    if meta.task.get("file_dt") is not None and not np.isclose(meta.task["file_dt"], meta.task.get("dt", 0)):
        notes.append(f"dt {meta.task['dt']:g} s differs from the NIR file's own {meta.task['file_dt']:g} s")
    state_bytes = 4 * sum(int(np.prod(s["shape"])) for s in meta.task["state"])
    return {
        "kind": "spiking-network", "model": str(path or model), "sha256": loaded.sha256,
        "device": {"spec": device, "engine": engine},
        "data": describe(dataset),
        "warnings": warnings,
        "meaningless": meaningless,
        "notes": notes,
        "model_info": {"time_steps": int(dataset.x.shape[1]), "dt": meta.task.get("dt"),
                       "dt_source": meta.task.get("dt_source"), "file_dt": meta.task.get("file_dt"),
                       "neurons": meta.task.get("neurons"), "parameters": meta.task.get("parameters"),
                       "state_bytes": state_bytes, "model_bytes": len(loaded.to_bytes()),
                       "precision": meta.task.get("precision"), "passes": [p.name for p in meta.provenance]},
        "predictions": predicted.tolist(),
        "metrics": metrics,
        "environment": environment(),
    }


def format_spiking_results(results: dict[str, Any]) -> str:
    """A readable summary of :func:`evaluate_spiking_model` results."""
    m, info, data = results["metrics"], results["model_info"], results["data"]
    ops = m["operations"]
    lines = [(f"{Path(results['model']).name} on {results['device']['spec']} — {data['samples']} samples x "
             f"{data['time_steps']} steps ({data['spec']}), input rate {100 * data['input_rate']:.2f} %")]
    for warning in results.get("warnings", []):
        lines.append(f"  WARNING: {warning}")
    if "accuracy" in m and results.get("meaningless"):
        lines.append(f"  accuracy          MEANINGLESS: {results['meaningless']} (it would read "
                     f"{100 * m['accuracy']['value']:.1f} %, n={m['accuracy']['n']})")
    elif "accuracy" in m:
        acc = m["accuracy"]
        lines.append(f"  accuracy          {100 * acc['value']:.1f} %  (95 % CI {100 * acc['ci95'][0]:.1f}-"
                     f"{100 * acc['ci95'][1]:.1f}, n={acc['n']})")
    lines.append("  spike rate        " + ", ".join(
        f"{name} {100 * r['rate']:.2f} % ({r['spikes_per_sample']:.0f}/sample, {r['neurons']} neurons)"
        for name, r in m["spike_rates"].items()))
    lines.append(f"  SynOps            {ops['synops_per_sample']:,.0f} per sample ({ops['effective_acs']:,.0f} ACs from "
                 f"spikes, {ops['effective_macs']:,.0f} MACs from real-valued inputs)")
    lines.append(f"  dense equivalent  {ops['dense_macs']:,.0f} MACs per sample "
                 f"(SynOps {100 * ops['synops_per_sample'] / max(ops['dense_macs'], 1):.1f} % of dense)")
    energy = ops["energy"]
    lines.append(f"  energy (estimate) {energy['snn_nj']:,.1f} nJ per sample vs {energy['dense_ann_nj']:,.1f} nJ for the "
                 f"dense network ({energy['source']})")
    lat = m["latency_per_step"]
    if lat.get("median_us") is not None:
        extra = f", p95 {lat['p95_us']:.1f} µs" if "p95_us" in lat else ""
        lines.append(f"  latency per step  {lat['median_us']:.1f} µs{extra} ({lat['source']})")
    lines.append(f"  model             {info['neurons']} neurons, {info['parameters']:,} parameters, state "
                 f"{info['state_bytes']:,} B, file {info['model_bytes']:,} B, dt "
                 f"{dt_description({'dt': info['dt'], 'dt_source': info.get('dt_source')})}")
    lines += [f"  note: {note}" for note in results.get("notes", [])]
    return "\n".join(lines)


def spiking_resilience(model: str | Path, data_spec: str, *, bers: list[float], maps: int, seed: int = 0,
                       fault: Any = None, limit: int = 256,
                       progress: Callable[[str], None] | None = None, dt: float | None = None) -> dict[str, Any]:
    """Accuracy and spike rate of an ONNX spiking network under faults in weights and thresholds, per BER
    (the first ``limit`` labelled samples of the data, every map on the same samples)."""
    from edge.data.spiking import load_spike_dataset
    from edge.families.snn.resilience import spike_fault_curve

    path, loaded = load_spiking_model(model, dt)
    if not isinstance(loaded, Artifact):
        raise EngineError("fault sweeps of spiking networks run on the ONNX step graph; give the .onnx file.")
    dataset = load_spike_dataset(data_spec, loaded.meta)
    if dataset.y is None:
        raise DataError("a fault sweep needs labelled data.", where=data_spec)
    labels = class_indices(dataset.y, None, data_spec)
    curve = spike_fault_curve(loaded.model, dataset.x[:limit], labels[:limit], bers=bers, maps=maps, seed=seed,
                              fault=fault, progress=progress)
    return {"kind": "spiking-resilience", "model": str(path or model), "data": data_spec, **curve}


def format_spiking_resilience(doc: dict[str, Any]) -> str:
    """Accuracy, agreement with the fault-free network and spike rate per BER."""
    lines = [(f"clean: accuracy {100 * doc['clean_accuracy']:.1f} %, spike rate {100 * doc['clean_spike_rate']:.2f} % "
             f"({doc['samples']} samples, {len(doc['targets'])} tensors, {doc['stored_bits']:,} stored bits)"),
             f"{'BER':>8}  {'flips':>7}  {'accuracy':>9}  {'p10':>6}  {'agree':>6}  {'spike rate':>10}"]
    for p in doc["points"]:
        lines.append(f"{p['ber']:>8.0e}  {p['mean_flips']:>7.1f}  {100 * p['accuracy_mean']:>8.1f}%  "
                     f"{100 * p['accuracy_p10']:>5.1f}%  {100 * p['agreement_mean']:>5.1f}%  "
                     f"{100 * p['spike_rate_mean']:>9.2f}%")
    lines.append(f"mean over {doc['maps']} seeded maps per BER (faults in connection weights and firing thresholds); "
                 "p10 = 10th percentile of accuracy over maps; agree = same prediction as the fault-free network")
    return "\n".join(lines)


#: samples each conversion step is checked on (TFLite Micro runs one sample per call, step by step)
CHECK_SAMPLES = 64
MICRO_CHECK_SAMPLES = 16


def spiking_drift(parent: Any, child: Any, meta: Any, x: np.ndarray, *, batch: int = 64) -> dict[str, Any]:
    """How far ``child``'s run departs from ``parent``'s on input spikes ``x``: top-1 agreement of the time-averaged
    outputs (with cosine, max abs error and SQNR) and the fraction of (neuron, step) spikes that agree."""
    from edge.evaluate import compare_outputs

    a = run_sequence(parent, meta, x, batch=batch)
    b = run_sequence(child, meta, x, batch=batch)
    drift = compare_outputs(scores(a), scores(b))
    names = [n for n in a.outputs if n.startswith("spikes.")]
    agree = np.mean([np.mean(a.outputs[n] == b.outputs[n]) for n in names]) if names else 1.0
    return {**drift.as_dict(), "spike_agreement": float(agree), "samples": len(x)}


def convert_spiking(model: str | Path, output: str | Path, *, quantize: str | None = None,
                    calibration: str | None = None, exports: tuple[str, ...] = (), dt: float | None = None,
                    time_steps: int | None = None, min_agreement: float = 0.9,
                    on_step: Callable[[str, dict[str, Any]], None] | None = None,
                    on_warning: Callable[[str], None] | None = None) -> tuple[Artifact, list[Any]]:
    """Import (NIR) or read a spiking network, quantize its connections to int8, export TFLite / a C array; every
    step is run against its parent and must keep ``min_agreement`` top-1 agreement. Nothing is written otherwise.

    A layer that never fires on the check data (a time step that does not suit the network) is reported through
    ``on_warning`` (default: the log), naming dt and where it came from."""
    from converters.snn_quantize import QuantizeSpiking
    from converters.tflite import export_tflite
    from edge.artifact import write_artifact
    from edge.convert import write_tflite_exports
    from edge.data.spiking import load_spike_dataset
    from edge.errors import ModelWriteError, PassError
    from runtimes.litert_session import LiteRTSession
    from runtimes.onnxruntime_session import OnnxRuntimeSession
    from runtimes.tflm_session import TFLMSession

    text, output = str(model), Path(output)
    source = Path(text) if Path(text).exists() else None
    if source is not None and output.exists() and output.resolve() == source.resolve():
        raise ModelWriteError("the output path is the input model; choose another -o so the original is kept.",
                              where=str(output))
    if text.lower().endswith(".nir"):
        artifact = import_nir_file(text, dt=dt, time_steps=time_steps or DEFAULT_TIME_STEPS)
    else:
        _, artifact = load_spiking_model(model)
        if not isinstance(artifact, Artifact):
            raise PassError("convert takes the ONNX step graph or the NIR file, not a TFLite file.")
    spec = calibration or artifact.meta.extra.get("calibration_data")
    if quantize and not spec:
        raise PassError("quantizing a spiking network needs calibration spikes: pass --calib DATASPEC.")
    x = load_spike_dataset(spec, artifact.meta).x if spec else _probe_spikes(artifact.meta)
    x = x[:CHECK_SAMPLES]
    checks: list[tuple[str, dict[str, Any]]] = []
    warn = on_warning or (lambda text: logging.getLogger("edge").warning("%s", text))
    recording = run_sequence(OnnxRuntimeSession(artifact).run_named, artifact.meta, x)
    readout = scores(recording)
    data = "the calibration data" if spec else "random probe spikes"
    warnings, meaningless = silence_warnings(spike_rates(recording), bool(len(readout) < 2 or np.ptp(readout, 0).max()),
                                             artifact.meta.task)
    for text in warnings + ([meaningless.replace("the accuracy is", "its accuracy would be")] if meaningless else []):
        warn(f"{text} (on {data})")

    def check(name: str, drift: dict[str, Any]) -> None:
        checks.append((name, drift))
        if on_step:
            on_step(name, drift)
        if drift["top1_agreement"] < min_agreement:
            raise PassError(f"{name} keeps only {100 * drift['top1_agreement']:.1f} % top-1 agreement with its parent "
                            f"(at least {100 * min_agreement:.0f} % required); nothing was written.")

    child = artifact
    if quantize:
        if quantize != "int8":
            raise PassError(f"spiking networks are quantized with int8 connections (neurons and state float32); "
                            f"'{quantize}' is not available for them.")
        child = QuantizeSpiking()(artifact, x)
        child.meta.extra["calibration_data"] = spec
        check("quantize-snn", spiking_drift(OnnxRuntimeSession(artifact).run_named,
                                            OnnxRuntimeSession(child).run_named, artifact.meta, x))
    tflite = None
    if exports:
        tflite = export_tflite(child, io="float32")
        onnx_engine = OnnxRuntimeSession(child).run_named
        check("tflite (LiteRT)", spiking_drift(onnx_engine, LiteRTSession(tflite, kernels="reference").run_named,
                                               child.meta, x))
        check("tflite (TFLite Micro)", spiking_drift(onnx_engine, TFLMSession(tflite).run_named, child.meta,
                                                     x[:MICRO_CHECK_SAMPLES], batch=1))
    write_artifact(child, output, inputs=(source,) if source else ())
    if tflite is not None:
        write_tflite_exports(output, tflite, exports)
    return child, checks


def _probe_spikes(meta: Any, samples: int = 16, rate: float = 0.2, seed: int = 0) -> np.ndarray:
    """Seeded Bernoulli input spikes to check an export when no data are given."""
    from edge.data.spiking import input_shape

    shape = (samples, int(meta.task.get("time_steps", DEFAULT_TIME_STEPS)), *input_shape(meta))
    return (np.random.default_rng(seed).random(shape) < rate).astype(np.float32)

"""What ``edge inspect`` shows: metadata, provenance, op histogram, parameters, size and MACs (and for a TFLite
file every tensor with its quantization, an arena estimate and which operators each target runs)."""

from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path
from typing import Any

from edge.errors import TargetError
from edge.families.llm.export import is_llm
from edge.families.llm.runner import CacheLayout, weight_macs_per_token
from edge.families.snn.export import is_snn
from edge.models import resolve_model
from edge.summary import summarize
from edge.tflite_model import TfliteModel, is_tflite, read_tflite
from edge.tflite_summary import summarize_tflite


def describe(model: str | Path, *, targets: bool = True, npu: str = "ethos-u55-128") -> dict[str, Any]:
    """Everything known about a model file or zoo name, as a JSON-ready dict.

    A TFLite file (recognised by its identifier, whatever its name) goes to :func:`describe_tflite`, which alone
    uses ``targets`` and ``npu``.
    """
    if is_tflite(model) or str(model).lower().endswith(".tflite"):
        return describe_tflite(model, targets=targets, npu=npu)
    if str(model).lower().endswith(".nir"):
        from edge.snn import import_nir_file

        path, artifact = Path(model), import_nir_file(model)
    else:
        path, artifact = resolve_model(model)
    data = artifact.to_bytes()
    summary = summarize(artifact.model, file_bytes=path.stat().st_size if path else len(data))
    meta = dataclasses.asdict(artifact.meta)
    extra: dict[str, Any] = {}
    if is_llm(artifact):
        layout = CacheLayout.from_model(artifact.model)
        extra["language_model"] = {"cached_layers": layout.layers, "kv_cache_bytes_per_token": layout.bytes_per_token(),
                                   "weight_macs_per_token": weight_macs_per_token(artifact.model),
                                   "vocab_size": layout.vocab_size}
    if is_snn(artifact):
        task = artifact.meta.task
        extra["spiking_network"] = {
            "time_steps": task["time_steps"], "dt": task["dt"], "neurons": task["neurons"],
            "spiking_nodes": task["spiking"], "state_tensors": len(task["state"]),
            "state_bytes": 4 * sum(int(math.prod(s["shape"])) for s in task["state"]),
            "dense_macs_per_step": summary.macs, "precision": task.get("precision")}
    return {**extra,
        "path": str(path) if path else str(model),
        "sha256": artifact.sha256,
        "has_edge_metadata": any(p.key == "edge" for p in artifact.model.metadata_props) or is_snn(artifact),
        "opset": {o.domain or "ai.onnx": o.version for o in artifact.model.opset_import},
        "producer": f"{artifact.model.producer_name} {artifact.model.producer_version}".strip(),
        "summary": summary.to_dict(),
        "meta": meta,
    }


def format_description(description: dict[str, Any]) -> str:
    """Readable text of ``describe``'s result."""
    if description.get("format") == "tflite":
        return format_tflite_description(description)
    meta = description["meta"]
    summary = description["summary"]
    lines = [f"model      {description['path']}", f"sha256     {description['sha256']}"]
    if not description["has_edge_metadata"]:
        lines.append("metadata   none (plain ONNX); specs read from the graph")
    snn = description.get("spiking_network")
    lines += _meta_lines(meta, snn)
    lines.append(f"size       {summary['file_bytes'] / 1024:.1f} KiB")
    lines.append(f"parameters {summary['parameters']:,} ({summary['parameter_bytes'] / 1024:.1f} KiB)")
    if "language_model" in description:
        lm = description["language_model"]
        lines.append(f"MACs       {lm['weight_macs_per_token'] / 1e6:.2f} M per token with stored weights (attention "
                     "over the cache comes on top)")
        lines.append(f"KV cache   {len(lm['cached_layers'])} layers, {lm['kv_cache_bytes_per_token'] / 1024:.2f} "
                     f"KiB per token; vocabulary {lm['vocab_size']}")
    elif snn:
        lines.append(f"spiking    {snn['neurons']:,} neurons in {', '.join(snn['spiking_nodes'])}; {snn['time_steps']} "
                     f"steps of {snn['dt']:g} s per sample")
        lines.append(f"state      {snn['state_tensors']} tensors, {snn['state_bytes']:,} bytes (float32) carried between "
                     "steps by the host")
        lines.append(f"MACs       {snn['dense_macs_per_step'] / 1e6:.3f} M per step if dense; spikes make it "
                     "accumulates of the active inputs only (edge eval counts them)")
        if snn.get("precision"):
            lines.append("precision  " + ", ".join(f"{k} {v}" for k, v in snn["precision"].items()))
    else:
        lines.append(f"MACs       {summary['macs'] / 1e6:.2f} M per inference (batch 1)")
    lines += _provenance_lines(meta)
    lines.append("ops")
    for op, count in summary["op_histogram"].items():
        lines.append(f"  {op:<24} {count}")
    return "\n".join(lines)


def _meta_lines(meta: dict[str, Any], snn: dict[str, Any] | None = None) -> list[str]:
    """Family, inputs and outputs, preprocessing and labels from the metadata."""
    lines = []
    lines.append(f"family     {meta['family']}  task {meta['task'].get('kind', meta['task'].get('type', '-'))}")
    for kind in ("inputs", "outputs"):
        for spec in meta[kind]:
            if snn and (spec["name"].endswith(".next") or kind == "inputs" and spec["name"] != "x"
                        or spec["name"].startswith("activity.")):
                continue  # states and recorded activity are summarised below
            layout = f"  layout {spec['layout']}" if spec.get("layout") else ""
            lines.append(f"{kind[:-1]:<10} {spec['name']}  {spec['dtype']}{list(spec['shape'])}{layout}")
    pre = meta["preprocessing"]
    if pre.get("sample_rate"):
        lines.append(
            f"preprocess {pre['sample_rate']:g} Hz, {len(pre['channels'])} channels ({', '.join(pre['channels'])}), "
            f"window {pre['window_s']} s after {pre['latency_s']} s latency"
            + (f", filter bank {pre['filter_bank']}" if pre["filter_bank"] else "")
        )
    filt = pre.get("filter") or {}
    if filt.get("band_hz"):
        lines.append(f"filter     band-pass {filt['band_hz']} Hz ({filt.get('type', '?')}, {filt.get('applied', '')})")
    if filt.get("standardize"):
        lines.append(f"standardize per channel: {filt['standardize']['formula']} ({filt['standardize']['units']})")
    if meta["labels"]:
        shown = ", ".join(meta["labels"][:5]) + (", ..." if len(meta["labels"]) > 5 else "")
        lines.append(f"labels     {len(meta['labels'])}: {shown}")
    return lines


def _provenance_lines(meta: dict[str, Any]) -> list[str]:
    """The passes that made the model, one line each."""
    lines = ["provenance " + ("-" if not meta["provenance"] else "")]
    for i, record in enumerate(meta["provenance"], 1):
        params = ", ".join(f"{k}={_short(v)}" for k, v in record["params"].items())
        parent = (record["parent_sha256"] or "-")[:12]
        lines.append(f"  {i}. {record['name']} (parent {parent}, edge {record['toolkit_version']}) {params}")
    return lines


def _short(value: Any, limit: int = 80) -> str:
    """A provenance value on one line: long lists and dicts (thresholds, scores) are cut."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_tflite(model: str | Path, *, targets: bool = True, npu: str = "ethos-u55-128") -> dict[str, Any]:
    """A TFLite file: metadata, operators, tensors with quantization, parameters, MACs, size and arena estimate and,
    with ``targets``, whether LiteRT and TFLite Micro load it and which operators they and the ``npu`` run."""
    tflite = read_tflite(model)
    description: dict[str, Any] = {
        "path": str(model), "format": "tflite", "sha256": tflite.sha256, "has_edge_metadata": tflite.embedded_meta,
        "schema_version": int(tflite.flatbuffer.version or 0), "description": _text(tflite.flatbuffer.description),
        "summary": summarize_tflite(tflite), "meta": dataclasses.asdict(tflite.meta),
    }
    if targets:
        description["targets"] = target_support(tflite.data, npu)
    return description


def target_support(data: bytes, npu: str = "ethos-u55-128") -> dict[str, Any]:
    """Whether LiteRT and TFLite Micro load the file and which operators each lacks; Vela's NPU/CPU placement."""
    from runtimes.tflite_support import litert_refusal, npu_placement, operator_support, tflm_refusal
    from runtimes.vela import ACCELERATORS

    if npu not in ACCELERATORS:
        close = difflib.get_close_matches(npu, ACCELERATORS, n=1)
        raise TargetError(f"--npu must be an Ethos-U configuration Vela knows ({', '.join(ACCELERATORS)}); got "
                          f"'{npu}'." + (f" Did you mean '{close[0]}'?" if close else ""))
    support = operator_support(data)
    refusals = {"litert": litert_refusal(data), "tflite-micro": tflm_refusal(data)}
    engines: dict[str, Any] = {name: {"loads": refusals[name] is None, "reason": refusals[name],
                                      "operators": support[name]} for name in refusals}
    engines["tflite-micro"]["note"] = ("every kernel of the tflite-micro build is registered here; a firmware has only "
                                       "the operators its MicroMutableOpResolver adds")
    placement = npu_placement(data, npu)
    operators = TfliteModel.from_bytes(data).operators()
    placement["already_compiled"] = "CUSTOM:ethos-u" in operators
    if "error" not in placement:
        placement["operators"] = _npu_operators(operators, placement["cpu_operations"])
    return {**engines, "npu": placement}


def _npu_operators(operators: list[str], cpu_operations: list[dict[str, Any]]) -> dict[str, str]:
    """Per operator kind: ``npu``, or ``cpu: <Vela's reason>`` (with how many when only some stay on the CPU)."""
    reasons: dict[str, list[str]] = {}
    for row in cpu_operations:
        reasons.setdefault(_op_key(row["op"]), []).append(row.get("reason") or "Vela leaves it on the CPU")
    counts = {name: operators.count(name) for name in dict.fromkeys(operators)}
    placement = {}
    for name, count in counts.items():
        if name == "CUSTOM:ethos-u":
            placement[name] = "npu (already compiled by Vela: its command stream)"
            continue
        on_cpu = reasons.get(_op_key(name), [])
        if not on_cpu:
            placement[name] = "npu"
        else:
            share = "" if len(on_cpu) >= count else f"{len(on_cpu)} of {count} "
            placement[name] = f"{share}cpu: {on_cpu[0]}"
    return placement


def format_tflite_description(description: dict[str, Any]) -> str:
    """Readable text of :func:`describe_tflite`'s result."""
    meta, summary = description["meta"], description["summary"]
    lines = [f"model      {description['path']} (TFLite, schema {description['schema_version']})",
             f"sha256     {description['sha256']}"]
    if not description["has_edge_metadata"]:
        lines.append("metadata   none (plain TFLite); specs read from the flatbuffer")
    lines += _meta_lines(meta)
    lines.append(f"size       {summary['file_bytes'] / 1024:.1f} KiB ({summary['file_bytes']:,} bytes)")
    lines.append(f"parameters {summary['parameters']:,} in weights and biases ({summary['parameter_bytes']:,} bytes); "
                 f"constants {summary['constant_bytes']:,} bytes")
    macs = summary["macs"]
    per_type = ", ".join(f"{op} {count:,}" for op, count in macs["by_type"].items()) or "no counted operator"
    lines.append(f"MACs       {macs['total']:,} per inference ({per_type})")
    arena = summary["arena_estimate"]
    lines.append(f"arena      about {arena['estimate_bytes'] / 1024:.1f} KiB (estimate: activations "
                 f"{arena['activation_plan_bytes']:,} bytes as TFLite Micro's planner lays them out + "
                 f"{arena['bookkeeping_allowance_bytes']:,} bytes allowed for its bookkeeping); "
                 "edge flash --device mcu:tflm measures it")
    if summary["subgraphs"] > 1:
        lines.append(f"subgraphs  {summary['subgraphs']} (only the main one is summarised)")
    lines += _provenance_lines(meta)
    targets = description.get("targets")
    if targets:
        lines += _engine_lines(targets)
    lines.append("ops" + (f"{'':<22}count  LiteRT  TFLite Micro  {targets['npu']['accelerator']}" if targets else ""))
    for op, count in summary["operator_counts"].items():
        row = f"  {op:<24} {count:>4}"
        if targets:
            npu = targets["npu"].get("operators", {}).get(op, "-")
            row += (f"  {_yes(targets['litert']['operators'].get(op)):<6}  "
                    f"{_yes(targets['tflite-micro']['operators'].get(op)):<12}  {npu}")
        lines.append(row)
    lines.append("operators (in execution order)")
    for row in summary["operators"]:
        macs_text = f"  {row['macs']:,} MACs" if row["macs"] else ""
        inputs = ", ".join(name or "-" for name in row["inputs"])
        lines.append(f"  {row['index']:>3} {row['op']:<20} ({inputs}) -> {', '.join(row['outputs'])}{macs_text}")
    lines.append("tensors")
    for tensor in summary["tensors"]:
        signature = "" if tensor["shape_signature"] == tensor["shape"] else f" signature {tensor['shape_signature']}"
        kind = "const" if tensor["constant"] else "     "
        lines.append(f"  {tensor['index']:>3} {kind} {tensor['dtype']:<8} {str(tensor['shape']):<18} "
                     f"{tensor['name']}{signature}{_quantization_text(tensor['quantization'])}")
    return "\n".join(lines)


def _engine_lines(targets: dict[str, Any]) -> list[str]:
    """Whether each engine loads the file (and why not), and Vela's count of NPU and CPU operators."""
    lines = []
    for name, label in (("litert", "LiteRT"), ("tflite-micro", "TFLite Micro")):
        engine = targets[name]
        state = "loads it" if engine["loads"] else f"cannot load it: {engine['reason']}"
        lines.append(f"{'engines' if not lines else '':<10} {label} {state}")
    npu = targets["npu"]
    if npu.get("already_compiled"):
        lines.append(f"{'':<10} Ethos-U: already compiled by Vela; its CUSTOM:ethos-u operator is the NPU's command "
                     "stream, the other operators run on the CPU")
    elif "error" in npu:
        lines.append(f"{'':<10} {npu['accelerator']}: not checked ({npu['error']})")
    else:
        lines.append(f"{'':<10} {npu['accelerator']} (Vela {npu['vela_version']}): {npu['npu_operators']} operators on "
                     f"the NPU, {npu['cpu_operators']} fall back to the CPU")
        for row in npu["cpu_operations"]:
            lines.append(f"{'':<12} CPU: {row['op']} {row['name']}: {row.get('reason') or 'no reason given'}")
    return lines


def _yes(reason: str | None) -> str:
    return "yes" if reason is None else "no"


def _quantization_text(q: dict[str, Any] | None) -> str:
    """Scales and zero points on one line: all of them for a few channels, the range for many."""
    if q is None:
        return ""
    scales, zero_points = q["scales"], q["zero_points"]
    if len(scales) == 1:
        return f"  scale {scales[0]:.6g} zero point {zero_points[0] if zero_points else '-'}"
    shown = (", ".join(f"{s:.4g}" for s in scales) if len(scales) <= 4
             else f"{min(scales):.4g} .. {max(scales):.4g}")
    zeros = sorted(set(zero_points))
    zero_text = (f"zero point {zeros[0]}" + (" (one value for every channel)" if len(zero_points) == 1 else "")
                 if len(zeros) == 1 else f"zero points {min(zeros)} .. {max(zeros)}")
    return f"  per-channel (dim {q['quantized_dimension']}) {len(scales)} scales {shown}; {zero_text}"


def _op_key(name: str) -> str:
    """An operator name as TFLite (CONV_2D) and Vela (Conv2D) both spell it; custom ones are CUSTOM to Vela."""
    return "CUSTOM" if name.startswith("CUSTOM:") else name.replace("_", "").upper()


def _text(value: Any) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value

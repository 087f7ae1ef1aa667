"""What ``edge inspect`` shows: metadata, provenance, op histogram, parameters, size and MACs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from edge.families.llm.export import is_llm
from edge.families.llm.runner import CacheLayout, weight_macs_per_token
from edge.families.snn.export import is_snn
from edge.models import resolve_model
from edge.summary import summarize


def describe(model: str | Path) -> dict[str, Any]:
    """Everything known about a model file or zoo name, as a JSON-ready dict."""
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
    meta = description["meta"]
    summary = description["summary"]
    lines = [f"model      {description['path']}", f"sha256     {description['sha256']}"]
    if not description["has_edge_metadata"]:
        lines.append("metadata   none (plain ONNX); specs read from the graph")
    lines.append(f"family     {meta['family']}  task {meta['task'].get('kind', meta['task'].get('type', '-'))}")
    snn = description.get("spiking_network")
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
    lines.append("provenance " + ("-" if not meta["provenance"] else ""))
    for i, record in enumerate(meta["provenance"], 1):
        params = ", ".join(f"{k}={_short(v)}" for k, v in record["params"].items())
        parent = (record["parent_sha256"] or "-")[:12]
        lines.append(f"  {i}. {record['name']} (parent {parent}, edge {record['toolkit_version']}) {params}")
    lines.append("ops")
    for op, count in summary["op_histogram"].items():
        lines.append(f"  {op:<24} {count}")
    return "\n".join(lines)


def _short(value: Any, limit: int = 80) -> str:
    """A provenance value on one line: long lists and dicts (thresholds, scores) are cut."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

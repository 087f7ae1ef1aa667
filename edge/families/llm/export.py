"""Package decoder weights as an LLM artifact: the ONNX graph with a KV cache plus the toolkit metadata."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.artifact import Artifact, Meta, PassRecord, specs_from_graph
from edge.families.llm.config import LlamaConfig
from edge.families.llm.graph import build_graph
from edge.families.llm.tokenizer import CharTokenizer

FAMILY = "llm"


def llm_meta(config: LlamaConfig, tokenizer: CharTokenizer | None, context: int, *, source: str,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``task`` entry of an LLM artifact: architecture, tokenizer and the evaluation context length."""
    task: dict[str, Any] = {"kind": "causal-lm", "architecture": "llama", "config": config.to_dict(),
                            "context": int(context), "source": source}
    if tokenizer is not None:
        task["tokenizer"] = {"type": "char", "vocab": tokenizer.vocab}
    if extra:
        task.update(extra)
    return task


def export_llm(config: LlamaConfig, weights: dict[str, np.ndarray], task: dict[str, Any], *,
               calibration_data: str | None = None, params: dict[str, Any] | None = None) -> Artifact:
    """The decoder as an artifact of family ``llm`` with specs read from the built graph."""
    model = build_graph(config, weights)
    inits = {t.name for t in model.graph.initializer}
    meta = Meta(family=FAMILY, task=task, inputs=specs_from_graph(model.graph.input, inits),
                outputs=specs_from_graph(model.graph.output),
                provenance=[PassRecord("export-llm", params or {}, None)])
    if calibration_data:
        meta.extra["calibration_data"] = calibration_data
    return Artifact(model, meta)


def tokenizer_of(meta: Meta) -> CharTokenizer | None:
    """The character tokenizer stored in an LLM artifact's metadata, if any."""
    spec = meta.task.get("tokenizer") if isinstance(meta.task, dict) else None
    if isinstance(spec, dict) and spec.get("type") == "char" and isinstance(spec.get("vocab"), str):
        return CharTokenizer(spec["vocab"])
    return None


def is_llm(model: Any) -> bool:
    """True for an ONNX decoder with the KV-cache I/O contract (ours, or a plain file from elsewhere)."""
    graph = getattr(getattr(model, "model", None), "graph", None)
    if graph is None:
        return False
    names = {i.name for i in graph.input}
    return "input_ids" in names and any(o.name == "logits" for o in graph.output)

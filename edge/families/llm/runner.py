"""Run an LLM artifact: a forward pass with the KV cache, perplexity, generation, tokens per second, memory.

Works on any ONNX decoder with the onnxruntime-genai I/O contract (see :mod:`edge.families.llm.config`): the layers
that hold a KV cache, their kv-head count and head size are read from the graph's ``past_key_values.N.key``
inputs, so a model whose attention modules were dropped simply has fewer of them. ``session`` is anything with
an ONNX Runtime ``InferenceSession`` (the default, created here) or anything with ``run_feeds(feeds) -> list`` in the
graph's output order (a device target).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from edge.artifact import Artifact
from edge.errors import DataError, EngineError
from edge.feeds import engine_message

_PAST = re.compile(r"^past_key_values\.(\d+)\.key$")


def create_session(model: onnx.ModelProto, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session at full optimization (weights prepacked: the fast path)."""
    import onnxruntime as ort

    from edge.faults.engine import IR_VERSION_LIMIT

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    del plain.metadata_props[:]
    plain.ir_version = min(plain.ir_version, IR_VERSION_LIMIT)
    try:
        return ort.InferenceSession(plain.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise EngineError(engine_message("onnxruntime refused the model", exc)) from None


@dataclass
class CacheLayout:
    """Which layers keep a KV cache and its per-layer shape (kv_heads, head_dim)."""

    layers: list[int]
    kv_heads: dict[int, int]
    head_dim: dict[int, int]
    vocab_size: int

    @classmethod
    def from_model(cls, model: onnx.ModelProto) -> CacheLayout:
        inputs = {i.name: i for i in model.graph.input}
        if "input_ids" not in inputs or "attention_mask" not in inputs:
            raise DataError("this is not a decoder with a KV cache: it needs 'input_ids' and 'attention_mask' inputs.")
        layers, kv_heads, head_dim = [], {}, {}
        for name, value in inputs.items():
            match = _PAST.match(name)
            if not match:
                continue
            dims = value.type.tensor_type.shape.dim
            layer = int(match.group(1))
            layers.append(layer)
            kv_heads[layer], head_dim[layer] = dims[1].dim_value, dims[3].dim_value
        logits = next((o for o in model.graph.output if o.name == "logits"), None)
        if logits is None:
            raise DataError("this is not a decoder: it has no 'logits' output.")
        vocab = logits.type.tensor_type.shape.dim[-1].dim_value
        return cls(sorted(layers), kv_heads, head_dim, vocab)

    def empty(self, batch: int = 1) -> dict[str, np.ndarray]:
        """Zero-length past key/value arrays for every cached layer."""
        feeds = {}
        for layer in self.layers:
            shape = (batch, self.kv_heads[layer], 0, self.head_dim[layer])
            feeds[f"past_key_values.{layer}.key"] = np.zeros(shape, np.float32)
            feeds[f"past_key_values.{layer}.value"] = np.zeros(shape, np.float32)
        return feeds

    def bytes_per_token(self) -> int:
        """KV-cache bytes one token adds (float32 keys and values, every cached layer)."""
        return sum(2 * 4 * self.kv_heads[layer] * self.head_dim[layer] for layer in self.layers)


class LanguageModel:
    """A decoder artifact and one session to run it, with the cache bookkeeping done here."""

    def __init__(self, artifact: Artifact, session: Any = None, *, threads: int | None = None) -> None:
        self.artifact = artifact
        self.layout = CacheLayout.from_model(artifact.model)
        self.session = session if session is not None else create_session(artifact.model, threads)
        self.output_names = [o.name for o in artifact.model.graph.output]

    def forward(self, ids: np.ndarray, past: dict[str, np.ndarray] | None = None,
                mask: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits (batch, new, vocab) for ``ids`` after ``past``, and the new cache (as past_key_values feeds)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.size and (ids.min() < 0 or ids.max() >= self.layout.vocab_size):
            raise DataError(f"token ids must lie in [0, {self.layout.vocab_size}); got {ids.min()}..{ids.max()}.")
        past = past if past is not None else self.layout.empty(len(ids))
        past_len = next(iter(past.values())).shape[2] if past else 0
        if mask is None:
            mask = np.ones((len(ids), past_len + ids.shape[1]), np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, **past}
        outputs = dict(zip(self.output_names, _run(self.session, feeds), strict=True))
        present = {name.replace("present.", "past_key_values.", 1): value
                   for name, value in outputs.items() if name.startswith("present.")}
        return outputs["logits"], present

    def token_logprobs(self, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """log p(token t+1 | tokens <= t) for every window (windows, length - 1), no cache."""
        out = []
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size]
            logits, _ = self.forward(batch)
            out.append(gather_logprobs(logits[:, :-1], batch[:, 1:]))
        return np.concatenate(out)


def _run(session: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs in graph order from an ONNX Runtime session or anything with ``run_feeds(feeds)``."""
    try:
        return session.run_feeds(feeds) if hasattr(session, "run_feeds") else session.run(None, feeds)
    except EngineError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise EngineError(engine_message("the runtime could not run the model", exc)) from None


def gather_logprobs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(target) at every position from raw logits (..., vocab), a stable log-softmax in float64."""
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    logz = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))
    picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - logz


def text_windows(tokens: np.ndarray, length: int, limit: int | None = None) -> np.ndarray:
    """Non-overlapping windows of ``length`` tokens (int64), at most ``limit`` of them."""
    count = len(tokens) // length
    if count == 0:
        raise DataError(f"the text has {len(tokens)} tokens, fewer than one window of {length}.")
    if limit is not None:
        count = min(count, limit)
    return np.asarray(tokens[: count * length], dtype=np.int64).reshape(count, length)


def perplexity(lm: LanguageModel, windows: np.ndarray, batch_size: int = 16, seed: int = 0) -> dict[str, Any]:
    """Per-token perplexity over the windows, with a bootstrap 95 % interval over windows."""
    logprobs = lm.token_logprobs(windows, batch_size)
    nll = -logprobs.mean(axis=1)
    rng = np.random.default_rng(seed)
    boot = nll[rng.integers(0, len(nll), size=(1000, len(nll)))].mean(axis=1)
    return {"perplexity": float(np.exp(nll.mean())), "nll": float(nll.mean()),
            "ci95": [float(np.exp(np.percentile(boot, 2.5))), float(np.exp(np.percentile(boot, 97.5)))],
            "tokens": int(logprobs.size), "windows": len(windows)}


def next_token_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of positions where two logits arrays (…, vocab) pick the same next token."""
    return float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))


def generate(lm: LanguageModel, prompt: np.ndarray, new_tokens: int, *, top_k: int | None = None,
             temperature: float = 1.0, seed: int = 0) -> np.ndarray:
    """Prompt followed by ``new_tokens`` sampled tokens: greedy when ``top_k`` is None, else top-k sampling."""
    if top_k is not None and top_k < 1:
        raise DataError(f"top_k must be at least 1; got {top_k}.")
    if temperature <= 0:
        raise DataError(f"temperature must be positive; got {temperature}.")
    rng = np.random.default_rng(seed)
    prompt = np.asarray(prompt, dtype=np.int64).reshape(-1)
    if prompt.size == 0:
        raise DataError("the prompt is empty; generation needs at least one token.")
    tokens = list(prompt)
    logits, past = lm.forward(prompt[None])
    for _ in range(new_tokens):
        last = logits[0, -1].astype(np.float64) / temperature
        if top_k is None:
            token = int(last.argmax())
        else:
            k = min(top_k, len(last))
            best = np.argpartition(last, -k)[-k:]
            p = np.exp(last[best] - last[best].max())
            token = int(rng.choice(best, p=p / p.sum()))
        tokens.append(token)
        logits, past = lm.forward(np.array([[token]], np.int64), past)
    return np.array(tokens, dtype=np.int64)


def throughput(lm: LanguageModel, prompt: np.ndarray, new_tokens: int = 64, repeats: int = 3) -> dict[str, float]:
    """Prefill and decode tokens per second at batch 1 (median over ``repeats``); greedy tokens are decoded."""
    prompt = np.asarray(prompt, dtype=np.int64).reshape(1, -1)
    lm.forward(prompt)  # warm-up: first-run allocations are not the model's speed
    prefill, decode = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        logits, past = lm.forward(prompt)
        prefill.append(time.perf_counter() - start)
        token = np.array([[int(logits[0, -1].argmax())]], np.int64)
        start = time.perf_counter()
        for _ in range(new_tokens):
            logits, past = lm.forward(token, past)
            token = np.array([[int(logits[0, -1].argmax())]], np.int64)
        decode.append(time.perf_counter() - start)
    return {"prefill_tokens_per_s": prompt.shape[1] / float(np.median(prefill)),
            "decode_tokens_per_s": new_tokens / float(np.median(decode)),
            "prompt_tokens": int(prompt.shape[1]), "decode_tokens": new_tokens}


def memory(lm: LanguageModel, context: int) -> dict[str, int]:
    """Bytes of stored weights and of the KV cache at ``context`` tokens (batch 1)."""
    weights = sum(len(t.raw_data) if t.raw_data else onnx.numpy_helper.to_array(t).nbytes
                  for t in lm.artifact.model.graph.initializer)
    per_token = lm.layout.bytes_per_token()
    return {"weights_bytes": int(weights), "kv_cache_bytes_per_token": per_token,
            "kv_cache_bytes": per_token * context, "context": context}


def weight_macs_per_token(model: onnx.ModelProto) -> int:
    """Multiply-accumulates with stored weights per generated token (projections and head; attention excluded)."""
    weights = {t.name: t for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in weights:
            dims = weights[node.input[1]].dims
            total += int(np.prod(dims)) if len(dims) == 2 else 0
        elif node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            total += attrs.get("K", 0) * attrs.get("N", 0)
    return total

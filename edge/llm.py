"""Language models end to end: evaluate (perplexity, tokens per second, memory), generate, sweep weight faults.

Any ONNX decoder with the onnxruntime-genai I/O contract works: ours carry a tokenizer and a context length in
their metadata; a plain file from elsewhere is evaluated on token windows given as an ``.npz`` (``x``: ids).
LLMs run on the ``cpu`` target (ONNX Runtime) and the ``gpu`` target (ONNX Runtime CUDA/TensorRT).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact import Artifact
from edge.errors import DataError, EngineError
from edge.families.llm.export import is_llm, tokenizer_of
from edge.families.llm.runner import (
    LanguageModel,
    generate,
    memory,
    next_token_agreement,
    perplexity,
    throughput,
)

LLM_DEVICES = ("cpu", "gpu")


def load_language_model(model: str | Path) -> tuple[Path | None, Artifact]:
    """(path, artifact) of a decoder named by path or zoo name; anything else is refused in one sentence."""
    from edge.models import resolve_model

    path, artifact = resolve_model(model)
    if not is_llm(artifact):
        raise DataError("this model is not a decoder with a KV cache (inputs input_ids, attention_mask, "
                        "past_key_values.N.key/value; output logits).", where=str(model))
    return path, artifact


def open_language_model(artifact: Artifact, device: str = "cpu", threads: int | None = None) -> tuple[
        LanguageModel, Any]:
    """The model ready to run on ``device`` (cpu or gpu[:N]); returns it and the deployed target (or None)."""
    name = device.split(":")[0].split("?")[0]
    if name not in LLM_DEVICES:
        raise EngineError(f"language models run on the cpu and gpu targets; '{device}' is not one of them.")
    if name == "cpu":
        return LanguageModel(artifact, threads=threads), None
    from devices import get_target

    target = get_target(device)
    target.deploy(artifact)
    return LanguageModel(artifact, target), target


def evaluate_language_model(model: str | Path, data_spec: str, *, device: str = "cpu", reference: str | None = None,
                            threads: int | None = None, decode_tokens: int = 64, prompt_tokens: int | None = None,
                            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Perplexity with its 95 % interval, prefill/decode tokens per second at batch 1, memory of weights and KV
    cache; with ``reference``, its perplexity and the next-token agreement between the two on the same text."""
    from edge.data.text import load_token_windows
    from edge.evaluate import environment

    path, artifact = load_language_model(model)
    windows = load_token_windows(data_spec, artifact.meta)
    lm, target = open_language_model(artifact, device, threads)
    try:
        say = progress or (lambda _msg: None)
        say(f"perplexity on {len(windows)} windows of {windows.shape[1]} tokens")
        quality = perplexity(lm, windows)
        prompt = windows[0][: prompt_tokens or max(2, windows.shape[1] // 2)]
        say("tokens per second")
        speed = throughput(lm, prompt, decode_tokens)
        results: dict[str, Any] = {
            "kind": "language-model", "model": str(path or model), "sha256": artifact.sha256,
            "device": {"spec": device, "engine": "onnxruntime"},
            "data": {"spec": data_spec, "windows": len(windows), "tokens_per_window": int(windows.shape[1])},
            "metrics": {"perplexity": quality, "throughput": speed,
                        "memory": memory(lm, int(artifact.meta.task.get("context", windows.shape[1])))},
            "model_info": {"cached_layers": lm.layout.layers, "passes": [p.name for p in artifact.meta.provenance]},
            "environment": environment(),
        }
        if reference is not None:
            say(f"reference {reference}")
            _, ref_artifact = load_language_model(reference)
            ref = LanguageModel(ref_artifact, threads=threads)
            agreements = [next_token_agreement(ref.forward(w[None])[0], lm.forward(w[None])[0]) for w in windows]
            results["reference"] = {"model": str(reference), "perplexity": perplexity(ref, windows),
                                    "next_token_agreement": float(np.mean(agreements))}
        return results
    finally:
        if target is not None:
            target.close()


def language_model_drift(parent: Artifact, child: Artifact, windows: np.ndarray) -> Any:
    """Drift of the child's logits from the parent's at every position (top-1 = next-token agreement)."""
    from edge.evaluate import compare_outputs

    a, _ = LanguageModel(parent).forward(windows)
    b, _ = LanguageModel(child).forward(windows)
    return compare_outputs(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))


def format_language_model_results(results: dict[str, Any]) -> str:
    """A readable table of :func:`evaluate_language_model` results."""
    m = results["metrics"]
    ppl, speed, mem = m["perplexity"], m["throughput"], m["memory"]
    lines = [
        (f"{Path(results['model']).name} on {results['device']['spec']} — {results['data']['windows']} windows of "
         f"{results['data']['tokens_per_window']} tokens ({results['data']['spec']})"),
        (f"  perplexity        {ppl['perplexity']:.3f}  (95 % CI {ppl['ci95'][0]:.3f}-{ppl['ci95'][1]:.3f}, "
         f"{ppl['tokens']} predicted tokens)"),
        f"  prefill           {speed['prefill_tokens_per_s']:,.0f} tokens/s  (prompt of {speed['prompt_tokens']})",
        f"  decode            {speed['decode_tokens_per_s']:,.0f} tokens/s  (batch 1, {speed['decode_tokens']} tokens)",
        f"  weights           {mem['weights_bytes'] / 2**20:.2f} MiB",
        (f"  KV cache          {mem['kv_cache_bytes_per_token'] / 1024:.2f} KiB/token, "
         f"{mem['kv_cache_bytes'] / 2**20:.2f} MiB at {mem['context']} tokens "
         f"({len(results['model_info']['cached_layers'])} layers cached)"),
    ]
    if "reference" in results:
        ref = results["reference"]
        lines.append(f"  reference         {Path(ref['model']).name}: perplexity {ref['perplexity']['perplexity']:.3f}, "
                     f"next-token agreement {100 * ref['next_token_agreement']:.1f} %")
    return "\n".join(lines)


def generate_text(model: str | Path, prompt: str, *, tokens: int = 200, top_k: int | None = None,
                  temperature: float = 1.0, seed: int = 0, device: str = "cpu") -> str:
    """The prompt continued by ``tokens`` characters, greedy or top-k sampled, on ``device``."""
    _, artifact = load_language_model(model)
    tokenizer = tokenizer_of(artifact.meta)
    if tokenizer is None:
        raise DataError("this model carries no tokenizer in its metadata, so a text prompt cannot be encoded.")
    lm, target = open_language_model(artifact, device)
    try:
        ids = generate(lm, tokenizer.encode(prompt), tokens, top_k=top_k, temperature=temperature, seed=seed)
    finally:
        if target is not None:
            target.close()
    return tokenizer.decode(ids)


#: Windows a fault sweep evaluates per map unless the data spec names fewer (every map reruns all of them).
FAULT_SWEEP_WINDOWS = 16


def language_model_resilience(models: list[str], data_spec: str, *, bers: list[float], maps: int, seed: int = 0,
                              fault: Any = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Perplexity against BER for each model on the same seeded fault maps (see edge.families.llm.resilience);
    the first :data:`FAULT_SWEEP_WINDOWS` windows of the data are used."""
    from edge.data.text import load_token_windows
    from edge.families.llm.resilience import perplexity_curve

    curves = {}
    for model in models:
        _, artifact = load_language_model(model)
        windows = load_token_windows(data_spec, artifact.meta)[:FAULT_SWEEP_WINDOWS]
        curves[Path(model).name] = perplexity_curve(artifact, windows, bers=bers, maps=maps, seed=seed, fault=fault,
                                                    progress=progress)
    return {"kind": "language-model-resilience", "data": data_spec, "bers": bers, "maps": maps, "models": curves}


def format_language_model_resilience(doc: dict[str, Any]) -> str:
    """Median perplexity (and failure rate, next-token agreement) per BER, one column per model."""
    names = list(doc["models"])
    rows = [["BER", *names], ["clean", *(f"ppl {doc['models'][n]['clean_perplexity']:.3f}" for n in names)]]
    for i, ber in enumerate(doc["bers"]):
        cells = []
        for n in names:
            p = doc["models"][n]["points"][i]
            cells.append(f"ppl {_fmt(p['perplexity_median'])}, fail {100 * p['failure_rate']:.0f} %, "
                         f"agree {100 * p['next_token_agreement']:.0f} %")
        rows.append([f"{ber:.0e}", *cells])
    widths = [max(len(row[c]) for row in rows) + 2 for c in range(len(rows[0]))]
    lines = ["".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append(f"median over {doc['maps']} fault maps per BER; fail = perplexity above 2x clean or not finite; "
                 "agree = greedy next token equal to the fault-free model's")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "inf" if not np.isfinite(value) else (f"{value:.3f}" if value < 1000 else f"{value:.3g}")

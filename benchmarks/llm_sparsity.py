"""Sparse LLMs measured in one run: perplexity and batch-1 tokens/s of every method, as ratios to dense fp32.

    .venv/bin/python benchmarks/llm_sparsity.py [--quick] [--json FILE]

The reference model is the zoo's ``llama-shakespeare-char`` (6 blocks, dim 256, GQA 8/4 heads, SwiGLU 768).
Perplexity is per character on held-out text (the last 10 % of tinyshakespeare); calibration uses the first 64 KB
of the training part. Speed is ONNX Runtime on the CPU, one thread, batch 1: prefill of a 64-token prompt and
greedy decode of 64 tokens with the KV cache; every variant is timed in the same rounds (round-robin, median of
rounds) so that machine noise hits all of them alike. Unstructured, N:M and activation sparsity keep dense shapes:
standard runtimes run them at dense speed (or slower, with the extra masking ops) — that is the point of measuring.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from converters.llm_activation_sparsity import SparsifyActivations
from converters.llm_prune import PruneLLM
from converters.llm_structure import DropModules, PruneFFN, PruneHeads
from converters.quantize import QuantizeDynamicInt8, QuantizeInt4Weights
from edge.data.text import load_token_windows
from edge.families.llm.runner import LanguageModel, perplexity, throughput
from edge.models import resolve_model

MODEL = "llama-shakespeare-char"
STRUCTURED = "LLM-Drop 1 + FFN -25 % + int4"


def variants(dense, calib, quick: bool):
    """(name, artifact) for every configuration, built from ``dense`` with ``calib`` windows."""
    int4 = QuantizeInt4Weights(accuracy_level=4)
    yield "dense fp32", dense
    for method in ("magnitude", "wanda", "sparsegpt"):
        yield f"{method} 50 %", PruneLLM(method=method, sparsity=0.5)(dense, calib)
        yield f"{method} 2:4", PruneLLM(method=method, nm="2:4")(dense, calib)
    for method in ("teal", "wina", "chess"):
        yield f"{method} 50 % activations", SparsifyActivations(method=method, sparsity=0.5)(dense, calib)
    dropped = DropModules(target="all", count=1)(dense, calib)  # joint ranking: the most redundant module
    yield "LLM-Drop 1 module (joint)", dropped
    yield "LLM-Drop 2 attention", DropModules(target="attn", count=2)(dense, calib)
    yield "FFN neurons -25 %", PruneFFN(ratio=0.25)(dense, calib)
    if not quick:
        yield "kv-head groups -25 %", PruneHeads(ratio=0.25)(dense, calib)
    yield "int8 dynamic", QuantizeDynamicInt8()(dense)
    yield "int4 (MatMulNBits b32, acc 4)", int4(dense)
    yield STRUCTURED, int4(PruneFFN(ratio=0.25)(dropped, calib))
    if not quick:
        yield "sparsegpt 2:4 + int4", int4(PruneLLM(method="sparsegpt", nm="2:4")(dense, calib))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer windows and rounds (a smoke run).")
    parser.add_argument("--windows", type=int, default=None, help="Evaluation windows of 128 characters.")
    parser.add_argument("--rounds", type=int, default=None, help="Timing rounds over all variants.")
    parser.add_argument("--json", help="Also write the figures to this file.")
    args = parser.parse_args()
    windows = args.windows or (16 if args.quick else 128)
    rounds = args.rounds or (2 if args.quick else 5)

    _, dense = resolve_model(MODEL)
    calib = load_token_windows("tinyshakespeare:split=calib", dense.meta)[:64]
    heldout = load_token_windows(f"tinyshakespeare:split=val,windows={windows}", dense.meta)
    prompt = heldout[0][:64]
    start = time.time()
    built = list(variants(dense, calib, args.quick))
    print(f"built {len(built)} variants in {time.time() - start:.0f} s; evaluating on {len(heldout)} windows of "
          f"{heldout.shape[1]} characters")
    models = {name: LanguageModel(artifact, threads=1) for name, artifact in built}
    quality = {name: perplexity(lm, heldout) for name, lm in models.items()}
    speed: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, lm in models.items():
            speed[name].append(throughput(lm, prompt, new_tokens=64, repeats=1))
    rows = []
    for name, _ in built:
        decode = float(np.median([s["decode_tokens_per_s"] for s in speed[name]]))
        prefill = float(np.median([s["prefill_tokens_per_s"] for s in speed[name]]))
        rows.append({"variant": name, "perplexity": quality[name]["perplexity"], "ci95": quality[name]["ci95"],
                     "decode_tokens_per_s": decode, "prefill_tokens_per_s": prefill})
    base = rows[0]
    print(f"{'variant':<34} {'ppl':>7} {'x dense':>8} {'decode tok/s':>13} {'x dense':>8} {'prefill tok/s':>14} "
          f"{'x dense':>8}")
    for row in rows:
        row["perplexity_ratio"] = row["perplexity"] / base["perplexity"]
        row["decode_speedup"] = row["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        row["prefill_speedup"] = row["prefill_tokens_per_s"] / base["prefill_tokens_per_s"]
        print(f"{row['variant']:<34} {row['perplexity']:>7.3f} {row['perplexity_ratio']:>8.3f} "
              f"{row['decode_tokens_per_s']:>13,.0f} {row['decode_speedup']:>8.2f} "
              f"{row['prefill_tokens_per_s']:>14,.0f} {row['prefill_speedup']:>8.2f}")
    by_name = {row["variant"]: row for row in rows}
    print("\nchecks (issue 7):")
    print(f"  SparseGPT 2:4 ppl {by_name['sparsegpt 2:4']['perplexity']:.3f} <= magnitude 2:4 "
          f"{by_name['magnitude 2:4']['perplexity']:.3f}: "
          f"{by_name['sparsegpt 2:4']['perplexity'] <= by_name['magnitude 2:4']['perplexity']}")
    int4 = by_name["int4 (MatMulNBits b32, acc 4)"]
    print(f"  int4: perplexity +{100 * (int4['perplexity_ratio'] - 1):.2f} % (<= 3 %), decode x{int4['decode_speedup']:.2f}"
          f" (> 1)")
    best = by_name[STRUCTURED]
    print(f"  structured + int4: decode x{best['decode_speedup']:.2f} (>= 2), perplexity "
          f"+{100 * (best['perplexity_ratio'] - 1):.1f} % (<= 15 %)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"model": MODEL, "windows": len(heldout), "rounds": rounds, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()

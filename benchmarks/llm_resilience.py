"""Perplexity of the reference LLM against the bit error rate of its weight memory, with and without range
restriction (MLP activations clamped to their profiled bounds), fp32 and int4, on the same seeded fault maps.

    .venv/bin/python benchmarks/llm_resilience.py [--maps 20] [--windows 8] [--quick]

Faults are single-bit flips anywhere in the stored projection and head weights (float32 words, or the packed
4-bit words of MatMulNBits); every map is applied to the same bits of both the plain and the restricted model.
"""

from __future__ import annotations

import argparse
import time

from converters.llm_range_restriction import RestrictRanges
from converters.quantize import QuantizeInt4Weights
from edge.data.text import load_token_windows
from edge.families.llm.resilience import perplexity_curve
from edge.llm import format_language_model_resilience
from edge.models import resolve_model

MODEL = "llama-shakespeare-char"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=20)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--bers", default="1e-8,1e-7,3e-7,1e-6,1e-5,1e-4,1e-3")
    parser.add_argument("--quick", action="store_true", help="fp32 only, 5 maps")
    args = parser.parse_args()
    bers = [float(b) for b in args.bers.split(",")]
    maps = 5 if args.quick else args.maps

    _, dense = resolve_model(MODEL)
    calib = load_token_windows("tinyshakespeare:split=calib", dense.meta)[:32]
    heldout = load_token_windows(f"tinyshakespeare:split=val,windows={args.windows}", dense.meta)
    restricted = RestrictRanges()(dense, calib)
    models = {"fp32": dense, "fp32 + range restriction": restricted}
    if not args.quick:
        int4 = QuantizeInt4Weights(accuracy_level=4)
        models["int4"] = int4(dense)
        models["int4 + range restriction"] = RestrictRanges()(models["int4"], calib)
    curves = {}
    for name, artifact in models.items():
        start = time.time()
        curves[name] = perplexity_curve(artifact, heldout, bers=bers, maps=maps, seed=0, threads=2)
        print(f"{name}: {time.time() - start:.0f} s, clean perplexity {curves[name]['clean_perplexity']:.3f}, "
              f"{curves[name]['stored_bits']:,} stored bits")
    print(format_language_model_resilience({"bers": bers, "maps": maps, "models": curves}))


if __name__ == "__main__":
    main()

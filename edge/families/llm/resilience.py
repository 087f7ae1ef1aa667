"""Weight faults in a language model: perplexity and next-token agreement against bit error rate.

The same fault models, seeded maps and bit-exact restore as the classifier campaigns (:mod:`edge.faults`): the
targeted weights become graph inputs of one session, each map is XORed into the fed arrays, the evaluation text is
run, and the bits are XORed back. The outcome of a map is the perplexity on the windows and the fraction of
positions whose greedy next token matches the fault-free model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx

from edge.families.llm.runner import LanguageModel, gather_logprobs
from edge.faults.campaign import map_seed
from edge.faults.engine import create_session, weights_as_inputs
from edge.faults.models import FaultModel, FaultTargets, apply_fault_map, sample_fault_map

#: A map whose perplexity exceeds the clean one by this factor counts as a failure (the model's output is garbage).
FAILURE_FACTOR = 2.0


class _FedWeights:
    """An ONNX Runtime session whose fault targets are graph inputs, fed from arrays that maps corrupt in place."""

    def __init__(self, model: onnx.ModelProto, targets: FaultTargets, threads: int | None) -> None:
        self.arrays = targets.arrays
        self.session = create_session(weights_as_inputs(model, targets.names), threads)

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, {**feeds, **self.arrays})


def _outcome(lm: LanguageModel, windows: np.ndarray, golden_tokens: np.ndarray) -> tuple[float, float]:
    logits, _ = lm.forward(windows)
    logprobs = gather_logprobs(logits[:, :-1], windows[:, 1:])
    nll = float(-logprobs.mean()) if np.all(np.isfinite(logprobs)) else math.inf
    with np.errstate(over="ignore"):
        ppl = math.exp(nll) if nll < 700 else math.inf
    agreement = float(np.mean(logits.argmax(-1) == golden_tokens))
    return ppl, agreement


def perplexity_curve(artifact: Any, windows: np.ndarray, *, bers: Sequence[float], maps: int, seed: int = 0,
                     fault: FaultModel | None = None, threads: int | None = None,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Perplexity and next-token agreement under weight faults at each BER, ``maps`` seeded maps per point."""
    fault = fault or FaultModel()
    targets = FaultTargets.from_model(artifact.model, fault)
    lm = LanguageModel(artifact, _FedWeights(artifact.model, targets, threads))
    windows = np.asarray(windows, dtype=np.int64)
    logits, _ = lm.forward(windows)
    golden_tokens = logits.argmax(-1)
    clean_ppl, _ = _outcome(lm, windows, golden_tokens)
    points = []
    for b, ber in enumerate(bers):
        ppls, agreements, flips = [], [], []
        for m in range(maps):
            fault_map = sample_fault_map(targets, ber, map_seed(seed, b, m))
            restore = apply_fault_map(targets.arrays, fault_map)
            try:
                ppl, agree = _outcome(lm, windows, golden_tokens)
            finally:
                restore.undo()
            ppls.append(ppl)
            agreements.append(agree)
            flips.append(len(fault_map))
        points.append(_summary(ber, np.array(ppls), np.array(agreements), flips, clean_ppl, seed))
        if progress:
            progress(f"BER {ber:g}: median perplexity {points[-1]['perplexity_median']:.3g}")
    return {"clean_perplexity": clean_ppl, "bers": list(bers), "maps": maps, "seed": seed, "fault": fault.to_dict(),
            "stored_bits": int(targets.stored_bits),
            "windows": len(windows), "tokens_per_window": int(windows.shape[1]), "points": points}


def _summary(ber: float, ppls: np.ndarray, agreements: np.ndarray, flips: list[int], clean: float,
             seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    boot = agreements[rng.integers(0, len(agreements), size=(1000, len(agreements)))].mean(axis=1)
    failed = ~np.isfinite(ppls) | (ppls > FAILURE_FACTOR * clean)
    finite = ppls[np.isfinite(ppls)]
    return {"ber": ber, "mean_flips": float(np.mean(flips)),
            "perplexity_median": float(np.median(ppls)),
            "perplexity_p90": float(np.percentile(ppls, 90)) if len(finite) == len(ppls) else math.inf,
            "perplexity_ratio_median": float(np.median(ppls) / clean),
            "failure_rate": float(np.mean(failed)),
            "next_token_agreement": float(agreements.mean()),
            "next_token_agreement_ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]}

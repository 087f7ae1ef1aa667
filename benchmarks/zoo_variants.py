"""Size, MACs, held-out accuracy and CPU latency of every zoo model after each converter, in one run.

    .venv/bin/python benchmarks/zoo_variants.py [--models NAME ...] [--runs 300] [--finetune-epochs 10]
                                              [--max-drop 0.5]

Variants per model: fp32 (the zoo file); int8 (static QDQ, per-channel weights, MinMax, the model's
own ``keep_float`` nodes left in float, as ``edge convert --quantize int8`` does); 50 % structured
channel pruning, fine-tuned where the family has a fine-tune (SSVEP), then the same int8 pass; and
mixed precision (``QuantizeMixed``: int8, int16 activations or float per layer within --max-drop points,
measured on validation data disjoint from both training and the held-out set). Size is the bytes of
the serialized ONNX with its metadata, MACs come from ``edge.summary``, latency is the median of
--runs single-trial runs at batch 1 on the CPU target (one thread). Every figure is also printed as a
ratio to the fp32 model measured in the same process. A pass that fails is shown as n/a with its
error under the table. --finetune-epochs 0 skips fine-tuning (PyTorch is needed otherwise).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.mixed_precision import QuantizeMixed
from converters.prune_channels import PruneChannels, finetune_pruned_ssvep
from converters.quantize import QuantizeInt8
from devices.cpu import median_latency_ms
from edge.artifact import Artifact, read_artifact
from edge.data.registry import Dataset, load_dataset
from edge.errors import EdgeError
from edge.evaluate import predict
from edge.summary import summarize
from edge.zoo import MODELS, zoo_path

ROOT = Path(__file__).resolve().parents[1]
MMI = ROOT.parent / "shared" / "data" / "eegmmidb_s001"

# Held-out data where the model's metadata records none (EEGNet records only heldout_runs: R14).
HELDOUT = {
    "ssvep-guney-9ch-0.4s": "synthetic-ssvep:subjects=31-35,seed=0",
    "eegnet-mmi-s001": f"{MMI}:runs=14",
}
# Data QuantizeMixed measures its accuracy drop on: never the held-out set the table reports. The SSVEP
# model was trained on synthetic subjects 1-24, so 25-26 are unseen; EEGNet has only three runs, so its
# budget is measured on the two training runs (the calibration data).
MIXED_EVAL = {
    "ssvep-guney-9ch-0.4s": "synthetic-ssvep:subjects=25-26,seed=0",
    "eegnet-mmi-s001": f"{MMI}:runs=6+10",
}
# Conv nodes whose filters the structured pass removes. EEGNet: the temporal conv holds 97 % of the MACs.
PRUNE_NODES = {
    "ssvep-guney-9ch-0.4s": ["/time1/Conv", "/time2/Conv"],
    "eegnet-mmi-s001": ["/temporal/Conv", "/separable_point/Conv"],
}
# Data folders a model's data specs need; the model is skipped with a note when one is absent.
NEEDS = {"eegnet-mmi-s001": MMI}
# Zoo models whose family has converters of its own (no static int8 / channel pruning of classifiers), measured
# by their own benchmark.
OWN_BENCHMARK = {
    "llama-shakespeare-char": "benchmarks/llm_sparsity.py (dense, unstructured / 2:4 / activation sparsity, "
                              "LLM-Drop, FFN and head pruning, dynamic int8, int4, combined; perplexity and tokens/s)",
    "snn-ssvep-delta": "benchmarks/snn.py (fp32, int8 connections, fp32 / int8 TFLite in LiteRT and TFLite Micro; "
                       "accuracy, SynOps, us/step)",
}


@dataclass
class Row:
    """One variant: its label and artifact, or the error of the pass that failed to make it."""

    name: str
    artifact: Artifact | None
    error: str | None = None


def resolve(spec: str) -> str:
    """Anchor a spec's relative path (metadata records them relative to the repository) at the repository."""
    name, sep, rest = spec.partition(":")
    path = ROOT / name
    if not Path(name).is_absolute() and ("/" in name or "." in name) and path.exists():
        return f"{path.resolve()}{sep}{rest}"
    return spec


def attempt(name: str, build: Callable[[], Artifact]) -> Row:
    """Build a variant; a toolkit error becomes an n/a row that carries the message."""
    try:
        return Row(name, build())
    except EdgeError as exc:
        return Row(name, None, f"{type(exc).__name__}: {exc}")


def variants(model: str, reference: Artifact, calibration: np.ndarray, validation: Dataset,
             args: argparse.Namespace) -> list[Row]:
    keep_float = list(reference.meta.extra.get("keep_float", []))
    kept = f"keep_float: {', '.join(keep_float) or 'none'}"
    int8 = QuantizeInt8(exclude=keep_float)
    rows = [Row("fp32", reference), attempt(f"int8 ({kept})", lambda: int8(reference, calibration))]

    nodes = PRUNE_NODES.get(model) or [n.name for n in reference.model.graph.node if n.op_type == "Conv"][1:]
    tune = reference.meta.family == "ssvep" and args.finetune_epochs > 0
    label = f"int8 + 50 % ch. ({'fine-tune ' + str(args.finetune_epochs) + ' ep' if tune else 'no fine-tune'})"
    print(f"  channel pruning: {', '.join(nodes)}")

    def pruned_int8() -> Artifact:
        pruned = PruneChannels(ratio=0.5, nodes=nodes)(reference)
        if tune:
            start = time.time()
            pruned = finetune_pruned_ssvep(pruned, epochs=args.finetune_epochs, lr=args.finetune_lr)
            print(f"  fine-tuned the pruned model {args.finetune_epochs} epochs on "
                  f"{reference.meta.extra['training_data']} in {time.time() - start:.0f} s")
        return int8(pruned, calibration)

    rows.append(attempt(label, pruned_int8))

    mixed = QuantizeMixed(max_drop=args.max_drop)
    row = attempt(f"mixed (<={args.max_drop:g} pt)", lambda: mixed(reference, calibration, (validation.x, validation.y)))
    if row.artifact is not None:
        chosen = list(mixed.precision_.values())
        row.name = (f"mixed ({chosen.count('int8')} int8/{chosen.count('int16')} int16/{chosen.count('float')} fl, "
                    f"<={args.max_drop:g} pt)")
        print(f"  mixed precision: {', '.join(f'{k}={v}' for k, v in mixed.precision_.items())}")
    rows.append(row)
    return rows


def benchmark(model: str, args: argparse.Namespace) -> None:
    if model in OWN_BENCHMARK:
        print(f"\n{model}: measured by {OWN_BENCHMARK[model]}.")
        return
    reference = read_artifact(zoo_path(model))
    extra = reference.meta.extra
    heldout_spec = resolve(extra.get("heldout_data") or HELDOUT.get(model, ""))
    calibration_spec = resolve(extra.get("calibration_data", ""))
    validation_spec = resolve(MIXED_EVAL.get(model, ""))
    if not (heldout_spec and calibration_spec and validation_spec):
        print(f"\n{model}: skipped (no held-out, calibration or validation data known for it).")
        return
    start = time.time()
    heldout = load_dataset(heldout_spec, reference.meta)
    calibration = load_dataset(calibration_spec, reference.meta).x
    validation = load_dataset(validation_spec, reference.meta)
    print(f"\n{model} (family {reference.meta.family}): held-out {len(heldout)} trials ({heldout_spec}); "
          f"calibration {len(calibration)} trials ({calibration_spec}); mixed-precision budget measured on "
          f"{len(validation)} trials ({validation_spec})")
    rows = variants(model, reference, calibration, validation, args)

    fp32_pred = predict(reference, heldout.x).argmax(1)
    acc0 = float(np.mean(fp32_pred == heldout.y))
    size0 = len(reference.to_bytes())
    macs0 = summarize(reference.model).macs
    ms0 = median_latency_ms(reference, heldout.x[0], args.runs)
    w = max(len(r.name) for r in rows)
    header = (f"{'variant':<{w}} {'bytes':>9} {'size x':>6} {'MACs':>10} {'MACs x':>6} {'acc %':>6} {'acc x':>6} "
              f"{'agree %':>7} {'p50 ms':>7} {'p50 x':>6}")
    print(header)
    print("-" * len(header))
    for row in rows:
        if row.artifact is None:
            print(f"{row.name:<{w}} n/a (the pass failed; error below)")
            continue
        a = row.artifact
        size = len(a.to_bytes())
        macs = summarize(a.model).macs
        pred = predict(a, heldout.x).argmax(1)
        acc = float(np.mean(pred == heldout.y))
        ms = ms0 if a is reference else median_latency_ms(a, heldout.x[0], args.runs)
        print(f"{row.name:<{w}} {size:>9,} {size / size0:6.3f} {macs:>10,} {macs / macs0:6.3f} {100 * acc:6.2f} "
              f"{acc / acc0:6.3f} {100 * np.mean(pred == fp32_pred):7.2f} {ms:7.3f} {ms / ms0:6.3f}")
    for row in rows:
        if row.error:
            print(f"  {row.name}: {row.error}")
    print(f"  ({model} measured in {time.time() - start:.0f} s)")


NOTE = """
Variants: fp32 = the zoo file. int8 = QuantizeInt8 (static QDQ, per-channel int8 weights on the even grid that
TFLite reproduces exactly, int8 activations, MinMax on the model's calibration data) with the model's own
keep_float nodes left in float. int8 + 50 % ch. = PruneChannels(ratio=0.5) of the listed Conv nodes (smallest
L1 filters; EEGNet's depthwise groups follow their temporal filter), fine-tuned with the family's recipe where
one exists (SSVEP only), then the same int8 pass. mixed = QuantizeMixed (int8 everywhere, then the most
sensitive layers moved to int16 activations or float until the drop on the validation data is within budget).
Ratios are variant / fp32 from this run (p50 x < 1 is faster); agree % is top-1 agreement with fp32."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), metavar="NAME",
                        help=f"zoo models to measure (default: all: {', '.join(MODELS)})")
    parser.add_argument("--runs", type=int, default=300, help="latency repetitions per variant")
    parser.add_argument("--finetune-epochs", type=int, default=10, help="0 skips fine-tuning the pruned model")
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--max-drop", type=float, default=0.5, help="mixed-precision budget, accuracy points")
    args = parser.parse_args()
    logging.getLogger("edge").setLevel(logging.WARNING)

    start = time.time()
    for model in args.models:
        folder = NEEDS.get(model)
        if folder is not None and not folder.is_dir():
            print(f"\n{model}: skipped, its data folder {folder} is absent.")
            continue
        benchmark(model, args)
    print(NOTE)
    print(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()

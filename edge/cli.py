"""The ``edge`` command: a thin click layer that parses, calls one library function and prints."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from edge import __version__
from edge.errors import EdgeError

log = logging.getLogger("edge")


class EdgeGroup(click.Group):
    """Turns every toolkit error into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgeError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted.") from None


@click.group(cls=EdgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.option("-q", "--quiet", count=True, help="Less log output.")
def main(verbose: int, quiet: int) -> None:
    """Put neural networks on edge hardware and prove they hold up there."""
    level = logging.WARNING - 10 * verbose + 10 * quiet
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=max(level, logging.DEBUG))


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@main.command()
@click.argument("model")
@click.option("--targets/--no-targets", default=True, show_default=True,
              help="TFLite files: ask LiteRT, TFLite Micro and Vela which operators each runs (a few seconds).")
@click.option("--npu", default="ethos-u55-128", show_default=True, metavar="ACCELERATOR",
              help="TFLite files: the Ethos-U configuration Vela checks the operators against.")
@json_option
def inspect(model: str, targets: bool, npu: str, as_json: bool) -> None:
    """Show metadata, provenance, ops, parameters, size and MACs of MODEL (a file or zoo name).

    For a TFLite file also every tensor with its quantization, an arena estimate, and which operators LiteRT,
    TFLite Micro and an Ethos-U NPU run (and why an operator falls back to the CPU).
    """
    from edge.inspection import describe, format_description

    description = describe(model, targets=targets, npu=npu)
    click.echo(json.dumps(description, indent=2) if as_json else format_description(description))


@main.command()
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Converted model file.")
@click.option("--quantize", type=click.Choice(["int8", "int16", "dynamic-int8", "int4-weights", "mixed"]),
              help="int8 static QDQ; int16 = int8 weights + int16 activations; dynamic-int8; int4-weights "
                   "(MatMulNBits, MatMul only); mixed = int8/int16/float per layer within --max-drop.")
@click.option("--recipe", type=click.Path(dir_okay=False), help="TOML recipe of passes (instead of flags).")
@click.option("--calib", "calibration", metavar="DATASPEC", help="Calibration data (default: the model's own).")
@click.option("--calibrate", type=click.Choice(["minmax", "entropy", "percentile", "distribution"]), default="minmax",
              show_default=True, help="Activation range calibration.")
@click.option("--exclude", multiple=True, metavar="NODE",
              help="Keep this node in float (repeatable; default: the model's own keep-float list).")
@click.option("--full-int8", is_flag=True,
              help="Quantize every node, ignoring the model's keep-float list (NPUs and MCUs need it).")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scale granularity.")
@click.option("--integer-exact/--no-integer-exact", default=True, show_default=True,
              help="int8: even weights and exact multipliers, so TFLite, TFLite Micro and Ethos-U files compute "
                   "the ONNX model's int8 values bit for bit (costs one bit of weight resolution).")
@click.option("--max-drop", type=float, default=0.5, show_default=True, metavar="POINTS",
              help="With --quantize mixed: largest accuracy drop allowed, in percentage points.")
@click.option("--eval-data", metavar="DATASPEC",
              help="With --quantize mixed: data the drop is measured on (default: the model's held-out data).")
@click.option("--block-size", type=int, default=32, show_default=True,
              help="With --quantize int4-weights: weights per scale.")
@click.option("--prune-channels", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="RATIO",
              help="Remove this fraction of the filters of each --prune-node Conv (structured).")
@click.option("--prune-node", "prune_nodes", multiple=True, metavar="NODE", help="Conv node to prune (repeatable).")
@click.option("--sparsity", type=click.FloatRange(0, 1, max_open=True), help="Zero this fraction of weights by magnitude.")
@click.option("--sparsity-scope", type=click.Choice(["layer", "global"]), default="layer", show_default=True)
@click.option("--nm", metavar="N:M", help="N:M sparsity along the input dimension: keep N of every M weights (2:4).")
@click.option("--method", "prune_method", type=click.Choice(["magnitude", "wanda", "sparsegpt"]), default="magnitude",
              show_default=True, help="Language models: how --sparsity / --nm choose weights (Wanda and SparseGPT use "
                                      "the calibration text, block by block).")
@click.option("--act-sparsity", type=click.FloatRange(0, 1, max_open=True), metavar="S",
              help="Language models: zero this fraction of projection inputs at run time (training-free).")
@click.option("--act-method", type=click.Choice(["teal", "chess", "wina"]), default="teal", show_default=True,
              help="Thresholds of --act-sparsity: per tensor (TEAL), per FFN channel (CHESS), weight-informed (WINA).")
@click.option("--drop", "drop_modules", metavar="KIND:N|LIST",
              help="Language models (LLM-Drop): drop the N most redundant modules, KIND attn, mlp or all (e.g. "
                   "attn:2), or name them (attn.3,mlp.1).")
@click.option("--prune-ffn", type=click.FloatRange(0, 1, max_open=True), metavar="RATIO",
              help="Language models: remove this fraction of MLP neurons per block (matrices shrink).")
@click.option("--prune-heads", type=click.FloatRange(0, 1, max_open=True), metavar="RATIO",
              help="Language models: remove this fraction of key/value head groups per block (and their cache).")
@click.option("--restrict-ranges", is_flag=True,
              help="Language models: clamp MLP activations to their profiled ranges (fault tolerance).")
@click.option("--accuracy-level", type=click.IntRange(0, 4),
              help="int4-weights: MatMulNBits compute type (4 = int8 activations, the fast CPU path) [default: 4 for "
                   "language models, unset otherwise].")
@click.option("--clip", type=click.Choice(["ftclipact", "proact"]),
              help="Fault tolerance: bound every activation (FT-ClipAct layer-wise, ProAct hybrid) before quantizing.")
@click.option("--clip-mode", type=click.Choice(["zero", "saturate"]), default="zero", show_default=True,
              help="Out-of-range activations become 0 (zero) or the bound (saturate; the only mode NPUs run).")
@click.option("--clip-search/--no-clip-search", default=True, show_default=True,
              help="Refine the profiled bounds by fault-injection-guided interval search (needs labelled --calib).")
@click.option("--export", "exports", multiple=True, type=click.Choice(["tflite", "c"]),
              help="Also write OUTPUT as .tflite (checked in LiteRT) and/or a C array of it (repeatable).")
@click.option("--tflite-io", type=click.Choice(["float32", "int8"]), default="float32", show_default=True,
              help="TFLite input/output type (int8 drops the edge QUANTIZE/DEQUANTIZE, as NPUs want).")
@click.option("--min-agreement", type=click.FloatRange(0, 100), metavar="PCT",
              help="Fail when any step keeps less top-1 agreement with its parent on the calibration data "
                   "[default: 90 for quantization and exports, unchecked for pruning].")
@click.option("--min-sqnr", type=float, metavar="DB",
              help="Fail when any step's output SQNR against its parent falls below this (dB).")
@click.option("--dt", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
              help="NIR files: the time step to discretise with (default: the file's metadata, else 1e-4 s).")
@click.option("--time-steps", type=click.IntRange(min=1), metavar="T",
              help="NIR files: time steps per sample recorded in the artifact (default 100).")
@json_option
def convert(model: str, output: str, quantize: str | None, recipe: str | None, calibration: str | None,
            calibrate: str, exclude: tuple[str, ...], full_int8: bool, per_channel: bool, integer_exact: bool,
            max_drop: float, eval_data: str | None,
            block_size: int, prune_channels: float | None,
            prune_nodes: tuple[str, ...], sparsity: float | None, sparsity_scope: str, nm: str | None,
            prune_method: str, act_sparsity: float | None, act_method: str, drop_modules: str | None,
            prune_ffn: float | None, prune_heads: float | None, restrict_ranges: bool, accuracy_level: int | None,
            clip: str | None, clip_mode: str, clip_search: bool, exports: tuple[str, ...], tflite_io: str,
            min_agreement: float | None, min_sqnr: float | None, dt: float | None, time_steps: int | None,
            as_json: bool) -> None:
    """Convert MODEL with an ordered recipe of passes and write it to OUTPUT.

    After each pass and export the drift from its parent on the calibration data is printed and checked
    against the tolerance; nothing is written when a step falls outside it.
    """
    from converters.recipe import load_exports, load_recipe, recipe_from_flags
    from edge.convert import Tolerance
    from edge.convert import convert as run_convert
    from edge.models import resolve_model

    if recipe and quantize:
        raise click.UsageError("give either --recipe or --quantize, not both.")
    if _is_spiking_model(model):
        _convert_spiking(model, output, quantize, calibration, exports, dt, time_steps, min_agreement, as_json)
        return
    if exclude and full_int8:
        raise click.UsageError("give either --exclude or --full-int8, not both.")
    if not exclude and not full_int8 and quantize in ("int8", "int16"):
        exclude = tuple(resolve_model(model)[1].meta.extra.get("keep_float", ()))
    pruning = prune_channels is not None or sparsity is not None or nm is not None
    llm_flags = (act_sparsity is not None or drop_modules is not None or prune_ffn is not None
                 or prune_heads is not None or restrict_ranges)
    if recipe and (pruning or llm_flags):
        raise click.UsageError("give either --recipe or pruning flags, not both.")
    language_model = _is_language_model(model)
    if llm_flags and not language_model:
        raise click.UsageError("--act-sparsity, --drop, --prune-ffn, --prune-heads and --restrict-ranges are for "
                               "language models (decoders with a KV cache).")
    if language_model and not recipe:
        from converters.recipe import llm_recipe_from_flags

        passes = llm_recipe_from_flags(
            quantize, method=prune_method, sparsity=sparsity, nm=nm, act_sparsity=act_sparsity, act_method=act_method,
            drop=drop_modules, prune_ffn=prune_ffn, prune_heads=prune_heads, restrict_ranges=restrict_ranges,
            block_size=block_size, accuracy_level=4 if accuracy_level is None else accuracy_level, exclude=exclude)
    else:
        passes = load_recipe(recipe) if recipe else recipe_from_flags(
            quantize, exclude, calibrate, per_channel, prune_channels=prune_channels, prune_nodes=prune_nodes,
            sparsity=sparsity, sparsity_scope=sparsity_scope, nm=nm, max_drop=max_drop, eval_data=eval_data,
            block_size=block_size, accuracy_level=accuracy_level, integer_exact=integer_exact)
    if clip:
        if recipe:
            raise click.UsageError("give --clip in the recipe ([[pass]] name = \"clip-ftclipact\") or as a flag, not both.")
        from converters.clip import ClipActivations, ClipActivationsProAct

        clip_pass = (ClipActivations if clip == "ftclipact" else ClipActivationsProAct)(mode=clip_mode, search=clip_search)
        first_quantize = next((i for i, p in enumerate(passes) if p.name.startswith("quantize")), len(passes))
        passes.insert(first_quantize, clip_pass)
    if recipe:
        recipe_exports, recipe_io = load_exports(recipe)
        exports = tuple(dict.fromkeys(exports + recipe_exports))
        tflite_io = recipe_io if tflite_io == "float32" else tflite_io

    agreement, samples = ("next-token agreement", "calibration positions") if language_model else (
        "top-1 agreement", "calibration trials")

    def report(name: str, drift: Any) -> None:
        if not as_json:
            click.echo(f"{name}: {agreement} {100 * drift.top1_agreement:.1f} %, cosine "
                       f"{drift.cosine_similarity:.5f}, max abs error {drift.max_abs_error:.4g}, SQNR "
                       f"{drift.sqnr_db:.1f} dB ({drift.trials} {samples})")

    def sensitivity_tables() -> None:
        from converters.mixed_precision import QuantizeMixed, format_sensitivity_table

        for step in passes:
            if isinstance(step, QuantizeMixed) and getattr(step, "sensitivity_", None) and not as_json:
                click.echo(format_sensitivity_table(step.sensitivity_, step.precision_ or None))

    try:
        child, drifts = run_convert(model, output, passes, calibration=calibration, on_pass=report,
                                    exports=exports, tflite_io=tflite_io,
                                    tolerance=Tolerance(None if min_agreement is None else min_agreement / 100,
                                                        min_sqnr))
    except EdgeError:
        sensitivity_tables()  # shows which layers could not meet the budget
        raise
    sensitivity_tables()
    for record in child.meta.provenance:
        if record.name == "quantize-mixed" and not as_json:
            click.echo(f"accuracy drop {record.params['drop_points']:.2f} points (budget "
                       f"{record.params['max_drop']:g}) on {record.params['eval_trials']} trials")
    if as_json:
        click.echo(json.dumps({"output": output, "sha256": child.sha256,
                               "drift": {name: d.as_dict() for name, d in drifts}}, indent=2))
    else:
        from converters.sparsify import format_sparsity_report, sparsity_report
        from edge.models import resolve_model
        from edge.summary import summarize

        before = summarize(resolve_model(model)[1].model)
        after = summarize(child.model)
        if (sparsity is not None or nm is not None) and not language_model:
            click.echo(format_sparsity_report(sparsity_report(child.model)))
        if language_model:
            for record in child.meta.provenance[-len(passes):]:
                shown = {k: v for k, v in record.params.items()
                         if not isinstance(v, (dict, list)) and k != "calibration_data"}
                click.echo(f"{record.name}: " + ", ".join(f"{k}={_short_value(v)}" for k, v in shown.items()))
        if language_model:
            from edge.families.llm.runner import weight_macs_per_token

            macs = (weight_macs_per_token(resolve_model(model)[1].model), weight_macs_per_token(child.model))
            click.echo(f"MACs per token {macs[0] / 1e6:.2f} M -> {macs[1] / 1e6:.2f} M, parameters "
                       f"{before.parameters:,} -> {after.parameters:,}")
        else:
            click.echo(f"MACs {before.macs / 1e6:.2f} M -> {after.macs / 1e6:.2f} M, parameters "
                       f"{before.parameters:,} -> {after.parameters:,}")
        click.echo(f"wrote {output} ({Path(output).stat().st_size / 1024:.1f} KiB)")


def fault_options(command: Any) -> Any:
    """The fault-model options shared by `edge resilience` and `edge eval --faults`."""
    options = [
        click.option("--ber", "ber_range", default="1e-7:1e-3", show_default=True, metavar="LOW:HIGH|LIST",
                     help="Bit error rates per stored bit: a decade range or a comma-separated list."),
        click.option("--bits", type=click.Choice(["all", "sign", "exponent", "mantissa"]), default="all",
                     show_default=True, help="Which bits of each stored word may flip."),
        click.option("--kind", type=click.Choice(["flip", "stuck-at-0", "stuck-at-1"]), default="flip",
                     show_default=True),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed of the fault maps."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command(name="eval")
@click.argument("model")
@click.option("--data", "data_spec", required=True, metavar="DATASPEC", help="Dataset spec, file or folder.")
@click.option("--device", default="cpu", show_default=True,
              help="Target spec: cpu, gpu[:N], npu:ethos-u55-128, mcu:tflm[?arena=KB&ram=KB], serial:PORT, sim "
                   "(see `edge targets`).")
@click.option("--runs", default=200, show_default=True, type=click.IntRange(min=1), help="Timed runs at batch 1.")
@click.option("--reference", metavar="MODEL",
              help="Host reference for fidelity (default: for a .tflite, the .onnx beside it when its sha256 is the "
                   "one the file was exported from; off the host CPU, MODEL itself on the host CPU).")
@click.option("--out-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where the run folder is created.")
@click.option("--memory/--no-memory", default=True, show_default=True, help="Measure memory (arena, SRAM, RSS).")
@click.option("--baseline", "baselines", multiple=True, metavar="NAME",
              help="Also run a classic SSVEP method on the same trials: cca, fbcca, etrca (repeatable).")
@click.option("--faults", is_flag=True, help="Also sweep weight bit flips on the device (accuracy vs BER).")
@click.option("--maps", default=20, show_default=True, type=click.IntRange(min=1), help="With --faults: maps per BER.")
@click.option("--task", type=click.Choice(["classification", "regression", "anomaly"]),
              help="What the outputs are (default: the model's metadata, else read from the output shape and y).")
@click.option("--dt", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
              help="NIR files: the time step to run at (default: the file's own; a different one is reported).")
@fault_options
@json_option
def eval_command(model: str, data_spec: str, device: str, runs: int, reference: str | None, out_dir: str,
                 memory: bool, baselines: tuple[str, ...], faults: bool, maps: int, task: str | None,
                 dt: float | None, ber_range: str, bits: str, kind: str, seed: int, as_json: bool) -> None:
    """Evaluate MODEL on DATASPEC on a device: accuracy, ITR, fidelity to the host, latency, memory.

    MODEL is an ONNX file, a zoo name or a TFLite file; an int8 ONNX model is exported to TFLite for
    targets that run TFLite. With --faults the resilience curve on that device is added (the same seeded
    fault maps as on any other target storing the same weights).
    """
    from edge.evaluate import FaultSweep, run_evaluation
    from edge.report import format_table, per_subject_table

    special = "language" if _is_language_model(model) else "spiking" if _is_spiking_model(model) else None
    if task and special:
        raise click.UsageError(f"--task is for plain models; a {special} model's task is fixed by its family.")
    if dt is not None and not str(model).lower().endswith(".nir"):
        raise click.UsageError("--dt applies to NIR files; a converted spiking network keeps the dt it was "
                               "converted with.")
    if special == "language":
        _eval_language_model(model, data_spec, device, reference, out_dir, faults, maps, ber_range, bits, kind, seed,
                             as_json)
        return
    if special == "spiking":
        if reference is not None:  # it would otherwise be ignored without a word
            raise click.UsageError("--reference is not used for spiking networks: edge eval does not compare them "
                                   "with a reference (edge convert checks each step spike for spike).")
        _eval_spiking_model(model, data_spec, device, runs, out_dir, faults, maps, ber_range, bits, kind, seed, as_json,
                            dt)
        return
    sweep = None
    if faults:
        from edge.faults import FaultModel
        from edge.resilience import parse_ber_range

        sweep = FaultSweep(parse_ber_range(ber_range), maps, seed, FaultModel(kind=kind, bits=bits))
    results, folder = run_evaluation(model, data_spec, device=device, runs=runs, reference=reference,
                                     out_dir=out_dir, measure_memory=memory, baselines=baselines, faults=sweep,
                                     progress=None if as_json else lambda msg: log.info("%s", msg), task=task)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    columns = {Path(model).name: results, **results.get("baselines", {})}
    click.echo(format_table(columns))
    if not results["task"]["decided_by"].startswith("the model's metadata"):  # say how a plain model was read
        click.echo(f"task: {results['task']['kind']} (decided by {results['task']['decided_by']})")
    # What the data reader assumed or left out (label encoding, byte type, unlabelled windows) is shown, not hidden.
    for note in results["data"].get("notes", []) + results.get("notes", []):
        click.echo(f"note: {note}")
    subjects = per_subject_table(columns)
    if subjects:
        click.echo("\n" + subjects)
    if "resilience" in results:
        from edge.resilience import format_resilience

        sweep_doc = {"models": {Path(model).name: results["resilience"]},
                     "bers": sweep.bers, "maps": maps, "trials": results["data"]["trials"]}
        click.echo(f"\nweight faults injected on {device}:\n" + format_resilience(sweep_doc))
    if "fidelity_unavailable" in results["metrics"]:
        click.echo(results["metrics"]["fidelity_unavailable"])
    click.echo(f"device: {results['device']['spec']} ({_engine_name(results['device'])}); "
               f"latency: {results['metrics']['latency_ms']['source']}")
    click.echo(f"results: {folder / 'results.json'}")


def _is_language_model(model: str) -> bool:
    """True when MODEL names an ONNX decoder with a KV cache (our LLM family or a plain one)."""
    from edge.families.llm.export import is_llm
    from edge.models import resolve_model

    from edge.tflite_model import is_tflite

    if str(model).lower().endswith((".tflite", ".nir")) or is_tflite(model):
        return False
    return is_llm(resolve_model(model)[1])


def _convert_spiking(model: str, output: str, quantize: str | None, calibration: str | None,
                     exports: tuple[str, ...], dt: float | None, time_steps: int | None, min_agreement: float | None,
                     as_json: bool) -> None:
    from edge.snn import convert_spiking

    def report(name: str, drift: dict[str, Any]) -> None:
        if not as_json:
            sqnr = "inf" if drift["sqnr_db"] is None else f"{drift['sqnr_db']:.1f}"
            click.echo(f"{name}: top-1 agreement {100 * drift['top1_agreement']:.1f} %, spikes agree "
                       f"{100 * drift['spike_agreement']:.3f} %, SQNR {sqnr} dB ({drift['samples']} samples)")

    child, checks = convert_spiking(model, output, quantize=quantize, calibration=calibration, exports=exports, dt=dt,
                                    time_steps=time_steps, on_step=report,
                                    on_warning=lambda text: click.echo(f"WARNING: {text}", err=True),
                                    min_agreement=0.9 if min_agreement is None else min_agreement / 100)
    if as_json:
        click.echo(json.dumps({"output": output, "sha256": child.sha256, "checks": dict(checks)}, indent=2))
        return
    from edge.snn import dt_description

    click.echo(f"dt: {dt_description(child.meta.task)}")
    written = [output] + ([str(Path(output).with_suffix(".tflite"))] if exports else [])
    click.echo(f"precision: {', '.join(f'{k} {v}' for k, v in child.meta.task['precision'].items())}")
    click.echo("wrote " + ", ".join(f"{p} ({Path(p).stat().st_size / 1024:.1f} KiB)" for p in written))


def _is_spiking_model(model: str) -> bool:
    from edge.snn import is_spiking_model

    return is_spiking_model(model)


def _engine_name(info: dict[str, Any]) -> str:
    """What ran the model, for the one-line device summary (Vela targets report a compiler, not an engine)."""
    if info.get("engine"):
        return str(info["engine"])
    if info.get("vela_version"):
        return f"Vela {info['vela_version']}; outputs from {info.get('functional_engine', 'TFLite Micro')}"
    return "engine not reported"


def _eval_spiking_model(model: str, data_spec: str, device: str, runs: int, out_dir: str, faults: bool, maps: int,
                        ber_range: str, bits: str, kind: str, seed: int, as_json: bool, dt: float | None = None) -> None:
    from edge.report import new_run_folder, write_results
    from edge.snn import evaluate_spiking_model, format_spiking_results

    results = evaluate_spiking_model(model, data_spec, device=device, runs=runs, dt=dt,
                                     progress=None if as_json else lambda msg: log.info("%s", msg))
    if faults:
        from edge.faults import FaultModel
        from edge.resilience import parse_ber_range
        from edge.snn import spiking_resilience

        if device.split(":")[0].split("?")[0] != "cpu":
            raise EdgeError("fault sweeps of spiking networks run on the cpu target.")
        results["resilience"] = spiking_resilience(model, data_spec, bers=parse_ber_range(ber_range), maps=maps,
                                                   seed=seed, fault=FaultModel(kind=kind, bits=bits), dt=dt)
    folder = new_run_folder(out_dir, "eval")
    write_results(folder, results)
    if as_json:
        click.echo(json.dumps(results, indent=2, default=str))
        _refuse_meaningless(results, folder)
        return
    click.echo(format_spiking_results(results))
    if "resilience" in results:
        from edge.snn import format_spiking_resilience

        click.echo("\nfaults in weights and thresholds:\n" + format_spiking_resilience(results["resilience"]))
    click.echo(f"results: {folder / 'results.json'}")
    _refuse_meaningless(results, folder)


def _refuse_meaningless(results: dict[str, Any], folder: Path) -> None:
    """Exit 1 when a spiking network's predictions do not depend on its input (the results are kept, marked)."""
    if results.get("meaningless"):
        raise click.ClickException(f"{results['meaningless']}; the results in {folder} are marked so. Check the "
                                   "time step (dt) the network was converted with.")


def _eval_language_model(model: str, data_spec: str, device: str, reference: str | None, out_dir: str, faults: bool,
                         maps: int, ber_range: str, bits: str, kind: str, seed: int, as_json: bool) -> None:
    from edge.llm import (
        evaluate_language_model,
        format_language_model_resilience,
        format_language_model_results,
        language_model_resilience,
    )
    from edge.report import new_run_folder, write_results

    results = evaluate_language_model(model, data_spec, device=device, reference=reference,
                                      progress=None if as_json else lambda msg: log.info("%s", msg))
    if faults:
        from edge.faults import FaultModel
        from edge.resilience import parse_ber_range

        if device.split(":")[0].split("?")[0] != "cpu":
            raise EdgeError("weight-fault sweeps of language models run on the cpu target.")
        results["resilience"] = language_model_resilience([model], data_spec, bers=parse_ber_range(ber_range),
                                                          maps=maps, seed=seed, fault=FaultModel(kind=kind, bits=bits))
    folder = new_run_folder(out_dir, "eval")
    write_results(folder, results)
    if as_json:
        click.echo(json.dumps(results, indent=2, default=str))
        return
    click.echo(format_language_model_results(results))
    if "resilience" in results:
        click.echo("\nweight faults:\n" + format_language_model_resilience(results["resilience"]))
    click.echo(f"results: {folder / 'results.json'}")


@main.command()
@click.argument("model")
@click.option("--prompt", default="\n", show_default=True, help="Text to continue.")
@click.option("--tokens", default=200, show_default=True, type=click.IntRange(min=0), help="Tokens to generate.")
@click.option("--top-k", type=click.IntRange(min=1), help="Sample from the k most likely tokens (default: greedy).")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True, help="cpu or gpu[:N].")
def generate(model: str, prompt: str, tokens: int, top_k: int | None, temperature: float, seed: int,
             device: str) -> None:
    """Continue PROMPT with a language model (KV-cached decoding, greedy or top-k)."""
    from edge.llm import generate_text

    click.echo(generate_text(model, prompt, tokens=tokens, top_k=top_k, temperature=temperature, seed=seed,
                             device=device))


@main.command()
@click.argument("model")
@click.option("--device", required=True, help="Target spec (see `edge targets`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Also write what was deployed (the Vela-compiled file for an NPU, the TFLite file otherwise).")
@json_option
def flash(model: str, device: str, output: str | None, as_json: bool) -> None:
    """Deploy MODEL on a device and report what it takes there (upload, arena, SRAM, flash, NPU operators)."""
    from edge.artifact import write_bytes_atomic
    from edge.deploy import deploy

    target, deployed, report = deploy(model, device)
    try:
        info = target.info()
        written = None
        if output:
            out = Path(output)
            if out.exists() and Path(model).exists() and out.resolve() == Path(model).resolve():
                raise EdgeError("the output path is the input model; choose another -o so the original is kept.")
            write_bytes_atomic(out, getattr(target, "compiled", None) or deployed.to_bytes())
            written = str(out)
    finally:
        target.close()
    doc = {"device": device, "deploy": report, "info": info, "output": written}
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    click.echo(f"deployed {Path(model).name} on {device} ({_engine_name({**report, **info})})")
    for key, value in {**report, **info}.items():
        if key in ("target", "engine") or value in (None, "", [], {}):
            continue
        click.echo(f"  {key:<22} {_short_value(value)}")
    if written:
        click.echo(f"wrote {written}")


def _short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        text = json.dumps(value, default=str)
        return text if len(text) <= 100 else text[:97] + "..."
    return str(value)


@main.command()
@json_option
def targets(as_json: bool) -> None:
    """List the deployment targets, an example spec for each, and whether this machine can use it."""
    from devices import describe_targets

    rows = describe_targets()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r.get("example", r["name"])) for r in rows)
    for row in rows:
        state = "ready" if row["usable"] else f"unavailable: {row['why']}"
        click.echo(f"{row.get('example', row['name']):<{width}}  {row['summary']}")
        click.echo(f"{'':<{width}}  formats: {', '.join(row.get('formats', [])) or '-'}; {state}")


@main.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False), help="TFLite model to boot with.")
@click.option("--storage", type=click.Path(file_okay=False),
              help="Folder acting as the board's flash (the committed model survives restarts).")
@click.option("--faults", "link_faults", default="", metavar="SPEC",
              help="Link faults, e.g. corrupt=0.001,garbage=0.05,seed=1 (see devices/virtual.py).")
def sim(model_path: str | None, storage: str | None, link_faults: str) -> None:
    """Run a virtual board on a pty: the MLPerf Tiny protocol plus flashing, on TFLite Micro.

    Point `edge flash` / `edge eval --device serial:/dev/pts/N` at the printed port; Ctrl-C stops it.
    """
    from devices.virtual import serve

    code = serve(model_path, storage, link_faults, None,
                 lambda port: click.echo(f"virtual board on {port} (serial:{port}); Ctrl-C stops it"))
    raise SystemExit(code)


@main.command()
@click.argument("model")
@click.option("--data", "data_spec", required=True, metavar="DATASPEC", help="Labelled trials (dataset spec or file).")
@click.option("--maps", default=100, show_default=True, type=click.IntRange(min=1), help="Fault maps per BER.")
@click.option("--compare", metavar="MODEL", help="Sweep a second model (e.g. the hardened one) on the same faults.")
@fault_options
@click.option("--targets", type=click.Choice(["weights", "all"]), default="weights", show_default=True,
              help="Weights and biases, or every stored float parameter (clip bounds included).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Processes (ONNX models on the cpu only).")
@click.option("--device", default="cpu", show_default=True,
              help="Where the faulty weights run: cpu (onnxruntime for ONNX, LiteRT for TFLite), mcu:tflm, sim, ...")
@click.option("--out-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where the run folder is created.")
@json_option
def resilience(model: str, data_spec: str, ber_range: str, maps: int, compare: str | None, bits: str, kind: str,
               targets: str, seed: int, workers: int, device: str, out_dir: str, as_json: bool) -> None:
    """Accuracy (and ITR) of MODEL against the bit error rate of its weight memory, with 95 % bands.

    MODEL and COMPARE are ONNX files, zoo names or TFLite files. The curve (and COMPARE's, on the same fault
    maps when both are of one format) goes to results.json and resilience.png.
    """
    from edge.faults import FaultModel
    from edge.resilience import format_resilience, parse_ber_range, run_resilience

    bers = parse_ber_range(ber_range)
    fault = FaultModel(kind=kind, bits=bits, targets=targets)
    if _is_language_model(model):
        from edge.llm import format_language_model_resilience, language_model_resilience
        from edge.report import new_run_folder, write_results

        doc = language_model_resilience([model] + ([compare] if compare else []), data_spec, bers=bers, maps=maps,
                                        seed=seed, fault=fault, progress=lambda msg: log.info("%s", msg))
        folder = new_run_folder(out_dir, "resilience")
        write_results(folder, doc)
        click.echo(json.dumps(doc, indent=2, default=str) if as_json else format_language_model_resilience(doc))
        if not as_json:
            click.echo(f"results: {folder / 'results.json'}")
        return
    results, folder = run_resilience(model, data_spec, bers=bers, maps=maps, seed=seed, compare=compare,
                                     fault=fault, workers=workers, out_dir=out_dir, device=device)
    if as_json:
        click.echo(json.dumps({k: v for k, v in results.items()}, indent=2, default=str))
        return
    click.echo(format_resilience(results))
    click.echo(f"results: {folder / 'results.json'}, plot: {folder / 'resilience.png'}")


@main.command()
@click.option("--data", "data_spec", required=True, metavar="DATASPEC",
              help="Whole SSVEP trials: synthetic-ssvep:..., a Benchmark folder or an SSVEPExo folder.")
@click.option("--method", "methods", multiple=True, default=("cca", "fbcca", "etrca"), show_default=True,
              help="Classic method to sweep (repeatable).")
@click.option("--windows", default="0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0", show_default=True,
              help="Comma-separated window lengths in seconds.")
@click.option("--latency", default=0.14, show_default=True, type=float, help="Visual latency before the window (s).")
@click.option("--out-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where the run folder is created.")
@json_option
def sweep(data_spec: str, methods: tuple[str, ...], windows: str, latency: float, out_dir: str, as_json: bool) -> None:
    """Accuracy and ITR of classic SSVEP methods against window length, with the ITR curve plotted."""
    from edge.evaluate import window_sweep
    from edge.families.ssvep.baselines import make_baseline
    from edge.report import format_sweep, new_run_folder, plot_sweep, write_results

    try:
        lengths = [float(w) for w in windows.split(",") if w.strip()]
    except ValueError:
        raise click.BadParameter(f"'{windows}' is not a comma-separated list of seconds.", param_hint="--windows")
    for name in methods:
        if name.lower() not in ("cca", "fbcca", "etrca"):
            make_baseline(name)
    result = window_sweep(data_spec, [m.lower() for m in methods], lengths, latency_s=latency)
    folder = new_run_folder(out_dir, "sweep")
    write_results(folder, result)
    plot_sweep(result, folder / "itr_curve.png")
    click.echo(json.dumps(result, indent=2) if as_json else format_sweep(result))
    if not as_json:
        click.echo(f"run folder: {folder} (itr_curve.png)")


@main.command()
@click.option("--out-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where the run folder is created.")
@click.option("--subjects", default="31-35", show_default=True, help="Held-out synthetic subjects.")
@click.option("--runs", default=200, show_default=True, type=click.IntRange(min=1), help="Timed runs at batch 1.")
def demo(out_dir: str, subjects: str, runs: int) -> None:
    """Reference SSVEP network on held-out synthetic subjects: fp32 vs int8 side by side."""
    from edge.demo import run_demo

    with click.progressbar(length=100, label="demo", show_eta=False) as bar:
        state = {"done": 0}

        def progress(fraction: float, label: str) -> None:
            bar.label = label.ljust(28)
            target = int(100 * fraction)
            bar.update(target - state["done"])
            state["done"] = target

        table, folder = run_demo(out_dir=out_dir, subjects=subjects, runs=runs, progress=progress)
    click.echo(table)
    click.echo(f"run folder: {folder}")


if __name__ == "__main__":
    main()

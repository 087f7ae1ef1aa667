"""Conformance corpus: do third-party architectures quantize, export fully int8 and compute the same in every engine?

Each row is one network of ``benchmarks.corpus`` (MLPerf Tiny's four, seven torchvision classifiers, a GRU and an
LSTM classifier; briefly trained or seeded random weights, no downloads) exported with a static batch of 1 or a
dynamic batch, at opset 13 or 18. Each row goes through the flow of

    edge convert MODEL.onnx -o MODEL_int8.onnx --quantize int8 --full-int8 --calib CALIB.npz --export tflite --tflite-io int8

(``edge.convert.convert`` with the same recipe; its 90 % agreement tolerance is lifted so that the figures below are
measured, not refused; the int8-vs-float agreement it measured on the calibration data is shown) and then measures,
on held-out inputs the calibration never saw:

* fully int8: every tensor of the TFLite file is int8 (or an int32 bias); otherwise the ops touching float;
* top-1 agreement and the largest difference in output quantization steps of the TFLite file against the ONNX QDQ
  model in onnxruntime, in LiteRT's reference kernels and in TFLite Micro (the autoencoder has no top-1: its
  rows show the relative error ||TFLite - ONNX|| / ||ONNX|| instead, and pass when no output is more than 1 step off);
* whether TFLite Micro's int8 outputs are bit-exact with LiteRT's reference kernels;
* the Vela ethos-u55-128 split: operators on the NPU / on the CPU.

With ``--weights trained`` (the default) each network first gets a few dozen seeded Adam steps on a synthetic labelled
task (``benchmarks.corpus.synthetic_task``: a smooth template per class plus noise), and calibration (64) and held-out
(100) inputs are drawn from that task (seeds 10 and 20); the float model's held-out accuracy on it is a column (the
autoencoder: its relative reconstruction error). With ``--weights random`` they are drawn from a standard normal
distribution. A row passes
when the file is fully int8 and top-1 agreement is >= 99 % in both engines. A row that fails says where (ONNX export,
reading, quantization, TFLite export, the engines) and the one sentence the toolkit gave; an unexpected exception
(a traceback a user would see) is reported as such.

    .venv/bin/python benchmarks/conformance.py                        # the whole corpus (52 rows, ~13 min)
    .venv/bin/python benchmarks/conformance.py --weights random       # the same with seeded random weights
    .venv/bin/python benchmarks/conformance.py --fast                 # the five rows of tests/test_conformance.py
    .venv/bin/python benchmarks/conformance.py --only resnet-8 --out table.md --json rows.json --models-dir corpus
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: the repository root on the path, as for the other benchmarks
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.corpus import (  # noqa: E402
    ARCHITECTURES, WEIGHTS, Architecture, export_onnx, float_task_score, task_inputs,
)
from edge.errors import EdgeError, EngineError  # noqa: E402

#: (architecture, dynamic batch, opset) of the ``--fast`` subset, which tests/test_conformance.py also runs.
FAST_ROWS = (("ds-cnn", True, 13), ("ds-cnn", False, 13), ("resnet-8", True, 18), ("fc-autoencoder", False, 13),
             ("gru-classifier", True, 13))
CALIBRATION_SEED, HELDOUT_SEED = 10, 20
#: 100 held-out inputs, so that the 99 % bar allows one differing decision (with 64 it would demand all of them).
CALIBRATION_TRIALS, HELDOUT_TRIALS = 64, 100
MIN_AGREEMENT = 0.99
ACCELERATOR = "ethos-u55-128"


@dataclass
class Row:
    """What one corpus row measured; ``stage`` and ``reason`` say where and why it stopped, if it did."""

    architecture: str
    dynamic: bool
    opset: int
    size_note: str = ""
    task: str = "classifier"
    weights: str = "trained"
    task_score: float | None = None  # float model on held-out synthetic data: top-1 accuracy (autoencoder: rel. error)
    exporter: str = ""
    stage: str = ""  # empty: it went all the way
    reason: str = ""
    float_agreement: float | None = None  # int8 ONNX vs float, calibration data, top-1
    float_ops: list[str] = field(default_factory=list)
    fully_int8: bool | None = None
    engines: dict[str, dict[str, float]] = field(default_factory=dict)  # LiteRT ref / TFLM: agreement, steps, rel
    bit_exact: bool | None = None  # TFLM int8 outputs == LiteRT reference kernels'
    npu_operators: int | None = None
    cpu_operators: int | None = None
    cpu_operations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def name(self) -> str:
        """The row's file stem: architecture, batch, opset."""
        return f"{self.architecture}_{'dyn' if self.dynamic else 'b1'}_op{self.opset}"

    @property
    def passed(self) -> bool:
        """Fully int8 and >= 99 % top-1 agreement in both engines (autoencoder: no output more than 1 step off)."""
        if self.stage or not self.fully_int8 or len(self.engines) < 2:
            return False
        if self.task == "autoencoder":
            return all(e["max_steps"] <= 1 for e in self.engines.values())
        return all(e["agreement"] >= MIN_AGREEMENT for e in self.engines.values())


def run_row(architecture: Architecture, dynamic: bool, opset: int, folder: Path,
            heldout: int = HELDOUT_TRIALS, vela: bool = True, weights: str = "trained") -> Row:
    """Export, convert and measure one row; every file is written to ``folder``."""
    row = Row(architecture.name, dynamic, opset, architecture.size_note, architecture.task, weights)
    start = time.perf_counter()
    try:
        _run_row(row, architecture, folder, heldout, vela)
    except EdgeError as exc:  # an engine or the Vela compiler refusing the file, in one sentence
        row.reason = _first_line(exc)
    except Exception as exc:  # an unexpected exception is itself the finding: a user would see a traceback
        where = traceback.extract_tb(exc.__traceback__)[-1]
        row.stage = row.stage or "crash"
        row.reason = (f"unexpected {type(exc).__name__} at {Path(where.filename).name}:{where.lineno}: "
                      f"{_first_line(exc)}")
    row.seconds = time.perf_counter() - start
    return row


def _run_row(row: Row, architecture: Architecture, folder: Path, heldout: int, vela: bool) -> None:
    from converters.recipe import recipe_from_flags
    from edge.convert import Tolerance, convert

    source = folder / f"{row.name}.onnx"
    row.stage = "ONNX export"
    row.exporter = export_onnx(architecture, source, opset=row.opset, dynamic=row.dynamic, weights=row.weights)
    row.task_score = float_task_score(architecture, row.weights, heldout, HELDOUT_SEED)
    calibration = folder / f"{row.name}_calib.npz"
    np.savez(calibration, x=task_inputs(architecture, CALIBRATION_TRIALS, CALIBRATION_SEED, row.weights))
    steps: list[str] = []

    def on_pass(name: str, result) -> None:
        steps.append(name)
        if name == "quantize-int8":
            row.float_agreement = result.top1_agreement

    output = folder / f"{row.name}_int8.onnx"
    passes = recipe_from_flags("int8", (), "minmax", True, integer_exact=True)  # --quantize int8 --full-int8
    row.stage = "quantize"
    try:
        child, _ = convert(source, output, passes, calibration=str(calibration), on_pass=on_pass, exports=("tflite",),
                           tflite_io="int8", tolerance=Tolerance(min_agreement=0.0))
    except EdgeError as exc:
        if "quantize-int8" not in steps:  # an engine error here comes from running the model to check the pass
            row.stage = "quantize check" if isinstance(exc, EngineError) else "quantize"
        else:
            row.stage = "TFLite export" if "tflite (LiteRT)" not in steps else "TFLite check"
        row.reason = _first_line(exc)
        return
    except Exception:
        if "quantize-int8" in steps:
            row.stage = "TFLite export" if "tflite (LiteRT)" not in steps else "TFLite check"
        raise
    data = output.with_suffix(".tflite").read_bytes()
    row.stage = "TFLite inspection"
    row.float_ops = float_operators(data)
    row.fully_int8 = not row.float_ops
    row.stage = "engines"
    measure_engines(row, child, data, task_inputs(architecture, heldout, HELDOUT_SEED, row.weights))
    if vela:
        row.stage = "Vela"
        from runtimes.vela import compile_for_npu

        _, summary = compile_for_npu(data, ACCELERATOR)
        row.npu_operators, row.cpu_operators = summary["npu_operators"], summary["cpu_operators"]
        row.cpu_operations = sorted({f"{op['op']} ({op['reason']})" if op["reason"] else op["op"]
                                     for op in summary["cpu_operations"]})
    row.stage = ""


def measure_engines(row: Row, child, data: bytes, x: np.ndarray) -> None:
    """Agreement and step differences of LiteRT's reference kernels and TFLite Micro vs the ONNX QDQ model."""
    from runtimes.litert_session import LiteRTSession
    from runtimes.onnxruntime_session import OnnxRuntimeSession
    from runtimes.tflm_session import TFLMSession

    onnx_session = OnnxRuntimeSession(child)
    name = child.model.graph.input[0].name
    want = np.concatenate([onnx_session.run({name: t[None]})[0] for t in x])  # one at a time: batch-1 models too
    step = output_step(data)
    outputs = {}
    litert = LiteRTSession(data, kernels="reference")
    outputs["LiteRT ref"] = np.concatenate([litert.run({"x": t[None]})[0] for t in x])
    outputs["TFLM"] = TFLMSession(data).run({"x": x})[0]
    for engine, got in outputs.items():
        got = got.reshape(want.shape)
        difference = np.abs(got.astype(np.float64) - want)
        flat_want = want.reshape(len(want), -1)
        row.engines[engine] = {
            "agreement": float(np.mean(got.reshape(len(got), -1).argmax(1) == flat_want.argmax(1))),
            "max_steps": float(difference.max() / step),
            "relative_error": float(np.linalg.norm(difference) / max(np.linalg.norm(want), 1e-30)),
        }
    row.bit_exact = bool(np.array_equal(outputs["LiteRT ref"], outputs["TFLM"]))


def output_step(data: bytes) -> float:
    """The quantization step of the TFLite file's (int8) output; 1.0 for a float output."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    graph = model.subgraphs[0]
    quantization = graph.tensors[graph.outputs[0]].quantization
    if quantization is None or quantization.scale is None or not len(quantization.scale):
        return 1.0
    return float(quantization.scale[0])


def float_operators(data: bytes) -> list[str]:
    """The TFLite operators (builtin names, sorted, unique) that read or write a float32 tensor."""
    from ai_edge_litert import schema_py_generated as schema

    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    found = set()
    for graph in model.subgraphs:
        for operator in graph.operators:
            code = model.operatorCodes[operator.opcodeIndex]
            tensors = [i for i in [*list(operator.inputs), *list(operator.outputs)] if i >= 0]
            if any(graph.tensors[i].type == schema.TensorType.FLOAT32 for i in tensors):
                found.add(names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode)))
    return sorted(found)


def corpus_rows(fast: bool, only: list[str] | None) -> list[tuple[Architecture, bool, int]]:
    """(architecture, dynamic, opset) of every row to run, in table order."""
    if fast:
        return [(ARCHITECTURES[name], dynamic, opset) for name, dynamic, opset in FAST_ROWS
                if not only or name in only]
    unknown = sorted(set(only or ()) - set(ARCHITECTURES))
    if unknown:
        raise SystemExit(f"unknown architecture '{unknown[0]}'; known: {', '.join(ARCHITECTURES)}")
    return [(architecture, dynamic, opset) for architecture in ARCHITECTURES.values()
            if not only or architecture.name in only for opset in (13, 18) for dynamic in (False, True)]


# -- the table --------------------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _engine_cell(row: Row, engine: str) -> str:
    measured = row.engines.get(engine)
    if measured is None:
        return "-"
    if row.task == "autoencoder":
        return f"rel. err {measured['relative_error']:.1e} / {measured['max_steps']:.0f} steps"
    return f"{_percent(measured['agreement'])} % / {measured['max_steps']:.0f} steps"


def _task_cell(row: Row) -> str:
    """The float model on the held-out synthetic task: accuracy (vs chance) or the autoencoder's relative error."""
    if row.task_score is None:
        return "-"
    if row.task == "autoencoder":
        return f"rel. err {row.task_score:.2f}"
    return f"{_percent(row.task_score)} %"


def format_table(rows: list[Row]) -> str:
    """The markdown table, a summary line and the failures (stage, op and reason)."""
    lines = ["| model | input | batch | opset (exporter) | float on held-out task | quantized (int8 vs float top-1) | "
             "fully int8 | LiteRT ref: top-1 / max steps | TFLM: top-1 / max steps | TFLM = LiteRT ref | "
             "Vela NPU/CPU ops | pass |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        quantized = ("no" if row.stage == "quantize" else "yes, check failed" if row.stage == "quantize check"
                     else "-" if row.float_agreement is None else "yes" if row.task == "autoencoder"
                     else f"yes ({_percent(row.float_agreement)} %)")
        fully = "-" if row.fully_int8 is None else "yes" if row.fully_int8 else "no: float " + ", ".join(row.float_ops)
        exact = "-" if row.bit_exact is None else "yes" if row.bit_exact else "no"
        vela = "-" if row.npu_operators is None else f"{row.npu_operators}/{row.cpu_operators}"
        verdict = "yes" if row.passed else f"no ({row.stage})" if row.stage else "no"
        lines.append(f"| {row.architecture} | {row.size_note} | {'dynamic' if row.dynamic else '1'} | "
                     f"{row.opset} ({row.exporter.split('; ')[-1] if row.exporter else '-'}) | {_task_cell(row)} | "
                     f"{quantized} | {fully} | "
                     f"{_engine_cell(row, 'LiteRT ref')} | {_engine_cell(row, 'TFLM')} | {exact} | {vela} | {verdict} |")
    passed = sum(row.passed for row in rows)
    exact = sum(bool(row.bit_exact) for row in rows)
    weights = ", ".join(sorted({row.weights for row in rows})) or "-"
    share = 100 * passed / max(len(rows), 1)
    lines += ["", f"**Weights {weights}: {passed}/{len(rows)} rows ({share:.0f} %) export fully int8 with "
                  f">= {100 * MIN_AGREEMENT:g} % top-1 agreement in LiteRT's reference kernels and TFLite Micro "
                  f"(autoencoder: no output more than 1 step off); {exact}/{len(rows)} run bit-exact in TFLite Micro "
                  f"and LiteRT's reference kernels.**"]
    failures: dict[str, list[str]] = {}
    for row in rows:
        if not row.passed:
            failures.setdefault(_failure(row), []).append(row.name)
    if failures:
        lines += ["", "Failures (rows sharing a reason grouped):", ""]
        lines += [f"- {', '.join(names)}: {reason}" for reason, names in failures.items()]
    on_cpu = [f"- {row.name}: {'; '.join(row.cpu_operations)}" for row in rows if row.cpu_operations]
    if on_cpu:
        lines += ["", f"Operators Vela left on the CPU ({ACCELERATOR}):", "", *on_cpu]
    notes = [f"- {row.name}: {row.exporter}" for row in rows if ";" in row.exporter]
    if notes:
        lines += ["", "Export notes (opset 18 tries torch.export first, then TorchScript):", "", *notes]
    return "\n".join(lines)


def _failure(row: Row) -> str:
    if row.stage:  # the exporter's list of what it does support is in its docs, not needed 40 times here
        return f"{row.stage}: {row.reason.split('; the exporter supports ')[0]}"
    if not row.fully_int8:
        return f"float operators left in the TFLite file: {', '.join(row.float_ops)}"
    measured = "; ".join(f"{engine} top-1 {_percent(m['agreement'])} %, max {m['max_steps']:.0f} steps"
                         for engine, m in row.engines.items())
    return f"below the agreement bar: {measured}"


def main(argv: list[str] | None = None) -> None:
    """Run the corpus (or ``--fast``), print the markdown table and write it to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="only the rows tests/test_conformance.py runs")
    parser.add_argument("--only", nargs="+", metavar="ARCH", help=f"architectures: {', '.join(ARCHITECTURES)}")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--json", type=Path, help="also write every row's measurements to this JSON file")
    parser.add_argument("--models-dir", type=Path, help="keep the exported ONNX/TFLite files here (default: a temp folder)")
    parser.add_argument("--heldout", type=int, default=HELDOUT_TRIALS, help="held-out inputs per row")
    parser.add_argument("--no-vela", action="store_true", help="skip the Vela compile")
    parser.add_argument("--weights", choices=WEIGHTS, default="trained",
                        help="briefly trained on a synthetic task (default) or seeded random")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # its per-initializer warnings would bury the per-row progress
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.models_dir or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        for architecture, dynamic, opset in corpus_rows(args.fast, args.only):
            row = run_row(architecture, dynamic, opset, folder, args.heldout, vela=not args.no_vela,
                          weights=args.weights)
            rows.append(row)
            print(f"{row.name}: {'pass' if row.passed else _failure(row)} ({row.seconds:.0f} s)", file=sys.stderr,
                  flush=True)
    table = format_table(rows)
    print(table)
    if args.out:
        _write_text(args.out, table + "\n")
    if args.json:
        _write_text(args.json, json.dumps([{**asdict(row), "passed": row.passed} for row in rows], indent=1) + "\n")


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary name, so a half-written file never takes the place of a good one."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    main()

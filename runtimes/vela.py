"""Arm Vela: compile an int8 TFLite file for an Ethos-U NPU and read its static performance estimate.

Vela maps every operator it supports to the NPU and leaves the rest on the CPU. Its console summary says how
many went where (and, with ``--show-cpu-operations``, which ones stayed on the CPU and why); its summary CSV
``<model>_summary_<system_config>.csv`` holds the estimate (cycles, clock, inference time, SRAM/flash/DRAM
used, MACs) and ``--verbose-performance`` writes the per-layer table ``<model>_per-layer.csv``.

Every number is a static estimate that depends entirely on the system configuration of ``Arm/vela.ini``
(clock, bus bandwidths, latencies) and the memory mode; both are recorded in the summary. Vela 5.2 formats
were read from its real output (devices.md section 4).

>>> compiled, summary = compile_for_npu(data, "ethos-u55-128")  # doctest: +SKIP
>>> summary["latency_s"], summary["all_on_npu"], summary["cpu_operations"]  # doctest: +SKIP
"""

from __future__ import annotations

import configparser
import csv
import importlib.util
import math
import re
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edge.errors import EngineError
from edge.feeds import engine_message

ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
                "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")
CONFIG_FILE = "Arm/vela.ini"
#: (system config, memory mode) per NPU family when none is given: Vela's own default for the U55, and for the
#: U65/U85 the high-end system of Arm/vela.ini with the memory mode those systems are built for.
DEFAULT_SYSTEMS = {
    "ethos-u55": ("Ethos_U55_High_End_Embedded", "Shared_Sram"),
    "ethos-u65": ("Ethos_U65_High_End", "Dedicated_Sram"),
    "ethos-u85": ("Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram_384KB"),
}
_COUNTS = {"cpu_operators": r"CPU operators = (\d+)", "npu_operators": r"NPU operators = (\d+)"}
_CPU_LINE = re.compile(r"^\s*CPU: (\S+) = (.*?) \(outputs \[[^\]]*\]\)\s*$", re.MULTILINE)
_WARNING = re.compile(r"operator: (\w+), ofm: '([^']*)'\s*\nReason: ([^\n]*)")


def default_system(accelerator: str) -> tuple[str, str]:
    """The (system config, memory mode) used for ``accelerator`` when none is given."""
    return DEFAULT_SYSTEMS[accelerator.rsplit("-", 1)[0]]


def vela_configs() -> tuple[list[str], list[str]]:
    """The system configs and memory modes defined in the ``Arm/vela.ini`` that ships with the installed Vela."""
    parser = configparser.ConfigParser()
    parser.read(_vela_package() / "config_files" / CONFIG_FILE)
    sections = parser.sections()
    systems = [s.partition(".")[2] for s in sections if s.startswith("System_Config.")]
    modes = [s.partition(".")[2] for s in sections if s.startswith("Memory_Mode.")]
    return systems, modes


def vela_version() -> str | None:
    """The installed ethos-u-vela version, or None."""
    try:
        return version("ethos-u-vela")
    except PackageNotFoundError:
        return None


def compile_for_npu(data: bytes, accelerator: str = "ethos-u55-128", *, system_config: str | None = None,
                    memory_mode: str | None = None) -> tuple[bytes, dict[str, Any]]:
    """The Vela-compiled TFLite file and its summary.

    Summary keys: ``accelerator``, ``system_config``, ``memory_mode``, ``cpu_operators``, ``npu_operators``,
    ``all_on_npu``, ``cpu_operations`` (``{op, name, reason}`` per operator left on the CPU), ``layers``
    (``{op, target, cycles, macs, name}`` per layer), ``clock_hz``, ``latency_s`` (Vela's estimated inference
    time), ``inferences_per_second``, ``cycles_npu``, ``cycles_total``, ``sram_kib``, ``flash_kib`` (on- and
    off-chip flash), ``dram_kib``, ``weights_area`` (where Vela placed the weights), ``macs``, ``vela_version``.
    A value Vela did not report (e.g. the inference rate of a model with no NPU operator) is None.
    """
    if accelerator not in ACCELERATORS:
        raise EngineError(f"unknown Ethos-U configuration '{accelerator}'; Vela knows {', '.join(ACCELERATORS)}.")
    default_config, default_mode = default_system(accelerator)
    system_config, memory_mode = system_config or default_config, memory_mode or default_mode
    systems, modes = vela_configs()
    if system_config not in systems:
        raise EngineError(f"unknown Vela system config '{system_config}'; {CONFIG_FILE} defines {', '.join(systems)}.")
    if memory_mode not in modes:
        raise EngineError(f"unknown Vela memory mode '{memory_mode}'; {CONFIG_FILE} defines {', '.join(modes)}.")
    with tempfile.TemporaryDirectory(prefix="edge-vela-") as tmp:
        source, out = Path(tmp) / "model.tflite", Path(tmp) / "out"
        source.write_bytes(data)
        stdout = _run_vela([
            "--accelerator-config", accelerator, "--config", CONFIG_FILE, "--system-config", system_config,
            "--memory-mode", memory_mode, "--show-cpu-operations", "--verbose-performance",
            "--output-dir", str(out), str(source)])
        compiled = out / "model_vela.tflite"
        row = _read_csv(out / f"model_summary_{system_config}.csv")
        layers = _layers(_read_csv_rows(out / "model_per-layer.csv"))
        summary: dict[str, Any] = {"accelerator": accelerator, "system_config": system_config,
                                   "memory_mode": memory_mode}
        for key, pattern in _COUNTS.items():
            match = re.search(pattern, stdout)
            summary[key] = int(match.group(1)) if match else None
        summary["all_on_npu"] = summary["cpu_operators"] == 0 and bool(summary["npu_operators"])
        summary["cpu_operations"] = _cpu_operations(stdout, layers)
        summary["layers"] = layers
        summary.update({
            "clock_hz": _number(row, "core_clock", int),
            "latency_s": _number(row, "inference_time"),
            "inferences_per_second": _number(row, "inferences_per_second"),
            "cycles_npu": _number(row, "cycles_npu", int),
            "cycles_total": _number(row, "cycles_total", int),
            "sram_kib": _number(row, "sram_memory_used"),
            "flash_kib": _sum(_number(row, "off_chip_flash_memory_used"), _number(row, "on_chip_flash_memory_used")),
            "dram_kib": _number(row, "dram_memory_used"),
            "weights_area": row.get("weights_storage_area"),
            "macs": _number(row, "nn_macs", int),
            "vela_version": vela_version(),
        })
        return compiled.read_bytes(), summary


def _vela_package() -> Path:
    """The installed ``ethosu`` package folder; a missing Vela is one clear error."""
    spec = importlib.util.find_spec("ethosu")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("ethosu.vela") is None:
        raise EngineError("compiling for an Ethos-U NPU needs Vela: pip install ethos-u-vela.")
    return Path(next(iter(spec.submodule_search_locations)))


def _run_vela(arguments: list[str]) -> str:
    """Run Vela in a child process (its C++ core prints freely and may abort) and return its console output."""
    command = [sys.executable, "-c", "import sys; from ethosu.vela.vela import main; sys.exit(main())", *arguments]
    try:
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise EngineError("Vela did not finish within 10 minutes.") from None
    if result.returncode != 0:
        output = without_traceback((result.stderr or result.stdout).strip()) or "no output"
        last = output.splitlines()[-1]
        message = re.sub(r"^([\w.]+Error: )?['\"]?(Error: )?", "", last).strip("'\"")
        raise EngineError(engine_message(f"Vela could not compile the model: {message}", RuntimeError(output)))
    return result.stdout


def without_traceback(text: str) -> str:
    """Vela's console output without Python traceback frames (the exception line after them stays)."""
    kept, in_traceback = [], False
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and (line.startswith((" ", "\t")) or not line.strip()):
            continue
        else:
            in_traceback = False
            kept.append(line)
    return "\n".join(kept)


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _read_csv(path: Path) -> dict[str, str]:
    """The single row of Vela's summary CSV."""
    rows = _read_csv_rows(path)
    if not rows:
        raise EngineError(f"Vela wrote no summary CSV '{path.name}'; is this Vela version supported?")
    return rows[0]


def _number(row: dict[str, str], key: str, kind: type = float) -> Any:
    """A CSV field as ``kind``; missing or NaN (Vela's 'not applicable') becomes None."""
    try:
        value = float(row[key])
    except (KeyError, ValueError):
        return None
    return None if math.isnan(value) else kind(value)


def _sum(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _layers(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The per-layer table: original TFLite operator, where it runs, estimated cycles, MACs, output name."""
    return [{"op": r.get("Original Operator", ""), "target": r.get("Target", ""),
             "cycles": _number(r, "Op Cycles", int), "macs": _number(r, "MAC Count", int), "name": r.get("Name", "")}
            for r in rows]


def _cpu_operations(stdout: str, layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Operators left on the CPU, from the ``CPU: <op> = <name>`` lines, named by their TFLite operator.

    Vela calls every CPU operator ``Passthrough``; the supported-operators warning (keyed by output name) gives
    the TFLite operator and the reason, and the per-layer table the operator when no warning names it.
    """
    reasons = {name: (op, reason.strip()) for op, name, reason in _WARNING.findall(stdout)}
    originals = {layer["name"]: layer["op"] for layer in layers if layer["target"] == "CPU"}
    operations = []
    for op, name in _CPU_LINE.findall(stdout):
        warned_op, reason = reasons.get(name, (None, None))
        operations.append({"op": warned_op or originals.get(name) or op, "name": name, "reason": reason})
    return operations

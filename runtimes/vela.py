"""Arm Vela: compile an int8 TFLite file for an Ethos-U NPU and read its summary.

Vela maps every operator it supports to the NPU and leaves the rest on the CPU; the summary says how
many went where, and how much SRAM and flash the compiled network needs.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edge.errors import EngineError

ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
                "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")
_FIELDS = {
    "cpu_operators": r"CPU operators = (\d+)",
    "npu_operators": r"NPU operators = (\d+)",
    "sram_kib": r"Total SRAM used\s+([\d.]+) KiB",
    "flash_kib": r"Total Off-chip Flash used\s+([\d.]+) KiB",
    "macs": r"Neural network macs\s+(\d+)",
}


def compile_for_npu(data: bytes, accelerator: str = "ethos-u55-128") -> tuple[bytes, dict[str, Any]]:
    """The Vela-compiled TFLite file and its summary (operators on CPU/NPU, SRAM, flash, MACs)."""
    if accelerator not in ACCELERATORS:
        raise EngineError(f"unknown Ethos-U configuration '{accelerator}'; Vela knows {', '.join(ACCELERATORS)}.")
    with tempfile.TemporaryDirectory(prefix="edge-vela-") as tmp:
        source = Path(tmp) / "model.tflite"
        source.write_bytes(data)
        command = [sys.executable, "-c", "import sys; from ethosu.vela.vela import main; sys.exit(main())",
                   "--accelerator-config", accelerator, "--output-dir", str(Path(tmp) / "out"), str(source)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise EngineError("Vela did not finish within 10 minutes.") from None
        compiled = Path(tmp) / "out" / "model_vela.tflite"
        if result.returncode != 0 or not compiled.is_file():
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise EngineError(f"Vela could not compile the model: {last[0]}")
        summary: dict[str, Any] = {"accelerator": accelerator}
        for key, pattern in _FIELDS.items():
            match = re.search(pattern, result.stdout)
            summary[key] = (float(match.group(1)) if "." in match.group(1) else int(match.group(1))) if match else None
        summary["all_on_npu"] = summary["cpu_operators"] == 0 and bool(summary["npu_operators"])
        return compiled.read_bytes(), summary

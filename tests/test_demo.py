from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from edge.cli import main


def test_demo_prints_fp32_vs_int8_and_keeps_its_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--out-dir", str(tmp_path), "--subjects", "31-32", "--runs", "20"])
    assert result.exit_code == 0, result.output
    out = result.output
    header = next(line for line in out.splitlines() if line.startswith("metric"))
    assert header.split()[1:] == ["fp32", "int8"]
    for row in ("accuracy % [95% CI]", "ITR bits/min [95% CI]", "latency p50/p90/p99 ms", "model size KiB",
                "agreement with fp32 %", "peak memory MiB"):
        assert row in out
    (folder,) = tmp_path.iterdir()
    fp32 = json.loads((folder / "results_fp32.json").read_text())
    int8 = json.loads((folder / "results_int8.json").read_text())
    assert fp32["data"]["trials"] == int8["data"]["trials"] == 480
    assert int8["metrics"]["model_size_bytes"] < 0.3 * fp32["metrics"]["model_size_bytes"]
    assert (folder / "ssvep_int8.onnx").is_file()
    assert "quantize-int8" in json.loads((folder / "drift.json").read_text())

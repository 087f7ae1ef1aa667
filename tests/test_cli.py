"""The CLI through click's CliRunner: real files, real engines, exit codes and messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edge.cli import main

CALIB = "synthetic-ssvep:subjects=1-1,blocks=1"
HELDOUT = "synthetic-ssvep:subjects=31-31,blocks=2"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def assert_one_clear_line(code: int, output: str, message: str) -> None:
    assert code != 0
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert message in lines[0], output


def test_inspect_text_shows_metadata_ops_params_and_macs(reference_path: Path) -> None:
    code, out = run("inspect", str(reference_path))
    assert code == 0, out
    assert "family     ssvep" in out
    assert "parameters 414,283" in out
    assert "MACs       8.99 M" in out
    assert "Conv" in out and "Gemm" in out
    assert "train-guney" in out


def test_inspect_json_by_zoo_name() -> None:
    code, out = run("inspect", "ssvep-guney-9ch-0.4s", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["summary"]["parameters"] == 414_283
    assert doc["meta"]["preprocessing"]["sample_rate"] == 250
    assert doc["summary"]["op_histogram"]["Conv"] == 4
    assert doc["summary"]["file_bytes"] > 1_600_000


def test_inspect_plain_onnx(tiny_model_path: Path) -> None:
    code, out = run("inspect", str(tiny_model_path))
    assert code == 0, out
    assert "metadata   none (plain ONNX)" in out
    assert "input      x  float32['N', 2, 1, 8]" in out


def test_convert_prints_drift_and_writes_a_quantized_child(reference_path: Path, tmp_path: Path) -> None:
    out_path = tmp_path / "int8.onnx"
    code, out = run("convert", str(reference_path), "--quantize", "int8", "--calib", CALIB, "-o", str(out_path))
    assert code == 0, out
    assert "quantize-int8: top-1 agreement" in out
    child = onnx.load(out_path)
    assert any(n.op_type == "DequantizeLinear" for n in child.graph.node)
    meta = json.loads({p.key: p.value for p in child.metadata_props}["edge"])
    assert meta["provenance"][-1]["name"] == "quantize-int8"
    assert meta["provenance"][-1]["params"]["calibration_data"] == CALIB
    assert meta["provenance"][-1]["params"]["exclude"] == ["/sub_band/Conv"]  # the model's keep-float list


def test_convert_with_a_recipe_file(reference_path: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[pass]]\nname = "quantize-int8"\ncalibrate = "percentile"\nper_channel = false\n')
    code, out = run("convert", str(reference_path), "--recipe", str(recipe), "--calib", CALIB,
                    "-o", str(tmp_path / "q.onnx"), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert 0.5 < doc["drift"]["quantize-int8"]["top1_agreement"] <= 1.0
    meta = json.loads({p.key: p.value for p in onnx.load(tmp_path / "q.onnx").metadata_props}["edge"])
    assert meta["provenance"][-1]["params"]["calibrate"] == "percentile"
    assert meta["provenance"][-1]["params"]["per_channel"] is False


def test_eval_json_and_run_folder(reference_path: Path, tmp_path: Path) -> None:
    code, out = run("eval", str(reference_path), "--data", HELDOUT, "--runs", "20", "--no-memory",
                    "--out-dir", str(tmp_path), "--json")
    assert code == 0, out
    doc = json.loads(out)
    metrics = doc["metrics"]
    assert metrics["accuracy"]["n"] == 80
    assert metrics["latency_ms"]["runs"] == 20
    assert "itr_bits_per_min" in metrics
    (folder,) = tmp_path.iterdir()
    assert json.loads((folder / "results.json").read_text())["artifact"]["sha256"] == doc["artifact"]["sha256"]
    assert (folder / "confusion.png").stat().st_size > 1000


def test_eval_table(reference_path: Path, tmp_path: Path) -> None:
    code, out = run("eval", str(reference_path), "--data", HELDOUT, "--runs", "5", "--no-memory",
                    "--out-dir", str(tmp_path))
    assert code == 0, out
    assert "accuracy % [95% CI]" in out and "ITR bits/min" in out and "latency p50/p90/p99 ms" in out


# --- bad input: one clear sentence, non-zero exit, no traceback, nothing overwritten -----------------


def test_missing_model_file(tmp_path: Path) -> None:
    code, out = run("inspect", str(tmp_path / "nope.onnx"))
    assert_one_clear_line(code, out, "no such file")


def test_file_that_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("hello, I am a text file\n" * 10)
    code, out = run("eval", str(path), "--data", HELDOUT)
    assert_one_clear_line(code, out, "not an ONNX model")


def test_truncated_onnx(reference_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes(reference_path.read_bytes()[:100_000])
    code, out = run("inspect", str(path))
    assert_one_clear_line(code, out, "truncated")


def test_data_whose_shape_does_not_match(reference_path: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 9, 250), np.float32), y=np.zeros(4, int))
    code, out = run("eval", str(reference_path), "--data", str(tmp_path / "d.npz"))
    assert_one_clear_line(code, out, "expects (3, 9, 100)")


def test_unknown_dataset_spec(reference_path: Path) -> None:
    code, out = run("eval", str(reference_path), "--data", "benchmark-tsinghua")
    assert_one_clear_line(code, out, "unknown dataset 'benchmark-tsinghua'")


def test_nan_in_data(reference_path: Path, tmp_path: Path) -> None:
    x = np.zeros((4, 3, 9, 100), np.float32)
    x[1, 0, 0, 0] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(4, int))
    code, out = run("eval", str(reference_path), "--data", str(tmp_path / "d.npz"))
    assert_one_clear_line(code, out, "NaN or Inf")


def test_output_equal_to_input_keeps_the_input(reference_path: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(reference_path.read_bytes())
    code, out = run("convert", str(model), "--quantize", "int8", "--calib", CALIB, "-o", str(model))
    assert_one_clear_line(code, out, "output path is the input model")
    assert model.read_bytes() == reference_path.read_bytes()


def test_unknown_device(reference_path: Path) -> None:
    code, out = run("eval", str(reference_path), "--data", HELDOUT, "--device", "cpux")
    assert_one_clear_line(code, out, "Did you mean 'cpu'")


def test_convert_without_passes(reference_path: Path, tmp_path: Path) -> None:
    code, out = run("convert", str(reference_path), "-o", str(tmp_path / "x.onnx"))
    assert_one_clear_line(code, out, "recipe is empty")


def test_convert_into_a_missing_folder_is_refused_before_any_work(reference_path: Path, tmp_path: Path) -> None:
    code, out = run("convert", str(reference_path), "--quantize", "int8", "-o", str(tmp_path / "nope" / "x.onnx"))
    assert_one_clear_line(code, out, "the folder")
    assert "quantize-int8" not in out


def test_exclude_of_an_unknown_node(reference_path: Path, tmp_path: Path) -> None:
    code, out = run("convert", str(reference_path), "--quantize", "int8", "--calib", CALIB,
                    "--exclude", "/nope/Conv", "-o", str(tmp_path / "x.onnx"))
    assert_one_clear_line(code, out, "no node named '/nope/Conv'")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("body", ["[[pass]]\nname = 'prune'\n", "[[pass]]\nname = 'quantize-int8'\nbits = 4\n", "not toml ["])
def test_bad_recipe(reference_path: Path, tmp_path: Path, body: str) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(body)
    code, out = run("convert", str(reference_path), "--recipe", str(recipe), "-o", str(tmp_path / "x.onnx"))
    assert_one_clear_line(code, out, "")
    assert any(word in out for word in ("unknown pass 'prune'", "no parameter 'bits'", "not valid TOML"))


def test_eval_prints_baselines_beside_the_network(reference_path: Path, tmp_path: Path) -> None:
    code, out = run("eval", str(reference_path), "--data", "synthetic-ssvep:subjects=31-32,blocks=3", "--runs", "5",
                    "--no-memory", "--baseline", "fbcca", "--baseline", "etrca", "--out-dir", str(tmp_path))
    assert code == 0, out
    header = out.splitlines()[0].split()
    assert header == ["metric", reference_path.name, "fbcca", "etrca"]
    assert "S31" in out and "S32" in out  # per-subject rows
    (folder,) = tmp_path.iterdir()
    doc = json.loads((folder / "results.json").read_text())
    assert set(doc["baselines"]) == {"fbcca", "etrca"}
    assert doc["baselines"]["etrca"]["metrics"]["accuracy"]["n"] == 240


def test_unknown_baseline_suggests_the_nearest(reference_path: Path) -> None:
    code, out = run("eval", str(reference_path), "--data", HELDOUT, "--baseline", "fbca")
    assert_one_clear_line(code, out, "Did you mean 'fbcca'")


def test_baseline_on_plain_arrays_is_refused(reference_path: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 9, 100), np.float32), y=np.zeros(4, int))
    code, out = run("eval", str(reference_path), "--data", str(tmp_path / "d.npz"), "--baseline", "cca", "--no-memory")
    assert_one_clear_line(code, out, "baselines need SSVEP trials")


def test_sweep_table_json_and_itr_plot(tmp_path: Path) -> None:
    code, out = run("sweep", "--data", "synthetic-ssvep:subjects=32-32,blocks=3", "--windows", "0.3,1.0",
                    "--method", "fbcca", "--method", "cca", "--out-dir", str(tmp_path), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert [r["window_s"] for r in doc["methods"]["fbcca"]] == [0.3, 1.0]
    for rows in doc["methods"].values():
        assert rows[0]["accuracy"] < rows[1]["accuracy"]
    (folder,) = tmp_path.iterdir()
    assert (folder / "itr_curve.png").stat().st_size > 5000
    code, out = run("sweep", "--data", "synthetic-ssvep:subjects=32-32", "--windows", "0.3,x")
    assert code == 2 and "not a comma-separated list" in out


def test_plain_onnx_and_plain_arrays_work_like_a_zoo_model(tiny_model_path: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(64, 2, 1, 8)).astype(np.float32), y=rng.integers(0, 4, 64))
    data = str(tmp_path / "d.npz")
    code, out = run("eval", str(tiny_model_path), "--data", data, "--runs", "5", "--no-memory",
                    "--out-dir", str(tmp_path / "runs"), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["metrics"]["accuracy"]["n"] == 64 and doc["artifact"]["family"] == "unknown"
    int8 = tmp_path / "tiny_int8.onnx"
    code, out = run("convert", str(tiny_model_path), "--quantize", "int8", "--calib", data, "-o", str(int8))
    assert code == 0, out
    assert "quantize-int8: top-1 agreement" in out and int8.is_file()
    code, out = run("convert", str(tiny_model_path), "--quantize", "int8", "-o", str(tmp_path / "x.onnx"))
    assert_one_clear_line(code, out, "needs calibration data")


def test_convert_exports_tflite_checked_in_litert_and_tflite_micro_and_a_c_array(reference_path: Path,
                                                                                 tmp_path: Path) -> None:
    out_path = tmp_path / "ssvep_int8.onnx"
    code, out = run("convert", str(reference_path), "--quantize", "int8", "--calib", CALIB, "-o", str(out_path),
                    "--export", "tflite", "--export", "c")
    assert code == 0, out
    for engine in ("LiteRT", "TFLite Micro"):
        line = next(line for line in out.splitlines() if line.startswith(f"tflite ({engine}):"))
        assert float(line.split("top-1 agreement")[1].split("%")[0]) >= 99.0
        assert float(line.split("SQNR")[1].split("dB")[0]) > 50.0  # 144 dB and inf measured: the same int8 values
    assert (tmp_path / "ssvep_int8.tflite").read_bytes()[4:8] == b"TFL3"
    assert "alignas(16)" in (tmp_path / "ssvep_int8_tflite.c").read_text()[:2000]
    assert "ssvep_int8_tflite_len" in (tmp_path / "ssvep_int8_tflite.h").read_text()


def test_convert_fails_beyond_the_tolerance_and_writes_nothing(reference_path: Path, tmp_path: Path) -> None:
    out_path = tmp_path / "strict.onnx"
    code, out = run("convert", str(reference_path), "--quantize", "int8", "--calib", CALIB, "-o", str(out_path),
                    "--min-sqnr", "80")
    last = out.strip().splitlines()[-1]  # the step's drift line, then the error
    assert code != 0 and "Traceback" not in out and "quantize-int8: top-1 agreement" in out
    assert "after quantize-int8 the output SQNR against its parent is" in last and "tolerance of 80 dB" in last
    assert not out_path.exists()
    code, out = run("convert", str(reference_path), "--prune-channels", "0.9", "--prune-node", "/time2/Conv",
                    "--calib", CALIB, "-o", str(out_path), "--min-agreement", "99")
    assert code != 0 and "after prune-channels the top-1 agreement with its parent is" in out.strip().splitlines()[-1]
    assert not out_path.exists()


def test_convert_prunes_channels_and_reports_macs(reference_path: Path, tmp_path: Path) -> None:
    code, out = run("convert", str(reference_path), "--prune-channels", "0.5", "--prune-node", "/time1/Conv",
                    "--prune-node", "/time2/Conv", "--calib", CALIB, "-o", str(tmp_path / "p.onnx"))
    assert code == 0, out
    assert "prune-channels: top-1 agreement" in out
    assert "MACs 8.99 M -> 2.75 M, parameters 414,283 -> 171,763" in out


def test_convert_nm_sparsity_then_int8_reports_sparsity_per_layer(reference_path: Path, tmp_path: Path) -> None:
    code, out = run("convert", str(reference_path), "--nm", "2:4", "--quantize", "int8", "--calib", CALIB,
                    "-o", str(tmp_path / "nm.onnx"))
    assert code == 0, out
    fc_row = next(line for line in out.splitlines() if line.startswith("fc.weight"))
    assert fc_row.split()[-1] == "50.0%"
    code, out = run("convert", str(reference_path), "--nm", "2-4", "--calib", CALIB, "-o", str(tmp_path / "x.onnx"))
    assert_one_clear_line(code, out, "--nm must look like 2:4")


def test_convert_mixed_precision_within_budget_prints_the_sensitivity_table(reference_path: Path,
                                                                          tmp_path: Path) -> None:
    code, out = run("convert", str(reference_path), "--quantize", "mixed", "--max-drop", "0.5", "--calib", CALIB,
                    "--eval-data", HELDOUT, "-o", str(tmp_path / "m.onnx"))
    assert code == 0, out
    assert "rank  layer" in out and "/fc/Gemm" in out
    drop = float(out.split("accuracy drop ")[1].split(" points")[0])
    assert drop <= 0.5


def test_convert_mixed_precision_says_which_layers_miss_the_budget(reference_path: Path, tmp_path: Path) -> None:
    code, out = run("convert", str(reference_path), "--quantize", "mixed", "--max-drop", "-10", "--calib", CALIB,
                    "--eval-data", HELDOUT, "-o", str(tmp_path / "m.onnx"))
    assert code == 1 and "Traceback" not in out
    assert "could not quantize within the budget" in out
    assert not (tmp_path / "m.onnx").exists()


def test_clip_then_resilience_compares_both_curves_and_saves_the_plot(reference_path: Path, tmp_path: Path) -> None:
    clipped = tmp_path / "clip.onnx"
    code, out = run("convert", str(reference_path), "--clip", "ftclipact", "--no-clip-search", "--calib", CALIB,
                    "-o", str(clipped))
    assert code == 0, out
    assert "clip-ftclipact: top-1 agreement 100.0 %" in out
    data = "synthetic-ssvep:subjects=31-31,blocks=1,seed=0"
    code, out = run("resilience", str(reference_path), "--data", data, "--ber", "1e-6:1e-4", "--maps", "3",
                    "--compare", str(clipped), "--out-dir", str(tmp_path / "runs"))
    assert code == 0, out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()[:3] in ("cle", "1e-")}
    assert set(rows) == {"clean", "1e-06", "1e-05", "1e-04"}
    unprotected, protected = (float(v) for v in re.findall(r"([\d.]+) %", rows["1e-04"]))
    assert protected > unprotected + 20  # the clipped model keeps most of its accuracy at a BER that kills fp32
    folder = next((tmp_path / "runs").iterdir())
    doc = json.loads((folder / "results.json").read_text())
    assert doc["bers"] == [1e-6, 1e-5, 1e-4] and len(doc["models"]) == 2
    assert (folder / "resilience.png").read_bytes()[:4] == b"\x89PNG"
    code, out = run("resilience", str(reference_path), "--data", data, "--ber", "1e-3:1e-7")
    assert_one_clear_line(code, out, "--ber must look like 1e-7:1e-3")

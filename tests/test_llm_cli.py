"""The CLI on language models: eval, generate, convert, resilience, inspect, and their refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.artifact import read_artifact, write_artifact
from edge.families.llm.runner import LanguageModel, perplexity
from tests.test_cli import assert_one_clear_line, run

DATA = "tinyshakespeare:split=val,windows=6,context=64"
CALIB = "tinyshakespeare:split=calib,windows=8,context=64"


@pytest.fixture
def llm_path(tiny_llm, tmp_path) -> Path:
    return write_artifact(tiny_llm, tmp_path / "tiny_llm.onnx")


def test_eval_prints_perplexity_speed_and_memory(llm_path, tmp_path) -> None:
    code, out = run("eval", str(llm_path), "--data", DATA, "--reference", str(llm_path), "--out-dir",
                    str(tmp_path / "runs"))
    assert code == 0, out
    assert "perplexity" in out and "decode" in out and "tokens/s" in out and "KV cache" in out
    assert "next-token agreement 100.0 %" in out
    code, out = run("eval", str(llm_path), "--data", DATA, "--json", "--out-dir", str(tmp_path / "runs"))
    doc = json.loads(out)
    assert doc["metrics"]["perplexity"]["tokens"] == 6 * 63
    assert doc["metrics"]["throughput"]["decode_tokens_per_s"] > 0
    assert doc["metrics"]["memory"]["kv_cache_bytes_per_token"] == 512


def test_generate_continues_the_prompt(llm_path) -> None:
    code, out = run("generate", str(llm_path), "--prompt", "KING:", "--tokens", "30")
    assert code == 0, out
    assert out.startswith("KING:") and len(out.rstrip("\n")) >= 20
    assert run("generate", str(llm_path), "--prompt", "KING:", "--tokens", "30")[1] == out
    code, out = run("generate", str(llm_path), "--prompt", "KING ☃", "--tokens", "3")
    assert_one_clear_line(code, out, "not in the model's")


def test_convert_language_model_with_wanda_and_int4(llm_path, tmp_path, tiny_llm_windows) -> None:
    out_path = tmp_path / "wanda_int4.onnx"
    code, out = run("convert", str(llm_path), "-o", str(out_path), "--calib", CALIB, "--sparsity", "0.5",
                    "--method", "wanda", "--quantize", "int4-weights")
    assert code == 0, out
    assert "prune-llm" in out and "quantize-int4-weights" in out
    child = read_artifact(out_path)
    assert [p.name for p in child.meta.provenance][-2:] == ["prune-llm", "quantize-int4-weights"]
    assert any(n.op_type == "MatMulNBits" for n in child.model.graph.node)
    ppl = perplexity(LanguageModel(child), tiny_llm_windows[1])["perplexity"]
    dense = perplexity(LanguageModel(read_artifact(llm_path)), tiny_llm_windows[1])["perplexity"]
    assert dense < ppl < 2 * dense


def test_convert_drops_a_module_and_its_cache(llm_path, tmp_path) -> None:
    out_path = tmp_path / "dropped.onnx"
    code, out = run("convert", str(llm_path), "-o", str(out_path), "--calib", CALIB, "--drop", "attn:1",
                    "--restrict-ranges")
    assert code == 0, out
    child = read_artifact(out_path)
    caches = [i.name for i in child.model.graph.input if i.name.startswith("past_key_values")]
    assert len(caches) == 2  # one of the two layers keeps its key and value


def test_resilience_of_a_language_model_with_and_without_range_restriction(llm_path, tmp_path) -> None:
    restricted = tmp_path / "restricted.onnx"
    assert run("convert", str(llm_path), "-o", str(restricted), "--calib", CALIB, "--restrict-ranges")[0] == 0
    code, out = run("resilience", str(llm_path), "--compare", str(restricted), "--data", DATA, "--ber", "1e-5,1e-3",
                    "--maps", "3", "--out-dir", str(tmp_path / "runs"))
    assert code == 0, out
    assert "tiny_llm.onnx" in out and "restricted.onnx" in out and "ppl" in out
    assert out.count("1e-05") == 1 and "fail" in out


def test_language_model_refusals(llm_path, reference_path, tmp_path) -> None:
    assert_one_clear_line(*run("generate", str(reference_path), "--prompt", "a"), "not a decoder")
    code, out = run("convert", str(reference_path), "-o", str(tmp_path / "x.onnx"), "--drop", "attn:1")
    assert code != 0 and "language models" in out
    assert_one_clear_line(*run("convert", str(llm_path), "-o", str(tmp_path / "y.onnx"), "--calib", CALIB,
                               "--quantize", "int4-weights", "--export", "tflite"), "ONNX only")
    assert_one_clear_line(*run("eval", str(llm_path), "--data", DATA, "--device", "mcu:tflm"), "cpu and gpu")
    assert_one_clear_line(*run("convert", str(llm_path), "-o", str(tmp_path / "z.onnx"), "--calib", CALIB,
                               "--drop", "attn:9"), "drop")
    assert not (tmp_path / "z.onnx").exists()


def test_inspect_shows_the_language_model_cost(llm_path) -> None:
    code, out = run("inspect", str(llm_path))
    assert code == 0, out
    assert "family     llm" in out
    assert "MACs       0.10 M per token" in out  # 2 x (q, o 64x64; k, v 64x32; MLP 3 x 64x192) + head 64x65
    assert "KV cache   2 layers, 0.50 KiB per token; vocabulary 65" in out

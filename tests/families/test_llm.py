"""The LLM family: graph with KV cache, PyTorch twin, perplexity, generation, throughput, memory, text data."""

from __future__ import annotations

import numpy as np
import pytest

from edge.artifact import Artifact, Meta
from edge.data.registry import load_dataset
from edge.data.text import load_token_windows, read_text
from edge.errors import DataError, MetadataError
from edge.families.llm.config import LlamaConfig
from edge.families.llm.export import is_llm, tokenizer_of
from edge.families.llm.graph import build_graph, weight_shapes
from edge.families.llm.runner import (
    CacheLayout,
    LanguageModel,
    generate,
    memory,
    perplexity,
    text_windows,
    throughput,
)
from edge.families.llm.tokenizer import CharTokenizer


def _random_decoder(n_heads: int = 4, n_kv_heads: int = 2, seed: int = 0) -> Artifact:
    config = LlamaConfig(vocab_size=40, dim=32, n_layers=2, n_heads=n_heads, n_kv_heads=n_kv_heads, hidden_dim=48,
                         max_seq_len=64)
    rng = np.random.default_rng(seed)
    weights = {n: (rng.standard_normal(s) * 0.3).astype(np.float32) for n, s in weight_shapes(config).items()}
    return Artifact(build_graph(config, weights), Meta(family="llm"))


@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (4, 1)])
def test_kv_cache_decoding_equals_full_sequence(heads) -> None:
    lm = LanguageModel(_random_decoder(*heads))
    ids = np.random.default_rng(1).integers(0, 40, size=(2, 24))
    full, _ = lm.forward(ids)
    logits, past = lm.forward(ids[:, :5])
    steps = [logits]
    for t in range(5, 24):
        logits, past = lm.forward(ids[:, t : t + 1], past)
        steps.append(logits)
    assert np.abs(np.concatenate(steps, axis=1) - full).max() <= 1e-4
    assert past["past_key_values.0.key"].shape == (2, heads[1], 24, 8)


def test_left_padding_gives_the_unpadded_logits() -> None:
    lm = LanguageModel(_random_decoder())
    ids = np.random.default_rng(2).integers(0, 40, size=(1, 10))
    plain, _ = lm.forward(ids)
    padded_ids = np.concatenate([np.zeros((1, 3), np.int64), ids], axis=1)
    mask = np.concatenate([np.zeros((1, 3), np.int64), np.ones((1, 10), np.int64)], axis=1)
    padded, _ = lm.forward(padded_ids, mask=mask)
    assert np.abs(padded[:, 3:] - plain).max() <= 1e-4


def test_onnx_graph_matches_the_pytorch_twin() -> None:
    torch = pytest.importorskip("torch")
    from edge.families.llm.model import Llama, to_numpy_weights

    config = LlamaConfig(vocab_size=30, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=40, max_seq_len=32)
    torch.manual_seed(0)
    net = Llama(config)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ids = np.random.default_rng(0).integers(0, 30, size=(3, 20))
    with torch.no_grad():
        expected = net(torch.from_numpy(ids)).numpy()
    got, _ = LanguageModel(Artifact(build_graph(config, to_numpy_weights(net)), Meta(family="llm"))).forward(ids)
    assert np.abs(got - expected).max() <= 1e-4


def test_config_and_weights_are_checked() -> None:
    with pytest.raises(MetadataError, match="n_kv_heads"):
        LlamaConfig(vocab_size=10, dim=32, n_heads=4, n_kv_heads=3)
    config = LlamaConfig(vocab_size=10, dim=32, n_layers=1, n_heads=4, n_kv_heads=4, hidden_dim=16)
    weights = {n: np.zeros(s, np.float32) for n, s in weight_shapes(config).items()}
    weights["lm_head.weight"] = np.zeros((32, 11), np.float32)
    with pytest.raises(ValueError, match="lm_head.weight"):
        build_graph(config, weights)


def test_trained_tiny_model_beats_chance_and_generates(tiny_llm, tiny_llm_windows) -> None:
    assert is_llm(tiny_llm)
    tokenizer = tokenizer_of(tiny_llm.meta)
    lm = LanguageModel(tiny_llm)
    result = perplexity(lm, tiny_llm_windows[1])
    assert result["ci95"][0] <= result["perplexity"] <= result["ci95"][1]
    assert result["perplexity"] < len(tokenizer) / 3  # far below a uniform guess over the vocabulary
    prompt = tokenizer.encode("ROMEO:\n")
    greedy = generate(lm, prompt, 40)
    assert np.array_equal(greedy, generate(lm, prompt, 40))
    assert np.array_equal(greedy[: len(prompt)], prompt) and len(greedy) == len(prompt) + 40
    # greedy decoding with the cache picks the argmax of a full-sequence pass at every step
    full, _ = lm.forward(greedy[None, :-1])
    assert np.array_equal(full[0, len(prompt) - 1 :].argmax(-1), greedy[len(prompt) :])
    sampled = [generate(lm, prompt, 40, top_k=5, seed=s) for s in (0, 1)]
    assert not np.array_equal(sampled[0], sampled[1])
    assert np.array_equal(sampled[0], generate(lm, prompt, 40, top_k=5, seed=0))
    with pytest.raises(DataError, match="top_k"):
        generate(lm, prompt, 5, top_k=0)


def test_throughput_and_memory_are_measured(tiny_llm) -> None:
    lm = LanguageModel(tiny_llm, threads=1)
    speed = throughput(lm, np.arange(16) % 60, new_tokens=8, repeats=2)
    assert speed["prefill_tokens_per_s"] > 0 and speed["decode_tokens_per_s"] > 0
    mem = memory(lm, context=64)
    params = sum(int(np.prod(s)) for s in weight_shapes(LlamaConfig.from_dict(tiny_llm.meta.task["config"])).values())
    assert mem["weights_bytes"] >= 4 * params
    assert mem["kv_cache_bytes_per_token"] == 2 * 2 * 4 * 2 * 16  # layers * (k, v) * float32 * kv_heads * head_dim
    assert mem["kv_cache_bytes"] == 64 * mem["kv_cache_bytes_per_token"]


def test_token_ids_outside_the_vocabulary_are_refused(tiny_llm) -> None:
    with pytest.raises(DataError, match="token ids"):
        LanguageModel(tiny_llm).forward(np.array([[1, 2, 999]]))


def test_text_specs(tiny_llm, tmp_path) -> None:
    val = load_token_windows("tinyshakespeare:split=val,windows=5,context=32", tiny_llm.meta)
    assert val.shape == (5, 32) and val.dtype == np.int64
    assert tokenizer_of(tiny_llm.meta).decode(val[0]) == read_text("tinyshakespeare", {"split": "val"})[:32]
    text = tmp_path / "play.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20)
    dataset = load_dataset(f"{text}:split=train,context=16", tiny_llm.meta)
    assert dataset.x.shape[1] == 16 and dataset.y is None
    np.savez(tmp_path / "ids.npz", x=val)
    assert np.array_equal(load_token_windows(str(tmp_path / "ids.npz"), tiny_llm.meta), val)
    (tmp_path / "odd.txt").write_text("naïve ☃")
    with pytest.raises(DataError, match="not in the model's"):
        load_token_windows(str(tmp_path / "odd.txt"), tiny_llm.meta)
    with pytest.raises(DataError, match="splits"):
        load_token_windows("tinyshakespeare:split=train", tiny_llm.meta)
    with pytest.raises(DataError, match="fewer than one window"):
        text_windows(np.arange(10), 64)


def test_plain_decoder_without_metadata_reads_its_cache_layout(tmp_path) -> None:
    artifact = _random_decoder(4, 1)
    layout = CacheLayout.from_model(artifact.model)
    assert layout.layers == [0, 1] and layout.kv_heads == {0: 1, 1: 1} and layout.vocab_size == 40
    with pytest.raises(DataError, match="tokenizer"):
        load_token_windows("tinyshakespeare", artifact.meta)


def test_char_tokenizer_round_trip() -> None:
    tokenizer = CharTokenizer.from_text("hello world")
    assert tokenizer.decode(tokenizer.encode("low hello")) == "low hello"
    with pytest.raises(DataError, match="repeats"):
        CharTokenizer("aa")


def test_zoo_model_decodes_with_the_cache_as_the_full_sequence_does() -> None:
    from edge.models import resolve_model

    _, artifact = resolve_model("llama-shakespeare-char")
    tokenizer = tokenizer_of(artifact.meta)
    window = load_token_windows("tinyshakespeare:split=val,windows=1", artifact.meta)
    assert window.shape == (1, 128) and len(tokenizer) == 65
    lm = LanguageModel(artifact)
    full, _ = lm.forward(window)
    logits, past = lm.forward(window[:, :32])
    steps = [logits]
    for t in range(32, 128):
        logits, past = lm.forward(window[:, t : t + 1], past)
        steps.append(logits)
    assert np.abs(np.concatenate(steps, axis=1) - full).max() <= 1e-4
    assert perplexity(lm, window)["perplexity"] < 6.0  # the model card's held-out figure is 4.5 per character

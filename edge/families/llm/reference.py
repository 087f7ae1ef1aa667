"""Build the shipped reference LLM: train on tinyshakespeare, export with a KV cache, check against PyTorch.

    python -m edge.families.llm.reference --corpus ../shared/data/tinyshakespeare/input.txt \
        --output edge/zoo/llama_shakespeare_char.onnx

Also writes the evaluation and calibration text the zoo ships beside the model (``edge/zoo/text/``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from edge.artifact import write_artifact
from edge.families.llm.config import LlamaConfig
from edge.families.llm.export import export_llm, llm_meta
from edge.families.llm.model import to_numpy_weights
from edge.families.llm.runner import LanguageModel, perplexity, text_windows
from edge.families.llm.train import TrainConfig, split_text, train
from edge.families.torch_common import import_torch

REFERENCE_CONFIG = {"dim": 256, "n_layers": 6, "n_heads": 8, "n_kv_heads": 4, "hidden_dim": 768, "max_seq_len": 256}
CALIBRATION_CHARS = 65536


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch = import_torch()
    text = Path(args.corpus).read_text(encoding="utf-8")
    vocab = len(set(text))
    cfg = TrainConfig(steps=args.steps)
    net, tokenizer, record = train(text, LlamaConfig(vocab_size=vocab, **REFERENCE_CONFIG), cfg)
    train_text, val_text = split_text(text)
    zoo_text = Path(args.output).parent / "text"
    zoo_text.mkdir(exist_ok=True)
    (zoo_text / "tinyshakespeare_val.txt").write_text(val_text, encoding="utf-8")
    (zoo_text / "tinyshakespeare_calib.txt").write_text(train_text[:CALIBRATION_CHARS], encoding="utf-8")
    task = llm_meta(net.config, tokenizer, cfg.context, source="tinyshakespeare (karpathy/char-rnn), first 90 % train",
                    extra={"training": record})
    artifact = export_llm(net.config, to_numpy_weights(net), task, calibration_data="tinyshakespeare:split=calib",
                          params={"config": net.config.to_dict(), "train": cfg.__dict__})
    artifact.meta.extra["eval_data"] = "tinyshakespeare:split=val"
    windows = text_windows(tokenizer.encode(val_text), cfg.context + 1, limit=64)
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(windows[:8])).numpy()
    lm = LanguageModel(artifact)
    onnx_logits, _ = lm.forward(windows[:8])
    record["onnx_vs_torch_max_abs"] = float(np.abs(onnx_logits - torch_logits).max())
    record["onnx_val_perplexity_64x128"] = perplexity(lm, windows)["perplexity"]
    artifact.meta.task["training"] = record
    write_artifact(artifact, args.output)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

"""Train the reference character-level LLaMA on a text corpus (tinyshakespeare: first 90 % train, last 10 % val)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.families.llm.config import LlamaConfig
from edge.families.llm.tokenizer import CharTokenizer
from edge.families.torch_common import import_torch

log = logging.getLogger("edge")
VAL_FRACTION = 0.1


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16
    context: int = 128
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    threads: int = 2


def split_text(text: str) -> tuple[str, str]:
    """The common tinyshakespeare split: first 90 % train, last 10 % validation."""
    cut = int(len(text) * (1 - VAL_FRACTION))
    return text[:cut], text[cut:]


def train(text: str, model: LlamaConfig | None = None, cfg: TrainConfig | None = None) -> tuple[Any, CharTokenizer,
                                                                                                 dict[str, Any]]:
    """Train on ``text``; returns the network, the tokenizer and a record (losses, time)."""
    torch = import_torch()
    from edge.families.llm.model import Llama

    cfg = cfg or TrainConfig()
    tokenizer = CharTokenizer.from_text(text)
    model = model or LlamaConfig(vocab_size=len(tokenizer))
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    train_text, val_text = split_text(text)
    train_ids = torch.from_numpy(tokenizer.encode(train_text))
    val_ids = torch.from_numpy(tokenizer.encode(val_text))
    net = Llama(model)
    decay = [p for n, p in net.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in net.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)

    def batch(ids: Any) -> tuple[Any, Any]:
        starts = torch.randint(0, len(ids) - cfg.context - 1, (cfg.batch_size,), generator=gen)
        x = torch.stack([ids[s : s + cfg.context] for s in starts])
        y = torch.stack([ids[s + 1 : s + cfg.context + 1] for s in starts])
        return x, y

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))

    losses = []
    start = time.time()
    net.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x, y = batch(train_ids)
        logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == cfg.steps - 1:
            log.info("step %d/%d loss %.3f (%.0f s)", step, cfg.steps, loss.item(), time.time() - start)
    val_loss = evaluate_loss(net, val_ids, cfg.context)
    record = {"train": cfg.__dict__, "final_train_loss": float(np.mean(losses[-50:])), "val_loss": val_loss,
              "val_perplexity": math.exp(val_loss), "seconds": round(time.time() - start, 1)}
    return net, tokenizer, record


def evaluate_loss(net: Any, ids: Any, context: int, windows: int | None = None) -> float:
    """Mean next-token cross-entropy (nats) over non-overlapping windows of the validation text."""
    torch = import_torch()
    count = (len(ids) - 1) // context
    if windows:
        count = min(count, windows)
    x = ids[: count * context].reshape(count, context)
    y = ids[1 : count * context + 1].reshape(count, context)
    net.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, count, 64):
            logits = net(x[i : i + 64])
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                             y[i : i + 64].reshape(-1), reduction="sum"))
    net.train()
    return total / (count * context)


def read_corpus(path: str | Path) -> str:
    return Path(path).read_text(encoding="utf-8")

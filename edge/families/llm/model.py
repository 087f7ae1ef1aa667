"""The PyTorch twin of the ONNX decoder, for training; its weights map one to one onto the graph's initializers."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.families.llm.config import PROJECTIONS, LlamaConfig, weight_name
from edge.families.llm.graph import rope_tables
from edge.families.torch_common import import_torch

torch = import_torch()
nn = torch.nn
F = torch.nn.functional


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Any) -> Any:
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate_half(x: Any) -> Any:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class Block(nn.Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.c = c
        kv = c.n_kv_heads * c.head_dim
        self.input_layernorm = RMSNorm(c.dim, c.norm_eps)
        self.q_proj = nn.Linear(c.dim, c.dim, bias=False)
        self.k_proj = nn.Linear(c.dim, kv, bias=False)
        self.v_proj = nn.Linear(c.dim, kv, bias=False)
        self.o_proj = nn.Linear(c.dim, c.dim, bias=False)
        self.post_attention_layernorm = RMSNorm(c.dim, c.norm_eps)
        self.gate_proj = nn.Linear(c.dim, c.hidden_dim, bias=False)
        self.up_proj = nn.Linear(c.dim, c.hidden_dim, bias=False)
        self.down_proj = nn.Linear(c.hidden_dim, c.dim, bias=False)

    def forward(self, x: Any, cos: Any, sin: Any) -> Any:
        c = self.c
        batch, seq, _ = x.shape
        n = self.input_layernorm(x)
        q = self.q_proj(n).view(batch, seq, c.n_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(n).view(batch, seq, c.n_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(n).view(batch, seq, c.n_kv_heads, c.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        group = c.n_heads // c.n_kv_heads
        if group > 1:
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o_proj(attn.transpose(1, 2).reshape(batch, seq, c.dim))
        n = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))


class Llama(nn.Module):
    """LLaMA-style decoder: token embedding, blocks, final RMSNorm, untied head."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        cos, sin = rope_tables(config)
        self.register_buffer("cos", torch.from_numpy(cos), persistent=False)
        self.register_buffer("sin", torch.from_numpy(sin), persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: Any) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, ids: Any) -> Any:
        seq = ids.shape[1]
        cos, sin = self.cos[:seq], self.sin[:seq]
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def to_numpy_weights(net: Llama) -> dict[str, np.ndarray]:
    """The network's weights under the ONNX initializer names (projections transposed)."""
    w: dict[str, np.ndarray] = {"model.embed_tokens.weight": net.embed_tokens.weight.detach().numpy().copy(),
                                "model.norm.weight": net.norm.weight.detach().numpy().copy(),
                                "lm_head.weight": net.lm_head.weight.detach().numpy().T.copy()}
    for i, layer in enumerate(net.layers):
        w[f"model.layers.{i}.input_layernorm.weight"] = layer.input_layernorm.weight.detach().numpy().copy()
        w[f"model.layers.{i}.post_attention_layernorm.weight"] = (
            layer.post_attention_layernorm.weight.detach().numpy().copy())
        for p in PROJECTIONS:
            w[weight_name(i, p)] = getattr(layer, p).weight.detach().numpy().T.copy()
    return w

"""The shape of a LLaMA-style decoder and the names its ONNX graph uses.

Every graph this family builds follows the onnxruntime-genai I/O contract (llm_snn.md A4):
``input_ids`` (batch, new) and ``attention_mask`` (batch, past + new) in, ``past_key_values.N.key/value``
(batch, kv_heads, past, head_dim) in; ``logits`` (batch, new, vocab) and ``present.N.key/value`` out.
Node and initializer names follow onnxruntime-genai's ``/model/layers.{i}/attn/q_proj/MatMul`` convention so that
passes find the projections of a block by name. Projection weights are stored as ``MatMul`` right-hand sides,
i.e. transposed (in_features, out_features).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from edge.errors import MetadataError

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
_MODULE = {p: "attn" if p in ATTENTION else "mlp" for p in PROJECTIONS}
_PROJECTION_NODE = re.compile(r"^/model/layers\.(\d+)/(attn|mlp)/(\w+_proj)/MatMul$")


@dataclass(frozen=True)
class LlamaConfig:
    """Sizes of a LLaMA-style decoder: RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention."""

    vocab_size: int
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4
    hidden_dim: int = 384
    max_seq_len: int = 256
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise MetadataError(f"LLaMA config: dim {self.dim} must divide by n_heads {self.n_heads} and n_heads by "
                                f"n_kv_heads {self.n_kv_heads}.")
        if self.head_dim % 2:
            raise MetadataError(f"LLaMA config: head_dim {self.head_dim} must be even for rotary positions.")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LlamaConfig:
        known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        try:
            return cls(**known)
        except TypeError as exc:
            raise MetadataError(f"the model's LLaMA config is incomplete ({exc}).") from None


def node_name(layer: int, projection: str) -> str:
    """The MatMul node of one projection: ``/model/layers.{layer}/attn/q_proj/MatMul``."""
    return f"/model/layers.{layer}/{_MODULE[projection]}/{projection}/MatMul"


def weight_name(layer: int, projection: str) -> str:
    """The initializer of one projection (stored transposed, in_features x out_features)."""
    return f"model.layers.{layer}.{_MODULE[projection]}.{projection}.weight"


def parse_projection(name: str) -> tuple[int, str] | None:
    """(layer, projection) of a projection MatMul node name, else None."""
    match = _PROJECTION_NODE.match(name)
    return (int(match.group(1)), match.group(3)) if match else None


def past_names(layer: int) -> tuple[str, str]:
    return f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"


def present_names(layer: int) -> tuple[str, str]:
    return f"present.{layer}.key", f"present.{layer}.value"


def module_output(layer: int, module: str) -> str:
    """The residual stream after one module (``attn`` or ``mlp``) of a block."""
    return f"/model/layers.{layer}/{module}/residual/output_0"


def block_input(layer: int) -> str:
    """The residual stream entering block ``layer`` (the embeddings for block 0)."""
    return "/model/embed_tokens/output_0" if layer == 0 else module_output(layer - 1, "mlp")

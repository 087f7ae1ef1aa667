"""Build the ONNX graph of a LLaMA-style decoder with a KV cache from its weights (numpy).

The graph uses standard ONNX ops only (opset 17), so every runtime runs it; nothing is fused by hand, and ORT's
own optimizer fuses RMSNorm at load. Per block::

    h = x + o_proj(attention(rope(q_proj(rms(x))), rope(k_proj(rms(x))), v_proj(rms(x)), past))
    y = h + down_proj(silu(gate_proj(rms(h))) * up_proj(rms(h)))

Positions come from ``attention_mask`` (cumulative sum - 1), so left padding works; the causal mask allows key
``t`` for query ``s`` when ``t <= past + s`` and ``attention_mask[t] == 1``. Grouped-query attention reshapes the
queries of each key/value head into one matrix (batch, kv_heads, group * new, head_dim) instead of copying K and V.
Rotary embeddings use the half-split convention (``rotate_half``); see :mod:`edge.families.llm.llama2c` for how
interleaved checkpoints are permuted into it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.families.llm.config import (
    LlamaConfig,
    module_output,
    node_name,
    past_names,
    present_names,
    weight_name,
)

OPSET = 17
IR_VERSION = 8
MASK_VALUE = -1e9


def weight_names(config: LlamaConfig) -> list[str]:
    """Every weight the graph needs, in a stable order."""
    names = ["model.embed_tokens.weight"]
    for i in range(config.n_layers):
        names.append(f"model.layers.{i}.input_layernorm.weight")
        names += [weight_name(i, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
        names.append(f"model.layers.{i}.post_attention_layernorm.weight")
        names += [weight_name(i, p) for p in ("gate_proj", "up_proj", "down_proj")]
    return names + ["model.norm.weight", "lm_head.weight"]


def weight_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """The shape each weight must have (projections transposed: in_features x out_features)."""
    d, f, kv = config.dim, config.hidden_dim, config.n_kv_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config.vocab_size, d),
                                          "model.norm.weight": (d,), "lm_head.weight": (d, config.vocab_size)}
    for i in range(config.n_layers):
        shapes[f"model.layers.{i}.input_layernorm.weight"] = (d,)
        shapes[f"model.layers.{i}.post_attention_layernorm.weight"] = (d,)
        shapes.update({weight_name(i, "q_proj"): (d, d), weight_name(i, "k_proj"): (d, kv),
                       weight_name(i, "v_proj"): (d, kv), weight_name(i, "o_proj"): (d, d),
                       weight_name(i, "gate_proj"): (d, f), weight_name(i, "up_proj"): (d, f),
                       weight_name(i, "down_proj"): (f, d)})
    return shapes


def rope_tables(config: LlamaConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin (max_seq_len, head_dim), each frequency repeated for both halves (rotate_half convention)."""
    half = config.head_dim // 2
    inv_freq = 1.0 / config.rope_theta ** (np.arange(half, dtype=np.float64) * 2 / config.head_dim)
    angles = np.outer(np.arange(config.max_seq_len, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, outputs: int = 1, **attrs: object) -> str | list[str]:
        outs = [f"{name}/output_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if outputs == 1 else outs


def _rms_norm(b: _Builder, x: str, weight: str, prefix: str, eps_name: str) -> str:
    # Pow -> ReduceMean -> Add -> Sqrt -> Div -> Mul is the pattern ORT fuses into SimplifiedLayerNormalization.
    squared = b.op("Pow", [x, "/model/constants/two"], f"{prefix}/Pow")
    mean = b.op("ReduceMean", [squared], f"{prefix}/ReduceMean", axes=[-1], keepdims=1)
    var = b.op("Add", [mean, eps_name], f"{prefix}/Add")
    std = b.op("Sqrt", [var], f"{prefix}/Sqrt")
    normed = b.op("Div", [x, std], f"{prefix}/Div")
    return b.op("Mul", [normed, weight], f"{prefix}/Mul")


def _rope(b: _Builder, x: str, cos: str, sin: str, prefix: str) -> str:
    x1, x2 = b.op("Split", [x], f"{prefix}/Split", outputs=2, axis=-1)
    rotated = b.op("Concat", [b.op("Neg", [x2], f"{prefix}/Neg"), x1], f"{prefix}/Concat", axis=-1)
    return b.op("Add", [b.op("Mul", [x, cos], f"{prefix}/MulCos"), b.op("Mul", [rotated, sin], f"{prefix}/MulSin")],
                f"{prefix}/Add")


def build_graph(config: LlamaConfig, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The decoder as an ONNX model with a KV cache; ``weights`` maps :func:`weight_names` to float32 arrays."""
    shapes = weight_shapes(config)
    missing = [n for n in shapes if n not in weights]
    if missing:
        raise ValueError(f"build_graph: weight '{missing[0]}' is missing.")
    wrong = [n for n, s in shapes.items() if tuple(weights[n].shape) != s]
    if wrong:
        raise ValueError(f"build_graph: weight '{wrong[0]}' has shape {weights[wrong[0]].shape}, expected {shapes[wrong[0]]}.")
    b = _Builder()
    for name in weight_names(config):
        b.const(name, np.asarray(weights[name], dtype=np.float32))
    h, group = config.head_dim, config.n_heads // config.n_kv_heads
    cos_table, sin_table = rope_tables(config)
    b.const("/model/constants/two", np.array(2.0, np.float32))
    b.const("/model/constants/eps", np.array(config.norm_eps, np.float32))
    b.const("/model/constants/one", np.array(1, np.int64))
    b.const("/model/constants/zero_i", np.array([0], np.int64))
    b.const("/model/constants/last_i", np.array([2**62], np.int64))
    b.const("/model/constants/mask_value", np.array(MASK_VALUE, np.float32))
    b.const("/model/constants/zero_f", np.array(0.0, np.float32))
    b.const("/model/constants/scale", np.array(1.0 / np.sqrt(h), np.float32))
    b.const("/model/rotary/cos_cache", cos_table)
    b.const("/model/rotary/sin_cache", sin_table)

    # Positions and the additive attention mask, shared by all blocks.
    new_len = b.op("Gather", [b.op("Shape", ["input_ids"], "/model/shape/new/Shape"), "/model/constants/one"],
                   "/model/shape/new/Gather", axis=0)
    total_len = b.op("Gather", [b.op("Shape", ["attention_mask"], "/model/shape/total/Shape"), "/model/constants/one"],
                     "/model/shape/total/Gather", axis=0)
    past_len = b.op("Sub", [total_len, new_len], "/model/shape/past/Sub")
    cumsum = b.op("CumSum", ["attention_mask", "/model/constants/one"], "/model/positions/CumSum")
    # Padding positions become -1, which Gather reads as the last row: harmless, those keys are masked out.
    positions_all = b.op("Sub", [cumsum, "/model/constants/one"], "/model/positions/Sub")
    past_1d = b.op("Unsqueeze", [past_len, "/model/constants/zero_i"], "/model/positions/past_1d")
    positions = b.op("Slice", [positions_all, past_1d, "/model/constants/last_i", "/model/constants/one_axis"],
                     "/model/positions/Slice")
    b.const("/model/constants/one_axis", np.array([1], np.int64))
    b.const("/model/constants/axes_1", np.array([1], np.int64))
    cos = b.op("Unsqueeze", [b.op("Gather", ["/model/rotary/cos_cache", positions], "/model/rotary/cos/Gather"),
                             "/model/constants/axes_1"], "/model/rotary/cos/Unsqueeze")
    sin = b.op("Unsqueeze", [b.op("Gather", ["/model/rotary/sin_cache", positions], "/model/rotary/sin/Gather"),
                             "/model/constants/axes_1"], "/model/rotary/sin/Unsqueeze")
    query_index = b.op("Range", [past_len, total_len, "/model/constants/one"], "/model/mask/query/Range")
    key_index = b.op("Range", ["/model/constants/zero_s", total_len, "/model/constants/one"], "/model/mask/key/Range")
    b.const("/model/constants/zero_s", np.array(0, np.int64))
    causal = b.op("LessOrEqual", [b.op("Unsqueeze", [key_index, "/model/constants/zero_i"], "/model/mask/key/Unsqueeze"),
                                  b.op("Unsqueeze", [query_index, "/model/constants/axes_1"], "/model/mask/query/Unsqueeze")],
                  "/model/mask/causal/LessOrEqual")
    b.const("/model/constants/axes_12", np.array([1, 2], np.int64))
    padding = b.op("Unsqueeze", [b.op("Cast", ["attention_mask"], "/model/mask/padding/Cast", to=TensorProto.BOOL),
                                 "/model/constants/axes_12"], "/model/mask/padding/Unsqueeze")
    allowed = b.op("And", [causal, padding], "/model/mask/And")
    mask = b.op("Where", [allowed, "/model/constants/zero_f", "/model/constants/mask_value"], "/model/mask/Where")
    if group > 1:
        b.const("/model/mask/repeats", np.array([1, 1, group, 1], np.int64))
        mask = b.op("Tile", [mask, "/model/mask/repeats"], "/model/mask/Tile")

    x = b.op("Gather", ["model.embed_tokens.weight", "input_ids"], "/model/embed_tokens", axis=0)
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_sequence"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", config.vocab_size])]
    for i in range(config.n_layers):
        x = _block(b, config, i, x, cos, sin, mask, inputs, outputs)
    x = _rms_norm(b, x, "model.norm.weight", "/model/norm", "/model/constants/eps")
    b.nodes.append(helper.make_node("MatMul", [x, "lm_head.weight"], ["logits"], name="/lm_head/MatMul"))
    graph = helper.make_graph(b.nodes, "llama", inputs, outputs, b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge")
    model.ir_version = IR_VERSION
    return model


def _block(b: _Builder, config: LlamaConfig, i: int, x: str, cos: str, sin: str, mask: str,
           inputs: list, outputs: list) -> str:
    h, nh, kvh = config.head_dim, config.n_heads, config.n_kv_heads
    prefix = f"/model/layers.{i}"
    past_k, past_v = past_names(i)
    present_k, present_v = present_names(i)
    cache_shape = ["batch", kvh, "past_sequence", h]
    inputs += [helper.make_tensor_value_info(past_k, TensorProto.FLOAT, cache_shape),
               helper.make_tensor_value_info(past_v, TensorProto.FLOAT, cache_shape)]
    total_shape = ["batch", kvh, "total_sequence", h]
    outputs += [helper.make_tensor_value_info(present_k, TensorProto.FLOAT, total_shape),
                helper.make_tensor_value_info(present_v, TensorProto.FLOAT, total_shape)]
    b.const(f"{prefix}/attn/heads_shape", np.array([0, 0, -1, h], np.int64))
    b.const(f"{prefix}/attn/group_shape", np.array([0, kvh, -1, h], np.int64))
    b.const(f"{prefix}/attn/merge_shape", np.array([0, nh, -1, h], np.int64))
    b.const(f"{prefix}/attn/out_shape", np.array([0, 0, -1], np.int64))

    normed = _rms_norm(b, x, f"model.layers.{i}.input_layernorm.weight", f"{prefix}/input_layernorm",
                       "/model/constants/eps")

    def heads(proj: str) -> str:
        y = b.op("MatMul", [normed, weight_name(i, proj)], node_name(i, proj))
        y = b.op("Reshape", [y, f"{prefix}/attn/heads_shape"], f"{prefix}/attn/{proj}/Reshape")
        return b.op("Transpose", [y], f"{prefix}/attn/{proj}/Transpose", perm=[0, 2, 1, 3])

    q = _rope(b, heads("q_proj"), cos, sin, f"{prefix}/attn/q_rotary")
    k = _rope(b, heads("k_proj"), cos, sin, f"{prefix}/attn/k_rotary")
    v = heads("v_proj")
    b.nodes.append(helper.make_node("Concat", [past_k, k], [present_k], name=f"{prefix}/attn/present_key/Concat", axis=2))
    b.nodes.append(helper.make_node("Concat", [past_v, v], [present_v], name=f"{prefix}/attn/present_value/Concat",
                                    axis=2))
    grouped = b.op("Reshape", [q, f"{prefix}/attn/group_shape"], f"{prefix}/attn/group/Reshape")
    keys_t = b.op("Transpose", [present_k], f"{prefix}/attn/keys/Transpose", perm=[0, 1, 3, 2])
    scores = b.op("MatMul", [grouped, keys_t], f"{prefix}/attn/scores/MatMul")
    scores = b.op("Add", [b.op("Mul", [scores, "/model/constants/scale"], f"{prefix}/attn/scores/Mul"), mask],
                  f"{prefix}/attn/scores/Add")
    probs = b.op("Softmax", [scores], f"{prefix}/attn/Softmax", axis=-1)
    context = b.op("MatMul", [probs, present_v], f"{prefix}/attn/context/MatMul")
    context = b.op("Reshape", [context, f"{prefix}/attn/merge_shape"], f"{prefix}/attn/merge/Reshape")
    context = b.op("Transpose", [context], f"{prefix}/attn/context/Transpose", perm=[0, 2, 1, 3])
    context = b.op("Reshape", [context, f"{prefix}/attn/out_shape"], f"{prefix}/attn/out/Reshape")
    attn = b.op("MatMul", [context, weight_name(i, "o_proj")], node_name(i, "o_proj"))
    x = b.op("Add", [x, attn], f"{prefix}/attn/residual")
    assert x == module_output(i, "attn")

    normed = _rms_norm(b, x, f"model.layers.{i}.post_attention_layernorm.weight", f"{prefix}/post_attention_layernorm",
                       "/model/constants/eps")
    gate = b.op("MatMul", [normed, weight_name(i, "gate_proj")], node_name(i, "gate_proj"))
    up = b.op("MatMul", [normed, weight_name(i, "up_proj")], node_name(i, "up_proj"))
    silu = b.op("Mul", [gate, b.op("Sigmoid", [gate], f"{prefix}/mlp/act/Sigmoid")], f"{prefix}/mlp/act/Mul")
    product = b.op("Mul", [silu, up], f"{prefix}/mlp/act_up/Mul")
    down = b.op("MatMul", [product, weight_name(i, "down_proj")], node_name(i, "down_proj"))
    x = b.op("Add", [x, down], f"{prefix}/mlp/residual")
    assert x == module_output(i, "mlp")
    return x

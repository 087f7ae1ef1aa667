"""Structured compression of LLaMA-style decoders: drop whole modules, prune FFN neurons, prune kv-head groups.

Unstructured or 2:4 zeros buy no speed on ORT CPU, TFLite or MCU runtimes (llm_snn.md A4); these passes turn
sparsity into *structure*, so every dense runtime runs a smaller graph:

* :class:`DropModules` (LLM-Drop, He et al. 2024, llm_snn.md A3): score every attention and MLP module by the mean
  cosine similarity of the residual stream before and after it, cos(X_t, X_t + f(norm(X_t))), and drop the most
  similar ones (the modules that change the stream least). A dropped module becomes the identity on the residual
  path: consumers of its residual ``Add`` read the Add's first input, and the dead subgraph is deleted. A dropped
  attention module also loses its ``past_key_values.N.*`` inputs and ``present.N.*`` outputs, so the KV cache
  shrinks with it; :class:`edge.families.llm.runner.CacheLayout` reads the remaining cached layers from the graph.
* :class:`PruneFFN`: remove the least important hidden neurons of each SwiGLU MLP by slicing ``gate_proj`` and
  ``up_proj`` columns and ``down_proj`` rows.
* :class:`PruneHeads`: remove whole grouped-query-attention groups (one kv head and its query heads) by slicing
  q/k/v columns and o_proj rows, and shrink the per-layer reshape shapes and the KV-cache I/O to match.

Every pass works on the float graph built by :func:`edge.families.llm.graph.build_graph` (names from
:mod:`edge.families.llm.config`), copies the model and leaves its input artifact untouched. The architecture in
``meta.task["config"]`` is left as exported; what changed is read from the graph (and the provenance record).

>>> from converters.llm_structure import DropModules, PruneFFN, PruneHeads
>>> child = DropModules(target="attn", count=1)(artifact, windows)  # doctest: +SKIP
>>> child = PruneFFN(ratio=0.25)(child, windows)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edge.artifact import Artifact
from edge.errors import PassError
from edge.families.llm.calibration import (
    calibration_windows,
    capture,
    check_calibration_windows,
    require_projections,
)
from edge.families.llm.config import past_names, present_names, weight_name

__all__ = ["DropModules", "PruneFFN", "PruneHeads", "drop_module", "module_similarities"]

log = logging.getLogger("edge")

TARGETS = ("attn", "mlp", "all")
FFN_SCORES = ("wanda", "magnitude")
HEAD_SCORES = ("context", "magnitude")
_RESIDUAL = re.compile(r"^/model/layers\.(\d+)/(attn|mlp)/residual$")
_MODULE_KEY = re.compile(r"^(attn|mlp)\.(\d+)$")


# --- graph helpers ------------------------------------------------------------------------------------------------


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _module_key(node_name: str) -> str | None:
    """``attn.3`` for the node ``/model/layers.3/attn/residual``, else None."""
    match = _RESIDUAL.match(node_name)
    return f"{match.group(2)}.{match.group(1)}" if match else None


def _residual_adds(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Module key -> its residual Add (inputs: [stream in, module output]), for every module still in the graph."""
    found = {}
    for node in model.graph.node:
        key = _module_key(node.name)
        if key is not None and node.op_type == "Add":
            found[key] = node
    return found


def _sort_keys(keys: list[str]) -> list[str]:
    """Module keys in graph order: attn.0, mlp.0, attn.1, ..."""
    return sorted(keys, key=lambda k: (int(k.split(".")[1]), k.split(".")[0] != "attn"))


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _set(tensor: onnx.TensorProto, values: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values), tensor.name))


def _own(model: onnx.ModelProto, node: onnx.NodeProto, slot: int, where: str) -> onnx.TensorProto:
    """The initializer in ``slot`` of ``node``, refused when shared: slicing it would break its other user."""
    name = node.input[slot]
    tensor = _initializers(model).get(name)
    if tensor is None:
        raise PassError(f"{where}: input {slot} of node '{node.name}' ('{name}') is not a constant initializer, "
                        "so it cannot be sliced (is the model quantized? prune before quantizing).")
    users = [n.name for n in model.graph.node if name in n.input]
    if len(users) > 1:
        raise PassError(f"{where}: weight '{name}' is shared with node '{next(u for u in users if u != node.name)}'.")
    return tensor


def _eliminate_dead(model: onnx.ModelProto) -> None:
    """Delete nodes, initializers and value_info that no graph output depends on (graph inputs are kept)."""
    graph = model.graph
    live = {o.name for o in graph.output}
    kept = []
    # Nodes of an ONNX graph are topologically sorted, so one backward sweep finds every live node.
    for node in reversed(graph.node):
        if any(out in live for out in node.output):
            kept.append(node)
            live.update(i for i in node.input if i)
    kept.reverse()
    inits = [t for t in graph.initializer if t.name in live]
    infos = [v for v in graph.value_info if v.name in live]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]
    graph.value_info.extend(infos)


def _check(model: onnx.ModelProto, owner: str) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise PassError(f"{owner}: the new graph fails the ONNX checks ({str(exc).splitlines()[0]}).") from None


def _layers_with(nodes: dict[tuple[int, str], onnx.NodeProto], projections: tuple[str, ...]) -> list[int]:
    layers = {layer for layer, _ in nodes}
    return sorted(layer for layer in layers if all((layer, p) in nodes for p in projections))


def _select_layers(requested: list[int] | None, present: list[int], owner: str, what: str) -> list[int]:
    if requested is None:
        return present
    missing = [layer for layer in requested if layer not in present]
    if missing:
        raise PassError(f"{owner}: layer {missing[0]} has no {what} in this model (layers with one: {present}).")
    return sorted(set(requested))


# --- LLM-Drop -----------------------------------------------------------------------------------------------------


def module_similarities(artifact: Artifact | onnx.ModelProto, windows: np.ndarray) -> dict[str, float]:
    """Mean over calibration tokens of cos(X_t, Y_t) per module: X its residual input, Y = X + module(norm(X))."""
    model = artifact.model if isinstance(artifact, Artifact) else artifact
    adds = _residual_adds(model)
    if not adds:
        raise PassError("module similarities need a LLaMA-style decoder built by edge (residual Add nodes named "
                        "'/model/layers.N/attn/residual'); this model has none.")
    # The Add's own inputs are used rather than config.block_input: after earlier drops the stream entering a
    # module is whatever its Add was rewired to.
    names = [t for node in adds.values() for t in (node.input[0], node.output[0])]
    values = capture(model, windows, names)
    scores = {}
    for key in _sort_keys(list(adds)):
        x = values[adds[key].input[0]].astype(np.float64)
        y = values[adds[key].output[0]].astype(np.float64)
        cos = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-30)
        scores[key] = float(np.clip(cos.mean(), -1.0, 1.0))
    return scores


def drop_module(model: onnx.ModelProto, key: str) -> None:
    """Make module ``key`` (``attn.2``) the identity in place: rewire its residual Add, remove dead code and cache."""
    adds = _residual_adds(model)
    if key not in adds:
        present = ", ".join(_sort_keys(list(adds)))
        raise PassError(f"drop-modules: module '{key}' is not in the model (present: {present}).")
    node = adds[key]
    stream, out = node.input[0], node.output[0]
    graph = model.graph
    if any(o.name == out for o in graph.output):
        raise PassError(f"drop-modules: the output of module '{key}' is a graph output, so it cannot be bypassed.")
    for consumer in graph.node:
        for slot, name in enumerate(consumer.input):
            if name == out:
                consumer.input[slot] = stream
    kind, layer = key.split(".")
    if kind == "attn":
        # The module's KV cache goes with it; nothing else may read it.
        cache_out = set(present_names(int(layer)))
        cache_in = set(past_names(int(layer)))
        outputs = [o for o in graph.output if o.name not in cache_out]
        del graph.output[:]
        graph.output.extend(outputs)
        inputs = [i for i in graph.input if i.name not in cache_in]
        del graph.input[:]
        graph.input.extend(inputs)
    _eliminate_dead(model)
    if kind == "attn":
        readers = [n.name for n in graph.node if any(name in past_names(int(layer)) for name in n.input)]
        if readers:
            raise PassError(f"drop-modules: node '{readers[0]}' still reads the KV cache of dropped module '{key}'.")


@dataclass
class DropModules:
    """LLM-Drop: replace the ``count`` most redundant modules (or the named ``modules``) by the identity.

    Redundancy is the mean cosine similarity between a module's residual input and output over calibration tokens
    (:func:`module_similarities`); the highest go first. ``target`` limits the ranking to attention, MLP or both
    (joint drop); ``iterative`` recomputes the similarities on the already-dropped model after each drop.
    """

    target: str = "attn"
    count: int | None = None
    modules: list[str] = field(default_factory=list)
    calibration_windows: int = 32
    iterative: bool = False
    name: str = "drop-modules"

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise PassError(f"The 'target' parameter of {self.name} must be one of {', '.join(TARGETS)}; "
                            f"got '{self.target}'.")
        if (self.count is None) == (not self.modules):
            raise PassError(f"{self.name} needs exactly one of 'count' (how many modules to drop by similarity) "
                            "or 'modules' (names like [\"attn.2\", \"mlp.0\"]).")
        if self.count is not None and (not isinstance(self.count, int) or self.count < 1):
            raise PassError(f"The 'count' parameter of {self.name} must be a positive integer; got {self.count}.")
        bad = [m for m in self.modules if not _MODULE_KEY.match(str(m))]
        if bad:
            raise PassError(f"The 'modules' parameter of {self.name} takes names like 'attn.2' or 'mlp.0'; "
                            f"got '{bad[0]}'.")
        if len(set(self.modules)) != len(self.modules):
            raise PassError(f"The 'modules' parameter of {self.name} names a module twice: {self.modules}.")
        check_calibration_windows(self.name, self.calibration_windows)

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None = None) -> Artifact:
        """Return a child with the chosen modules (and their KV cache) removed; the parent is untouched."""
        model = _copy(artifact.model)
        present = _sort_keys(list(_residual_adds(model)))
        if not present:
            raise PassError(f"{self.name} works on LLaMA-style decoders built by edge (residual Add nodes named "
                            "'/model/layers.N/attn/residual'); this model has none.")
        if self.modules:
            unknown = [m for m in self.modules if m not in present]
            if unknown:
                raise PassError(f"{self.name}: module '{unknown[0]}' is not in the model "
                                f"(present: {', '.join(present)}).")
            windows = (None if calibration is None
                       else calibration_windows(calibration, self.calibration_windows, self.name))
            similarities = module_similarities(model, windows) if windows is not None else None
            dropped = list(self.modules)
            for key in dropped:
                drop_module(model, key)
            steps = None
        else:
            candidates = [k for k in present if self.target == "all" or k.startswith(self.target + ".")]
            if self.count > len(candidates):
                raise PassError(f"{self.name}: count {self.count} is more than the {len(candidates)} "
                                f"{'' if self.target == 'all' else self.target + ' '}modules in the model.")
            windows = calibration_windows(calibration, self.calibration_windows, self.name,
                                          "to rank modules by similarity")
            similarities = module_similarities(model, windows)
            dropped, steps = self._choose(model, similarities, candidates, windows)
        _check(model, self.name)
        log.info("%s: dropped %s", self.name, ", ".join(dropped))
        record: dict[str, Any] = {**self.params(), "similarities": similarities, "dropped": dropped}
        if steps is not None:
            record["iterative_similarities"] = steps
        return artifact.derive(model, self.name, record)

    def _choose(self, model: onnx.ModelProto, similarities: dict[str, float], candidates: list[str],
                windows: np.ndarray) -> tuple[list[str], list[dict[str, float]] | None]:
        """Drop (in place) and return the chosen modules; one-shot ranking, or re-ranked after each drop."""
        if not self.iterative:
            ranked = sorted(candidates, key=lambda k: -similarities[k])  # stable: ties keep graph order
            dropped = ranked[: self.count]
            for key in dropped:
                drop_module(model, key)
            return dropped, None
        dropped, steps, scores = [], [], similarities
        remaining = list(candidates)
        for step in range(self.count):
            if step:
                scores = module_similarities(model, windows)
            steps.append({k: scores[k] for k in remaining})
            best = max(remaining, key=lambda k: scores[k])
            drop_module(model, best)
            dropped.append(best)
            remaining.remove(best)
        return dropped, steps


# --- FFN neuron pruning -------------------------------------------------------------------------------------------


def _kept_count(total: int, ratio: float, multiple: int) -> int:
    """Neurons (or groups) kept: total minus round(ratio * total), rounded up to ``multiple`` while it fits."""
    keep = max(1, total - round(ratio * total))
    rounded = math.ceil(keep / multiple) * multiple
    return rounded if rounded <= total else keep


@dataclass
class PruneFFN:
    """Remove the ``ratio`` least important hidden neurons of each SwiGLU MLP, shrinking gate/up/down.

    ``score="wanda"`` (calibration): neuron j scores mean_t |silu(gate_t) * up_t|_j * ||W_down_T[j, :]||_2, the
    size of its contribution to the MLP output (Wanda's |activation| * |weight| at neuron granularity).
    ``score="magnitude"`` (no calibration): ||gate col j|| * ||up col j|| * ||down row j||.
    The kept count is rounded *up* to a multiple of ``multiple`` (8 by default) where the layer is that large, so
    the sliced GEMMs stay on whole SIMD vectors; use 32 before int4 ``MatMulNBits`` (block 32 along down_proj's K).
    """

    ratio: float = 0.25
    score: str = "wanda"
    calibration_windows: int = 32
    layers: list[int] | None = None
    multiple: int = 8
    name: str = "prune-ffn"

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise PassError(f"The 'ratio' parameter of {self.name} must be a float in [0, 1); got {self.ratio}.")
        if self.score not in FFN_SCORES:
            raise PassError(f"The 'score' parameter of {self.name} must be one of {', '.join(FFN_SCORES)}; "
                            f"got '{self.score}'.")
        check_calibration_windows(self.name, self.calibration_windows)
        if self.multiple < 1:
            raise PassError(f"The 'multiple' parameter of {self.name} must be at least 1; got {self.multiple}.")
        if self.layers is not None and any(not isinstance(x, int) or x < 0 for x in self.layers):
            raise PassError(f"The 'layers' parameter of {self.name} must list layer indices >= 0; got {self.layers}.")

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None = None) -> Artifact:
        """Return a child whose MLPs keep only their most important hidden neurons; the parent is untouched."""
        model = _copy(artifact.model)
        nodes = require_projections(model, self.name)
        layers = _select_layers(self.layers, _layers_with(nodes, ("gate_proj", "up_proj", "down_proj")),
                                self.name, "MLP")
        activations: dict[str, np.ndarray] = {}
        if self.score == "wanda" and self.ratio > 0:
            windows = calibration_windows(calibration, self.calibration_windows, self.name, "for score 'wanda'")
            activations = capture(model, windows, [nodes[(i, "down_proj")].input[0] for i in layers])
        hidden: dict[str, list[int]] = {}
        for i in layers:
            gate = _own(model, nodes[(i, "gate_proj")], 1, self.name)
            up = _own(model, nodes[(i, "up_proj")], 1, self.name)
            down = _own(model, nodes[(i, "down_proj")], 1, self.name)
            w_gate, w_up, w_down = (numpy_helper.to_array(t) for t in (gate, up, down))
            total = w_down.shape[0]
            keep_n = _kept_count(total, self.ratio, self.multiple)
            hidden[str(i)] = [total, keep_n]
            if keep_n == total:
                continue
            if self.score == "wanda":
                act = np.abs(activations[nodes[(i, "down_proj")].input[0]].astype(np.float64)).mean(0)
                scores = act * np.linalg.norm(w_down.astype(np.float64), axis=1)
            else:
                scores = (np.linalg.norm(w_gate.astype(np.float64), axis=0)
                          * np.linalg.norm(w_up.astype(np.float64), axis=0)
                          * np.linalg.norm(w_down.astype(np.float64), axis=1))
            keep = np.sort(np.argsort(scores, kind="stable")[total - keep_n:])
            _set(gate, w_gate[:, keep])
            _set(up, w_up[:, keep])
            _set(down, w_down[keep, :])
            log.debug("%s: layer %d keeps %d of %d hidden neurons", self.name, i, keep_n, total)
        _check(model, self.name)
        return artifact.derive(model, self.name, {**self.params(), "hidden": hidden})


# --- kv-group (head) pruning --------------------------------------------------------------------------------------


def _shape_init(model: onnx.ModelProto, layer: int, which: str) -> onnx.TensorProto:
    name = f"/model/layers.{layer}/attn/{which}"
    tensor = _initializers(model).get(name)
    if tensor is None:
        raise PassError(f"prune-heads: layer {layer} has no shape initializer '{name}'; the graph is not one built "
                        "by edge's LLM family.")
    users = [n.name for n in model.graph.node if name in n.input]
    if len(users) > 1:
        raise PassError(f"prune-heads: shape '{name}' is shared by nodes '{users[0]}' and '{users[1]}'.")
    return tensor


def _set_cache_heads(values: Any, names: tuple[str, ...], kv_heads: int) -> None:
    for value in values:
        if value.name in names:
            value.type.tensor_type.shape.dim[1].dim_value = kv_heads


@dataclass
class PruneHeads:
    """Remove the ``ratio`` least important kv groups (one kv head and its query heads) of each attention module.

    A group is the unit grouped-query attention can lose without changing the group size G = n_heads / n_kv_heads
    (the graph-level mask tile stays valid). ``score="context"`` (calibration): mean over tokens of
    ||context_t[group] @ W_o_T[group rows]||_2, the size of the group's exact contribution to the attention output.
    ``score="magnitude"`` (no calibration): ||W_v_T group cols||_F * ||W_o_T group rows||_F (the value-output path).
    At least one group per layer is kept; q/k/v lose column blocks, o_proj row blocks, and the layer's KV cache its
    heads (the ``past``/``present`` I/O dims and ``group_shape``/``merge_shape`` follow).
    """

    ratio: float = 0.5
    score: str = "context"
    calibration_windows: int = 32
    layers: list[int] | None = None
    name: str = "prune-heads"

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise PassError(f"The 'ratio' parameter of {self.name} must be a float in [0, 1); got {self.ratio}.")
        if self.score not in HEAD_SCORES:
            raise PassError(f"The 'score' parameter of {self.name} must be one of {', '.join(HEAD_SCORES)}; "
                            f"got '{self.score}'.")
        check_calibration_windows(self.name, self.calibration_windows)
        if self.layers is not None and any(not isinstance(x, int) or x < 0 for x in self.layers):
            raise PassError(f"The 'layers' parameter of {self.name} must list layer indices >= 0; got {self.layers}.")

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None = None) -> Artifact:
        """Return a child whose attention modules keep only their most important kv groups; the parent is untouched."""
        model = _copy(artifact.model)
        nodes = require_projections(model, self.name)
        layers = _select_layers(self.layers, _layers_with(nodes, ("q_proj", "k_proj", "v_proj", "o_proj")),
                                self.name, "attention")
        contexts: dict[str, np.ndarray] = {}
        if self.score == "context" and self.ratio > 0:
            windows = calibration_windows(calibration, self.calibration_windows, self.name, "for score 'context'")
            contexts = capture(model, windows, [nodes[(i, "o_proj")].input[0] for i in layers])
        groups: dict[str, list[int]] = {}
        for i in layers:
            group_shape, merge_shape = _shape_init(model, i, "group_shape"), _shape_init(model, i, "merge_shape")
            kvh = int(numpy_helper.to_array(group_shape)[1])
            nh, head = (int(v) for v in numpy_helper.to_array(merge_shape)[[1, 3]])
            g = nh // kvh
            weights = {p: _own(model, nodes[(i, p)], 1, self.name) for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
            w = {p: numpy_helper.to_array(t) for p, t in weights.items()}
            if w["k_proj"].shape[1] != kvh * head or w["o_proj"].shape[0] != nh * head:
                raise PassError(f"{self.name}: layer {i} weights {weight_name(i, 'k_proj')} / o_proj do not match "
                                f"{kvh} kv heads x {head} and {nh} heads.")
            keep_n = _kept_count(kvh, self.ratio, 1)
            groups[str(i)] = [kvh, keep_n]
            if keep_n == kvh:
                continue
            q_rows = [np.arange(j * g * head, (j + 1) * g * head) for j in range(kvh)]  # o_proj rows / q cols
            kv_cols = [np.arange(j * head, (j + 1) * head) for j in range(kvh)]
            if self.score == "context":
                ctx = contexts[nodes[(i, "o_proj")].input[0]].astype(np.float64)
                wo = w["o_proj"].astype(np.float64)
                scores = np.array([np.linalg.norm(ctx[:, r] @ wo[r], axis=1).mean() for r in q_rows])
            else:
                scores = np.array([np.linalg.norm(w["v_proj"][:, c]) * np.linalg.norm(w["o_proj"][r])
                                   for c, r in zip(kv_cols, q_rows, strict=True)])
            keep = np.sort(np.argsort(scores, kind="stable")[kvh - keep_n:])
            q_keep = np.concatenate([q_rows[j] for j in keep])
            kv_keep = np.concatenate([kv_cols[j] for j in keep])
            _set(weights["q_proj"], w["q_proj"][:, q_keep])
            _set(weights["k_proj"], w["k_proj"][:, kv_keep])
            _set(weights["v_proj"], w["v_proj"][:, kv_keep])
            _set(weights["o_proj"], w["o_proj"][q_keep, :])
            _set(group_shape, np.array([0, keep_n, -1, head], np.int64))
            _set(merge_shape, np.array([0, keep_n * g, -1, head], np.int64))
            _set_cache_heads(model.graph.input, past_names(i), keep_n)
            _set_cache_heads(model.graph.output, present_names(i), keep_n)
            _set_cache_heads(model.graph.value_info, present_names(i), keep_n)
            log.debug("%s: layer %d keeps kv groups %s of %d", self.name, i, keep.tolist(), kvh)
        _check(model, self.name)
        return artifact.derive(model, self.name, {**self.params(), "kv_groups": groups})

"""Unstructured sparsification of float weights: magnitude pruning (per layer or global) and N:M.

Both passes zero weights in place and keep every shape, so the graph, its MACs and its latency on
dense runtimes (ONNX Runtime, LiteRT) are unchanged: they buy compressed size and feed sparse kernels,
not speed (see ``converters.prune_channels`` for pruning that removes channels).

Preconditions: a float model. The weight of a node is its initializer in slot 1 (Conv ``W``, Gemm
``B``, MatMul ``B``); a node whose weight is computed, quantized or shared in a way we do not see is
skipped with a debug log. Weight tensors with fewer than ``min_elements`` values (the Guney network's
3-weight sub-band layer) are never touched.

>>> from converters.sparsify import PruneMagnitude, sparsity_report, format_sparsity_report
>>> child = PruneMagnitude(sparsity=0.5, scope="global")(artifact, None)  # doctest: +SKIP
>>> print(format_sparsity_report(sparsity_report(child.model)))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edge.artifact import Artifact
from edge.errors import PassError

__all__ = ["PruneMagnitude", "PruneNM", "format_sparsity_report", "sparsity_report"]

log = logging.getLogger("edge")

SCOPES = ("layer", "global")
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                  "MatMulInteger", "DynamicQuantizeLinear", "MatMulNBits"}
_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


def _weights(model: onnx.ModelProto, ops: tuple[str, ...] | list[str], exclude: list[str] = (),
             min_elements: int = 0) -> list[tuple[onnx.NodeProto, onnx.TensorProto]]:
    """(node, float weight initializer) for every eligible node, each initializer once."""
    initializers = {t.name: t for t in model.graph.initializer}
    seen: set[str] = set()
    found = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ops or node.name in exclude:
            continue
        weight = initializers.get(node.input[1]) if len(node.input) > 1 else None
        if weight is None:
            log.debug("%s: weight of node '%s' is not an initializer; left alone", node.op_type, node.name)
            continue
        if weight.data_type not in _FLOATS:
            continue
        if weight.name in seen:
            continue
        seen.add(weight.name)
        elements = int(np.prod(weight.dims)) if len(weight.dims) else 1
        if elements < min_elements:
            log.debug("node '%s': weight '%s' has %d elements (< %d); left dense", node.name, weight.name,
                      elements, min_elements)
            continue
        found.append((node, weight))
    return found


def _check_float(name: str, artifact: Artifact, exclude: list[str]) -> None:
    graph = artifact.model.graph
    quantized = [n for n in graph.node if n.op_type in _QUANTIZED_OPS]
    if quantized:
        raise PassError(f"{name} works on float models; node '{quantized[0].name}' ({quantized[0].op_type}) "
                        f"shows this model is already quantized. Sparsify before quantize-int8 in the recipe.")
    names = {n.name for n in graph.node}
    unknown = [n for n in exclude if n not in names]
    if unknown:
        raise PassError(f"{name}: no node named '{unknown[0]}' to exclude; node names are shown by 'edge inspect'.")


def _replace(weight: onnx.TensorProto, values: np.ndarray) -> None:
    weight.CopyFrom(numpy_helper.from_array(values.astype(numpy_helper.to_array(weight).dtype), weight.name))


def _zero_smallest(values: np.ndarray, count: int) -> np.ndarray:
    """Zero exactly ``count`` entries of smallest magnitude (ties broken by position)."""
    flat = values.reshape(-1).copy()
    if count > 0:
        order = np.argsort(np.abs(flat), kind="stable")
        flat[order[:count]] = 0
    return flat.reshape(values.shape)


@dataclass
class PruneMagnitude:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights, per layer or over all layers at once.

    ``scope="layer"`` gives each weight tensor the same sparsity; ``scope="global"`` ranks every
    eligible weight together, so layers with small weights lose more. ``ops`` chooses node types,
    ``exclude`` names nodes to keep dense; tensors under ``min_elements`` values are kept dense.
    """

    sparsity: float = 0.5
    scope: str = "layer"
    ops: list[str] = field(default_factory=lambda: list(WEIGHT_OPS))
    exclude: list[str] = field(default_factory=list)
    min_elements: int = 16
    name: str = "prune-magnitude"

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise PassError(f"The 'sparsity' parameter of {self.name} must be a float in [0, 1); got {self.sparsity}.")
        if self.scope not in SCOPES:
            raise PassError(f"The 'scope' parameter of {self.name} must be one of {', '.join(SCOPES)}; got '{self.scope}'.")
        bad = [op for op in self.ops if op not in WEIGHT_OPS]
        if bad:
            raise PassError(f"The 'ops' parameter of {self.name} may hold {', '.join(WEIGHT_OPS)}; got '{bad[0]}'.")

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None = None) -> Artifact:
        """Return a child whose eligible weights have exactly the requested share of zeros."""
        _check_float(self.name, artifact, self.exclude)
        model = onnx.ModelProto()
        model.CopyFrom(artifact.model)
        targets = _weights(model, self.ops, self.exclude, self.min_elements)
        if not targets:
            raise PassError(f"{self.name}: no {'/'.join(self.ops)} node with a float weight of at least "
                            f"{self.min_elements} elements to prune.")
        arrays = [numpy_helper.to_array(w) for _, w in targets]
        if self.scope == "layer":
            pruned = [_zero_smallest(a, round(self.sparsity * a.size)) for a in arrays]
        else:
            flat = np.concatenate([a.reshape(-1) for a in arrays])
            flat = _zero_smallest(flat, round(self.sparsity * flat.size))
            bounds = np.cumsum([0] + [a.size for a in arrays])
            pruned = [flat[bounds[i]:bounds[i + 1]].reshape(a.shape) for i, a in enumerate(arrays)]
        for (node, weight), values in zip(targets, pruned):
            _replace(weight, values)
            log.debug("%s: '%s' of node '%s' now %.1f %% zeros", self.name, weight.name, node.name,
                      100 * float(np.mean(values == 0)))
        log.info("%s: %d weight tensors pruned to %.0f %% (%s)", self.name, len(targets), 100 * self.sparsity, self.scope)
        return artifact.derive(model, self.name, self.params())


@dataclass
class PruneNM:
    """Keep the ``n`` largest of every ``m`` consecutive weights along the input dimension (2:4 by default).

    Convention: groups run along the reduction (input) axis of each output unit. Conv ``W`` of shape
    (out, in, *kernel) is grouped per output channel over the flattened ``in x kernel`` values in
    memory order (input channel outer, kernel position inner). Gemm ``B`` is grouped along K: along
    axis 1 when ``transB=1`` (B is (N, K)), along axis 0 when ``transB=0``; MatMul ``B`` (K, N) along
    axis 0. A tensor whose input length is not a multiple of ``m`` is left dense with a debug log.
    """

    n: int = 2
    m: int = 4
    ops: list[str] = field(default_factory=lambda: list(WEIGHT_OPS))
    exclude: list[str] = field(default_factory=list)
    min_elements: int = 16
    name: str = "prune-nm"

    def __post_init__(self) -> None:
        if not (isinstance(self.m, int) and isinstance(self.n, int) and 0 < self.n < self.m):
            raise PassError(f"The 'n' and 'm' parameters of {self.name} must be integers with 0 < n < m; "
                            f"got n={self.n}, m={self.m}.")
        bad = [op for op in self.ops if op not in WEIGHT_OPS]
        if bad:
            raise PassError(f"The 'ops' parameter of {self.name} may hold {', '.join(WEIGHT_OPS)}; got '{bad[0]}'.")

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None = None) -> Artifact:
        """Return a child where every group of ``m`` input weights holds at most ``n`` non-zeros."""
        _check_float(self.name, artifact, self.exclude)
        model = onnx.ModelProto()
        model.CopyFrom(artifact.model)
        changed = 0
        for node, weight in _weights(model, self.ops, self.exclude, self.min_elements):
            values = numpy_helper.to_array(weight)
            rows = nm_rows(node, values)
            if rows is None:
                log.debug("%s: weight of node '%s' is not 2-D or 4-D as expected; left dense", self.name, node.name)
                continue
            if rows.shape[1] % self.m:
                log.debug("%s: node '%s' has %d inputs per output, not a multiple of %d; left dense",
                          self.name, node.name, rows.shape[1], self.m)
                continue
            groups = rows.reshape(rows.shape[0], -1, self.m)
            # Zero the m - n smallest of each group; a stable sort breaks ties by position.
            order = np.argsort(np.abs(groups), axis=-1, kind="stable")[..., : self.m - self.n]
            np.put_along_axis(groups, order, 0, axis=-1)
            _replace(weight, nm_restore(node, values, groups.reshape(rows.shape)))
            changed += 1
            log.debug("%s: node '%s' pruned %d:%d", self.name, node.name, self.n, self.m)
        if not changed:
            raise PassError(f"{self.name}: no weight tensor has an input length that is a multiple of {self.m}.")
        log.info("%s: %d weight tensors pruned %d:%d", self.name, changed, self.n, self.m)
        return artifact.derive(model, self.name, self.params())


def _trans_b(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "transB"), 0)


def nm_rows(node: onnx.NodeProto, values: np.ndarray) -> np.ndarray | None:
    """The weight as (outputs, inputs) rows in the N:M grouping order, or None if not understood."""
    if node.op_type == "Conv" and values.ndim >= 3:
        return values.reshape(values.shape[0], -1).copy()
    if node.op_type in ("Gemm", "MatMul") and values.ndim == 2:
        if node.op_type == "Gemm" and _trans_b(node):
            return values.copy()
        return values.T.copy()
    return None


def nm_restore(node: onnx.NodeProto, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Inverse of :func:`nm_rows`: rows back to the weight's own shape."""
    if node.op_type == "Conv" or (node.op_type == "Gemm" and _trans_b(node)):
        return rows.reshape(values.shape)
    return rows.T.reshape(values.shape)


def sparsity_report(model: onnx.ModelProto, ops: tuple[str, ...] | list[str] = WEIGHT_OPS) -> list[dict]:
    """Per weight tensor of Conv/Gemm/MatMul nodes: name, node, op, elements, zeros, sparsity.

    Quantized weights behind a DequantizeLinear are reported too (symmetric int8 keeps zeros at 0).
    """
    initializers = {t.name: t for t in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}
    rows, seen = [], set()
    for node in model.graph.node:
        if node.op_type not in ops or len(node.input) < 2:
            continue
        name = node.input[1]
        producer = producers.get(name)
        if producer is not None and producer.op_type == "DequantizeLinear":
            name = producer.input[0]
        weight = initializers.get(name)
        if weight is None or name in seen:
            continue
        seen.add(name)
        values = numpy_helper.to_array(weight)
        zeros = int(np.count_nonzero(values == 0))
        rows.append({"name": weight.name, "node": node.name, "op": node.op_type, "elements": int(values.size),
                     "zeros": zeros, "sparsity": zeros / values.size if values.size else 0.0})
    return rows


def format_sparsity_report(rows: list[dict]) -> str:
    """A table of the report, with a total line weighted by element count."""
    width = max([len("tensor")] + [len(r["name"]) for r in rows])
    lines = [f"{'tensor':<{width}}  {'op':<6} {'elements':>9} {'zeros':>9} {'sparsity':>8}"]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {r['op']:<6} {r['elements']:>9,} {r['zeros']:>9,} {100 * r['sparsity']:7.1f}%")
    total = sum(r["elements"] for r in rows)
    zeros = sum(r["zeros"] for r in rows)
    lines.append(f"{'total':<{width}}  {'':<6} {total:>9,} {zeros:>9,} {100 * zeros / max(total, 1):7.1f}%")
    return "\n".join(lines)

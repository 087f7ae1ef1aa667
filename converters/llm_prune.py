"""Weight pruning of LLaMA-style decoders: magnitude, Wanda and SparseGPT, unstructured or N:M (llm_snn.md A1).

Every block projection (q/k/v/o, gate/up/down) is pruned; the embeddings and ``lm_head`` stay dense. A projection's
weight is the MatMul initializer ``W_T`` of shape (in_features K, out_features N), so each column of ``W_T`` is one
output row of the PyTorch weight and N:M groups run down a column (along K).

- ``magnitude``: score ``|W|``; unstructured with one threshold per matrix. Needs no calibration.
- ``wanda``: score ``|W_T[k, n]| * ||X[:, k]||_2``; every output column drops its ``int(K * sparsity)`` lowest.
- ``sparsegpt``: OBS saliency ``w^2 / [H^-1]_kk^2`` with the error of each pruned weight compensated on the weights
  not yet visited, in lazy blocks of ``blocksize`` input columns (IST-DASLab ``sparsegpt.py``, in float64 numpy).

Wanda and SparseGPT are block-sequential like the reference (``locuslab/wanda:lib/prune.py``): the inputs of block
``i`` are captured from the current model, whose blocks ``< i`` are already pruned. ``N:M`` keeps N of every M
consecutive weights along K (NVIDIA's convention and :class:`converters.sparsify.PruneNM`'s: 2:4 zeroes 2 of 4,
1:4 zeroes 3); it overrides ``sparsity``.

>>> from converters.llm_prune import PruneLLM, projection_sparsity
>>> child = PruneLLM(method="sparsegpt", nm="2:4")(artifact, windows)  # doctest: +SKIP
>>> projection_sparsity(child.model)["total"]  # doctest: +SKIP
0.5
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edge.artifact import Artifact
from edge.errors import PassError
from edge.families.llm.calibration import (
    calibration_windows,
    capture,
    check_calibration_windows,
    projection_nodes,
    require_projections,
)

__all__ = ["METHODS", "PruneLLM", "check_nm", "parse_nm", "projection_sparsity", "prune_magnitude",
           "prune_sparsegpt", "prune_wanda", "sparsegpt_hessian"]

log = logging.getLogger("edge")

METHODS = ("magnitude", "wanda", "sparsegpt")
_QUANTIZED_OPS = {"MatMulNBits", "DequantizeLinear", "QuantizeLinear", "MatMulInteger", "QLinearMatMul"}
_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_nm(owner: str, nm: str) -> tuple[int, int]:
    """(zeros per group, m) of an ``"n:m"`` pattern that keeps n of every m weights (0 < n < m), else a PassError."""
    match = _NM.match(nm) if isinstance(nm, str) else None
    n, m = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not 0 < n < m:
        raise PassError(f"The 'nm' parameter of {owner} must be 'N:M' with 0 < N < M (keep N of every M weights, "
                        f"e.g. '2:4'); got {nm!r}.")
    return m - n, m


def check_nm(weight_t: np.ndarray, n: int, m: int) -> bool:
    """True if every group of ``m`` consecutive weights along K (axis 0) of a (K, N) matrix keeps <= ``n`` nonzeros."""
    weight_t = np.asarray(weight_t)
    if weight_t.ndim != 2 or weight_t.shape[0] % m:
        return False
    groups = weight_t.reshape(weight_t.shape[0] // m, m, weight_t.shape[1])
    return bool(np.all(np.count_nonzero(groups, axis=1) <= n))


def _zero_lowest_per_column(weight_t: np.ndarray, score: np.ndarray, count: int) -> np.ndarray:
    """Zero the ``count`` lowest-scoring entries of every column (ties broken by position)."""
    pruned = weight_t.copy()
    if count > 0:
        order = np.argsort(score, axis=0, kind="stable")[:count]
        np.put_along_axis(pruned, order, 0, axis=0)
    return pruned


def _zero_lowest_per_group(weight_t: np.ndarray, score: np.ndarray, n: int, m: int) -> np.ndarray:
    """Zero the ``n`` lowest-scoring entries of every ``m`` consecutive rows of each column."""
    k, cols = weight_t.shape
    groups = weight_t.reshape(k // m, m, cols).copy()
    order = np.argsort(score.reshape(k // m, m, cols), axis=1, kind="stable")[:, :n]
    np.put_along_axis(groups, order, 0, axis=1)
    return groups.reshape(k, cols)


def prune_magnitude(weight_t: np.ndarray, sparsity: float, nm: tuple[int, int] | None = None) -> np.ndarray:
    """Magnitude pruning: the ``int(numel * sparsity)`` smallest |w| of the matrix, or the N smallest per group."""
    score = np.abs(weight_t)
    if nm is not None:
        return _zero_lowest_per_group(weight_t, score, *nm)
    # Exactly int(numel * s) zeros; the reference's `|W| <= sorted[int(numel*s)]` zeros one more (and ties).
    flat = weight_t.reshape(-1).copy()
    flat[np.argsort(score.reshape(-1), kind="stable")[: int(flat.size * sparsity)]] = 0
    return flat.reshape(weight_t.shape)


def prune_wanda(weight_t: np.ndarray, xnorm: np.ndarray, sparsity: float,
                nm: tuple[int, int] | None = None) -> np.ndarray:
    """Wanda: score |W_T| * ||X_k||_2, compared within each output column (one output row of W)."""
    score = np.abs(weight_t).astype(np.float64) * np.asarray(xnorm, np.float64)[:, None]
    if nm is not None:
        return _zero_lowest_per_group(weight_t, score, *nm)
    return _zero_lowest_per_column(weight_t, score, int(weight_t.shape[0] * sparsity))


def sparsegpt_hessian(inputs: np.ndarray) -> np.ndarray:
    """H = 2/n X^T X (K x K, float64) of a layer's inputs X (tokens, K)."""
    x = np.asarray(inputs, np.float64)
    return 2.0 / len(x) * (x.T @ x)


def _upper_cholesky_of_inverse(hessian: np.ndarray) -> np.ndarray:
    """The upper Cholesky factor U of H^-1 (H^-1 = U^T U), as ``cholesky(cholesky_inverse(cholesky(H)), upper)``."""
    lower_inv = np.linalg.inv(np.linalg.cholesky(hessian))
    return np.linalg.cholesky(lower_inv.T @ lower_inv).T


def prune_sparsegpt(weight_t: np.ndarray, hessian: np.ndarray, sparsity: float, nm: tuple[int, int] | None = None,
                    blocksize: int = 128, percdamp: float = 0.01) -> np.ndarray:
    """SparseGPT (IST-DASLab ``fasterprune``) on W = W_T.T (N, K): OBS masks and updates in lazy column blocks."""
    w = np.asarray(weight_t, np.float64).T.copy()
    h = np.array(hessian, np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0  # an input that is always zero carries no information: its weights go first
    h[np.diag_indices_from(h)] += percdamp * np.mean(np.diag(h))
    try:
        hinv = _upper_cholesky_of_inverse(h)
    except np.linalg.LinAlgError:
        raise PassError("SparseGPT: the calibration Hessian is not positive definite even after damping; raise "
                        f"'percdamp' (now {percdamp}) or give more calibration windows.") from None
    columns = w.shape[1]
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        _prune_block(w, hinv, i1, i2, sparsity, nm)
    return w.T.astype(weight_t.dtype)


def _prune_block(w: np.ndarray, hinv: np.ndarray, i1: int, i2: int, sparsity: float,
                 nm: tuple[int, int] | None) -> None:
    """Prune columns i1:i2 of ``w`` in place, compensate inside the block, then lazily update the later columns."""
    w1 = w[:, i1:i2].copy()
    hinv1 = hinv[i1:i2, i1:i2]
    diag = np.diag(hinv1)
    err1 = np.zeros_like(w1)
    if nm is None:
        # One mask for the whole block, from the weights as updated by the earlier blocks; exactly
        # int(size * s) entries (the reference's `tmp <= thresh` takes one more, plus ties).
        saliency = (w1**2 / diag[None, :] ** 2).reshape(-1)
        mask1 = np.zeros(w1.size, dtype=bool)
        mask1[np.argsort(saliency, kind="stable")[: int(w1.size * sparsity)]] = True
        mask1 = mask1.reshape(w1.shape)
    else:
        mask1 = np.zeros(w1.shape, dtype=bool)
    for i in range(i2 - i1):
        if nm is not None and i % nm[1] == 0:
            n, m = nm
            # The N:M mask of a group is chosen when its first column comes up, from the compensated weights.
            saliency = w1[:, i : i + m] ** 2 / diag[None, i : i + m] ** 2
            lowest = np.argsort(saliency, axis=1, kind="stable")[:, :n]
            np.put_along_axis(mask1[:, i : i + m], lowest, True, axis=1)
        col = w1[:, i]
        q = np.where(mask1[:, i], 0.0, col)
        err = (col - q) / hinv1[i, i]
        w1[:, i:] -= np.outer(err, hinv1[i, i:])
        w1[:, i] = q  # exact zeros where pruned, whatever rounding the update left
        err1[:, i] = err
    w[:, i1:i2] = w1
    w[:, i2:] -= err1 @ hinv[i1:i2, i2:]


def projection_sparsity(model: onnx.ModelProto) -> dict[str, float]:
    """Fraction of exact zeros per block-projection weight initializer, plus ``total`` weighted by size."""
    initializers = {t.name: t for t in model.graph.initializer}
    result: dict[str, float] = {}
    zeros = elements = 0
    for _, node in sorted(projection_nodes(model).items()):
        tensor = initializers.get(node.input[1])
        if tensor is None or tensor.name in result:
            continue
        values = numpy_helper.to_array(tensor)
        result[tensor.name] = float(np.mean(values == 0)) if values.size else 0.0
        zeros += int(np.count_nonzero(values == 0))
        elements += int(values.size)
    result["total"] = zeros / elements if elements else 0.0
    return result


@dataclass
class PruneLLM:
    """Prune every block projection of an LLM artifact by magnitude, Wanda or SparseGPT (see the module docstring).

    ``sparsity`` is the unstructured fraction of zeros; ``nm`` (``"2:4"``, ``"4:8"``) keeps N of every M weights
    along the input dimension instead. ``blocksize`` and ``percdamp`` are SparseGPT's; Wanda and SparseGPT use at
    most ``calibration_windows`` of the calibration token windows (windows, tokens).
    """

    method: str = "wanda"
    sparsity: float = 0.5
    nm: str | None = None
    blocksize: int = 128
    percdamp: float = 0.01
    calibration_windows: int = 64
    name: str = "prune-llm"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PassError(f"The 'method' parameter of {self.name} must be one of {', '.join(METHODS)}; "
                            f"got '{self.method}'.")
        if not (isinstance(self.sparsity, int | float) and 0.0 < self.sparsity < 1.0):
            raise PassError(f"The 'sparsity' parameter of {self.name} must be a float in (0, 1); got {self.sparsity}.")
        self._nm = parse_nm(self.name, self.nm) if self.nm is not None else None
        if not (isinstance(self.blocksize, int) and self.blocksize > 0):
            raise PassError(f"The 'blocksize' parameter of {self.name} must be a positive integer; got {self.blocksize}.")
        if self._nm is not None and self.blocksize % self._nm[1]:
            raise PassError(f"The 'blocksize' parameter of {self.name} must be a multiple of M={self._nm[1]} so N:M "
                            f"groups do not straddle SparseGPT blocks; got {self.blocksize}.")
        if not (isinstance(self.percdamp, int | float) and 0.0 < self.percdamp < 1.0):
            raise PassError(f"The 'percdamp' parameter of {self.name} must be a float in (0, 1); got {self.percdamp}.")
        check_calibration_windows(self.name, self.calibration_windows)

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance (only those the chosen method uses)."""
        params: dict[str, object] = {"method": self.method}
        params.update({"nm": self.nm} if self._nm is not None else {"sparsity": self.sparsity})
        if self.method == "sparsegpt":
            params.update(blocksize=self.blocksize, percdamp=self.percdamp)
        if self.method != "magnitude":
            params["calibration_windows"] = self.calibration_windows
        return params

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None = None) -> Artifact:
        """Return a child whose block projections are pruned; the input artifact is left unchanged."""
        self._check_model(artifact.model)
        model = onnx.ModelProto()
        model.CopyFrom(artifact.model)
        nodes = require_projections(model, self.name)
        self._check_shapes(model, nodes)
        if self.method == "magnitude":
            for node in nodes.values():
                _update(model, node, lambda w: prune_magnitude(w, self.sparsity, self._nm))
            windows_used = 0
        else:
            windows = self._windows(calibration)
            for layer in sorted({layer for layer, _ in nodes}):
                self._prune_layer(model, [n for (i, _), n in sorted(nodes.items()) if i == layer], windows)
            windows_used = len(windows)
        measured = projection_sparsity(model)
        log.info("%s: %s pruned %d projection matrices to %.1f %% zeros", self.name, self.method, len(nodes),
                 100 * measured["total"])
        results = {"measured_sparsity": round(measured["total"], 6), "matrices_pruned": len(nodes)}
        if windows_used:
            results["windows_used"] = windows_used
        return artifact.derive(model, self.name, {**self.params(), **results})

    def _check_model(self, model: onnx.ModelProto) -> None:
        quantized = next((n for n in model.graph.node if n.op_type in _QUANTIZED_OPS), None)
        if quantized is not None:
            raise PassError(f"{self.name} works on float decoders; node '{quantized.name}' ({quantized.op_type}) shows "
                            "this model is already quantized. Prune before quantizing.")

    def _check_shapes(self, model: onnx.ModelProto, nodes: dict[tuple[int, str], onnx.NodeProto]) -> None:
        """Every projection weight must be a 2-D float initializer, with K a multiple of M for N:M."""
        initializers = {t.name: t for t in model.graph.initializer}
        for node in nodes.values():
            tensor = initializers.get(node.input[1])
            if tensor is None or len(tensor.dims) != 2 or tensor.data_type != onnx.TensorProto.FLOAT:
                raise PassError(f"{self.name}: the weight of '{node.name}' is not a 2-D float32 initializer; "
                                "only decoders built by edge (or with the same layout) can be pruned.")
            if self._nm is not None and tensor.dims[0] % self._nm[1]:
                raise PassError(f"{self.name}: '{node.name}' has {tensor.dims[0]} inputs, not a multiple of "
                                f"M={self._nm[1]}, so the {self.nm} pattern cannot be applied.")

    def _windows(self, calibration: np.ndarray | None) -> np.ndarray:
        return calibration_windows(calibration, self.calibration_windows, self.name,
                                   f"for method '{self.method}' (method 'magnitude' needs none)")

    def _prune_layer(self, model: onnx.ModelProto, nodes: list[onnx.NodeProto], windows: np.ndarray) -> None:
        """Capture one block's projection inputs from the current (partly pruned) model, then prune the block."""
        inputs = capture(model, windows, [n.input[0] for n in nodes])
        # Projections that read the same tensor (q/k/v, gate/up) share its statistics.
        stats: dict[str, np.ndarray] = {}
        for name, x in inputs.items():
            if self.method == "wanda":
                stats[name] = np.sqrt(np.sum(np.asarray(x, np.float64) ** 2, axis=0))
            else:
                stats[name] = sparsegpt_hessian(x)
        for node in nodes:
            stat = stats[node.input[0]]
            if self.method == "wanda":
                _update(model, node, lambda w, s=stat: prune_wanda(w, s, self.sparsity, self._nm))
            else:
                _update(model, node, lambda w, s=stat: prune_sparsegpt(w, s, self.sparsity, self._nm,
                                                                        self.blocksize, self.percdamp))


def _update(model: onnx.ModelProto, node: onnx.NodeProto, prune: Callable[[np.ndarray], np.ndarray]) -> None:
    """Replace the weight initializer of ``node`` by ``prune(weight)``."""
    tensor = next(t for t in model.graph.initializer if t.name == node.input[1])
    values = numpy_helper.to_array(tensor)
    tensor.CopyFrom(numpy_helper.from_array(np.asarray(prune(values), dtype=values.dtype), tensor.name))

"""Training-free activation sparsity for LLaMA-style decoders: TEAL, CHESS and WINA thresholds in plain ONNX.

At batch-1 decode ``y = x @ W_T`` is a memory-bound GEMV: when ``x_i == 0`` row ``i`` of ``W_T`` need not be
read. These passes zero the small entries of selected projection inputs with thresholds calibrated on text
(llm_snn.md A2), as ``Where(Less(Abs(x), threshold), 0, x)`` in front of the consumers, so every runtime runs the
result. Methods:

* ``teal``: the input of every projection, one scalar threshold per tensor, the ``sparsity``-quantile of ``|x|``
  on the calibration tokens (an exact quantile, where TEAL uses a histogram and a symmetry assumption). q/k/v share
  the attention input and gate/up the MLP input, so each shared input gets one sparsifier.
* ``wina``: the same tensors, but the entries kept are those with large ``|x_i| * ||W_T[i, :]||_2``; the scalar
  threshold ``t`` on that score becomes the per-channel threshold ``t / ||W_T[i, :]||``. For a shared input the
  norm is taken over the concatenated consumers (``[W_q | W_k | W_v]`` rows), so q/k/v still share one sparsifier
  (WINA's own code scales down_proj's input by 1; we use the column norm there too, as the paper's criterion does).
* ``chess``: per-channel thresholds on the gate activation ``a = silu(gate(x))`` with importance
  ``|a_i| * mean|up(x)_i|`` (inserted before the ``act_up`` product, so down_proj's input is as sparse), and in
  attention only the q_proj and o_proj inputs (per-tensor quantiles): k and v stay dense, so the KV cache is exact.

Thresholds are calibrated site by site in graph order (``sequential=True``, the default): each sparsifier sees
the activations of the model with every earlier sparsifier in place, so each tensor reaches its target sparsity on
the calibration tokens (calibrating all of them on the dense model, as TEAL does and ``sequential=False`` does,
overshoots downstream: on the tiny test model o_proj's input reaches ~0.85 for a 0.7 target, since the zeros
upstream shrink it). That costs one calibration run per site. The sparsity reached on the calibration tokens is
recorded in provenance, with an estimate of the projection weight reads a row-skipping kernel would save;
:func:`measure_activation_sparsity` reports the same on held-out text.

Honest caveat: in standard ONNX these masks *add* ops (Abs, Less, Where per site) and give **no** speedup on dense
runtimes; llm_snn.md A4 measured even a Gather-based row selection slower than dense at 50 %. The pass exists to
measure the quality cost of a sparsity level and to be the reference semantic for a row-skipping kernel
(``y = sum_{i: |x_i| >= t_i} x_i * W_T[i, :]``); the speed needs that custom kernel.

>>> from converters.llm_activation_sparsity import SparsifyActivations, measure_activation_sparsity
>>> child = SparsifyActivations(method="teal", sparsity=0.5)(artifact, calibration_windows)  # doctest: +SKIP
>>> measure_activation_sparsity(child, held_out_windows)["overall"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge.artifact import Artifact
from edge.errors import PassError
from edge.families.llm.calibration import (
    calibration_windows,
    capture,
    check_calibration_windows,
    projection_nodes,
    require_projections,
)

__all__ = ["METHODS", "SparsifyActivations", "measure_activation_sparsity"]

log = logging.getLogger("edge")

METHODS = ("teal", "chess", "wina")
_SITE = re.compile(r"^(/model/layers\.(\d+)/(?:attn|mlp)/\w+)/sparsify/Where$")


@dataclass
class _Site:
    """One sparsifier: the tensor it thresholds, the nodes rewired to its output and its threshold."""

    prefix: str
    source: str
    consumers: list[onnx.NodeProto]
    threshold: np.ndarray | None = None

    @property
    def output(self) -> str:
        return f"{self.prefix}/sparsify/Where/output_0"


def _mlp_act(model: onnx.ModelProto, layer: int) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    """The silu Mul and the act_up Mul of one block, or a PassError."""
    nodes = {n.name: n for n in model.graph.node}
    act, act_up = nodes.get(f"/model/layers.{layer}/mlp/act/Mul"), nodes.get(f"/model/layers.{layer}/mlp/act_up/Mul")
    if act is None or act_up is None or act.output[0] not in act_up.input:
        raise PassError(f"sparsify-activations (chess) needs the SwiGLU nodes '/model/layers.{layer}/mlp/act/Mul' "
                        "and '.../act_up/Mul' of edge's LLaMA graph; this model does not have them.")
    return act, act_up


def _sites(model: onnx.ModelProto, method: str) -> list[_Site]:
    """The sparsifiers a method inserts, in graph order, with the consumers each one feeds."""
    projections = require_projections(model, "sparsify-activations")
    layers = sorted({layer for layer, _ in projections})
    sites = []
    for i in layers:
        block = {p: node for (layer, p), node in projections.items() if layer == i}
        if method == "chess":
            groups = [["q_proj"], ["o_proj"]]
        else:
            groups = [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]
        for group in groups:
            present = [block[p] for p in group if p in block]
            # Consumers of one input that read different tensors (a graph rewired by hand) get their own site.
            by_source: dict[str, list[onnx.NodeProto]] = {}
            for node in present:
                by_source.setdefault(node.input[0], []).append(node)
            for source, consumers in by_source.items():
                sites.append(_Site(consumers[0].name.rsplit("/", 1)[0], source, consumers))
        if method == "chess" and any(p in block for p in ("gate_proj", "up_proj", "down_proj")):
            act, act_up = _mlp_act(model, i)
            sites.append(_Site(f"/model/layers.{i}/mlp/act", act.output[0], [act_up]))
    return sites


def _layer(prefix: str) -> int:
    return int(prefix.split("layers.", 1)[1].split("/", 1)[0])


def _row_norms(model: onnx.ModelProto, consumers: list[onnx.NodeProto]) -> np.ndarray:
    """||W_T[i, :]||_2 over the concatenated weights of the consumers (WINA's column norm of W)."""
    initializers = {t.name: t for t in model.graph.initializer}
    squares = None
    for node in consumers:
        weight = initializers.get(node.input[1])
        if weight is None:
            raise PassError(f"sparsify-activations (wina) needs the weight of '{node.name}' as an initializer.")
        values = numpy_helper.to_array(weight).astype(np.float64)
        squares = (values**2).sum(axis=1) if squares is None else squares + (values**2).sum(axis=1)
    return np.sqrt(squares)


def _quantile(values: np.ndarray, sparsity: float) -> float:
    """The ``sparsity``-quantile of the values; 0 at sparsity 0 so that nothing is zeroed."""
    return float(np.quantile(values, sparsity)) if sparsity > 0 else 0.0


def _per_channel(scale: np.ndarray, target: float) -> np.ndarray:
    """target / scale per channel; a channel of zero scale contributes nothing, so it is always zeroed."""
    big = np.finfo(np.float32).max
    with np.errstate(divide="ignore"):
        return np.where(scale > 0, target / np.maximum(scale, 1e-300), big).astype(np.float32)


def _insert(model: onnx.ModelProto, sites: list[_Site]) -> onnx.ModelProto:
    """A copy of the model with each site's Abs/Less/Where in front of its consumers."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inserted: dict[str, list[onnx.NodeProto]] = {}
    rewire: dict[str, tuple[str, str]] = {}
    for site in sites:
        p = f"{site.prefix}/sparsify"
        graph.initializer.extend([numpy_helper.from_array(np.asarray(site.threshold, np.float32), f"{p}/threshold"),
                                  numpy_helper.from_array(np.array(0.0, np.float32), f"{p}/zero")])
        inserted.setdefault(site.source, []).extend([
            helper.make_node("Abs", [site.source], [f"{p}/Abs/output_0"], name=f"{p}/Abs"),
            helper.make_node("Less", [f"{p}/Abs/output_0", f"{p}/threshold"], [f"{p}/Less/output_0"], name=f"{p}/Less"),
            helper.make_node("Where", [f"{p}/Less/output_0", f"{p}/zero", site.source], [site.output], name=f"{p}/Where"),
        ])
        for node in site.consumers:
            rewire[node.name] = (site.source, site.output)
    producers = {o for n in graph.node for o in n.output}
    ordered = [n for source, nodes in inserted.items() if source not in producers for n in nodes]
    for node in graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        if node.name in rewire:
            source, target = rewire[node.name]
            for k, name in enumerate(new.input):
                if name == source:
                    new.input[k] = target
        ordered.append(new)
        for output in node.output:
            ordered += inserted.get(output, [])
    del graph.node[:]
    graph.node.extend(ordered)
    return out


def _zero_fractions(model: onnx.ModelProto, windows: np.ndarray) -> dict[str, tuple[int, int]]:
    """prefix -> (zeros, entries) at every sparsifier output, over all tokens of the windows."""
    outputs = {m.group(1): n.output[0] for n in model.graph.node if (m := _SITE.match(n.name))}
    if not outputs:
        return {}
    values = capture(model, windows, outputs.values())
    return {prefix: (int(np.count_nonzero(values[name] == 0)), int(values[name].size))
            for prefix, name in outputs.items()}


def _weight_reads_saved(model: onnx.ModelProto, fractions: dict[str, float]) -> tuple[float, dict[str, float]]:
    """Fraction of projection weight reads a row-skipping kernel would skip, overall and per projection.

    A projection whose input is a sparsifier output skips that share of its W_T rows. Behind a sparsified gate
    activation (chess) down_proj's input, ``a * up``, is at least as sparse, and up_proj need only compute the
    columns the gate keeps (output sparsity, CHESS's ``vmmsp``), so both are credited with the gate's zeros.
    """
    by_output = {f"{prefix}/sparsify/Where/output_0": f for prefix, f in fractions.items()}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {t.name: t for t in model.graph.initializer}
    saved, total, per = 0.0, 0, {}
    for node in projection_nodes(model).values():
        weight = initializers.get(node.input[1])
        if weight is None:
            continue
        size = int(np.prod(weight.dims))
        fraction = by_output.get(node.input[0], 0.0)
        producer = producers.get(node.input[0])
        if not fraction and producer is not None and producer.op_type == "Mul":
            fraction = max((by_output.get(name, 0.0) for name in producer.input), default=0.0)
        if not fraction:
            for product in consumers.get(node.output[0], []):
                if product.op_type == "Mul" and product.name.endswith("/act_up/Mul"):
                    fraction = max((by_output.get(name, 0.0) for name in product.input), default=0.0)
        per[node.name] = fraction
        saved += fraction * size
        total += size
    return (saved / total if total else 0.0), per


def measure_activation_sparsity(artifact: Artifact, windows: np.ndarray) -> dict[str, object]:
    """Zeros reached at each inserted sparsifier on these windows, overall, and the weight reads they would save."""
    counts = _zero_fractions(artifact.model, windows)
    if not counts:
        raise PassError("measure_activation_sparsity: the model has no sparsifier inserted by sparsify-activations.")
    per_tensor = {prefix: zeros / entries for prefix, (zeros, entries) in counts.items()}
    overall = sum(z for z, _ in counts.values()) / sum(e for _, e in counts.values())
    saved, per_projection = _weight_reads_saved(artifact.model, per_tensor)
    return {"overall": overall, "per_tensor": per_tensor, "weight_reads_saved": saved,
            "per_projection_rows_skipped": per_projection, "tokens": int(np.asarray(windows).size)}


@dataclass
class SparsifyActivations:
    """Zero small projection inputs with thresholds calibrated on text (TEAL, CHESS or WINA), in plain ONNX."""

    method: str = "teal"
    sparsity: float = 0.5
    calibration_windows: int = 32
    sequential: bool = True
    name: str = "sparsify-activations"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PassError(f"The 'method' parameter of {self.name} must be one of {', '.join(METHODS)}; "
                            f"got '{self.method}'.")
        if not isinstance(self.sparsity, (int, float)) or not 0.0 <= self.sparsity < 1.0:
            raise PassError(f"The 'sparsity' parameter of {self.name} must be a float in [0, 1); got {self.sparsity}.")
        check_calibration_windows(self.name, self.calibration_windows)

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None) -> Artifact:
        """Return a child with a sparsifier in front of the projections the method thresholds."""
        model = artifact.model
        if any(_SITE.match(n.name) for n in model.graph.node):
            raise PassError(f"{self.name}: this model is already activation-sparsified; apply the pass to the dense "
                            "model instead.")
        sites = _sites(model, self.method)
        windows = calibration_windows(calibration, self.calibration_windows, self.name, "to set its thresholds")
        wanted = {s.source for s in sites}
        ups: dict[int, str] = {}
        if self.method == "chess":  # the up_proj output weighs the gate activation's channels
            ups = {i: node.output[0] for (i, p), node in projection_nodes(model).items() if p == "up_proj"}
            wanted |= set(ups.values())
        values = capture(model, windows, wanted) if not self.sequential else {}
        for index, site in enumerate(sites):
            if self.sequential:  # calibrate on the model with every earlier sparsifier in place
                names = [site.source] + ([ups[_layer(site.prefix)]] if site.prefix.endswith("/mlp/act") else [])
                values = capture(_insert(model, sites[:index]) if index else model, windows, names)
            site.threshold = self._threshold(model, site, values, ups)
        sparse = _insert(model, sites)
        reached = measure_activation_sparsity(artifact.derive(sparse, self.name, {}), windows)
        params = self.params() | {
            "calibration_sparsity": reached["overall"],
            "calibration_sparsity_per_tensor": reached["per_tensor"],
            "weight_reads_saved": reached["weight_reads_saved"],
            "sites": {s.prefix: {"feeds": [n.name for n in s.consumers],
                                 "threshold": "per-channel" if s.threshold.ndim else float(s.threshold)}
                      for s in sites},
        }
        log.info("%s: %s at %.0f %%: %d sparsifiers, %.1f %% zeros on calibration, ~%.1f %% weight reads skippable",
                 self.name, self.method, 100 * self.sparsity, len(sites), 100 * reached["overall"],
                 100 * reached["weight_reads_saved"])
        return artifact.derive(sparse, self.name, params)

    def _threshold(self, model: onnx.ModelProto, site: _Site, values: dict[str, np.ndarray],
                   ups: dict[int, str]) -> np.ndarray:
        """The site's threshold: a scalar, or a per-channel vector broadcast on the last axis."""
        x = np.abs(values[site.source].astype(np.float64))
        if self.method == "wina":
            norms = _row_norms(model, site.consumers)
            return _per_channel(norms, _quantile(x * norms, self.sparsity))
        if self.method == "chess" and site.prefix.endswith("/mlp/act"):
            up_mean = np.abs(values[ups[_layer(site.prefix)]].astype(np.float64)).mean(axis=0)
            return _per_channel(up_mean, _quantile(x * up_mean, self.sparsity))
        return np.array(_quantile(x, self.sparsity), np.float32)

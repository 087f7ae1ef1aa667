"""Fault-tolerance passes: replace unbounded activations with clipped ones (FT-ClipAct, ProAct's hybrid).

A bit flip in the exponent of a stored float32 weight turns it into a value near 1e38; what it feeds
then saturates the rest of the network. Bounding every activation to the range it takes on real data
stops that. The activations bounded ("clip sites"):

* the output of every ``Relu`` (bounded above; the Relu becomes the clip),
* the output of every other activation the model has (``Elu``, ``LeakyRelu``, ...), and of every
  ``Conv`` / ``Gemm`` / ``MatMul`` that no activation follows (an identity activation: bounded on both
  sides), which includes the logits.

Modes (``faults.md`` section 1.3): ``saturate`` clamps to [low, high] (``Clip``, or ``Min``/``Max`` with
per-channel bounds; free in int8, where the output quantization range already saturates, and the only
mode the Ethos-U runs); ``zero`` sets values outside [low, high] to 0, NaN included (FT-ClipAct and
ProAct's choice, ``And``/``Where``, float only).

Granularity: ``layer`` (one bound pair per site), ``neuron`` (per channel) or ``hybrid`` (ProAct:
per channel at the last site, per layer elsewhere). Bounds start from profiling on calibration data
(the largest and smallest value seen, per layer or channel, times ``margin``: held-out trials reach
values calibration trials do not, and in zero mode a clean logit beyond its bound would be zeroed;
the SSVEP network's logits reach twice their calibration maximum on unseen subjects). A corrupted
exponent makes values near 1e38, far beyond any such bound. ``ClipActivations`` (``clip-ftclipact``,
Hoang et al. 2020) then refines the high bound of each site in turn, first to last, by the
fault-injection-guided interval search: four candidates across [0, margin x profiled max] scored by
the area under accuracy-vs-BER, candidates that change the clean top-1 of more than ``max_clean_drop``
percent of the calibration trials excluded (a bound on the clean accuracy it can cost), the interval narrowed around the best (the widest of
equal scores), the remaining sites re-profiled with the new bound in place. ``ClipActivationsProAct`` (``clip-proact``) is the hybrid-granularity variant; with
no PyTorch training loop for arbitrary ONNX graphs its neuron-wise bounds come from profiling and the
same search, not ProAct's progressive gradient training (noted in provenance).

The bounds are initializers named ``<site>_clip_low`` / ``_clip_high``: stored parameters, so the fault
injector can target them too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge.artifact import Artifact
from edge.errors import PassError

log = logging.getLogger("edge")

MODES = ("saturate", "zero")
GRANULARITIES = ("layer", "neuron", "hybrid")
LINEAR_OPS = ("Conv", "Gemm", "MatMul")
ACTIVATIONS = ("Relu", "Elu", "LeakyRelu", "Selu", "Celu", "Softplus", "Gelu", "HardSwish")
#: Ops after which a linear output still counts as un-activated (they move values, they do not bound them).
_TRANSPARENT = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Dropout", "Identity")
#: FT-ClipAct's fault rates for scoring a threshold (toolbox default, faults.md section 1.4).
DEFAULT_SCORE_BERS = (1e-7, 1e-6, 3e-6, 1e-5, 3e-5)

#: Scores (AUC, accuracy units) closer than this count as equal; the search then keeps the wider bound.
SCORE_TIE = 0.005

Scorer = Callable[[Artifact], float]


@dataclass
class ClipSite:
    """One activation to bound: the tensor, whether it is non-negative (after Relu) and its profiled range."""

    tensor: str
    relu: bool
    low: np.ndarray
    high: np.ndarray

    def bounds_shape(self, rank: int) -> tuple[int, ...]:
        """Broadcast shape of per-channel bounds for a tensor of this rank (channels on axis 1)."""
        return (1, self.high.size) + (1,) * (rank - 2) if self.high.size > 1 else ()


def find_sites(model: onnx.ModelProto) -> list[tuple[str, bool]]:
    """(tensor, is Relu output) for every activation to bound, in graph order."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def activated(name: str) -> bool:
        for reader in readers.get(name, []):
            if reader.op_type in ACTIVATIONS or reader.op_type in ("Clip", "Sigmoid", "Tanh", "Softmax"):
                return True
            if reader.op_type in _TRANSPARENT and activated(reader.output[0]):
                return True
        return False

    sites = []
    for node in model.graph.node:
        if node.op_type in ACTIVATIONS:
            sites.append((node.output[0], node.op_type == "Relu"))
        elif node.op_type in LINEAR_OPS and not activated(node.output[0]):
            sites.append((node.output[0], False))
    return sites


def _session_with_outputs(model: onnx.ModelProto, names: list[str]):  # noqa: ANN202
    """An onnxruntime session that also returns the tensors ``names``."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.metadata_props[:]
    probe.ir_version = min(probe.ir_version, 10)  # what onnxruntime 1.31 reads
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])


def profile(artifact: Artifact, x: np.ndarray, tensors: list[str], per_channel: set[str],
            batch: int = 64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Smallest and largest value of each tensor over ``x`` (per channel, axis 1, for names in ``per_channel``)."""
    session = _session_with_outputs(artifact.model, tensors)
    input_name = artifact.meta.inputs[0].name
    ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for start in range(0, len(x), batch):
        outputs = session.run(tensors, {input_name: x[start : start + batch].astype(np.float32)})
        for name, value in zip(tensors, outputs):
            axes = tuple(i for i in range(value.ndim) if i != 1) if name in per_channel else None
            low, high = np.min(value, axis=axes), np.max(value, axis=axes)
            if name in ranges:
                low, high = np.minimum(ranges[name][0], low), np.maximum(ranges[name][1], high)
            ranges[name] = (np.asarray(low, np.float32), np.asarray(high, np.float32))
    return ranges


def apply_clips(artifact: Artifact, sites: list[ClipSite], mode: str) -> onnx.ModelProto:
    """A copy of the graph with every site bounded: readers of a site's tensor read the clipped one.

    A site that is a graph output keeps its name on the clipped tensor (the unclipped one gets ``_raw``).
    """
    model = onnx.ModelProto()
    model.CopyFrom(artifact.model)
    graph = model.graph
    ranks = _ranks(model)
    outputs = {o.name for o in graph.output}
    by_output = {n.output[0]: n for n in graph.node}
    inserted: dict[int, list[onnx.NodeProto]] = {}  # id of the node the clip follows -> clip nodes
    dropped: set[int] = set()
    for site in sites:
        shape = site.bounds_shape(ranks.get(site.tensor, 2))
        low_name, high_name = f"{site.tensor}_clip_low", f"{site.tensor}_clip_high"
        low = np.zeros_like(site.high) if site.relu else site.low
        graph.initializer.extend([numpy_helper.from_array(np.asarray(low, np.float32).reshape(shape), low_name),
                                  numpy_helper.from_array(np.asarray(site.high, np.float32).reshape(shape), high_name)])
        producer = by_output[site.tensor]
        readers = [n for n in graph.node if site.tensor in n.input]
        if site.tensor in outputs:
            source, clipped = f"{site.tensor}_raw", site.tensor
            producer.output[0] = source
        else:
            source, clipped = site.tensor, f"{site.tensor}_clipped"
            for node in readers:
                node.input[:] = [clipped if name == site.tensor else name for name in node.input]
        if mode == "saturate" and not shape and site.relu:  # the Relu itself becomes the clip
            dropped.add(id(producer))
            source = producer.input[0]
        if mode == "saturate" and not shape:
            nodes = [helper.make_node("Clip", [source, low_name, high_name], [clipped], name=f"{clipped}/Clip")]
        elif mode == "saturate":
            nodes = [helper.make_node("Max", [source, low_name], [f"{clipped}_low"], name=f"{clipped}/Max"),
                     helper.make_node("Min", [f"{clipped}_low", high_name], [clipped], name=f"{clipped}/Min")]
        else:  # zero: keep values inside [low, high]; NaN compares false and becomes 0 as well
            zero = f"{site.tensor}_clip_zero"
            graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
            nodes = [
                helper.make_node("GreaterOrEqual", [source, low_name], [f"{clipped}_above"], name=f"{clipped}/Ge"),
                helper.make_node("LessOrEqual", [source, high_name], [f"{clipped}_below"], name=f"{clipped}/Le"),
                helper.make_node("And", [f"{clipped}_above", f"{clipped}_below"], [f"{clipped}_inside"],
                                 name=f"{clipped}/And"),
                helper.make_node("Where", [f"{clipped}_inside", source, zero], [clipped], name=f"{clipped}/Where"),
            ]
        inserted[id(producer)] = nodes
    ordered = []
    for node in graph.node:
        if id(node) not in dropped:
            ordered.append(node)
        ordered += inserted.get(id(node), [])
    del graph.node[:]
    graph.node.extend(ordered)
    return model


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - ranks only pick the bound shape; a failure falls back to rank 2
        return {}
    values = list(inferred.graph.value_info) + list(inferred.graph.output)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}


@dataclass
class ClipActivations:
    """FT-ClipAct: profiled bounds on every activation, high bounds refined by fault-injection-guided search."""

    mode: str = "zero"
    granularity: str = "layer"
    margin: float = 2.0
    search: bool = True
    bers: list[float] = field(default_factory=lambda: list(DEFAULT_SCORE_BERS))
    maps: int = 5
    iterations: int = 3
    max_clean_drop: float = 0.5
    calibration_trials: int = 256
    seed: int = 0
    name: str = "clip-ftclipact"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PassError(f"The 'mode' parameter of {self.name} must be one of {', '.join(MODES)}; got '{self.mode}'.")
        if self.granularity not in GRANULARITIES:
            raise PassError(f"The 'granularity' parameter of {self.name} must be one of {', '.join(GRANULARITIES)}; "
                            f"got '{self.granularity}'.")
        if self.margin < 1.0:
            raise PassError(f"The 'margin' parameter of {self.name} must be >= 1 (a multiple of the profiled range); "
                            f"got {self.margin}.")
        if self.max_clean_drop < 0:
            raise PassError(f"The 'max_clean_drop' parameter of {self.name} must be >= 0 (points); "
                            f"got {self.max_clean_drop}.")
        if self.maps < 1 or self.iterations < 1 or self.calibration_trials < 1:
            raise PassError(f"{self.name}: maps, iterations and calibration_trials must be >= 1.")

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None,
                 labels: np.ndarray | None = None, scorer: Scorer | None = None) -> Artifact:
        """Bound every activation of ``artifact``; the search needs labelled trials or a ``scorer``."""
        if calibration is None or len(calibration) == 0:
            raise PassError(f"{self.name} needs calibration data to profile activations; pass --calib DATASPEC.")
        if any(n.op_type == "DequantizeLinear" for n in artifact.model.graph.node):
            raise PassError(f"{self.name} works on float models: clip first, then quantize (a saturating clip "
                            "folds into the int8 output range).")
        x = calibration[: self.calibration_trials]
        labels = labels if labels is not None else getattr(self, "calibration_labels", None)
        pairs = find_sites(artifact.model)
        if not pairs:
            raise PassError(f"{self.name}: the model has no activation or linear layer output to bound.")
        neuron = {t for t, _ in pairs} if self.granularity == "neuron" else (
            {pairs[-1][0]} if self.granularity == "hybrid" else set())
        sites = self._profiled(artifact, x, pairs, neuron)
        history: list[dict[str, object]] = []
        if self.search:
            scorer = scorer or self._default_scorer(artifact, x, labels)
            for index in range(len(sites)):
                sites[index], record = self._search_site(artifact, sites, index, scorer)
                history.append(record)
                if index + 1 < len(sites):  # re-profile what follows with this bound in place
                    clipped = artifact.derive(apply_clips(artifact, sites[: index + 1], self.mode), self.name, {})
                    later = self._profiled(clipped, x, pairs[index + 1 :], neuron)
                    sites[index + 1 :] = later
        model = apply_clips(artifact, sites, self.mode)
        params = self.params() | {"sites": [s.tensor for s in sites], "search": history if self.search else False}
        if self.name == "clip-proact":
            params["threshold_training"] = "search (no PyTorch progressive training for ONNX graphs)"
        log.info("%s: %d activations bounded (%s, %s)", self.name, len(sites), self.mode, self.granularity)
        return artifact.derive(model, self.name, params)

    def _profiled(self, artifact: Artifact, x: np.ndarray, pairs: list[tuple[str, bool]],
                  neuron: set[str]) -> list[ClipSite]:
        ranges = profile(artifact, x, [t for t, _ in pairs], neuron)
        return [ClipSite(t, relu, ranges[t][0] * self.margin, ranges[t][1] * self.margin) for t, relu in pairs]

    def _default_scorer(self, artifact: Artifact, x: np.ndarray, labels: np.ndarray | None) -> Scorer:
        if labels is None:
            raise PassError(f"{self.name} searches thresholds by fault injection and needs labelled calibration "
                            "data; pass --calib with labels, or search=false to keep the profiled bounds.")
        from edge.faults import FaultModel, run_campaign

        y = labels[: len(x)]

        def top1(model: Artifact) -> np.ndarray:
            session = _session_with_outputs(model.model, [])
            return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0].argmax(1)

        reference = top1(artifact)

        def score(candidate: Artifact) -> float:
            # a bound that changes more clean decisions than the budget allows is out, however resilient
            if np.mean(top1(candidate) != reference) > self.max_clean_drop / 100:
                return -np.inf
            result = run_campaign(candidate, x, y, bers=tuple(self.bers), maps=self.maps,
                                  seed=self.seed, fault=FaultModel(), workers=1)
            return result.auc()

        return score

        return score

    def _search_site(self, artifact: Artifact, sites: list[ClipSite], index: int,
                     scorer: Scorer) -> tuple[ClipSite, dict[str, object]]:
        """Interval search on the high bound of ``sites[index]``, as a fraction of its profiled value."""
        site = sites[index]
        lo, hi = 0.0, 1.0
        best_fraction, best_score = 1.0, -np.inf
        scores: dict[float, float] = {}
        for _ in range(self.iterations):
            candidates = list(np.linspace(lo, hi, 4))
            for fraction in candidates:
                key = round(float(fraction), 6)
                if key not in scores:
                    trial = ClipSite(site.tensor, site.relu, site.low, site.high * key)
                    model = apply_clips(artifact, sites[:index] + [trial], self.mode)
                    scores[key] = scorer(artifact.derive(model, self.name, {}))
            values = [scores[round(float(c), 6)] for c in candidates]
            # the widest bound within SCORE_TIE of the best: as resilient, and safest for clean accuracy
            best = max(i for i, v in enumerate(values) if v >= max(values) - SCORE_TIE)
            if values[best] > best_score - SCORE_TIE:
                best_fraction, best_score = round(float(candidates[best]), 6), values[best]
            lo, hi = candidates[max(best - 1, 0)], candidates[min(best + 1, 3)]
            if max(values) - min(values) < 1e-3:
                break
        chosen = ClipSite(site.tensor, site.relu, site.low, site.high * best_fraction)
        return chosen, {"site": site.tensor, "fraction_of_max": best_fraction, "auc": best_score}


@dataclass
class ClipActivationsProAct(ClipActivations):
    """ProAct's hybrid: neuron-wise bounds at the last activation, layer-wise elsewhere."""

    granularity: str = "hybrid"
    name: str = "clip-proact"

"""Range restriction for LLaMA-style decoders: bound MLP activations to their profiled range (fault tolerance).

A bit flip in the exponent of a stored float32 weight makes it ~1e30..1e38; the projection it sits in then emits
a huge value that the SwiGLU product squares and the residual stream carries to every later layer, and the logits
become NaN. Range restriction (Ranger-style, the LLM version of FT-ClipAct, see ``converters.clip``) profiles the
smallest and largest value of the MLP activations on calibration text and inserts ``Clip(x, lo, hi)``, so a
corrupted channel saturates at a value seen on clean data instead of blowing up.

Tensors (``tensors``): ``"mlp"`` bounds the gate_proj output, the up_proj output and the down_proj input (the
``act_up`` product) of every block; ``"mlp-down"`` only the down_proj input. They are found by node name
(``/model/layers.{i}/mlp/{gate_proj,up_proj}/MatMul...`` and ``/model/layers.{i}/mlp/act_up/Mul``), not by op
type, so the pass also runs after int4 weight quantization (MatMulNBits keeps float activations and the name
prefix). Bounds are one float32 scalar pair per tensor and layer, ``/model/layers.{i}/mlp/<tensor>/restrict/min``
and ``.../max`` with ``<tensor>`` one of ``gate_proj``, ``up_proj``, ``act_up``.

``margin`` widens the profiled range [lo, hi] by ``margin * (hi - lo)`` on each side: 0 keeps the exact calibration
range, which leaves the model's outputs on the calibration windows unchanged (every value is inside) and changes
held-out text only where it leaves that range; a small margin (0.1..0.5) trades a little protection for headroom.
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
from edge.families.llm.calibration import calibration_windows, capture, check_calibration_windows

__all__ = ["TENSOR_SETS", "RestrictRanges", "restriction_sites"]

log = logging.getLogger("edge")

TENSOR_SETS = ("mlp", "mlp-down")
# gate/up: the projection node, whatever op implements it (MatMul, MatMulNBits named '.../MatMul_Q4', ...).
_NODE = re.compile(r"^/model/layers\.(\d+)/mlp/(gate_proj|up_proj)/MatMul\w*$|^/model/layers\.(\d+)/mlp/(act_up)/Mul$")


def restriction_sites(model: onnx.ModelProto, tensors: str = "mlp") -> dict[tuple[int, str], str]:
    """(layer, tensor label) -> the activation tensor to bound, found by node name."""
    kinds = ("gate_proj", "up_proj", "act_up") if tensors == "mlp" else ("act_up",)
    sites = {}
    for node in model.graph.node:
        match = _NODE.match(node.name)
        if match is None:
            continue
        layer, label = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        if label in kinds and node.output and (int(layer), label) not in sites:
            sites[(int(layer), label)] = node.output[0]
    return dict(sorted(sites.items()))


def _insert_clips(model: onnx.ModelProto, bounds: dict[tuple[int, str], tuple[str, float, float]]) -> onnx.ModelProto:
    """A copy of the model with Clip(x, lo, hi) after each bounded tensor and its consumers rewired."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    clipped: dict[str, str] = {}
    after: dict[str, onnx.NodeProto] = {}
    for (layer, label), (tensor, lo, hi) in bounds.items():
        prefix = f"/model/layers.{layer}/mlp/{label}/restrict"
        graph.initializer.extend([numpy_helper.from_array(np.array(lo, np.float32), f"{prefix}/min"),
                                  numpy_helper.from_array(np.array(hi, np.float32), f"{prefix}/max")])
        after[tensor] = helper.make_node("Clip", [tensor, f"{prefix}/min", f"{prefix}/max"],
                                         [f"{prefix}/Clip/output_0"], name=f"{prefix}/Clip")
        clipped[tensor] = f"{prefix}/Clip/output_0"
    ordered = []
    for node in graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for k, name in enumerate(new.input):
            if name in clipped:
                new.input[k] = clipped[name]
        ordered.append(new)
        ordered += [after[o] for o in node.output if o in after]
    del graph.node[:]
    graph.node.extend(ordered)
    return out


@dataclass
class RestrictRanges:
    """Clip the MLP activations of every block to their range on calibration text (fault tolerance)."""

    tensors: str = "mlp"
    margin: float = 0.0
    calibration_windows: int = 32
    name: str = "restrict-ranges"

    def __post_init__(self) -> None:
        if self.tensors not in TENSOR_SETS:
            raise PassError(f"The 'tensors' parameter of {self.name} must be one of {', '.join(TENSOR_SETS)}; "
                            f"got '{self.tensors}'.")
        if not isinstance(self.margin, (int, float)) or not 0.0 <= self.margin < float("inf"):
            raise PassError(f"The 'margin' parameter of {self.name} must be a finite float >= 0 (a fraction of the "
                            f"profiled range added on each side); got {self.margin}.")
        check_calibration_windows(self.name, self.calibration_windows)

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None) -> Artifact:
        """Return a child with a Clip on each MLP activation at its profiled range widened by ``margin``."""
        model = artifact.model
        if any(n.name.endswith("/restrict/Clip") for n in model.graph.node):
            raise PassError(f"{self.name}: this model's ranges are already restricted; apply the pass once.")
        sites = restriction_sites(model, self.tensors)
        if not sites:
            raise PassError(f"{self.name} works on LLaMA-style decoders built by edge (MLP nodes named "
                            "'/model/layers.N/mlp/gate_proj/MatMul' and '.../act_up/Mul'); this model has none.")
        windows = calibration_windows(calibration, self.calibration_windows, self.name, "to profile activations")
        # Every site is profiled on the unclipped model: with margin >= 0 no clean value is clipped, so the
        # downstream activations, hence their ranges, are the same with the earlier clips in place.
        values = capture(model, windows, sites.values())
        bounds, record = {}, {}
        for (layer, label), tensor in sites.items():
            x = values[tensor]
            if not np.all(np.isfinite(x)):
                raise PassError(f"{self.name}: '{tensor}' is not finite on the calibration text; restrict the "
                                "ranges of the clean model.")
            lo, hi = float(x.min()), float(x.max())
            pad = self.margin * (hi - lo)
            # float32 rounding must not move a bound inside the profiled range
            low = float(np.nextafter(np.float32(lo - pad), np.float32(-np.inf))) if pad else lo
            high = float(np.nextafter(np.float32(hi + pad), np.float32(np.inf))) if pad else hi
            bounds[(layer, label)] = (tensor, low, high)
            record.setdefault(str(layer), {})[label] = {"profiled": [lo, hi], "clip": [low, high]}
        restricted = _insert_clips(model, bounds)
        log.info("%s: %d MLP activations bounded (%s, margin %g)", self.name, len(bounds), self.tensors, self.margin)
        return artifact.derive(restricted, self.name, self.params() | {"bounds": record})

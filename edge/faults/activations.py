"""Transient activation faults: one bit flip per inference, injected by ops inside the ONNX graph.

Each targeted activation ``t`` is rerouted through a XOR with a mask that is an extra graph input (all zeros for
golden runs), so one session injects an independent fault into every element of a batch (GoldenEye-style):

* int8/int16 QDQ models: ``QuantizeLinear -> BitwiseXor(mask)``, the stored integer activation (opset 18);
* float32 models: ``BitCast(float -> int32) -> BitwiseXor(mask) -> BitCast(int32 -> float)`` (opset 26; checked
  with onnxruntime 1.31.1, faults.md section 8), on the outputs of Conv/ConvTranspose/Gemm/MatMul nodes.

Models are moved to the needed opset with ``onnx.version_converter`` first. Every injection is one fault on one
golden-correct input, independent of the others, so Wilson and Clopper-Pearson intervals on the pooled counts are
the right intervals here, and the per-layer and per-bit rates are exact single-fault vulnerabilities
(P(SDC | one flip in that layer / at that bit)).

>>> result = run_activation_campaign(artifact, x, y, injections=sample_size(0.01, 0.99))
>>> result.to_dict()["sdc"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, version_converter

from edge.artifact import Artifact
from edge.errors import DataError, PassError
from edge.faults.engine import create_session, data_format, data_input
from edge.faults.models import WEIGHT_OPS, FaultModel, bit_starts
from edge.faults.statistics import clopper_pearson_interval, wilson_interval

QUANTIZED_TYPES = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8,
                   TensorProto.INT16: np.int16, TensorProto.UINT16: np.uint16}


@dataclass(frozen=True)
class ActivationSite:
    """One injectable activation: its tensor, producing node, stored type, per-input shape and mask input."""

    tensor: str
    node: str
    dtype: str
    shape: tuple[int, ...]
    mask: str

    @property
    def size(self) -> int:
        """Elements of the activation per input."""
        return int(np.prod(self.shape))


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _candidates(model: onnx.ModelProto, layers: tuple[str, ...] | None) -> tuple[list[tuple[str, str]], bool]:
    """(tensor, node) pairs to target and whether they are quantized QuantizeLinear outputs."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"
                and (len(n.input) < 3 or (n.input[2] in inits and inits[n.input[2]].data_type in QUANTIZED_TYPES))]
    quantized = bool(quantize)
    if quantized:
        pairs = [(n.output[0], n.name) for n in quantize]
        if layers is not None:
            wanted = set(layers)
            pairs = [(t, name) for (t, name), n in zip(pairs, quantize)
                     if name in wanted or (n.input[0] in producer and producer[n.input[0]].name in wanted)]
    else:
        nodes = [n for n in model.graph.node if (n.op_type in WEIGHT_OPS if layers is None else n.name in layers)]
        pairs = [(n.output[0], n.name) for n in nodes]
    if layers is not None:
        known = {n.name for n in model.graph.node}
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise PassError(f"The 'layers' parameter names '{unknown[0]}', which is not a node of the model.")
    if not pairs:
        raise PassError("no activation to inject faults into: the model has no Conv/Gemm/MatMul output "
                        "(float) or QuantizeLinear output (QDQ) among the chosen layers.")
    return pairs, quantized


def instrument_activations(model: onnx.ModelProto, x_probe: np.ndarray, *,
                           layers: tuple[str, ...] | None = None) -> tuple[onnx.ModelProto, list[ActivationSite]]:
    """A copy of ``model`` with a XOR-mask input on every targeted activation, and the sites it created.

    ``x_probe`` (a few inputs) is run once to learn each activation's per-input shape and type.
    """
    pairs, quantized = _candidates(model, layers)
    fixed = data_format(model, data_input(model)).batch
    if fixed is not None:  # one fault per batch element needs batches of any size
        raise PassError(f"activation faults need a model whose batch dimension is free; this one fixes it at {fixed} "
                        "(re-export it with a dynamic batch axis, or use weight faults).")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.metadata_props[:]
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(t) for t, _ in pairs)
    values = create_session(probe).run(None, {data_input(model): x_probe[:2]})
    sites = []
    for (tensor, node), value in zip(pairs, values):
        if len(value) != len(x_probe[:2]):
            raise PassError(f"activation '{tensor}' has no leading batch dimension (shape {value.shape}); "
                            "choose other layers.")
        if not quantized and value.dtype != np.float32:
            raise PassError(f"activation '{tensor}' of node '{node}' is {value.dtype}; float injection needs float32.")
        sites.append(ActivationSite(tensor, node, str(value.dtype), tuple(value.shape[1:]), f"{tensor}.fault_mask"))

    needed = 18 if quantized else 26
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.metadata_props[:]
    if _opset(out) < needed:
        try:
            out = version_converter.convert_version(out, needed)
        except Exception as exc:  # noqa: BLE001 - the converter raises many untyped errors
            raise PassError(f"the model cannot be moved to opset {needed} for in-graph activation faults: "
                            f"{str(exc).strip().splitlines()[0]}") from None
    by_tensor = {s.tensor: s for s in sites}
    nodes = []
    for node in out.graph.node:
        targeted = [o for o in node.output if o in by_tensor]
        if not targeted:
            nodes.append(node)
            continue
        for o in targeted:  # the producer writes the clean value under a new name; the XOR chain writes ``o``
            node.output[list(node.output).index(o)] = f"{o}.clean"
        nodes.append(node)
        for o in targeted:
            mask = by_tensor[o].mask
            if quantized:
                nodes.append(helper.make_node("BitwiseXor", [f"{o}.clean", mask], [o], name=f"{o}.inject"))
            else:
                nodes += [
                    helper.make_node("BitCast", [f"{o}.clean"], [f"{o}.bits"], to=TensorProto.INT32,
                                     name=f"{o}.tobits"),
                    helper.make_node("BitwiseXor", [f"{o}.bits", mask], [f"{o}.flipped"], name=f"{o}.inject"),
                    helper.make_node("BitCast", [f"{o}.flipped"], [o], to=TensorProto.FLOAT, name=f"{o}.tofloat"),
                ]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    for site in sites:
        elem = TensorProto.INT32 if not quantized else helper.np_dtype_to_tensor_dtype(np.dtype(site.dtype))
        out.graph.input.append(helper.make_tensor_value_info(site.mask, elem, ["N", *site.shape]))
    return out, sites


class ActivationFaultEngine:
    """One session of the instrumented model; feeds one fault (or none) per batch element."""

    def __init__(self, model: onnx.ModelProto, x_probe: np.ndarray, *, layers: tuple[str, ...] | None = None,
                 bits: str | tuple[int, ...] = "all", threads: int | None = None) -> None:
        instrumented, self.sites = instrument_activations(model, x_probe, layers=layers)
        self.session = create_session(instrumented, threads)
        self.input_name = data_input(model)
        self._output = self.session.get_outputs()[0].name
        fault = FaultModel(bits=bits)
        self.starts = []
        for site in self.sites:
            if site.dtype == "float32":
                self.starts.append(bit_starts(fault, 32, (31,), tuple(range(23, 31))))
            else:
                width = np.dtype(site.dtype).itemsize * 8
                self.starts.append(bit_starts(fault, width, (width - 1,), ()))
        self.site_counts = np.array([s.size * len(b) for s, b in zip(self.sites, self.starts)], dtype=np.int64)
        if self.site_counts.sum() == 0:
            raise PassError(f"no activation bit matches bits={bits!r}.")
        self._offsets = np.concatenate([[0], np.cumsum(self.site_counts)])

    def _mask_dtype(self, site: ActivationSite) -> np.dtype:
        return np.dtype(np.int32) if site.dtype == "float32" else np.dtype(site.dtype)

    def run(self, x: np.ndarray, faults: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Outputs for ``x``; ``faults`` = (site, element, bit) per row of ``x``, or None for a golden run."""
        feeds = {self.input_name: x}
        for k, site in enumerate(self.sites):
            mask = np.zeros((len(x), site.size), dtype=f"uint{self._mask_dtype(site).itemsize * 8}")
            if faults is not None:
                rows = np.flatnonzero(faults[0] == k)
                mask[rows, faults[1][rows]] = (np.uint64(1) << faults[2][rows].astype(np.uint64)).astype(mask.dtype)
            feeds[site.mask] = mask.view(self._mask_dtype(site)).reshape(len(x), *site.shape)
        return self.session.run([self._output], feeds)[0]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` independent single-bit faults, uniform over all allowed activation bits of one input."""
        flat = rng.integers(0, int(self._offsets[-1]), size=n)
        site = np.searchsorted(self._offsets, flat, side="right") - 1
        local = flat - self._offsets[site]
        widths = np.array([len(b) for b in self.starts])[site]
        element = local // widths
        bit = np.array([self.starts[s][r] for s, r in zip(site, local % widths)], dtype=np.int64)
        return site, element, bit


@dataclass
class ActivationCampaignResult:
    """Outcome of every injection (one fault on one golden-correct input) and where the fault was."""

    params: dict[str, Any]
    sites: list[ActivationSite]
    inputs: int
    golden_correct: int
    site: np.ndarray
    bit: np.ndarray
    outcome: np.ndarray  # 0 masked, 1 SDC, 2 DUE

    def _rates(self, rows: np.ndarray) -> dict[str, Any]:
        n = int(rows.sum())
        doc: dict[str, Any] = {"n": n}
        for code, name in enumerate(("masked", "sdc", "due")):
            k = int(np.sum(self.outcome[rows] == code))
            doc[name] = {"count": k, "rate": k / n if n else float("nan"), "wilson95": list(wilson_interval(k, n)),
                         "clopper_pearson95": list(clopper_pearson_interval(k, n))}
        return doc

    def to_dict(self) -> dict[str, Any]:
        """Overall rates, and per layer (activation) and per bit position, each with Wilson and exact intervals."""
        everything = np.ones(len(self.outcome), dtype=bool)
        return {
            "schema_version": 1,
            "kind": "activation-fault-campaign",
            "params": self.params,
            "inputs": self.inputs,
            "golden_correct": self.golden_correct,
            **self._rates(everything),
            "per_layer": [{"tensor": s.tensor, "node": s.node, **self._rates(self.site == k)}
                          for k, s in enumerate(self.sites)],
            "per_bit": [{"bit": int(b), **self._rates(self.bit == b)} for b in np.unique(self.bit)],
            "injections": {"site": self.site.tolist(), "bit": self.bit.tolist(), "outcome": self.outcome.tolist()},
        }

    def to_json(self, indent: int | None = None) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)


def run_activation_campaign(
    artifact: Artifact | onnx.ModelProto,
    x: np.ndarray,
    y: np.ndarray,
    *,
    injections: int = 1000,
    seed: int = 0,
    bits: str | tuple[int, ...] = "all",
    layers: tuple[str, ...] | None = None,
    batch_size: int = 256,
    threads: int | None = None,
) -> ActivationCampaignResult:
    """``injections`` single bit flips in activations, each on a golden-correct input drawn at random.

    Faults (activation, element, bit) are uniform over all allowed activation bits of one inference; inputs are
    drawn uniformly with replacement among those the clean model classifies correctly. Everything is drawn up
    front from ``SeedSequence([seed])``, so the result does not depend on ``batch_size``.
    """
    model = artifact.model if isinstance(artifact, Artifact) else artifact
    x, y = np.ascontiguousarray(x), np.asarray(y).astype(np.int64)
    if len(x) != len(y) or len(x) == 0:
        raise DataError(f"an activation campaign needs one label per input; got {len(x)} inputs and {len(y)} labels.")
    if injections < 1:
        raise PassError(f"The 'injections' parameter of run_activation_campaign must be >= 1; got {injections!r}.")
    engine = ActivationFaultEngine(model, x[:2], layers=layers, bits=bits, threads=threads)
    golden = np.concatenate([engine.run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    golden = golden.reshape(len(x), -1).argmax(axis=1)
    good = np.flatnonzero(golden == y)
    if len(good) == 0:
        raise DataError("the clean model classifies no input correctly, so no fault can cause an SDC.")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed)]))
    chosen = good[rng.integers(0, len(good), size=injections)]
    site, element, bit = engine.sample(injections, rng)
    outcome = np.empty(injections, dtype=np.int8)
    for start in range(0, injections, batch_size):
        rows = slice(start, start + batch_size)
        scores = engine.run(x[chosen[rows]], (site[rows], element[rows], bit[rows])).reshape(len(chosen[rows]), -1)
        finite = np.isfinite(scores).all(axis=1)
        changed = scores.argmax(axis=1) != golden[chosen[rows]]
        outcome[rows] = np.where(~finite, 2, np.where(changed, 1, 0))
    params = {"injections": int(injections), "seed": int(seed), "bits": bits if isinstance(bits, str) else list(bits),
              "layers": None if layers is None else list(layers)}
    return ActivationCampaignResult(params, engine.sites, len(x), len(good), site, bit, outcome)

"""ONNX export of a trained EEG classifier with the metadata a device needs to feed it.

The graph is exported with the legacy TorchScript exporter (opset 17), which works for these nets
because their max-norm constraints live in training, not in ``forward``. Batch norm is folded into
the convolutions, 'same' convolutions carry ``auto_pad=SAME_UPPER`` (TFLite's SAME), and the
exporter's shared-initializer ``Identity`` nodes are replaced by the weights themselves so that
every Conv/Gemm reads its weight straight from an initializer (what per-channel quantizers expect).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from edge.artifact import Artifact, Meta, PassRecord, Preprocessing, TensorSpec
from edge.families.torch_common import export_graph

# What edge.data.eeg_files.read_eeg_file does with l_freq/h_freq: MNE's default band-pass
# (FIR, firwin design, Hamming window, zero phase) on the continuous recording, before cutting trials.
MNE_FIR = {"type": "fir", "design": "mne-firwin-hamming", "zero_phase": True, "applied": "continuous-before-epoching"}


def eeg_meta(
    channels: Sequence[str],
    sample_rate: float,
    window_s: float,
    classes: Sequence[str],
    tmin_s: float = 0.0,
    band: Sequence[float] | None = None,
    standardize: dict[str, Any] | None = None,
    arch: str = "eegnet-8,2",
    kind: str = "motor-imagery",
) -> Meta:
    """Metadata of an EEG classifier: input (batch, 1, channels, samples), logits, preprocessing, labels.

    ``band`` is the band-pass [low, high] Hz applied as :data:`MNE_FIR`; ``standardize`` holds the
    per-channel ``mean`` and ``std`` (microvolts, one value per channel) that the device subtracts
    and divides by after filtering, stored under ``preprocessing.filter["standardize"]``.
    """
    channels = list(channels)
    classes = list(classes)
    samples = round(window_s * sample_rate)
    if band is not None and (len(band) != 2 or not 0 <= (band[0] or 0) < (band[1] or np.inf)):
        raise ValueError(f"The 'band' parameter of eeg_meta must be [low, high] Hz with low < high; got {band!r}.")
    filt: dict[str, Any] = {}
    if band is not None:
        filt = {**MNE_FIR, "band_hz": [None if b is None else float(b) for b in band]}
    if standardize is not None:
        mean, std = standardize.get("mean"), standardize.get("std")
        if mean is None or std is None or len(mean) != len(channels) or len(std) != len(channels):
            raise ValueError(
                f"The 'standardize' parameter of eeg_meta needs 'mean' and 'std' lists of {len(channels)} values "
                "(one per channel)."
            )
        filt["standardize"] = {
            "per": "channel",
            "units": "uV",
            "formula": "(x - mean) / std",
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
        }
    return Meta(
        family="eeg",
        task={"type": "classification", "kind": kind, "n_classes": len(classes), "arch": arch},
        inputs=[TensorSpec("eeg", ["batch", 1, len(channels), samples], "float32", "N,1,channel,time")],
        outputs=[TensorSpec("logits", ["batch", len(classes)], "float32", "N,class")],
        preprocessing=Preprocessing(
            sample_rate=float(sample_rate),
            channels=channels,
            window_s=float(window_s),
            latency_s=float(tmin_s),
            filter=filt,
        ),
        labels=classes,
    )


def export_onnx(net: Any, meta: Meta, params: dict[str, Any] | None = None, *, opset: int = 17) -> Artifact:
    """Export a trained network in eval mode to an artifact; ``params`` record how it was trained."""
    model = export_graph(net, meta, opset)
    _inline_initializer_identities(model)
    onnx.checker.check_model(model)
    arch = meta.task.get("arch", "eeg")
    meta.provenance = [*meta.provenance, PassRecord(f"train-{arch.split('-')[0]}", params or {}, None)]
    return Artifact(model, meta)


def _inline_initializer_identities(model: onnx.ModelProto) -> None:
    """Replace ``Identity(initializer)`` (the exporter's de-duplication of equal weights) by a copy."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    used = {name for node in graph.node for name in node.input} | outputs
    unused = [t for t in graph.initializer if t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)

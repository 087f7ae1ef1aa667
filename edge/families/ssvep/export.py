"""ONNX export of a trained SSVEP network with the toolkit metadata a device needs to feed it."""

from __future__ import annotations

from typing import Any

import onnx

from edge.artifact import Artifact, Meta, PassRecord, Preprocessing, TensorSpec
from edge.data.benchmark import BENCHMARK_FREQS, BENCHMARK_PHASES, OCCIPITAL_9
from edge.families.torch_common import export_graph

GUNEY_BANDS = [[8.0, 90.0], [16.0, 90.0], [24.0, 90.0]]


def ssvep_meta(
    *,
    channels: list[str] | tuple[str, ...] = OCCIPITAL_9,
    window_s: float = 0.4,
    sample_rate: float = 250.0,
    latency_s: float = 0.14,
    bands: list[list[float]] = GUNEY_BANDS,
    gaze_shift_s: float = 0.5,
) -> Meta:
    """Metadata of a Guney-style speller network: input layout, preprocessing and the 40 targets."""
    samples = round(window_s * sample_rate)
    freqs = [float(f) for f in BENCHMARK_FREQS]
    return Meta(
        family="ssvep",
        task={
            "type": "classification",
            "kind": "ssvep-speller",
            "n_targets": len(freqs),
            "gaze_shift_s": gaze_shift_s,
            "freqs_hz": freqs,
            "phases_rad": [float(p) for p in BENCHMARK_PHASES],
        },
        inputs=[TensorSpec("eeg", ["batch", len(bands), len(channels), samples], "float32", "N,band,channel,time")],
        outputs=[TensorSpec("logits", ["batch", len(freqs)], "float32", "N,class")],
        preprocessing=Preprocessing(
            sample_rate=sample_rate,
            channels=list(channels),
            window_s=window_s,
            latency_s=latency_s,
            filter_bank=[list(b) for b in bands],
            filter={"type": "cheby1", "order": 1, "ripple_db": 1.0, "zero_phase": True, "applied": "after-slicing"},
        ),
        labels=[f"{f:.1f} Hz" for f in freqs],
    )


def export_onnx(net: Any, meta: Meta, *, params: dict[str, Any] | None = None, opset: int = 17) -> Artifact:
    """Export a trained network in eval mode to an artifact; ``params`` record how it was trained."""
    model = export_graph(net, meta, opset)
    onnx.checker.check_model(model)
    meta.provenance = [*meta.provenance, PassRecord("train-guney", params or {}, None)]
    return Artifact(model, meta)

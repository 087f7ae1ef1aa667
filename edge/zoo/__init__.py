"""Reference models shipped with the toolkit, each with a model card beside it."""

from __future__ import annotations

from pathlib import Path

from edge.errors import ModelReadError

ZOO_DIR = Path(__file__).parent
MODELS = {
    "ssvep-guney-9ch-0.4s": "ssvep_guney_9ch_0.4s.onnx",
    "eegnet-mmi-s001": "eegnet_mmi_s001.onnx",
    "llama-shakespeare-char": "llama_shakespeare_char.onnx",
    "snn-ssvep-delta": "snn_ssvep_delta.onnx",
}


def zoo_path(name: str) -> Path:
    """Path of a shipped reference model by its zoo name."""
    if name not in MODELS:
        known = ", ".join(sorted(MODELS))
        raise ModelReadError(f"'{name}' is not a zoo model; known: {known}.")
    return ZOO_DIR / MODELS[name]

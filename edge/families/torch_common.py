"""What every PyTorch-based family shares: the lazy import, inference in batches and ONNX export."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import onnx

from edge.artifact import Meta
from edge.errors import EngineError


def import_torch(purpose: str = "training and exporting networks") -> Any:
    """PyTorch, or an error that says which extra to install."""
    try:
        import torch
    except ImportError:
        raise EngineError(f"{purpose} needs PyTorch: pip install 'edge[train]' (torch==2.13.0).") from None
    return torch


def predict(net: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits (trials, classes) of the network in evaluation mode."""
    torch = import_torch()
    net.eval()
    with torch.no_grad():
        parts = [net(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32))).numpy()
                 for i in range(0, len(x), batch_size)]
    return np.concatenate(parts)


def export_graph(net: Any, meta: Meta, opset: int = 17) -> onnx.ModelProto:
    """The network in eval mode as an ONNX graph with the metadata's input/output names and a dynamic batch."""
    torch = import_torch()
    net.eval()
    shape = [1 if isinstance(d, str) else d for d in meta.inputs[0].shape]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: it needs no onnxscript and handles every family network so far.
        torch.onnx.export(
            net,
            (torch.zeros(*shape),),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[meta.inputs[0].name],
            output_names=[meta.outputs[0].name],
            dynamic_axes={meta.inputs[0].name: {0: "batch"}, meta.outputs[0].name: {0: "batch"}},
        )
    return onnx.load_model_from_string(buffer.getvalue())

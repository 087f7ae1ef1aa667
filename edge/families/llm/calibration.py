"""Capture intermediate tensors of an LLM artifact on calibration text (the statistics every LLM pass needs).

The tensors are exposed as extra graph outputs of a copy of the model and the windows are run without a cache,
so the statistics are those of full-sequence (prefill) inference. ``Capture`` returns every token's row:
(windows * length, features) per tensor.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper

from edge.artifact import Artifact
from edge.errors import PassError
from edge.families.llm.config import parse_projection
from edge.families.llm.runner import CacheLayout, create_session


def projection_nodes(model: onnx.ModelProto) -> dict[tuple[int, str], onnx.NodeProto]:
    """(layer, projection) -> its MatMul node, for every block projection still in the graph."""
    found = {}
    for node in model.graph.node:
        key = parse_projection(node.name)
        if key is not None and node.op_type == "MatMul":
            found[key] = node
    return found


def require_projections(model: onnx.ModelProto, owner: str) -> dict[tuple[int, str], onnx.NodeProto]:
    """The projection MatMuls, or a PassError saying the model is not one of this family's float decoders."""
    nodes = projection_nodes(model)
    if not nodes:
        raise PassError(f"{owner} works on float LLaMA-style decoders built by edge (projection MatMuls named "
                        "'/model/layers.N/attn/q_proj/MatMul'); this model has none.")
    return nodes


def check_calibration_windows(owner: str, value: object) -> None:
    """PassError unless ``value`` (a pass's ``calibration_windows`` parameter) is an integer >= 1."""
    if not isinstance(value, int) or value < 1:
        raise PassError(f"The 'calibration_windows' parameter of {owner} must be an integer >= 1; got {value!r}.")


def calibration_windows(calibration: np.ndarray | None, count: int, owner: str, why: str = "") -> np.ndarray:
    """The first ``count`` calibration token windows as int64, or a PassError saying the pass needs text."""
    if calibration is None or len(calibration) == 0:
        reason = f" {why}" if why else ""
        raise PassError(f"{owner} needs calibration text{reason}: pass --calib with a text file or 'tinyshakespeare'.")
    windows = np.asarray(calibration)
    if windows.ndim != 2 or not np.issubdtype(windows.dtype, np.integer):
        raise PassError(f"{owner}: calibration must be integer token windows (windows, tokens); got {windows.dtype} "
                        f"of shape {windows.shape}.")
    return windows[:count].astype(np.int64)


def capture(model: onnx.ModelProto | Artifact, windows: np.ndarray, tensors: Iterable[str],
            batch_size: int = 8) -> dict[str, np.ndarray]:
    """Every token's value of each named tensor over the windows: name -> (tokens, last dim) float32."""
    model = model.model if isinstance(model, Artifact) else model
    names = list(dict.fromkeys(tensors))
    if windows is None or len(windows) == 0:
        raise PassError("this pass needs calibration text: pass --calib with a text file or 'tinyshakespeare'.")
    windows = np.asarray(windows, dtype=np.int64)
    if windows.ndim != 2:
        raise PassError(f"calibration windows must be (windows, tokens) token ids; got shape {windows.shape}.")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = create_session(probe)
    layout = CacheLayout.from_model(model)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        feeds = {"input_ids": batch, "attention_mask": np.ones_like(batch), **layout.empty(len(batch))}
        values = session.run(names, feeds)
        for name, value in zip(names, values, strict=True):
            parts[name].append(value.reshape(-1, value.shape[-1]))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}

"""Resolve what a user names as a model: a file path or a zoo name."""

from __future__ import annotations

from pathlib import Path

from edge.artifact import Artifact, read_artifact
from edge.zoo import MODELS, zoo_path


def resolve_model(model: str | Path) -> tuple[Path | None, Artifact]:
    """(path on disk, artifact) for a path or a zoo model name."""
    text = str(model)
    if not Path(text).exists() and text in MODELS:
        path = zoo_path(text)
        return path, read_artifact(path)
    return Path(text), read_artifact(text)

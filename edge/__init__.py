"""edge: put neural networks on edge hardware and prove they hold up there.

>>> import edge
>>> art = edge.read_artifact(edge.zoo_path("ssvep-guney-9ch-0.4s"))
>>> art.meta.family
'ssvep'
"""

from __future__ import annotations

__version__ = "0.1.0"

from edge.artifact import Artifact, Meta, read_artifact, write_artifact  # noqa: E402
from edge.errors import EdgeError  # noqa: E402
from edge.zoo import zoo_path  # noqa: E402

__all__ = ["Artifact", "EdgeError", "Meta", "__version__", "read_artifact", "write_artifact", "zoo_path"]

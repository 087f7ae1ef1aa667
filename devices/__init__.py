"""Deployment targets, registered under the entry-point group ``edge.targets``.

A target spec is ``name`` or ``name:argument`` (``cpu``, ``gpu:0``, ``npu:ethos-u55-128``).
"""

from __future__ import annotations

import difflib
from importlib.metadata import entry_points
from typing import Any

from edge.errors import TargetError

BUILTIN = {"cpu": "devices.cpu:CpuTarget"}


def available_targets() -> dict[str, str]:
    """Target names and the classes that implement them (built-ins plus installed plugins)."""
    targets = dict(BUILTIN)
    targets.update({ep.name: ep.value for ep in entry_points(group="edge.targets")})
    return targets


def get_target(spec: str, **options: Any) -> Any:
    """Create the target a spec names."""
    name, _, argument = spec.partition(":")
    targets = available_targets()
    if name not in targets:
        close = difflib.get_close_matches(name, targets, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise TargetError(f"unknown device '{spec}'; available: {', '.join(sorted(targets))}.{hint}")
    module_name, _, class_name = targets[name].partition(":")
    module = __import__(module_name, fromlist=[class_name])
    return getattr(module, class_name)(argument or None, **options)

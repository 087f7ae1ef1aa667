"""Deployment targets, registered under the entry-point group ``edge.targets``.

A target spec is ``name[:argument][?key=value&...]`` (``cpu``, ``gpu:0``, ``npu:ethos-u55-128``,
``mcu:tflm?arena=64``, ``serial:/dev/ttyACM0?baud=115200``, ``sim``); see :mod:`devices.base`.

>>> target = get_target("mcu:tflm")
>>> target.deploy(model); outputs = target.run(x)
"""

from __future__ import annotations

import difflib
from importlib.metadata import entry_points
from typing import Any

from devices.base import Target, TargetSpec
from edge.errors import TargetError

BUILTIN = {
    "cpu": "devices.cpu:CpuTarget",
    "gpu": "devices.gpu:GpuTarget",
    "npu": "devices.npu:NpuTarget",
    "mcu": "devices.mcu:McuTarget",
    "serial": "devices.serial_target:SerialTarget",
    "sim": "devices.serial_target:SimTarget",
}


def available_targets() -> dict[str, str]:
    """Target names and the classes that implement them (built-ins plus installed plugins)."""
    targets = dict(BUILTIN)
    targets.update({ep.name: ep.value for ep in entry_points(group="edge.targets")})
    return targets


def target_class(name: str) -> type:
    """The class registered under ``name``."""
    targets = available_targets()
    if name not in targets:
        close = difflib.get_close_matches(name, targets, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise TargetError(f"unknown device '{name}'; available: {', '.join(sorted(targets))}.{hint}")
    module_name, _, class_name = targets[name].partition(":")
    try:
        module = __import__(module_name, fromlist=[class_name])
        return getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise TargetError(f"the '{name}' target ({targets[name]}) cannot be loaded: {exc}.") from None


def get_target(spec: str | TargetSpec) -> Target:
    """Create the target a spec names."""
    parsed = spec if isinstance(spec, TargetSpec) else TargetSpec.parse(spec)
    return target_class(parsed.name)(parsed)


def describe_targets() -> list[dict[str, Any]]:
    """One row per registered target: name, spec example, what it is, and whether it is usable here (and why not)."""
    rows = []
    for name, path in sorted(available_targets().items()):
        try:
            cls = target_class(name)
        except TargetError as exc:
            rows.append({"name": name, "class": path, "summary": "", "usable": False, "why": str(exc)})
            continue
        reason = cls.check() if hasattr(cls, "check") else None
        rows.append({"name": name, "class": path, "summary": getattr(cls, "summary", ""),
                     "example": getattr(cls, "example", name), "formats": list(getattr(cls, "formats", ())),
                     "usable": reason is None, "why": reason or ""})
    return rows


__all__ = ["BUILTIN", "Target", "TargetSpec", "available_targets", "describe_targets", "get_target", "target_class"]

"""The package layout of DESIGN.md: dependencies point one way, and the public surface is deliberate."""

from __future__ import annotations

import ast
from pathlib import Path

import edge

ROOT = Path(__file__).resolve().parents[1]
TOP_LAYER = {"evaluate", "report", "cli", "convert", "demo", "inspection", "models"}
LOWER_FOLDERS = ("converters", "runtimes", "devices")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_base_modules_never_import_converters_runtimes_or_devices() -> None:
    offenders = []
    for path in (ROOT / "edge").rglob("*.py"):
        if path.stem in TOP_LAYER and path.parent == ROOT / "edge":
            continue
        bad = _imports(path) & set(LOWER_FOLDERS)
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


def test_converters_and_runtimes_do_not_import_devices_or_each_other() -> None:
    rules = {"converters": {"runtimes", "devices"}, "runtimes": {"converters", "devices"}, "devices": {"converters"}}
    offenders = [
        f"{path.relative_to(ROOT)} imports {sorted(_imports(path) & banned)}"
        for folder, banned in rules.items()
        for path in (ROOT / folder).rglob("*.py")
        if _imports(path) & banned
    ]
    assert offenders == []


def test_public_surface() -> None:
    assert sorted(edge.__all__) == sorted(
        ["Artifact", "EdgeError", "Meta", "__version__", "read_artifact", "write_artifact", "zoo_path"]
    )

"""The package layout of DESIGN.md: dependencies point one way, and the public surface is deliberate."""

from __future__ import annotations

import ast
from pathlib import Path

import edge

ROOT = Path(__file__).resolve().parents[1]
TOP_LAYER = {"evaluate", "report", "cli", "convert", "demo", "inspection", "models", "deploy", "llm", "snn",
             "snn_reference", "resilience"}
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


def test_installed_distribution_provides_the_command_and_the_cpu_target() -> None:
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("edge") == "edge.cli:main"
    targets = {ep.name: ep.value for ep in entry_points(group="edge.targets")}
    assert targets.get("cpu") == "devices.cpu:CpuTarget"


def test_reference_model_ships_with_a_card_that_matches_it(reference) -> None:
    card = (ROOT / "edge" / "zoo" / "MODEL_CARD.md").read_text()
    assert "make reference" in card
    accuracy = reference.meta.extra["heldout_accuracy"]
    assert f"{100 * accuracy:.1f}" in card  # the card reports the shipped file's held-out accuracy
    assert reference.meta.extra["training_data"] == "synthetic-ssvep:subjects=1-24,seed=0"
    assert "synthetic SSVEP subjects 1-24 (seed 0)" in card

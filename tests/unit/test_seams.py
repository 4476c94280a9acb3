"""The package seams, read from the source: no module uses another module's ``_private``
names, and imports only point down the stages (docs/ARCHITECTURE.md draws the same map)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("training", "serving", "tuning", "cluster", "benchmarks")
# Private by spelling, public by contract (namedtuple's API, os/sys escape hatches).
CONVENTIONAL = {"_replace", "_asdict", "_fields", "_make", "_exit", "_getframe"}
# Which part may import which. training/ is grouped in rooms that read as the stage's steps
# (data -> model -> features -> evaluation -> fit -> update); its settings modules sit beside
# them, and the entry points (training.incremental, training.train) on top. Every room shares
# the setting/error helpers of training.cli, the feature names of training.features.profile and
# the process memory helpers of training.memory, and training never reaches the stages built
# on it.
CORE = {"training.cli", "training.features.profile", "training.memory"}
ROOMS = ("data", "store", "model", "features", "evaluation", "fit", "update")
SETTINGS = {"training.config", "training.incremental_config", "training.epoch_schedule",
            "training.scaling_config"}
TRAINING = {"training", "training.settings", *(f"training.{room}" for room in ROOMS)}
MAY_IMPORT: dict[str, set[str]] = {
    "training.data": set(),
    "training.store": set(),
    "training.model": {"training.data"},
    "training.features": {"training.data", "training.model"},
    "training.evaluation": {"training.data", "training.model", "training.features"},
    "training.settings": {"training.data", "training.store"},
    "training.fit": {"training.data", "training.model", "training.features", "training.settings"},
    "training.update": {"training.data", "training.store", "training.model", "training.features",
                        "training.evaluation", "training.fit", "training.settings"},
    "training": TRAINING,
    "serving": {"serving"} | TRAINING,
    "tuning": {"tuning"} | TRAINING,
}


def modules(packages: tuple[str, ...] = PACKAGES) -> Iterator[tuple[Path, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def defined_names(tree: ast.Module) -> set[str]:
    """Every name this module defines or assigns: functions, classes, variables, and
    attributes set on ``self``/``cls`` (its own privates, which it may use on any object)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in CONVENTIONAL


def own_object(value: ast.expr) -> bool:
    """``self``/``cls``/``super()``: a class's protected members, inherited ones included."""
    if isinstance(value, ast.Call):
        value = value.func
    return isinstance(value, ast.Name) and value.id in {"self", "cls", "super"}


def private_uses(path: Path, tree: ast.Module) -> list[str]:
    own = defined_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found += [f"{path.name}:{node.lineno} imports {node.module}.{a.name}"
                      for a in node.names if private(a.name)]
        elif (isinstance(node, ast.Attribute) and private(node.attr)
              and node.attr not in own and not own_object(node.value)):
            found.append(f"{path.name}:{node.lineno} uses .{node.attr}")
    return found


def part_of(module: str) -> str:
    """The layer a dotted module name belongs to, e.g. ``training.store.base`` ->
    ``training.store``, ``training.config`` -> ``training.settings``,
    ``training.incremental`` -> ``training``."""
    parts = module.split(".")
    if parts[0] == "training" and len(parts) > 1 and parts[1] in ROOMS:
        return f"training.{parts[1]}"
    if module in SETTINGS:
        return "training.settings"
    return parts[0]


def imported(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def wrong_imports(path: Path, tree: ast.Module) -> list[str]:
    here = part_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
    allowed = MAY_IMPORT.get(here)
    if allowed is None:  # cluster and benchmarks sit on top: they may use every stage
        return []
    found = []
    for module in imported(tree):
        if module.split(".")[0] not in PACKAGES or module in CORE:
            continue
        target = part_of(module)
        if target != here and target not in allowed:
            found.append(f"{path.relative_to(ROOT)} imports {module}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    found = [use for path, tree in modules() for use in private_uses(path, tree)]
    assert found == []


def test_imports_point_down_the_stages() -> None:
    found = [bad for path, tree in modules() for bad in wrong_imports(path, tree)]
    assert found == []


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    # A private of another module, by import and by attribute, and a store module that
    # reaches up into serving: each rule must fire on its own case.
    tree = ast.parse("from training.store.base import _pointer_version\n"
                     "import serving.app\nx = model._user_vectors(1)\n")
    assert private_uses(tmp_path / "m.py", tree) == [
        "m.py:1 imports training.store.base._pointer_version", "m.py:3 uses ._user_vectors"]
    store_module = ROOT / "training" / "store" / "probe.py"
    assert wrong_imports(store_module, tree) == ["training/store/probe.py imports serving.app"]
    assert wrong_imports(ROOT / "cluster" / "probe.py", tree) == []
    # Rooms point down the steps: an evaluation module may not reach into the update.
    upward = ast.parse("from training.update.gate import passes\n")
    assert wrong_imports(ROOT / "training" / "evaluation" / "probe.py", upward) == [
        "training/evaluation/probe.py imports training.update.gate"]
    assert wrong_imports(ROOT / "training" / "update" / "probe.py",
                         ast.parse("from training.evaluation.metrics import ndcg\n")) == []

"""The dependency direction of STYLE.md, and configuration read only in ops/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "control", "consumers", "spool", "ops")
ALLOWED: dict[str, set[str]] = {
    "spool": set(),
    "control": set(),
    "edge": {"control", "spool"},
    "consumers": {"edge", "control"},
    "ops": {"edge", "control", "consumers", "spool"},
}


def headwater_imports(path: Path) -> set[str]:
    """The headwater packages a module imports (`headwater.edge.x` → `edge`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "headwater" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] in PACKAGES:
                found.add(f"bare:{parts[0]}")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_dependency_direction(package: str) -> None:
    for module in sorted((ROOT / package).rglob("*.py")):
        imported = headwater_imports(module) - {package}
        bare = {name for name in imported if name.startswith("bare:")}
        assert not bare, f"{module.relative_to(ROOT)} imports {bare}: import through the headwater namespace"
        forbidden = imported - ALLOWED[package]
        assert not forbidden, f"{module.relative_to(ROOT)} ({package}) must not import {sorted(forbidden)}"


def test_nothing_imports_ops() -> None:
    for package in PACKAGES:
        if package == "ops":
            continue
        for module in (ROOT / package).rglob("*.py"):
            assert "ops" not in headwater_imports(module), module


@pytest.mark.parametrize("package", [p for p in PACKAGES if p != "ops"])
def test_only_ops_reads_the_environment(package: str) -> None:
    for module in sorted((ROOT / package).rglob("*.py")):
        text = module.read_text()
        for needle in ("os.environ", "os.getenv", "getenv("):
            assert needle not in text, f"{module.relative_to(ROOT)} reads the environment ({needle})"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    # The checks above would be worthless if the import parser missed an import.
    module = tmp_path / "bad.py"
    module.write_text("from headwater.ops.cli import main\nimport headwater.edge.app\nimport control\n")
    assert headwater_imports(module) == {"ops", "edge", "bare:control"}

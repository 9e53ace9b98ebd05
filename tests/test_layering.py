"""The layering of docs/development.md, checked by import-linter (contracts in pyproject.toml),
and configuration read only in ops/."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "edge", "control", "consumers", "spool", "ops", "privacy", "console")


def lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    return subprocess.run(
        [tool, "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_the_layering_contracts_hold() -> None:
    result = lint_imports(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_broken_contract_is_reported(tmp_path: Path) -> None:
    # The contracts above would be worthless if the tool did not see imports through the
    # `headwater.*` namespace: forbid one that exists (the edge reads the core's envelope).
    config = tmp_path / ".importlinter"
    config.write_text(
        "[importlinter]\nroot_package = headwater\n\n"
        "[importlinter:contract:canary]\nname = canary\ntype = forbidden\n"
        "source_modules = headwater.edge\nforbidden_modules = headwater.core.wire.envelope\n"
    )
    result = lint_imports(config)
    assert result.returncode != 0, result.stdout
    assert "canary BROKEN" in result.stdout
    assert "headwater.edge" in result.stdout


def test_every_role_directory_is_under_contract() -> None:
    # A new top-level package (say analytics/) must be placed in the layers before it ships.
    text = (ROOT / "pyproject.toml").read_text()
    mapped = {
        line.split("=")[0].strip().split(".")[1]
        for line in (ROOT / "setup.cfg").read_text().splitlines()
        if line.strip().startswith("headwater.") and "=" in line and "py.typed" not in line
    }
    for package in mapped:
        assert re.search(rf"\bheadwater\.{package}\b", text), package


@pytest.mark.parametrize("package", [p for p in PACKAGES if p != "ops"])
def test_only_ops_reads_the_environment(package: str) -> None:
    for module in sorted((ROOT / package).rglob("*.py")):
        text = module.read_text()
        for needle in ("os.environ", "os.getenv", "getenv("):
            assert needle not in text, f"{module.relative_to(ROOT)} reads the environment ({needle})"

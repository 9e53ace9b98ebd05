"""The browser SDK (sdk/js): its Node unit tests and type check, the committed build being what the
sources build to, and the size budget. Installs the locked dev dependencies with `npm ci` once."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SDK = ROOT / "sdk" / "js"
BUILT = ROOT / "edge" / "static" / "headwater.js"
BUDGET = 5000  # bytes gzipped, the whole SDK


def npm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["npm", *args], cwd=SDK, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def node_modules() -> None:
    """esbuild and typescript at the versions in package-lock.json. Without Node the checks are
    skipped on a developer's machine, but fail in CI (which must run them)."""
    if shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("npm is needed to test the SDK (Node 20 or later)")
        pytest.skip("npm is not installed")
    result = npm("ci", "--no-audit", "--no-fund", "--loglevel=error")
    assert result.returncode == 0, result.stdout + result.stderr


def test_node_unit_tests_pass(node_modules: None) -> None:
    result = npm("test")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.search(r"^# pass (\d+)$", output, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 30, output
    assert re.search(r"^# fail 0$", output, re.MULTILINE), output


def test_sources_type_check(node_modules: None) -> None:
    result = npm("run", "typecheck")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_committed_build_is_what_the_sources_build_to(node_modules: None, tmp_path: Path) -> None:
    out = tmp_path / "headwater.js"
    result = subprocess.run(
        ["node", "build.mjs", str(out)], cwd=SDK, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes() == BUILT.read_bytes(), (
        "edge/static/headwater.js is stale: run `npm run build` in sdk/js and commit the result"
    )


def test_the_sdk_fits_its_size_budget() -> None:
    size = len(gzip.compress(BUILT.read_bytes(), compresslevel=9))
    print(f"headwater.js: {BUILT.stat().st_size} bytes, {size} gzipped")
    assert size <= BUDGET, f"headwater.js is {size} bytes gzipped, over the {BUDGET}-byte budget"


def test_the_docs_show_the_snippet_the_browser_tests_use() -> None:
    snippet = (SDK / "snippet.html").read_text().strip()
    assert snippet in (ROOT / "docs" / "sdk.md").read_text()

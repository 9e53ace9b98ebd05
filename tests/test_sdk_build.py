"""The browser SDK (sdk/js): its Node unit tests and type check, the committed build being what the
sources build to, and the size budget. Installs the locked dev dependencies with `npm ci` once."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest
from hw_node import assert_node_tests_pass, npm_ci
from hw_node import npm as run_npm

ROOT = Path(__file__).resolve().parents[1]
SDK = ROOT / "sdk" / "js"
BUILT = ROOT / "edge" / "static" / "headwater.js"
BUDGET = 5000  # bytes gzipped, the whole SDK


def npm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_npm(SDK, *args, timeout=timeout)


@pytest.fixture(scope="module")
def node_modules() -> None:
    """esbuild and typescript at the versions in package-lock.json."""
    npm_ci(SDK, "the SDK")


def test_node_unit_tests_pass(node_modules: None) -> None:
    assert_node_tests_pass(SDK, at_least=30)


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

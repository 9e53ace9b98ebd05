"""The console's front end (console/web): its Node unit tests, the committed build being what the
sources build to, and its size. Installs the locked dependencies with `npm ci` once."""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pytest
from hw_node import assert_node_tests_pass, npm_ci

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "console" / "web"
STATIC = ROOT / "console" / "static"
BUILT = ("index.html", "console.js", "console.css")
BUDGET = 120_000  # bytes gzipped, the script (Chart.js is three quarters of it)


@pytest.fixture(scope="module")
def node_modules() -> None:
    """Preact, Chart.js, the Sankey controller and esbuild at the versions in package-lock.json."""
    npm_ci(WEB, "the console")


def test_node_unit_tests_pass(node_modules: None) -> None:
    assert_node_tests_pass(WEB, at_least=9)


def test_the_committed_build_is_what_the_sources_build_to(node_modules: None, tmp_path: Path) -> None:
    result = subprocess.run(
        ["node", "build.mjs", str(tmp_path)], cwd=WEB, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(BUILT)
    for name in BUILT:
        assert (tmp_path / name).read_bytes() == (STATIC / name).read_bytes(), (
            f"console/static/{name} is stale: run `npm run build` in console/web and commit the result"
        )


def test_the_page_loads_each_asset_by_its_digest() -> None:
    page = (STATIC / "index.html").read_text()
    assert re.findall(r'"/console/assets/(console\.(?:js|css))\?v=[0-9a-f]{16}"', page) == [
        "console.css",
        "console.js",
    ]
    # Nothing inline: the Content-Security-Policy allows scripts and styles from files only.
    assert "<style" not in page and "style=" not in page
    [script] = re.findall(r"<script([^>]*)>", page)
    assert "src=" in script


def test_the_console_fits_its_size_budget() -> None:
    size = len(gzip.compress((STATIC / "console.js").read_bytes(), compresslevel=9))
    print(f"console.js: {(STATIC / 'console.js').stat().st_size} bytes, {size} gzipped")
    assert size <= BUDGET, f"console.js is {size} bytes gzipped, over the {BUDGET}-byte budget"

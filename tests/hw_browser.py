"""What the browser tests share: Debian's Chromium through Playwright, pages served from local
origins, and real npm libraries (tests/browserlibs/*) bundled by esbuild into one script each.
tests/conftest.py registers the fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

BROWSER_LIBRARIES = Path(__file__).resolve().parent / "browserlibs"
# Debian's package; another Chromium (or Chrome) through HEADWATER_CHROMIUM.
CHROMIUM = os.environ.get("HEADWATER_CHROMIUM", "/usr/bin/chromium")


class PageServer:
    """Serves `html` at every path (a single-page app's routes, and reloads, get the same page)."""

    def __init__(self) -> None:
        self.html = ""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/favicon.ico":
                    self.send_error(404)
                    return
                body = owner.html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def bundle_library(name: str, out_dir: Path, *esbuild_options: str) -> str:
    """tests/browserlibs/`name` at its locked versions (`npm ci`), its entry.js bundled by esbuild
    into one self-contained script (nothing is fetched from a vendor's CDN). Without npm the test
    is skipped on a developer's machine, but fails in CI."""
    if shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail(f"npm is needed to build tests/browserlibs/{name} for the browser tests")
        pytest.skip("npm is not installed")
    library = BROWSER_LIBRARIES / name
    installed = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=library,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    out = out_dir / f"{name}.js"
    esbuild = str(library / "node_modules" / ".bin" / "esbuild")
    command = [esbuild, "entry.js", "--bundle", "--format=iife", *esbuild_options, f"--outfile={out}"]
    built = subprocess.run(command, cwd=library, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stdout + built.stderr
    return out.read_text()


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set HEADWATER_CHROMIUM)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # Never Playwright's own browser builds: Debian's Chromium, headless.
        launched = await playwright.chromium.launch(executable_path=chromium)
        yield launched
        await launched.close()


@pytest.fixture
def page_servers() -> Iterator[tuple[PageServer, PageServer]]:
    """Two origins: one a project allows, one it does not."""
    servers = PageServer(), PageServer()
    yield servers
    for server in servers:
        server.close()

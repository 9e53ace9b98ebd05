"""What the tests of the JavaScript packages (sdk/js, console/web) share: npm in a package's
directory, its locked dependencies installed with `npm ci`, and its Node unit tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest


def npm(directory: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["npm", *args], cwd=directory, capture_output=True, text=True, timeout=timeout)


def npm_ci(directory: Path, what: str) -> None:
    """The package's dependencies at the versions in its package-lock.json. Without Node the caller
    is skipped on a developer's machine, but fails in CI (which must run it)."""
    if shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail(f"npm is needed to test {what} (Node 20 or later)")
        pytest.skip("npm is not installed")
    result = npm(directory, "ci", "--no-audit", "--no-fund", "--loglevel=error")
    assert result.returncode == 0, result.stdout + result.stderr


def assert_node_tests_pass(directory: Path, at_least: int) -> None:
    """`npm test` (node --test) passes, having run at least `at_least` tests."""
    result = npm(directory, "test")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.search(r"^# pass (\d+)$", output, re.MULTILINE)
    assert passed and int(passed.group(1)) >= at_least, output
    assert re.search(r"^# fail 0$", output, re.MULTILINE), output

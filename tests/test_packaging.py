"""The wheel holds every subpackage: an unlisted one imports in editable mode but is missing from
the wheel, so the wheel itself is built and inspected."""

from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def source_packages() -> set[str]:
    """Every package under a top-level package directory, as headwater.* names: a new top-level
    directory is found by its __init__.py, not by a list that has to be remembered."""
    found = set()
    for top_init in ROOT.glob("*/__init__.py"):
        for init in top_init.parent.rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT)
            found.add("headwater." + ".".join(relative.parts))
    return found


def test_setup_cfg_lists_every_subpackage() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    mapped = {line.split("=")[0].strip() for line in config["options"]["package_dir"].strip().splitlines()}
    assert listed == source_packages()
    assert mapped == source_packages()


def test_wheel_contains_every_module_and_the_console_script(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("headwater-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in source_packages():
        directory = package.replace(".", "/")
        source = ROOT / "/".join(package.split(".")[1:])
        for module in source.glob("*.py"):
            assert f"{directory}/{module.name}" in names, (
                f"{directory}/{module.name} missing from {wheel.name}"
            )
        assert f"{directory}/py.typed" in names or package.count(".") > 1
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "headwater = headwater.ops.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    # The browser SDK the edge serves (package data, built from sdk/js/), byte for byte.
    shipped = zipfile.ZipFile(wheel).read("headwater/edge/static/headwater.js")
    assert shipped == (ROOT / "edge" / "static" / "headwater.js").read_bytes()
    assert not any(name.startswith(("sdk/", "headwater/sdk")) for name in names)
    # The console's built assets (package data, built from console/web/), and none of its sources.
    for asset in ("index.html", "console.js", "console.css"):
        shipped = zipfile.ZipFile(wheel).read(f"headwater/console/static/{asset}")
        assert shipped == (ROOT / "console" / "static" / asset).read_bytes(), asset
    assert not any(name.startswith("headwater/console/web") for name in names)

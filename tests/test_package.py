"""fgtool installs like a package: declared dependencies, a licence, recipes inside the wheel."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import typer
from packaging.requirements import Requirement
from packaging.version import Version

from fgtool.cli import _is_click_error
from fgtool.config import RECIPES_DIR

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _deps() -> dict[str, Requirement]:
    return {Requirement(d).name: Requirement(d) for d in PYPROJECT["project"]["dependencies"]}


def test_every_third_party_import_is_declared():
    """The top-level packages fgtool imports are its dependencies (click comes with typer, so
    fgtool must not import it itself)."""
    declared = {n.replace("-", "_") for n in _deps()} | {"PIL", "sklearn", "cv2", "yaml", "tomli"}
    stdlib = set(sys.stdlib_module_names)
    found = set()
    for p in (ROOT / "fgtool").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    third = {m for m in found if m not in stdlib and m != "fgtool"}
    assert "click" not in third
    assert third - declared == set(), f"imported but not declared: {sorted(third - declared)}"


def test_click_usage_errors_are_recognised_without_importing_click():
    assert _is_click_error(typer.BadParameter("x"))
    assert not _is_click_error(ValueError("x"))
    assert not _is_click_error(typer.Abort())


@pytest.mark.parametrize("name, good, bad", [
    ("torch", ["2.14.1", "2.15.0"], ["2.13.0", "2.16.0"]),  # 2.13 + PyPI's torchvision fails to import
    ("torchvision", ["0.29.1", "0.29.2"], ["0.28.0", "0.30.0"]),
])
def test_torch_pins(name, good, bad):
    spec = _deps()[name].specifier
    assert [v for v in good if Version(v) in spec] == good
    assert [v for v in bad if Version(v) in spec] == []


def test_installed_torch_fits_the_pins():
    import torch
    import torchvision

    for mod in (torch, torchvision):
        v = Version(mod.__version__.split("+")[0])
        assert v in _deps()[mod.__name__].specifier, (mod.__name__, str(v))


def test_licence_matches_pyproject():
    text = (ROOT / "LICENSE").read_text()
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 fgtool authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def test_wheel_ships_the_recipes_and_the_licence(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "fgtool", src / "fgtool", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / f, src / f)
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("fgtool-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = sorted(f"fgtool/recipes/{p.name}" for p in RECIPES_DIR.glob("*.toml"))
    assert len(recipes) >= 14 and [r for r in recipes if r not in names] == []
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "recipes/")) for n in names)

"""The wheel installs one top-level package, lightning_genae, so nothing shadows a user's own modules."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_holds_lightning_genae_alone_with_callbacks_and_datamodules_inside(tmp_path):
    # setuptools builds in the checkout's build/; the test removes it only if it made it.
    made_build = not (ROOT / "build").exists()
    try:
        build_and_check_wheel(tmp_path)
    finally:
        if made_build:
            shutil.rmtree(ROOT / "build", ignore_errors=True)


def build_and_check_wheel(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("lightning_genae-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {
        "lightning_genae",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    # PEP 561: users' type checkers read the package's hints.
    assert "lightning_genae/py.typed" in names
    for package in ("callbacks", "datamodules"):
        assert f"lightning_genae/{package}/__init__.py" in names
        sources = {path.name for path in (ROOT / package).glob("*.py")}
        assert sources <= {
            Path(name).name for name in names if name.startswith(f"lightning_genae/{package}/")
        }


def test_no_module_imports_the_top_level_folders_by_their_bare_names():
    # In a checkout, callbacks/ and datamodules/ are reachable both bare and as lightning_genae.*; importing
    # both would load every module twice (two classes of each DataModule), so only the package name is used.
    offenders = []
    for path in [
        *ROOT.glob("*.py"),
        *(
            p
            for d in ("lightning_genae", "callbacks", "datamodules", "tests", "bench")
            for p in (ROOT / d).rglob("*.py")
        ),
    ]:
        if path.is_relative_to(ROOT / "lightning_genae" / "callbacks") or path.is_relative_to(
            ROOT / "lightning_genae" / "datamodules"
        ):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offenders += [
                f"{path.relative_to(ROOT)}: {name}"
                for name in names
                if name.split(".")[0] in ("callbacks", "datamodules")
            ]
    assert not offenders

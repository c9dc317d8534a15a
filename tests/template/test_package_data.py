"""`pip install .` ships the library's data files (the Lua scripts the scanners load, py.typed),
not only its .py modules: setuptools' package-data applies per package, so a file in a
subpackage is left out unless a pattern covers it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.template import cfn

LIBRARY = cfn.ROOT / "layers" / "oomcheck" / "oomcheck"


def _data_files(root: Path) -> set[Path]:
    return {
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }


def test_build_ships_every_data_file(tmp_path: Path) -> None:
    # Given a copy of the project (setuptools writes egg-info next to the sources)
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(cfn.ROOT / "pyproject.toml", source / "pyproject.toml")
    shutil.copy(cfn.ROOT / "README.md", source / "README.md")
    shutil.copytree(
        LIBRARY,
        source / "layers" / "oomcheck" / "oomcheck",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    out = tmp_path / "build"
    # When setuptools builds it the way pip does (build_py copies modules and package data)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(out),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Then every data file of the library is in the build, the server-side scripts included
    wanted = _data_files(LIBRARY)
    assert Path("sources/results/probe.lua") in wanted
    shipped = _data_files(out / "oomcheck")
    assert wanted <= shipped, f"missing from the package: {sorted(map(str, wanted - shipped))}"

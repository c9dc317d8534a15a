"""The layer built from the lock for this machine, by the recipe `sam build` runs
(layers/oomcheck/Makefile): used by the shipped-layer test and by the cold-start benchmark, so both
run what ships rather than the development virtualenv."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

from tests.template.test_build import index_unreachable, package_index, runtime_python

ROOT = Path(__file__).resolve().parents[2]
LAYER_SOURCE = ROOT / "layers" / "oomcheck"


def interpreter() -> Path:
    """The Lambda runtime's Python (3.13) when this machine has one, else this one."""
    found = runtime_python("python3.13")
    return found / "python3.13" if found else Path(sys.executable)


def version(python: Path) -> str:
    done = subprocess.run(
        [str(python), "-I", "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


def unbuildable() -> str | None:
    """Why the layer cannot be built here (one line), or None."""
    why = index_unreachable(package_index())
    return f"building the layer needs the package index: {why}" if why else None


def build_layer(out: Path, python: Path) -> Path:
    """The layer for ``python`` (its version, this machine's CPU) built into the empty folder
    ``out``; returns its ``python/`` folder. Raises RuntimeError with pip's output on failure."""
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(LAYER_SOURCE),
            "build-OomcheckLayer",
            f"ARTIFACTS_DIR={out}",
            f"PYTHON={sys.executable}",
            f"LAYER_PLATFORM=manylinux2014_{platform.machine()}",
            f"LAYER_PYTHON={version(python)}",
            # the runtime's interpreter writes the bytecode (pyenv's shims may not run it)
            f"COMPILE_PYTHON={python}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"layer build failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return out / "python"

"""`sam build` makes the layer the function needs: the library, the locked dependencies (from the
hash-locked layers/oomcheck/requirements.txt), and native code for arm64 (the build runs on x86
too: SAM fetches manylinux aarch64 wheels).

Needs the package index and the runtime's Python; skipped, with the reason, without them.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests import lockfile
from tests.template import cfn
from tests.template.conftest import SamTools, offline_env, run

pytestmark = [pytest.mark.sam, pytest.mark.slow]

AARCH64 = 183  # ELF e_machine of AArch64
REQUIREMENTS = cfn.ROOT / "layers" / "oomcheck" / "requirements.txt"


def package_index() -> str:
    """The index pip is configured to use (PIP_INDEX_URL, pip's config, else PyPI)."""
    url = os.environ.get("PIP_INDEX_URL", "")
    if not url:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        url = done.stdout.strip() if done.returncode == 0 else ""
    return (url or "https://pypi.org/simple").split()[0]


def index_unreachable(url: str, timeout: float = 3.0) -> str | None:
    """None when the index answers within ``timeout``, else why not (one line)."""
    if url.startswith("file://"):
        return None if Path(url[len("file://") :]).is_dir() else f"{url} does not exist"
    probe = url.rstrip("/") + "/pip/"
    if not probe.startswith(("https://", "http://")):
        return f"{url} is not an http(s) index"
    try:
        # The scheme is checked above: http(s) only.
        with urllib.request.urlopen(probe, timeout=timeout) as reply:
            reply.read(1)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return f"{url} unreachable ({getattr(exc, 'reason', exc)})"
    return None


def runtime_python(runtime: str) -> Path | None:
    """A directory holding a working `python3.X` for the runtime (PATH, else pyenv's versions)."""
    name = runtime  # "python3.13" is also the interpreter's name
    candidates = [shutil.which(name)]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{runtime[len('python') :]}*/bin/{name}"))
    for exe in filter(None, candidates):
        try:
            ok = (
                subprocess.run(
                    [exe, "-c", "import sys"], capture_output=True, timeout=20, check=False
                ).returncode
                == 0
            )
        except OSError:
            ok = False
        if ok:
            return Path(exe).parent
    return None


def _runtime(template: dict[str, Any]) -> str:
    function = template["Resources"][cfn.function_logical_id(template)]["Properties"]
    return str(function["Runtime"])


def _pins() -> dict[str, str]:
    return {re.sub(r"[-_.]+", "_", name): v for name, v in lockfile.pins(REQUIREMENTS).items()}


def _elf_machine(path: Path) -> int:
    with path.open("rb") as handle:
        header = handle.read(20)
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


@pytest.fixture(scope="module")
def built(
    sam_tools: SamTools, template: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    why = index_unreachable(package_index())
    if why:
        pytest.skip(f"sam build needs the package index: {why}")
    runtime = _runtime(template)
    python_dir = runtime_python(runtime)
    if python_dir is None:
        pytest.skip(f"sam build needs a working {runtime} on PATH (or in pyenv's versions)")
    out = tmp_path_factory.mktemp("sam-build")
    env = offline_env(PATH=f"{python_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    done = run(
        [
            sam_tools.sam,
            "build",
            "--template-file",
            str(cfn.TEMPLATE),
            "--build-dir",
            str(out / "build"),
            "--cache-dir",
            str(out / "cache"),
        ],
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, f"sam build failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return out / "build"


def test_layer_holds_the_library(built: Path) -> None:
    source = cfn.ROOT / "layers" / "oomcheck" / "oomcheck"
    shipped = built / "OomcheckLayer" / "python" / "oomcheck"
    # The modules, and the Lua scripts the scanners load from next to them.
    wanted = {p.relative_to(source) for ext in ("*.py", "*.lua") for p in source.rglob(ext)}
    have = {p.relative_to(shipped) for ext in ("*.py", "*.lua") for p in shipped.rglob(ext)}
    assert wanted <= have, f"missing from the layer: {sorted(map(str, wanted - have))}"


def test_layer_holds_the_pinned_dependencies(built: Path) -> None:
    site = built / "OomcheckLayer" / "python"
    installed = {}
    for info in site.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        installed[re.sub(r"[-_.]+", "_", name).lower()] = version
    wrong = {n: (v, installed.get(n)) for n, v in _pins().items() if installed.get(n) != v}
    assert not wrong, f"pinned -> built: {wrong}"


def test_native_code_is_for_arm64(built: Path) -> None:
    libraries = list((built / "OomcheckLayer").rglob("*.so"))
    assert any("hiredis" in str(p) for p in libraries), "hiredis's extension is missing"
    wrong = [str(p) for p in libraries if _elf_machine(p) != AARCH64]
    assert not wrong, f"not arm64: {wrong}"


def test_function_code_is_the_thin_handler(built: Path) -> None:
    function = built / "CheckerFunction"
    assert (function / "app.py").read_text() == (
        cfn.ROOT / "functions" / "checker" / "app.py"
    ).read_text()


def test_built_template_points_at_the_artifacts(built: Path) -> None:
    text = (built / "template.yaml").read_text()
    assert "CodeUri: CheckerFunction" in text and "ContentUri: OomcheckLayer" in text

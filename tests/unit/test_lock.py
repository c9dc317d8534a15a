"""The layer's lock (layers/oomcheck/requirements.txt, `make lock`) and pyproject agree: every
runtime dependency is locked, at a version pyproject's range admits, with hashes, for the platform
the template runs the function on. No network: the lock is read as a file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests import lockfile

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPENDENCIES = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]


@pytest.mark.parametrize("requirement", DEPENDENCIES, ids=lambda r: r.name)
def test_pyprojects_range_admits_the_locked_version(requirement: Requirement) -> None:
    locked = lockfile.pins().get(canonicalize_name(requirement.name))
    assert locked is not None, f"{requirement.name} is not in the lock: run make lock"
    assert requirement.specifier.contains(Version(locked), prereleases=True), (
        f"{requirement.name}=={locked} is outside pyproject's {requirement.specifier}: "
        "run make lock, or change the range"
    )


def test_every_locked_package_has_hashes() -> None:
    # pip turns on --require-hashes for the whole file when any line has a hash: a line without
    # one would fail the build, and a file without any would check nothing
    missing = [name for name, found in lockfile.hashes().items() if not found]
    assert not missing
    assert set(lockfile.hashes()) == set(lockfile.pins())


def test_the_lock_is_resolved_for_the_functions_platform() -> None:
    template = (ROOT / "template.yaml").read_text()
    runtimes = set(re.findall(r"Runtime: python(3\.\d+)", template))
    architectures = set(re.findall(r"Architectures: \[(\w+)\]", template))
    header = lockfile.LOCK.read_text().split("\n\n", 1)[0]
    assert runtimes == {"3.13"} and architectures == {"arm64"}, (runtimes, architectures)
    assert "uv pip compile pyproject.toml --generate-hashes" in header
    assert "--python-version 3.13" in header
    assert "--python-platform aarch64-manylinux" in header


def test_the_floors_hold_what_the_code_uses() -> None:
    """A floor below a feature the code calls would let pip install a version that fails at run
    time: each entry names the feature and the release that added it."""
    needs = {
        # sources/broker.py: hscan(..., no_values=True) (redis-py 5.0.8, HSCAN NOVALUES)
        "redis": Version("5.0.8"),
    }
    floors = {
        canonicalize_name(r.name): min(
            (Version(s.version) for s in r.specifier if s.operator == ">="), default=None
        )
        for r in DEPENDENCIES
    }
    for name, version in needs.items():
        floor = floors[name]
        assert floor is not None and floor >= version, f"{name} floor {floor} < {version}"


def test_the_tests_run_the_versions_the_layer_ships() -> None:
    """`make` installs the development virtualenv with the lock as constraints: a library the
    layer ships at one version and the tests import at another tests something that never runs."""
    from importlib.metadata import PackageNotFoundError, version

    differ = {}
    for name, locked in lockfile.pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue  # a dependency of another platform or Python only
        if installed != locked:
            differ[name] = (locked, installed)
    assert not differ, f"locked -> installed (run make, which installs with the lock): {differ}"

"""Fixtures for the template checks: the SAM toolchain of .venv-sam, offline credentials, the
SAM-translated template."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.template import cfn

ROOT = cfn.ROOT
SAM_VENV_ENV = "OOMCHECK_SAM_VENV"
TRANSLATE = Path(__file__).with_name("sam_translate.py")


def pytest_configure(config: pytest.Config) -> None:
    # Registered here as well as in pyproject.toml so that --strict-markers accepts them
    # whichever is read first.
    config.addinivalue_line("markers", "sam: needs the SAM toolchain in .venv-sam (offline)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds (sam build, e2e)")


@dataclass(frozen=True)
class SamTools:
    bin: Path

    @property
    def sam(self) -> str:
        return str(self.bin / "sam")

    @property
    def cfn_lint(self) -> str:
        return str(self.bin / "cfn-lint")

    @property
    def python(self) -> str:
        return str(self.bin / "python")


def offline_env(**extra: str) -> dict[str, str]:
    """The environment for sam / cfn-lint: fake credentials, a region, no telemetry, no profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=cfn.REGION,
        AWS_REGION=cfn.REGION,
        AWS_EC2_METADATA_DISABLED="true",
        SAM_CLI_TELEMETRY="0",
        SAM_CLI_BETA_FEATURES="0",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def sam_tools() -> SamTools:
    """aws-sam-cli and cfn-lint from .venv-sam (`make test` creates it from
    tools/sam-requirements.txt), or from the venv named by $OOMCHECK_SAM_VENV."""
    venv = Path(os.environ.get(SAM_VENV_ENV) or ROOT / ".venv-sam")
    tools = SamTools(venv / "bin")
    missing = [p for p in (tools.sam, tools.cfn_lint, tools.python) if not Path(p).exists()]
    if missing:
        pytest.skip(
            f"no SAM toolchain at {venv} (make test creates it from tools/sam-requirements.txt; "
            f"it needs the package index)"
        )
    return tools


def run(
    argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120.0, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        env=env or offline_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


Translate = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def translate(sam_tools: SamTools, tmp_path_factory: pytest.TempPathFactory) -> Translate:
    """template.yaml through the SAM transform, offline, with the given parameter values."""
    cache: dict[str, dict[str, Any]] = {}
    workdir = tmp_path_factory.mktemp("translate")

    def translated(
        params: dict[str, Any] | None = None, template: Path = cfn.TEMPLATE
    ) -> dict[str, Any]:
        key = json.dumps([str(template), params or {}], sort_keys=True)
        if key not in cache:
            params_file = workdir / f"params-{len(cache)}.json"
            params_file.write_text(json.dumps(params or {}))
            done = run([sam_tools.python, str(TRANSLATE), str(template), str(params_file)])
            assert done.returncode == 0, f"SAM transform failed:\n{done.stderr[-3000:]}"
            cache[key] = json.loads(done.stdout)
        return cache[key]

    return translated


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return cfn.load()

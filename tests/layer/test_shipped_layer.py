"""What ships is what runs: the layer built from the lock alone, into an empty folder, by the same
recipe `sam build` runs (layers/oomcheck/Makefile, every file checked against the lock's hashes),
loads every transport and client the checker can use and runs a scheduled check.

The build targets this machine (its CPU, the runtime's Python when one is here, else this one),
since the handler has to run here; `sam build` uses the same recipe for arm64 and Python 3.13
(tests/template/test_build.py checks that output). The interpreter that runs the handler sees
only the built folder and the function's code: nothing of the development virtualenv.

Needs the package index (pip downloads the locked files); skipped, with the reason, without it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oomcheck.demo.invoke import local_aws
from tests.layer.build import build_layer, interpreter, unbuildable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = ROOT / "functions" / "checker"
PROBE = Path(__file__).with_name("probe.py")


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the built layer's python/ folder, the interpreter that runs it)."""
    why = unbuildable()
    if why:
        pytest.skip(why)
    python = interpreter()
    out = tmp_path_factory.mktemp("layer")
    assert not any(out.iterdir())
    yield build_layer(out, python), python


def _probe(layer: Path, python: Path, event: Path, env: dict[str, str]) -> dict[str, Any]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "OOMCHECK_", "CELERY_", "POWERTOOLS_", "PYTHON"))
    }
    done = subprocess.run(
        [str(python), "-I", "-S", str(PROBE), str(layer), str(FUNCTION), str(event)],
        cwd=layer.parent,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-3000:]}"
    return dict(json.loads(done.stdout.splitlines()[-1]))


def test_the_built_layer_imports_everything_and_runs_a_scheduled_check(
    layer: tuple[Path, Path], broker_db_url: str, redis_db_url: str
) -> None:
    site, python = layer
    # Given the layer built from the lock alone, and moto with the stack's table and topic
    with local_aws() as aws:
        env = {
            **aws,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "OOMCHECK_BROKER_URL": broker_db_url,
            "OOMCHECK_RESULT_BACKEND": redis_db_url,
            "POWERTOOLS_SERVICE_NAME": "oomcheck-layer-test",
            "POWERTOOLS_METRICS_NAMESPACE": "oomcheck",
        }
        # When the handler runs a scheduled check from it
        out = _probe(site, python, ROOT / "events" / "scheduled.json", env)
    print(f"layer: python {out['python']}, {len(out['imported'])} imports, {site}")
    # Then every transport, client and library module loaded from the layer alone
    failed = {k: v for k, v in out["imported"].items() if not v.startswith(("/", "ok"))}
    assert not failed, failed
    assert not out["outside"], f"loaded from outside the layer: {out['outside']}"
    assert out["imported"]["kombu.transport.redis"].startswith(str(site))
    assert out["imported"]["app"] == str(FUNCTION / "app.py")
    # and the check asked the broker, the backend, the table and the logs, all answering
    assert out["error"] is None, out["error"]
    report = out["result"]
    assert report["mode"] == "check"
    assert {
        k: report["sources"][k] for k in ("inspect", "broker", "results", "state", "exits")
    } == {
        "inspect": "ok",
        "broker": "ok",
        "results": "ok",
        "state": "ok",
        "exits": "ok",
    }
    assert not [f for f in report["findings"] if f["kind"] == "source_unavailable"]


def test_the_built_layer_ships_bytecode_for_its_runtime(layer: tuple[Path, Path]) -> None:
    # Given the layer built for the interpreter that runs it (/opt is read-only in Lambda: a
    # module without bytecode there is compiled again at every cold start)
    site, python = layer
    tag = subprocess.run(
        [str(python), "-I", "-c", "import sys; print(sys.implementation.cache_tag)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Then every module of the library and of its dependencies has its .pyc beside it
    sources = [p for p in site.rglob("*.py") if "__pycache__" not in p.parts]
    missing = [
        str(p.relative_to(site))
        for p in sources
        if not (p.parent / "__pycache__" / f"{p.stem}.{tag}.pyc").exists()
    ]
    assert sources
    assert not [m for m in missing if m.startswith("oomcheck")], missing[:5]
    assert len(missing) <= len(sources) // 100, missing[:5]

"""`make invoke EVENT=events/audit.json`: the real Lambda handler, run here, against local services.

No Docker and no AWS account: a moto server on 127.0.0.1 stands in for DynamoDB, SNS and
CloudWatch Logs (reached through the standard AWS_ENDPOINT_URL), `oomcheck setup` provisions the
table and topic on it, and the broker and result backend are OOMCHECK_BROKER_URL /
OOMCHECK_RESULT_BACKEND (or CELERY_BROKER_URL / CELERY_RESULT_BACKEND) when set, else a local
Redis. The handler's logs and EMF metrics go to stderr; its return value, the report JSON, is
printed on stdout, as `sam remote invoke` would show it.

    python -m oomcheck.demo.invoke events/audit.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from oomcheck.demo import services

TABLE = "oomcheck-local"
TOPIC = "oomcheck-local-alerts"
ECS_LOG_GROUP = "/aws/events/oomcheck-local/ecs-task-stopped"
FUNCTION_NAME = "oomcheck-local-checker"
# template.yaml's defaults: FunctionTimeout for a check, WatchTimeouts for a watch.
CHECK_TIMEOUT_S = 30.0
WATCH_EXTRA_S = 12.0

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class LocalContext:
    """The part of the Lambda context that the handler and Powertools read."""

    timeout_s: float
    function_name: str = FUNCTION_NAME
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = f"/aws/lambda/{FUNCTION_NAME}"
    log_stream_name: str = "local"
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        import time

        self._deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        import time

        return max(0, int((self._deadline - time.monotonic()) * 1000))


def find_handler(start: Path | None = None) -> Path:
    """functions/checker/app.py of the checkout this runs in (from the working directory, or
    from this file's place in layers/oomcheck/oomcheck/demo/)."""
    candidates = [Path.cwd(), *Path(__file__).resolve().parents]
    if start is not None:
        candidates.insert(0, start)
    for base in candidates:
        path = base / "functions" / "checker" / "app.py"
        if path.is_file():
            return path
    raise FileNotFoundError(
        "functions/checker/app.py not found: run from the repository's root or pass --handler"
    )


def load_handler(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("oomcheck_checker_app_local", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def timeout_for(event: Mapping[str, Any]) -> float:
    """The function timeout the template would give this event's mode."""
    if event.get("mode") == "watch":
        return float(event.get("duration_s", 50)) + WATCH_EXTRA_S
    return CHECK_TIMEOUT_S


@contextlib.contextmanager
def _celery_urls() -> Iterator[tuple[str, str | None]]:
    broker = os.environ.get("OOMCHECK_BROKER_URL") or os.environ.get("CELERY_BROKER_URL")
    backend = os.environ.get("OOMCHECK_RESULT_BACKEND") or os.environ.get("CELERY_RESULT_BACKEND")
    if broker:
        yield broker, backend
        return
    with services.redis_url() as url:
        yield url, backend or url


@contextlib.contextmanager
def local_aws() -> Iterator[dict[str, str]]:
    """A moto server with the stack's table, topic and ECS log group; yields the environment
    the handler needs to reach them."""
    services.fake_aws_credentials()
    moto = services.start_moto()
    try:
        os.environ["AWS_ENDPOINT_URL"] = moto.endpoint
        from oomcheck.aws import client
        from oomcheck.provision import setup

        provisioned = setup(TABLE, TOPIC)
        client("logs").create_log_group(logGroupName=ECS_LOG_GROUP)
        yield {
            "AWS_ENDPOINT_URL": moto.endpoint,
            "OOMCHECK_TABLE": provisioned.table,
            "OOMCHECK_TOPIC_ARN": provisioned.topic_arn,
            "OOMCHECK_LOG_GROUPS": ECS_LOG_GROUP,
        }
    finally:
        moto.stop()


def invoke(event: dict[str, Any], handler_path: Path, timeout_s: float | None = None) -> Any:
    """Run the handler once for ``event`` against local services; returns its result."""
    saved = dict(os.environ)
    try:
        with local_aws() as aws_env, _celery_urls() as (broker, backend):
            os.environ.update(aws_env)
            os.environ["OOMCHECK_BROKER_URL"] = broker
            if backend:
                os.environ["OOMCHECK_RESULT_BACKEND"] = backend
            os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "oomcheck-local")
            os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "oomcheck")
            os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "INFO")
            # stdout carries only the result: the handler's logger and metrics bind to stderr.
            with contextlib.redirect_stdout(sys.stderr):
                module = load_handler(handler_path)
                handler: Handler = module.handler
                context = LocalContext(timeout_s or timeout_for(event))
                try:
                    return handler(event, context)
                finally:
                    deps = getattr(module, "_deps", None)
                    inspector = getattr(deps, "inspector", None)
                    if inspector is not None:
                        inspector.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m oomcheck.demo.invoke",
        description="Run the oomcheck Lambda handler locally on moto and a local Redis.",
    )
    parser.add_argument("event", type=Path, help="event JSON file, e.g. events/audit.json")
    parser.add_argument("--handler", type=Path, help="path of functions/checker/app.py")
    parser.add_argument(
        "--timeout", type=float, help="seconds the context reports (default: the template's)"
    )
    args = parser.parse_args(argv)
    try:
        event = json.loads(args.event.read_text())
    except (OSError, ValueError) as exc:
        print(f"invoke: cannot read the event {args.event}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(event, dict):
        print(f"invoke: {args.event} must hold a JSON object", file=sys.stderr)
        return 1
    try:
        result = invoke(event, args.handler or find_handler(), args.timeout)
    except Exception as exc:  # noqa: BLE001 - shown as Lambda shows a failed invocation
        print(json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}, indent=2))
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

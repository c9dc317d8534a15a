"""`oomcheck`: check / audit / watch / digest / setup / demo.

Exit codes (README, "Exit codes"; 64, 69 and 78 are sysexits.h's, as Celery's CLI exits 69 when
no node replies):

====  ==================================================================================
0     healthy: no open critical or warning finding
2     findings: an open critical or warning finding
69    could not check: the broker or the result backend could not be read (every such run)
64    a bad command line: an unknown command or flag, a malformed flag value (one line)
78    bad settings: a variable, the app (-A) or a flag's setting refused (one line)
1     an unexpected error, or interrupted
====  ==================================================================================

Settings come from the environment (README, "Settings") and, with ``-A proj``, from the Celery
app's own configuration; the environment beats the app, and flags beat both.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from importlib import metadata
from typing import TYPE_CHECKING, Any, NoReturn

from oomcheck.config.parsers import DAY, seconds, span
from oomcheck.config.settings import Settings, SettingsError, from_env
from oomcheck.deadline import DEFAULT_RUN_TIMEOUT_S
from oomcheck.model import Mode
from oomcheck.report.document import ExitCode, Report, SettingOrigin
from oomcheck.report.table import render_table

if TYPE_CHECKING:
    from oomcheck.ports import Deps

# Flags set the variable they override, so that they are checked by the same rules (and named
# in their messages as the user typed them).
_FLAG_VARIABLES = {
    "broker": ("--broker", "OOMCHECK_BROKER_URL"),
    "backend": ("--backend", "OOMCHECK_RESULT_BACKEND"),
    "table": ("--table", "OOMCHECK_TABLE"),
    "topic_arn": ("--topic-arn", "OOMCHECK_TOPIC_ARN"),
    "state_file": ("--state-file", "OOMCHECK_STATE_FILE"),
    "log_groups": ("--log-group", "OOMCHECK_LOG_GROUPS"),
    "target": ("--target", "OOMCHECK_TARGET"),
    "interval": ("--interval", "OOMCHECK_WATCH_INTERVAL"),
}
_DURATION = seconds(0, 365 * DAY)


_APP_HELP = (
    "the Celery app, as celery -A names it (proj, proj.celery, proj.celery:app): its broker, "
    "backend, transport options, key prefixes and expiries are used unless set otherwise"
)


def _common(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: `oomcheck check -A proj` and `oomcheck -A proj check` both work, as with celery
    parser.add_argument("-A", "--app", default=argparse.SUPPRESS, help=_APP_HELP)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--broker", help="broker URL (default $OOMCHECK_BROKER_URL)")
    parser.add_argument("--backend", help="result backend URL (default $OOMCHECK_RESULT_BACKEND)")
    parser.add_argument("--table", help="DynamoDB state table (default $OOMCHECK_TABLE)")
    parser.add_argument("--topic-arn", help="SNS topic for alerts (default $OOMCHECK_TOPIC_ARN)")
    parser.add_argument("--state-file", help="local state file when no table is set")
    parser.add_argument(
        "--log-group",
        action="append",
        dest="log_groups",
        help="CloudWatch log group with exit evidence (repeatable)",
    )
    parser.add_argument("--target", help="name of the monitored app in the state table")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_RUN_TIMEOUT_S,
        help="seconds one check may take, AWS retries included "
        f"(default {DEFAULT_RUN_TIMEOUT_S:.0f})",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


class UsageError(Exception):
    """The command line could not be parsed: one line, exit 64 (EX_USAGE)."""


class _Parser(argparse.ArgumentParser):
    """argparse prints its usage and exits 2, the findings code: raise instead, so that a bad
    command line is one line and EX_USAGE."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog.split()[0]} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="oomcheck",
        description="Find Celery workers that died silently (OOM kills, SIGKILL) and their tasks.",
    )
    parser.add_argument("-A", "--app", help=_APP_HELP)
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    check = sub.add_parser("check", help="one run: observe, evaluate, save state, alert")
    _common(check)
    audit = sub.add_parser("audit", help="full read-only report: no alerts, no state writes")
    _common(audit)
    audit.add_argument(
        "--since",
        default="7d",
        help="the window of the top task types by kills: 7d (default), 24h, 90m or seconds",
    )
    watch = sub.add_parser(
        "watch",
        help="check every --interval seconds for --duration seconds (--json: one line per check)",
    )
    _common(watch)
    # strings: checked with the settings' rules, so a bad value is one line and exit 1
    watch.add_argument(
        "--interval",
        default=None,
        help="seconds between checks (default $OOMCHECK_WATCH_INTERVAL, else 5)",
    )
    watch.add_argument(
        "--duration",
        default="60",
        help="seconds to keep watching (default 60; 0: one check)",
    )
    digest = sub.add_parser(
        "digest", help="the weekly digest from the stored history (to the topic, if one is set)"
    )
    _common(digest)
    setup = sub.add_parser("setup", help="create the DynamoDB table and SNS topic (idempotent)")
    setup.add_argument("--table", default=os.environ.get("OOMCHECK_TABLE", "oomcheck-state"))
    setup.add_argument("--topic", default="oomcheck-alerts", help="SNS topic name")
    setup.add_argument("--email", help="subscribe this address to the topic")
    setup.add_argument("--queue", help="subscribe a new SQS queue of this name (to read alerts)")
    _silence_parser(sub)
    demo = sub.add_parser("demo", help="OOM-kill a real worker and show the alert")
    demo.add_argument("--json", action="store_true", help="also print the report JSON")
    demo.add_argument("--no-cgroup", action="store_true", help="use SIGKILL, not a memory cgroup")
    demo.add_argument(
        "--memory",
        action="store_true",
        help="a task that grows: memory_pressure names it before the OOM kill",
    )
    demo.add_argument(
        "--beat",
        action="store_true",
        help="celery beat (RedBeat) killed: beat_stopped names the periodic jobs that stopped",
    )
    demo.add_argument(
        "--sqs",
        action="store_true",
        help="the worker on Amazon SQS (moto): no remote control, the alert names its task",
    )
    return parser


def _silence_parser(sub: Any) -> None:
    silence = sub.add_parser("silence", help="hold alerts during planned work: add, list, expire")
    verbs = silence.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    where = _Parser(add_help=False)
    where.add_argument("--json", action="store_true", help="print JSON")
    where.add_argument("--table", help="DynamoDB state table (default $OOMCHECK_TABLE)")
    where.add_argument("--state-file", help="local state file when no table is set")
    where.add_argument("--target", help="name of the monitored app in the state table")
    add = verbs.add_parser("add", parents=[where], help="add a silence; prints its id")
    add.add_argument(
        "--match",
        action="append",
        default=[],
        metavar="KEY=GLOB",
        help="kind, severity, worker, queue, task or cause (repeatable: all must match)",
    )
    end = add.add_mutually_exclusive_group()
    end.add_argument("--for", dest="for_", metavar="DURATION", help="e.g. 90m, 2h, 1d")
    end.add_argument("--until", metavar="TIME", help="ISO-8601, UTC unless it says otherwise")
    add.add_argument("--comment", help="why: shown to whoever is on call")
    add.add_argument("--by", help="who added it (default $USER)")
    verbs.add_parser("list", parents=[where], help="active silences, then ended ones")
    expire = verbs.add_parser("expire", parents=[where], help="end a silence now")
    expire.add_argument("id")


def version_text() -> str:
    """oomcheck's version and the libraries' that decide what it can read (for bug reports)."""
    parts = []
    for name in ("oomcheck", "celery", "kombu", "redis"):
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    python = ".".join(map(str, sys.version_info[:3]))
    return f"{parts[0]} ({', '.join(parts[1:])}, Python {python})"


def _settings(args: argparse.Namespace) -> tuple[Settings, dict[str, SettingOrigin]]:
    """Settings from the app (``-A``), the environment and the flags, and where each came from."""
    from oomcheck.config import celery_app

    env = dict(os.environ)
    flags: dict[str, str] = {}
    for dest, (flag, variable) in _FLAG_VARIABLES.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        env[variable] = ",".join(value) if isinstance(value, list) else str(value)
        flags[variable] = flag
    app_vars: dict[str, str] = {}
    labels = dict(flags)
    if args.app:
        app_vars = celery_app.app_variables(celery_app.load_app(args.app))
        labels = {**celery_app.app_labels(args.app, env, app_vars), **flags}
    settings = from_env(celery_app.merge(env, app_vars), labels=labels)
    return settings, celery_app.origins(settings, env, app_vars, flags)


def _duration(raw: str) -> float:
    try:
        value: float = _DURATION(raw)
    except ValueError as exc:
        raise UsageError(f"--duration {exc}") from None
    return value


def _since(raw: str) -> float:
    try:
        return span(raw)
    except ValueError as exc:
        raise UsageError(f"--since {exc}") from None


def _print_report(report: Report, as_json: bool, *, one_line: bool = False) -> None:
    if one_line:
        # watch --json: one document per line, flushed, for `| jq -c` or a log shipper
        print(json.dumps(report.to_json(), default=str), flush=True)
    elif as_json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print(render_table(report), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"{exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.command == "setup":
        return _setup(args)
    if args.command == "demo" and args.beat:
        from oomcheck.demo.beat import run_beat_demo

        return run_beat_demo()
    if args.command == "silence":
        from oomcheck.silences.cli import run_silence

        return run_silence(args, os.environ)
    if args.command == "demo" and args.memory:
        from oomcheck.demo.memory import run_memory_demo

        return int(run_memory_demo(use_cgroup=not args.no_cgroup))
    if args.command == "demo" and args.sqs:
        from oomcheck.demo.sqs import run_sqs_demo

        return int(run_sqs_demo(use_cgroup=not args.no_cgroup, show_json=args.json))
    if args.command == "demo":
        from oomcheck.demo.run import run_demo

        return int(run_demo(use_cgroup=not args.no_cgroup, show_json=args.json))
    try:
        duration = _duration(args.duration) if args.command == "watch" else 0.0
        args.since_s = _since(args.since) if args.command == "audit" else None
        settings, origins = _settings(args)
    except (UsageError, SettingsError) as exc:
        # Bad input is one line, never a traceback (which would show the URL it came from).
        print(f"oomcheck: {exc}", file=sys.stderr)
        return ExitCode.USAGE if isinstance(exc, UsageError) else ExitCode.CONFIG
    try:
        return _run(args, settings, duration, origins)
    except KeyboardInterrupt:
        return ExitCode.ERROR


def _run(
    args: argparse.Namespace,
    settings: Settings,
    duration: float,
    origins: Mapping[str, SettingOrigin],
) -> int:
    from oomcheck.redact import scrub
    from oomcheck.wiring import build_deps

    try:
        deps = build_deps(settings, write=sys.stderr.write, budget_s=args.timeout)
    except ValueError as exc:  # settings the adapters still refuse: the same one line
        text = scrub(" ".join(str(exc).split()), settings.secrets())[:500]
        print(f"oomcheck: {text}", file=sys.stderr)
        return ExitCode.CONFIG
    mode = Mode(args.command)
    if mode is Mode.DIGEST:
        return _digest(deps, args.json)
    if mode is Mode.WATCH:
        from oomcheck.runner import combine, watch

        reports = watch(
            deps,
            interval=settings.watch_interval_s,
            duration=duration,
            on_report=lambda r: _print_report(
                replace(r, settings=origins), args.json, one_line=args.json
            ),
            run_timeout_s=args.timeout,
        )
        return combine(reports).exit_code
    from oomcheck.deadline import Deadline
    from oomcheck.runner import run_once

    deadline = Deadline.after(args.timeout, deps.monotonic)
    since = {"since_s": args.since_s} if args.since_s is not None else {}
    report = replace(run_once(deps, mode, deadline, **since), settings=origins)
    _print_report(report, args.json)
    return report.exit_code


def _digest(deps: Deps, as_json: bool) -> int:
    from oomcheck import aws
    from oomcheck.alerting.digest import send_digest
    from oomcheck.store.base import StateError

    sns = aws.client("sns") if deps.settings.topic_arn else None
    try:
        sent = send_digest(deps, sys.stdout.write, sns=sns)
    except StateError as exc:
        print(f"oomcheck digest: {exc}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    if as_json:
        print(json.dumps(sent.to_json(), indent=2))
    if sent.error:
        print(f"oomcheck digest: {sent.error}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    return ExitCode.OK


def _setup(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from oomcheck.provision import setup

    try:
        done = setup(args.table, args.topic, email=args.email, queue=args.queue)
    except (BotoCoreError, ClientError) as exc:
        print(f"oomcheck setup: {exc}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    print(f"export OOMCHECK_TABLE={done.table}")
    print(f"export OOMCHECK_TOPIC_ARN={done.topic_arn}")
    if done.queue_url:
        print(f"# alerts are also delivered to the SQS queue {done.queue_url}")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())

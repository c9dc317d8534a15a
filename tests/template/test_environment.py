"""The function's environment in template.yaml and the settings the code reads agree both ways:
every variable oomcheck reads is set (or deliberately left out, with the reason), and nothing is
set that nobody reads. Secrets are references, never values."""

from __future__ import annotations

import ast
import re
from typing import Any

from aws_lambda_powertools.shared import constants as powertools_constants

from oomcheck.config.settings import ENV_VARS
from tests.template import cfn

# Read by oomcheck, deliberately not set by the template.
NOT_SET = {
    "CELERY_BROKER_URL": "fallback for CLI users; the template sets OOMCHECK_BROKER_URL",
    "CELERY_RESULT_BACKEND": "fallback for CLI users; the template sets OOMCHECK_RESULT_BACKEND",
    "OOMCHECK_STATE_FILE": "state in a local file (CLI); the Lambda keeps it in DynamoDB",
}
LIBRARY = cfn.ROOT / "layers" / "oomcheck" / "oomcheck"
# Not on the Lambda's path: the demo harness and the CLI's own flags.
NOT_IN_LAMBDA = ("demo",)


_NAME = re.compile(r"\b(?:OOMCHECK|CELERY)_[A-Z][A-Z0-9_]*[A-Z0-9]\b")


def _environment(template: dict[str, Any]) -> dict[str, Any]:
    function = template["Resources"][cfn.function_logical_id(template)]["Properties"]
    return dict(function["Environment"]["Variables"])


def _names_in_code() -> set[str]:
    """Every OOMCHECK_* / CELERY_* name that appears as a string in the library."""
    found = set()
    for path in LIBRARY.rglob("*.py"):
        if path.relative_to(LIBRARY).parts[0] in NOT_IN_LAMBDA:
            continue
        tree = ast.parse(path.read_text())
        # docstrings name variables to explain them (one the inspector keeps Celery from
        # reading, say); only the code's own strings are variables it reads
        docs = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and ast.get_docstring(node) is not None
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
            ):
                found.update(_NAME.findall(node.value))
    return found


def test_every_setting_the_code_reads_is_set(template: dict[str, Any]) -> None:
    env = _environment(template)
    missing = sorted(set(ENV_VARS) - set(env) - set(NOT_SET))
    assert not missing, f"read by oomcheck.config.settings but not set in template.yaml: {missing}"


def test_the_template_sets_nothing_the_code_does_not_read(template: dict[str, Any]) -> None:
    env = _environment(template)
    ours = {k for k in env if not k.startswith("POWERTOOLS_")}
    unread = sorted(ours - set(ENV_VARS))
    assert not unread, f"set in template.yaml but not read by oomcheck.config.settings: {unread}"
    powertools = {v for k, v in vars(powertools_constants).items() if k.endswith("_ENV")}
    unknown = sorted(k for k in env if k.startswith("POWERTOOLS_") and k not in powertools)
    assert not unknown, f"not Powertools variables: {unknown}"


def test_settings_lists_every_variable_the_library_reads() -> None:
    """ENV_VARS is what the two tests above trust: it must name every variable in the code."""
    unlisted = sorted(_names_in_code() - set(ENV_VARS))
    assert not unlisted, f"named in the library but missing from settings.ENV_VARS: {unlisted}"


def test_the_exclusions_are_still_read() -> None:
    assert set(NOT_SET) <= set(ENV_VARS)


def test_urls_are_references_to_ssm(template: dict[str, Any]) -> None:
    stack = cfn.Stack(
        template,
        {
            "BrokerUrlParameter": "/oomcheck/broker-url",
            "ResultBackendParameter": "/oomcheck/result-backend",
        },
        physical=_stand_ins(),
    )
    env = stack.properties("CheckerFunction", "Environment")["Environment"]["Variables"]
    assert env["OOMCHECK_BROKER_URL"] == "ssm:/oomcheck/broker-url"
    assert env["OOMCHECK_RESULT_BACKEND"] == "ssm:/oomcheck/result-backend"
    no_backend = cfn.Stack(
        template, {"BrokerUrlParameter": "/oomcheck/broker-url"}, physical=_stand_ins()
    )
    assert (
        no_backend.properties("CheckerFunction", "Environment")["Environment"]["Variables"][
            "OOMCHECK_RESULT_BACKEND"
        ]
        == ""
    )
    for name in ("BrokerUrlParameter", "ResultBackendParameter"):
        pattern = template["Parameters"][name]["AllowedPattern"]
        assert re.fullmatch(pattern, "/oomcheck/broker-url")
        assert not re.fullmatch(pattern, "redis://:secret@cache.internal:6379/0"), (
            f"{name} must only take the name of a parameter, never a URL"
        )


def test_every_tuning_default_is_the_code_default(template: dict[str, Any]) -> None:
    """Empty tuning parameters pass '' through, which oomcheck reads as its own default: the
    template repeats no default that could drift from the code's."""
    from oomcheck.config.settings import from_env

    stack = cfn.Stack(
        template, {"BrokerUrlParameter": "/oomcheck/broker-url"}, physical=_stand_ins()
    )
    env = {
        k: str(v)
        for k, v in stack.properties("CheckerFunction", "Environment")["Environment"][
            "Variables"
        ].items()
    }
    env["OOMCHECK_BROKER_URL"] = "redis://127.0.0.1:6379/0"
    from_template = from_env(env, resolve=lambda v: v)
    plain = from_env(
        {
            "OOMCHECK_BROKER_URL": "redis://127.0.0.1:6379/0",
            "OOMCHECK_TABLE": env["OOMCHECK_TABLE"],
            "OOMCHECK_TOPIC_ARN": env["OOMCHECK_TOPIC_ARN"],
            "OOMCHECK_CHAT_TOPIC_ARN": env["OOMCHECK_CHAT_TOPIC_ARN"],
            "OOMCHECK_LOG_GROUPS": env["OOMCHECK_LOG_GROUPS"],
            "OOMCHECK_STATE_FILE": from_template.state_file,
        },
        resolve=lambda v: v,
    )
    assert from_template == plain


def _stand_ins() -> dict[str, cfn.Physical]:
    arn = f"arn:aws:logs:{cfn.REGION}:{cfn.ACCOUNT}:log-group:"
    table = "oomcheck-test-StateTable-1"
    return {
        "StateTable": cfn.Physical(
            table, {"Arn": f"arn:aws:dynamodb:{cfn.REGION}:{cfn.ACCOUNT}:table/{table}"}
        ),
        "AlertsTopic": cfn.Physical(f"arn:aws:sns:{cfn.REGION}:{cfn.ACCOUNT}:oomcheck-test-alerts"),
        "ChatTopic": cfn.Physical(f"arn:aws:sns:{cfn.REGION}:{cfn.ACCOUNT}:oomcheck-test-chat"),
        "EcsEventsLogGroup": cfn.Physical(
            "/aws/events/oomcheck-test/ecs-task-stopped",
            {"Arn": f"{arn}/aws/events/oomcheck-test/ecs-task-stopped:*"},
        ),
        "CheckerLogGroup": cfn.Physical(
            "/aws/lambda/oomcheck-test-checker",
            {"Arn": f"{arn}/aws/lambda/oomcheck-test-checker:*"},
        ),
        "OomcheckLayer": cfn.Physical("arn:aws:lambda:us-east-1:123456789012:layer:l:1"),
        "CheckerRole": cfn.Physical("r", {"Arn": "arn:aws:iam::123456789012:role/r"}),
    }

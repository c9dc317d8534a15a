"""SnapStart as a template option: with SnapStart=true every trigger invokes the alias "live"
(SnapStart applies to published versions only) and the function has SnapStart on; with the
default, every trigger invokes the function itself, as before the option existed.

Checked on the SAM-translated template (what CloudFormation deploys): every reference to the
function, in whichever branch of an Fn::If the parameters select, is listed with where it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.template import cfn
from tests.template.conftest import Translate

pytestmark = pytest.mark.sam

ALIAS = "CheckerFunctionAliaslive"
UNQUALIFIED = ({"Ref": "CheckerFunction"}, {"Fn::GetAtt": ["CheckerFunction", "Arn"]})
ALIAS_REF = {"Ref": ALIAS}
# Every way the checker is started: the schedules, the SQS event source mapping, the log
# subscriptions and their permissions, the scheduler role's invoke grant.
INVOKE_PATHS = {
    ("CheckerFunctionTick", "Properties.Target.Arn"),
    ("DigestTick", "Properties.Target.Arn"),
    ("TickRole", "Properties.Policies.0.PolicyDocument.Statement.0.Resource"),
    ("EcsEventsSource", "Properties.FunctionName"),
    *((f"LogsInvokePermission{i}", "Properties.FunctionName") for i in range(1, 6)),
    *((f"LogsSubscription{i}", "Properties.DestinationArn") for i in range(1, 6)),
}
# What may name the function itself whatever the option: its versions and alias, the async
# retry settings (qualified by their own Qualifier), alarm dimensions (Lambda's FunctionName
# dimension covers every version and alias), the outputs.
NOT_INVOKING = ("CheckerFunctionVersion", ALIAS, "CheckerFunctionEventInvokeConfig", "Checker")
EVERYTHING_ON = {
    "BrokerUrlParameter": "/oomcheck/broker",
    "EcsEventsStartChecks": "true",
    "DigestSchedule": "cron(0 8 ? * MON *)",
    "SubscribedLogGroups": "/k/1,/k/2,/k/3,/k/4,/k/5",
}


def _references(node: Any, stack: cfn.Stack, path: str) -> Iterator[tuple[str, Any]]:
    """(path, reference) for every Ref/GetAtt of the function or its alias, through the Fn::If
    branches the stack's conditions choose."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _references(item, stack, f"{path}.{i}")
        return
    if not isinstance(node, dict):
        return
    if node in UNQUALIFIED or node == ALIAS_REF:
        yield path, node
        return
    if set(node) == {"Fn::If"}:
        name, yes, no = node["Fn::If"]
        yield from _references(yes if stack.condition(name) else no, stack, path)
        return
    for key, value in node.items():
        yield from _references(value, stack, f"{path}.{key}" if path else key)


def _targets(translated: dict[str, Any], params: dict[str, Any]) -> dict[tuple[str, str], Any]:
    stack = cfn.Stack(translated, params)
    out: dict[tuple[str, str], Any] = {}
    for logical, resource in translated["Resources"].items():
        if not stack.resource_on(logical):
            continue
        for path, ref in _references(resource, stack, ""):
            out[(logical, path)] = ref
    return out


@pytest.fixture(scope="module")
def on(translate: Translate) -> dict[str, Any]:
    return translate({**EVERYTHING_ON, "SnapStart": "true"})


@pytest.fixture(scope="module")
def off(translate: Translate) -> dict[str, Any]:
    return translate(EVERYTHING_ON)


def test_the_option_is_a_true_false_parameter_off_by_default(template: dict[str, Any]) -> None:
    spec = template["Parameters"]["SnapStart"]
    assert spec["Default"] == "false" and spec["AllowedValues"] == ["true", "false"]
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    assert any("SnapStart" in g["Parameters"] for g in groups)


def test_with_snapstart_every_trigger_invokes_the_alias(on: dict[str, Any]) -> None:
    targets = _targets(on, {**EVERYTHING_ON, "SnapStart": "true"})
    invoking = {where: ref for where, ref in targets.items() if where in INVOKE_PATHS}
    assert set(invoking) == INVOKE_PATHS, "an invoke path is missing or renamed"
    assert all(ref == ALIAS_REF for ref in invoking.values()), invoking
    stray = [
        where
        for where, ref in targets.items()
        if ref in UNQUALIFIED
        and where not in INVOKE_PATHS
        and not where[0].startswith(NOT_INVOKING)
    ]
    assert stray == [], f"these name the unqualified function with SnapStart on: {stray}"


def test_without_snapstart_every_trigger_invokes_the_function_as_before(
    off: dict[str, Any],
) -> None:
    targets = _targets(off, EVERYTHING_ON)
    invoking = {where: ref for where, ref in targets.items() if where in INVOKE_PATHS}
    assert set(invoking) == INVOKE_PATHS
    assert all(ref in UNQUALIFIED for ref in invoking.values()), invoking
    assert not [w for w, ref in targets.items() if ref == ALIAS_REF and w[0] != "Outputs"]


def test_no_sam_event_would_retarget_a_trigger(template: dict[str, Any]) -> None:
    """SAM points a function's Events at its AutoPublishAlias whatever the option: the schedule
    is written out instead, so the option decides."""
    assert "Events" not in template["Resources"]["CheckerFunction"]["Properties"]


def _function(translated: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    stack = cfn.Stack(translated, params)
    props = translated["Resources"]["CheckerFunction"]["Properties"]
    keys = ("SnapStart", "Runtime", "Architectures")
    resolved = stack.resolve({k: props[k] for k in keys})
    assert isinstance(resolved, dict)
    return {**{k: v for k, v in props.items() if k not in keys}, **resolved}


def test_snapstart_is_set_on_the_published_versions_only_with_the_option(
    on: dict[str, Any], off: dict[str, Any]
) -> None:
    assert _function(on, {**EVERYTHING_ON, "SnapStart": "true"})["SnapStart"] == {
        "ApplyOn": "PublishedVersions"
    }
    assert "SnapStart" not in _function(off, EVERYTHING_ON)
    [version] = [r for r in on["Resources"].values() if r["Type"] == "AWS::Lambda::Version"]
    # kept when replaced (the alias may still point at it mid-update); old ones are pruned
    # with `make prune-versions`
    assert version["DeletionPolicy"] == "Retain"
    alias = on["Resources"][ALIAS]["Properties"]
    assert alias["Name"] == "live"
    # Toggling the option must publish a version (SAM's version hash does not see parameter
    # values): the version's description differs, which makes CloudFormation replace it.
    description_on = cfn.Stack(on, {**EVERYTHING_ON, "SnapStart": "true"}).resolve(
        version["Properties"]["Description"]
    )
    description_off = cfn.Stack(off, EVERYTHING_ON).resolve(version["Properties"]["Description"])
    assert description_on != description_off


def test_nothing_snapstart_refuses_is_configured(on: dict[str, Any]) -> None:
    """SnapStart: Python 3.12+, no provisioned concurrency, no EFS, ephemeral storage <= 512 MB
    (AWS docs); reserved concurrency and arm64 are allowed."""
    function = _function(on, {**EVERYTHING_ON, "SnapStart": "true"})
    runtime = function["Runtime"]
    assert runtime.startswith("python3.") and int(runtime.split(".")[1]) >= 12
    assert "ProvisionedConcurrencyConfig" not in function
    assert "FileSystemConfigs" not in function
    assert int(function.get("EphemeralStorage", {}).get("Size", 512)) <= 512
    assert not [r for r in on["Resources"].values() if r["Type"] == "AWS::EFS::FileSystem"]


@pytest.mark.parametrize(("snapstart", "qualifier"), [("true", "live"), ("false", "$LATEST")])
def test_async_retry_settings_follow_what_the_triggers_invoke(
    translate: Translate, snapstart: str, qualifier: str
) -> None:
    params = {**EVERYTHING_ON, "SnapStart": snapstart}
    translated = translate(params)
    configs = [
        (k, r)
        for k, r in translated["Resources"].items()
        if r["Type"] == "AWS::Lambda::EventInvokeConfig"
    ]
    assert len(configs) == 1
    stack = cfn.Stack(translated, params)
    props = configs[0][1]["Properties"]
    assert stack.resolve(props["Qualifier"]) == qualifier
    assert props["MaximumRetryAttempts"] == 0 and props["MaximumEventAgeInSeconds"] == 60


def test_a_new_layer_publishes_a_new_version(template: dict[str, Any]) -> None:
    """Nearly all the code is in the layer: without these the alias would keep the old one."""
    assert template["Resources"]["CheckerFunction"]["Properties"]["AutoPublishAliasAllProperties"]
    assert template["Resources"]["OomcheckLayer"]["Properties"]["PublishLambdaVersion"] is True

"""The dashboard draws what the checker emits: every metric of every widget (plain or in a
SEARCH expression) is one of oomcheck.report.metrics.CATALOG, under the function's namespace and
with the same dimensions; its log widget reads the checker's own "run finished" lines."""

from __future__ import annotations

import json
import re
from typing import Any

from oomcheck.report.metrics import CATALOG
from tests.template import cfn

_SUBS = {
    "MetricsNamespace": "NS",
    "Target": "TARGET",
    "AWS::StackName": "STACK",
    "AWS::Region": cfn.REGION,
    "CheckerLogGroup": "/aws/lambda/STACK-checker",
}
_SEARCH = re.compile(r"SEARCH\('\{([^}]*)\} MetricName=\"(\w+)\" target=\"(\w+)\"'")


def _body(template: dict[str, Any]) -> dict[str, Any]:
    dashboard = template["Resources"]["CheckerDashboard"]
    assert dashboard["Condition"] == "DashboardOn"
    text = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    unknown = set(re.findall(r"\$\{([^}]+)\}", text)) - set(_SUBS)
    assert not unknown, f"the body substitutes what the test does not know: {unknown}"
    for name, value in _SUBS.items():
        text = text.replace("${" + name + "}", value)
    return dict(json.loads(text))


def _drawn(body: dict[str, Any]) -> list[tuple[str, str, dict[str, str] | tuple[str, ...]]]:
    """(namespace, metric, dimensions) of every metric the widgets draw: a plain metric's
    dimension values, a SEARCH's dimension names."""
    out: list[tuple[str, str, dict[str, str] | tuple[str, ...]]] = []
    for widget in body["widgets"]:
        for row in widget["properties"].get("metrics", []):
            if isinstance(row[0], dict):
                match = _SEARCH.search(row[0]["expression"])
                assert match, row[0]["expression"]
                namespace, *dims = match.group(1).split(",")
                assert match.group(3) == "TARGET"
                out.append((namespace, match.group(2), tuple(dims)))
            else:
                namespace, name, *rest = [r for r in row if not isinstance(r, dict)]
                out.append((namespace, name, dict(zip(rest[::2], rest[1::2], strict=True))))
    return out


def test_the_dashboard_is_on_by_default_and_a_parameter_turns_it_off(template):
    assert template["Parameters"]["Dashboard"]["Default"] == "true"
    assert template["Conditions"]["DashboardOn"] == {"Fn::Equals": [{"Ref": "Dashboard"}, "true"]}


def test_every_metric_drawn_is_one_the_code_emits_with_its_dimensions(template):
    drawn = _drawn(_body(template))
    assert len(drawn) >= 12
    for namespace, name, dims in drawn:
        assert namespace == "NS", name
        assert name in CATALOG, f"the dashboard draws {name}, which the checker never emits"
        names = tuple(dims) if isinstance(dims, dict) else dims
        assert names == CATALOG[name].dimensions, name
        if isinstance(dims, dict):
            # run-level metrics carry Powertools' service (the stack's name), the rest the target
            expected = "STACK" if names == ("service",) else "TARGET"
            assert set(dims.values()) == {expected}, name
    # the views the issue asks for are all there
    wanted = {
        "WorkerDeaths",
        "TasksLost",
        "TasksRedelivered",
        "MemoryPressureEpisodes",
        "QueuesWithoutConsumers",
        "RunDuration",
        "SourceErrors",
        "OpenIncidentsByKind",
    }
    assert wanted <= {name for _, name, _ in drawn}


def test_the_function_gets_the_namespace_and_target_the_dashboard_reads(template):
    env = template["Resources"]["CheckerFunction"]["Properties"]["Environment"]["Variables"]
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
    assert env["OOMCHECK_TARGET"] == {"Ref": "Target"}


def test_the_open_incidents_widget_reads_the_checkers_run_lines(template):
    [log] = [w for w in _body(template)["widgets"] if w["type"] == "log"]
    query = log["properties"]["query"]
    assert query.startswith("SOURCE '/aws/lambda/STACK-checker' |")
    assert "message = 'run finished'" in query and "open_incidents" in query
    log_group = template["Resources"]["CheckerLogGroup"]["Properties"]["LogGroupName"]
    assert log_group == {"Fn::Sub": "/aws/lambda/${AWS::StackName}-checker"}

"""The filter patterns oomcheck sends, evaluated on the documented records (moto ignores them):
a pattern that would make AWS drop a record we parse fails here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oomcheck.exitparse import parse_message
from oomcheck.sources.exits import (
    CONTAINER_INSIGHTS_PATTERN,
    TEXT_PATTERN,
    CloudWatchExitEvents,
    is_container_insights_group,
)
from oomcheck.sources.logpattern import matches

EVENTS = Path(__file__).resolve().parents[2] / "events"
ECS_PERFORMANCE = "/aws/ecs/containerinsights/celery-prod/performance"
EKS_PERFORMANCE = "/aws/containerinsights/celery-prod/performance"
ECS_EVENTS = "/oomcheck/ecs-task-state"
KERNEL = "/ec2/var/log/messages"


def messages(name: str) -> list[str]:
    text = (EVENTS / name).read_text()
    if name.endswith(".log"):
        return text.splitlines()
    value = json.loads(text)
    return [json.dumps(v) for v in (value if isinstance(value, list) else [value])]


# (group, sample files whose records live in such a group)
GROUPS = [
    (ECS_PERFORMANCE, ["ecs-container-insights-memory.json"]),
    (
        EKS_PERFORMANCE,
        ["eks-container-insights-memory.json", "eks-container-insights-oomkilled.json"],
    ),
    (ECS_EVENTS, [f"ecs-task-stopped-{n}.json" for n in ("oom", "sigkill", "clean", "error")]),
    (KERNEL, ["kernel-oom.log"]),
]


@pytest.mark.parametrize(("group", "files"), GROUPS, ids=[g for g, _ in GROUPS])
def test_every_record_we_use_passes_the_pattern_sent_for_its_group(
    group: str, files: list[str]
) -> None:
    pattern = CloudWatchExitEvents(None, [group]).pattern(group)
    assert pattern is not None
    used = 0
    for name in files:
        for message in messages(name):
            parsed = parse_message(message)
            if parsed.evidence or parsed.memory:
                used += 1
                assert matches(pattern, message), (group, pattern, message[:120])
    assert used > 0


def test_the_text_pattern_would_drop_memory_records() -> None:
    # what the ECS performance group got before it was told apart: it must fail this check
    [record, *_] = messages("ecs-container-insights-memory.json")
    assert parse_message(record).memory
    assert not matches(TEXT_PATTERN, record)
    assert matches(CONTAINER_INSIGHTS_PATTERN, record)


def test_the_container_pattern_drops_other_record_types() -> None:
    node = json.dumps({"Type": "Node", "node_memory_working_set": 1})
    task = json.dumps({"Type": "Task", "TaskId": "7ac4dfba69214411b4783a3b8189c9ba"})
    assert not matches(CONTAINER_INSIGHTS_PATTERN, node)
    assert not matches(CONTAINER_INSIGHTS_PATTERN, task)
    assert not matches(CONTAINER_INSIGHTS_PATTERN, "Killed process 1 (celery)")


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        (ECS_PERFORMANCE, True),
        (EKS_PERFORMANCE, True),
        ("arn:aws:logs:eu-west-1:123456789012:log-group:" + ECS_PERFORMANCE + ":*", True),
        ("/aws/ecs/containerinsights/celery-prod/application", False),
        (ECS_EVENTS, False),
    ],
)
def test_container_insights_groups(group: str, expected: bool) -> None:
    assert is_container_insights_group(group) is expected


@pytest.mark.parametrize(
    ("pattern", "record", "expected"),
    [
        ('{ $.a = "x" }', {"a": "x"}, True),
        ('{ $.a = "x" }', {"a": "y"}, False),
        ('{ $.a = "x" }', {}, False),
        ("{ $.a.b > 0 }", {"a": {"b": 1}}, True),
        ("{ $.a.b > 0 }", {"a": {"b": "1"}}, False),
        ('{ ($.a = "x") && ($.n >= 2) }', {"a": "x", "n": 2}, True),
        ('{ ($.a = "x") && ($.n >= 2) }', {"a": "x", "n": 1}, False),
        ('{ $.a = "x" || $.a = "y" }', {"a": "y"}, True),
        ('{ $.a != "x" }', {"a": "y"}, True),
    ],
)
def test_json_subset(pattern: str, record: Any, expected: bool) -> None:
    assert matches(pattern, json.dumps(record)) is expected
    assert not matches(pattern, "not json")


def test_text_subset() -> None:
    assert matches('?"a b" ?"c"', "x c y")
    assert not matches('?"a b" ?"c"', "a  b")
    assert matches('"a" "b"', "b then a")
    assert not matches('"a" "b"', "only a")
    assert not matches('"Killed"', "killed")  # terms are case-sensitive


@pytest.mark.parametrize(
    "pattern",
    ['{ $.a = "x*" }', "{ $.a[0] = 1 }", '{ $.a = "x"', '?"a" "b"', '{ $.a ~ "x" }', "%a%"],
)
def test_syntax_outside_the_subset_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"not supported|unsupported"):
        matches(pattern, json.dumps({"a": "x"}))

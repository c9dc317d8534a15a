"""The function's memory: chosen from what the cold event path and each mode cost (bench_cold,
bench_cost), unless the stack names a size."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.template import cfn

PARAMS = {"BrokerUrlParameter": "/b"}


def _memory(template: dict[str, Any], **params: Any) -> int:
    stack = cfn.Stack(template, {**PARAMS, **params})
    function = cfn.function_logical_id(template)
    return int(stack.properties(function, "MemorySize")["MemorySize"])


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # checks, scheduled or started by events: CPU for the cold start, cents a month
        ({}, 1536),
        ({"EcsEventsStartChecks": "false"}, 1536),
        # a watch mostly waits, and waiting is billed per GB-s
        ({"WatchSeconds": 60}, 256),
        # a size the stack names is taken as given, in either mode
        ({"FunctionMemory": "512"}, 512),
        ({"FunctionMemory": "2048", "WatchSeconds": 60}, 2048),
    ],
)
def test_memory_follows_the_mode_unless_a_size_is_given(
    template: dict[str, Any], params: dict[str, Any], expected: int
) -> None:
    assert _memory(template, **params) == expected


@pytest.mark.parametrize("value", ["auto", "128", "1024", "10240"])
def test_memory_parameter_accepts_auto_and_sizes(template: dict[str, Any], value: str) -> None:
    pattern = template["Parameters"]["FunctionMemory"]["AllowedPattern"]
    assert re.fullmatch(pattern, value)


@pytest.mark.parametrize("value", ["", "0", "64", "1024MB", "AUTO", "auto "])
def test_memory_parameter_refuses_what_lambda_would_refuse_late(
    template: dict[str, Any], value: str
) -> None:
    pattern = template["Parameters"]["FunctionMemory"]["AllowedPattern"]
    assert not re.fullmatch(pattern, value)

"""The template's MemoryThreshold parameter admits what the setting accepts and refuses what it
refuses, so a stack never deploys a value the function then rejects at cold start."""

from __future__ import annotations

import re

import pytest

from oomcheck.config.settings import SettingsError, from_env
from tests.template import cfn

VALUES = ["", "0.5", ".9", "0.95", "1", "1.0", "50", "90", "90%", "99.5", "100", "100%"]
REFUSED = ["0.4", "5", "1.5", "101", "100.5", "45%", "0.9%", "ninety"]


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(cfn.load()["Parameters"][name]["AllowedPattern"])


@pytest.mark.parametrize("raw", VALUES)
def test_threshold_the_template_admits_is_accepted(raw: str) -> None:
    assert _pattern("MemoryThreshold").fullmatch(raw)
    from_env({"OOMCHECK_BROKER_URL": "redis://h:6379/0", "OOMCHECK_MEMORY_THRESHOLD": raw})


@pytest.mark.parametrize("raw", REFUSED)
def test_threshold_the_setting_refuses_the_template_refuses(raw: str) -> None:
    assert not _pattern("MemoryThreshold").fullmatch(raw)
    with pytest.raises(SettingsError):
        from_env({"OOMCHECK_BROKER_URL": "redis://h:6379/0", "OOMCHECK_MEMORY_THRESHOLD": raw})


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("MemorySamples", ["", "1", "2", "60"], ["0", "61", "2.5"]),
        ("QueueOrphanAfter", ["", "0", "300", "90.5"], ["-1", "5m"]),
        ("IgnoredQueues", ["", "dead-letter,archive", "celery.pidbox"], ["a;b", "q$"]),
    ],
)
def test_other_parameters_patterns(name: str, good: list[str], bad: list[str]) -> None:
    pattern = _pattern(name)
    assert all(pattern.fullmatch(v) for v in good)
    assert not any(pattern.fullmatch(v) for v in bad)

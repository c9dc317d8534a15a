"""The thresholds of memory_pressure and queue_orphaned, read from the environment into Policy."""

from __future__ import annotations

import pytest

from oomcheck.config.settings import SettingsError, from_env

BROKER = {"OOMCHECK_BROKER_URL": "redis://127.0.0.1:6379/0"}


@pytest.mark.parametrize(
    ("raw", "share"),
    [("0.9", 0.9), (".75", 0.75), ("1", 1.0), ("90", 0.9), ("90%", 0.9), (" 85 % ", 0.85)],
)
def test_memory_threshold_is_a_share_or_a_percent(raw, share):
    settings = from_env({**BROKER, "OOMCHECK_MEMORY_THRESHOLD": raw})
    assert settings.policy.memory_threshold == pytest.approx(share)


@pytest.mark.parametrize("raw", ["0.4", "5", "1.5", "101", "0.9%", "nan", "inf", "ninety", "-90"])
def test_memory_threshold_out_of_range_is_one_line_naming_the_variable(raw):
    with pytest.raises(SettingsError) as info:
        from_env({**BROKER, "OOMCHECK_MEMORY_THRESHOLD": raw})
    message = str(info.value)
    assert message.startswith("OOMCHECK_MEMORY_THRESHOLD must be a share of the limit")
    assert "\n" not in message


def test_memory_and_queue_thresholds_reach_the_policy():
    defaults = from_env(BROKER).policy
    assert (defaults.memory_threshold, defaults.memory_samples) == (0.9, 2)
    assert (defaults.queue_orphan_after_s, defaults.ignored_queues) == (300.0, frozenset())
    policy = from_env(
        {
            **BROKER,
            "OOMCHECK_MEMORY_SAMPLES": "3",
            "OOMCHECK_QUEUE_ORPHAN_AFTER": "0",
            "OOMCHECK_IGNORED_QUEUES": "dead-letter, archive ,,",
        }
    ).policy
    assert policy.memory_samples == 3
    assert policy.queue_orphan_after_s == 0.0
    assert policy.ignored_queues == frozenset({"dead-letter", "archive"})
    with pytest.raises(SettingsError, match=r"^OOMCHECK_MEMORY_SAMPLES must be a whole number"):
        from_env({**BROKER, "OOMCHECK_MEMORY_SAMPLES": "0"})

"""The weekly digest: the week's deaths, top task types, lost tasks and the trend against the
week before, in one message that fits SNS's limits."""

from __future__ import annotations

import json

from oomcheck.model import Cause, Kind, TaskDeath, TaskHistory
from oomcheck.report import digest

NOW = 1_790_000_000.0
DAY = 86400.0


def _death(n: int, at: float, *, victims: int = 1, lost: int = 1, peak: float | None = None):
    return TaskDeath(
        incident_id=f"inc-{n}",
        at=at,
        kind=Kind.WORKER_LOST,
        cause=Cause.OOM_KILLED,
        worker=f"celery@w{n}",
        victims=victims,
        lost=lost,
        peak_share=peak,
    )


def _history() -> dict[str, TaskHistory]:
    # this week: reports.build in 3 deaths (one shared with media.resize); the week before: 2
    return {
        "reports.build": TaskHistory(
            "reports.build",
            deaths=(
                _death(1, NOW - 9 * DAY),
                _death(2, NOW - 8 * DAY),
                _death(3, NOW - 3 * DAY, peak=0.97),
                _death(4, NOW - 2 * DAY, victims=2, lost=2),
                _death(5, NOW - 1 * DAY),
            ),
        ),
        "media.resize": TaskHistory(
            "media.resize", deaths=(_death(5, NOW - 1 * DAY, victims=1, lost=0),)
        ),
    }


def test_the_digest_counts_the_week_ranks_task_types_and_gives_the_trend():
    built = digest.build(_history(), {}, "shop", NOW)
    # death 5 killed tasks of both types: one death
    assert (built.this.deaths, built.this.tasks_killed, built.this.lost) == (3, 5, 4)
    assert built.previous.deaths == 2
    assert built.trend == "up 50% from 2 the week before"
    assert [t.name for t in built.top] == ["reports.build", "media.resize"]
    text = digest.text(built)
    assert "DEATHS  3 (3 oom_killed); up 50% from 2 the week before" in text
    assert "TASKS   5 killed: 4 lost, 0 redelivered" in text
    assert "reports.build: 3 death(s), 4 killed, 4 lost, memory peaked at 97%" in text


def test_the_digest_fits_snss_limits_even_with_absurd_task_names():
    long = "x" * 5000
    history = {
        f"{long}{i}": TaskHistory(f"{long}{i}", deaths=(_death(i, NOW - DAY),)) for i in range(50)
    }
    request = digest.sns_request(digest.build(history, {}, "shop", NOW))
    assert digest.fits(request)
    assert len(request["Subject"]) <= 100 and "\n" not in request["Subject"]
    body = json.loads(request["Message"])
    machine = json.loads(body["default"])
    assert machine["schema"] == 1 and len(machine["digest"]["top_tasks"]) == 5
    attributes = {k: v["StringValue"] for k, v in request["MessageAttributes"].items()}
    assert attributes["kind"] == "digest" and attributes["action"] == "digest"


def test_a_quiet_week_says_so():
    built = digest.build({}, {}, "shop", NOW)
    assert built.trend == "none this week or the week before"
    assert "(no task died this week)" in digest.text(built)
    assert built.subject() == (
        "[oomcheck] weekly digest shop: 0 death(s), 0 task(s) lost, "
        "none this week or the week before"
    )

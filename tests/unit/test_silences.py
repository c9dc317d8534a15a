"""Silences end to end through run_once: detection goes on, messages are held while the silence
lasts, sent when it ends if the incident is still open, and never if it resolved meanwhile."""

from __future__ import annotations

import json

import pytest

from oomcheck.model import Kind
from oomcheck.report.table import render_table
from oomcheck.runner import run_once
from oomcheck.silences import commands
from oomcheck.silences.model import SilenceError, new_silence
from oomcheck.silences.store import FileSilences
from tests.unit.test_runner import W, _death_setup

HOUR = 3600.0


def _silence(deps, *matches: str, hours: float = 1.0) -> str:
    deps.silences = deps.silences or FileSilences(deps.settings.state_file + ".silences.json")
    out, _ = commands.add(
        deps.silences,
        None,
        matches=list(matches),
        comment="planned resize",
        now=deps.clock(),
        for_=f"{hours}h",
    )
    return str(out["id"])


def _worker_lost(report):
    [finding] = [f for f in report.findings if f.kind is Kind.WORKER_LOST]
    return finding


def test_a_silenced_death_is_detected_and_reported_but_its_alert_waits(tmp_path):
    # Given a worker that died while a silence matching it is active
    deps, _, _, publisher, clock = _death_setup(tmp_path)
    silence_id = _silence(deps, "worker=celery@w*", "kind=worker_lost")
    # When a run checks
    report = run_once(deps)
    # Then the incident is opened and reported with the silence's id, and nothing is sent
    finding = _worker_lost(report)
    assert finding.incident_id
    body = report.to_json()
    [row] = [f for f in body["findings"] if f["kind"] == "worker_lost"]
    assert row["silenced_by"] == silence_id
    assert body["alerts"] == [] and publisher.sent == []
    assert body["stats"]["alerts_held"] == 1
    assert body["sources"]["silences"] == "ok"
    assert report.exit_code == 2  # a silence holds messages, not findings
    assert f"silenced by {silence_id}" in render_table(report)
    audit = run_once(deps, "audit").to_json()
    [held] = [i for i in audit["incidents"] if i["id"] == finding.incident_id]
    assert held["silenced_by"] == silence_id
    # When the silence ends with the worker still dead
    clock.now += HOUR + 60
    after = run_once(deps)
    # Then the open goes out then, once
    assert [(a.kind, a.action, a.published) for a in after.alerts] == [
        ("worker_lost", "open", True)
    ]
    assert len(publisher.sent) == 1 and W in publisher.sent[0]
    assert "silenced_by" not in json.dumps(after.to_json()["findings"])
    clock.now += 60
    assert run_once(deps).alerts == ()
    assert len(publisher.sent) == 1


def test_expiring_a_silence_early_releases_the_alert(tmp_path):
    deps, _, _, publisher, clock = _death_setup(tmp_path)
    silence_id = _silence(deps, f"worker={W}", hours=8)
    run_once(deps)
    assert publisher.sent == []
    clock.now += 60
    commands.end(deps.silences, silence_id, clock())
    assert [a.published for a in run_once(deps).alerts] == [True]
    assert len(publisher.sent) == 1


def test_an_incident_that_resolved_during_the_silence_sends_nothing(tmp_path):
    # Given a silenced death
    deps, control, _, publisher, clock = _death_setup(tmp_path)
    _silence(deps, "kind=worker_lost")
    held = run_once(deps)
    incident_id = _worker_lost(held).incident_id
    # When a replacement worker brings the fleet back while the silence lasts, and it then ends
    control.add("celery@w2", 12)
    clock.now += 60
    resolved = run_once(deps)
    assert any(f.kind is Kind.WORKER_RECOVERED for f in resolved.findings)
    clock.now += HOUR
    run_once(deps)
    clock.now += 60
    run_once(deps)
    # Then nobody was paged for it, before or after
    assert publisher.sent == []
    state = deps.store.load()
    assert not state.incidents[incident_id].is_open
    assert state.incidents[incident_id].pending == ()


def test_a_silence_that_does_not_match_holds_nothing(tmp_path):
    deps, _, _, publisher, _ = _death_setup(tmp_path)
    _silence(deps, "worker=celery@other-*")
    report = run_once(deps)
    assert [a.published for a in report.alerts] == [True] and len(publisher.sent) == 1
    assert report.to_json()["stats"]["alerts_held"] == 0


def test_a_silence_store_that_fails_holds_nothing_and_says_so(tmp_path):
    class Broken(FileSilences):
        def read(self):
            raise OSError("disk gone")

    deps, _, _, publisher, _ = _death_setup(tmp_path)
    deps.silences = Broken(str(tmp_path / "s.json"))
    report = run_once(deps)
    assert len(publisher.sent) == 1
    assert report.to_json()["sources"]["silences"].startswith("error: OSError: disk gone")


@pytest.mark.parametrize(
    ("matches", "kwargs", "message"),
    [
        pytest.param([], {"for_": "1h"}, "at least one --match", id="no-matcher"),
        pytest.param(["worker=w"], {"for_": "1h", "comment": " "}, "needs --comment", id="blank"),
        pytest.param(["worker=w"], {}, "needs an end", id="no-end"),
        pytest.param(["worker=w"], {"for_": "1h", "until": "2030-01-01"}, "one of", id="both"),
        pytest.param(["worker"], {"for_": "1h"}, "use KEY=GLOB", id="no-glob"),
        pytest.param(["host=a"], {"for_": "1h"}, "'host' is not one of", id="unknown-key"),
        pytest.param(["severity=urgent"], {"for_": "1h"}, "matches no severity", id="no-sev"),
        pytest.param(["worker=w"], {"for_": "soon"}, "use a duration", id="bad-duration"),
        pytest.param(["worker=w"], {"until": "yesterday"}, "ISO-8601", id="bad-time"),
        pytest.param(["worker=w"], {"until": "2020-01-01T00:00Z"}, "already past", id="past"),
        pytest.param(["worker=w"], {"for_": "365d"}, "at most 90 days", id="too-long"),
    ],
)
def test_bad_silences_are_one_line_errors(matches, kwargs, message):
    kwargs = {"comment": "planned", **kwargs}
    with pytest.raises(SilenceError, match=message) as info:
        new_silence(matches, now=1_790_000_000.0, ident="sil-x", **kwargs)
    assert "\n" not in str(info.value)

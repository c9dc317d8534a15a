"""exitparse: ECS task-stopped events, Container Insights restarts and kernel OOM lines, driven by
the samples in events/, plus the malformed and hostile inputs the parsers must survive."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from oomcheck.exitparse import (
    MAX_CONTAINERS,
    MAX_MESSAGE_CHARS,
    Format,
    ecs_cause,
    eks_cause,
    parse_container_insights,
    parse_ecs_event,
    parse_kernel_line,
    parse_message,
)
from oomcheck.model import Cause

EVENTS = Path(__file__).resolve().parents[2] / "events"
# When the samples were logged (2025-11-24 13:51:40 UTC): near every time they carry.
LOGGED_AT = datetime(2025, 11, 24, 13, 51, 40, tzinfo=UTC).timestamp()


def sample(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


def iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# ------------------------------------------------------------------------------------- ECS


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(
            "ecs-task-stopped-oom.json",
            {"worker": (Cause.OOM_KILLED, 137, False), "log_router": (Cause.EXITED, 0, True)},
            id="oom",
        ),
        pytest.param(
            "ecs-task-stopped-sigkill.json", {"worker": (Cause.KILLED, 137, False)}, id="sigkill"
        ),
        pytest.param(
            "ecs-task-stopped-clean.json", {"worker": (Cause.EXITED, 0, True)}, id="clean"
        ),
        pytest.param(
            "ecs-task-stopped-error.json", {"worker": (Cause.EXITED, 1, False)}, id="error"
        ),
    ],
)
def test_ecs_samples(name: str, expected: dict[str, tuple[Cause, int, bool]]) -> None:
    event = sample(name)
    parsed = parse_message(json.dumps(event), timestamp=iso(event["time"]))
    assert parsed.format == Format.ECS and parsed.skipped == 0
    got = {e.process: (e.cause, e.exit_code, e.clean) for e in parsed.evidence}
    assert got == expected
    detail = event["detail"]
    task_id = detail["taskArn"].rsplit("/", 1)[1]
    cluster = detail["clusterArn"].rsplit("/", 1)[1]
    for evidence in parsed.evidence:
        assert evidence.source == "ecs"
        assert evidence.event_id == f"ecs:{cluster}/{task_id}/{evidence.process}"
        assert evidence.at == pytest.approx(iso(detail["stoppedAt"]))
        assert task_id in evidence.hosts
        assert f"exitCode {evidence.exit_code}" in evidence.text
        assert task_id[:12] in evidence.text and detail["stopCode"] in evidence.text


def test_ecs_oom_sample_names_the_task_address_and_the_oom_reason() -> None:
    event = sample("ecs-task-stopped-oom.json")
    worker = next(e for e in parse_ecs_event(event).evidence if e.process == "worker")
    assert "10.0.1.5" in worker.hosts
    assert "ip-10-0-1-5.eu-west-1.compute.internal" in worker.hosts
    assert worker.text.startswith(
        "exitCode 137 OutOfMemoryError: Container killed due to memory usage (task 1a2b3c4d5e6f"
    )


def test_ecs_bridge_mode_task_is_known_by_its_docker_hostname() -> None:
    # EC2 bridge networking: no ENI, no IP; Docker names the container after its id.
    evidence = parse_ecs_event(sample("ecs-task-stopped-sigkill.json")).evidence
    assert evidence[0].hosts == ("3f4e5d6c7b8a", "9f8e7d6c5b4a43219f8e7d6c5b4a3210")


@pytest.mark.parametrize(
    ("exit_code", "reason", "stop_code", "expected"),
    [
        pytest.param(137, "OutOfMemoryError: Container killed due to memory usage",
                     "EssentialContainerExited", (Cause.OOM_KILLED, False), id="oom"),
        pytest.param(137, "outofmemoryerror: container killed due to memory usage",
                     "UserInitiated", (Cause.OOM_KILLED, False), id="oom-any-case-any-stop"),
        pytest.param(None, "OutOfMemoryError: Container killed due to memory usage", "",
                     (Cause.OOM_KILLED, False), id="oom-without-exit-code"),
        pytest.param(137, None, "ServiceSchedulerInitiated", (Cause.KILLED, False),
                     id="sigkill-after-stop-timeout"),
        pytest.param(137, None, "EssentialContainerExited", (Cause.KILLED, False), id="sigkill"),
        pytest.param(0, None, "ServiceSchedulerInitiated", (Cause.EXITED, True), id="scale-in"),
        pytest.param(0, None, "UserInitiated", (Cause.EXITED, True), id="user-stop"),
        pytest.param(0, None, "SpotInterruption", (Cause.EXITED, True), id="spot"),
        pytest.param(0, None, "EssentialContainerExited", (Cause.EXITED, True),
                     id="exit-0-on-its-own"),
        pytest.param(143, None, "ServiceSchedulerInitiated", (Cause.KILLED, True),
                     id="sigterm-of-the-stop"),
        pytest.param(143, None, "EssentialContainerExited", (Cause.KILLED, True),
                     id="sigterm-of-a-sidecar"),
        pytest.param(143, None, "", (Cause.EXITED, False), id="sigterm-from-elsewhere"),
        pytest.param(1, "Essential container exited", "EssentialContainerExited",
                     (Cause.EXITED, False), id="error"),
        pytest.param(139, None, "UserInitiated", (Cause.EXITED, False), id="segfault"),
        pytest.param(None, None, "UserInitiated", (Cause.UNKNOWN, True), id="never-ran-stopped"),
        pytest.param(None, "CannotPullContainerError: ...", "TaskFailedToStart",
                     (Cause.UNKNOWN, True), id="failed-to-start"),
        pytest.param(None, None, "", (Cause.UNKNOWN, False), id="host-vanished"),
    ],
)  # fmt: skip
def test_ecs_cause_rules(
    exit_code: int | None, reason: str | None, stop_code: str, expected: tuple[Cause, bool]
) -> None:
    assert ecs_cause(exit_code, reason, stop_code) == expected


def test_ecs_running_task_is_not_evidence() -> None:
    event = sample("ecs-task-stopped-oom.json")
    event["detail"]["lastStatus"] = "RUNNING"
    parsed = parse_message(json.dumps(event))
    assert parsed == parsed.__class__(Format.ECS)


def test_ecs_event_ids_are_stable_across_versions_and_duplicates() -> None:
    event = sample("ecs-task-stopped-oom.json")
    later = copy.deepcopy(event)
    later["detail"]["version"] = event["detail"]["version"] + 1
    later["id"] = "another-delivery"
    first = {e.event_id for e in parse_ecs_event(event).evidence}
    assert first == {e.event_id for e in parse_ecs_event(later).evidence}
    assert first == {e.event_id for e in parse_ecs_event(copy.deepcopy(event)).evidence}


def test_ecs_stop_without_exit_code_does_not_hide_a_later_informative_version() -> None:
    # Given a STOPPED event whose container has neither exit code nor reason yet
    early = sample("ecs-task-stopped-oom.json")
    worker = early["detail"]["containers"][0]
    del worker["exitCode"], worker["reason"]
    early["detail"]["containers"] = [worker]
    # When a later version reports the OOM kill
    late = sample("ecs-task-stopped-oom.json")
    late["detail"]["version"] += 1
    # Then the two get different ids, so the caller's dedupe keeps the informative one
    (vague,) = parse_ecs_event(early).evidence
    informative = next(e for e in parse_ecs_event(late).evidence if e.process == "worker")
    assert vague.cause == Cause.UNKNOWN and vague.exit_code is None
    assert vague.event_id != informative.event_id
    assert informative.cause == Cause.OOM_KILLED


def test_ecs_container_filter_leaves_sidecars_out() -> None:
    event = sample("ecs-task-stopped-oom.json")
    parsed = parse_ecs_event(event, containers=("work*",))
    assert [e.process for e in parsed.evidence] == ["worker"]
    assert parsed.skipped == 0


def test_ecs_time_falls_back_to_the_event_time_then_the_log_timestamp() -> None:
    event = sample("ecs-task-stopped-oom.json")
    del event["detail"]["stoppedAt"], event["detail"]["executionStoppedAt"]
    assert parse_ecs_event(event).evidence[0].at == iso(event["time"])
    del event["time"]
    assert parse_ecs_event(event, timestamp=LOGGED_AT).evidence[0].at == LOGGED_AT
    parsed = parse_ecs_event(event)
    assert parsed.evidence == () and parsed.skipped == 1


def test_ecs_time_far_from_the_log_timestamp_is_not_trusted() -> None:
    event = sample("ecs-task-stopped-oom.json")
    event["detail"]["stoppedAt"] = "1999-01-01T00:00:00.000Z"
    assert parse_ecs_event(event, timestamp=LOGGED_AT).evidence[0].at == LOGGED_AT


# ----------------------------------------------------------------------- Container Insights


def test_eks_sample_reports_the_restart_once_and_never_the_stale_reason() -> None:
    records = sample("eks-container-insights-oomkilled.json")
    results = [parse_message(json.dumps(r)) for r in records]
    assert all(r.format == Format.EKS and r.skipped == 0 for r in results)
    # Records 0 (first sample: no count), 1 and 3 (count 0) carry "OOMKilled" too: stale.
    assert [len(r.evidence) for r in results] == [0, 0, 1, 0]
    (restart,) = results[2].evidence
    assert restart.source == "eks"
    assert (restart.cause, restart.exit_code, restart.clean) == (Cause.OOM_KILLED, 137, False)
    assert restart.hosts == ("celery-worker-6d5f7c9b8-x2k4p",)
    assert restart.process == "worker"
    assert restart.at == int(records[2]["Timestamp"]) / 1000
    new_container = records[2]["kubernetes"]["docker"]["container_id"]
    assert restart.event_id == f"eks:jobs/celery-worker-6d5f7c9b8-x2k4p/worker/{new_container[:16]}"
    assert "OOMKilled" in restart.text and "jobs/celery-worker-6d5f7c9b8-x2k4p" in restart.text


def test_eks_restart_id_is_stable_when_the_record_is_read_again() -> None:
    record = sample("eks-container-insights-oomkilled.json")[2]
    once = parse_container_insights(record).evidence
    again = parse_container_insights(json.loads(json.dumps(record))).evidence
    assert once == again


def test_eks_restart_without_container_id_is_named_by_its_timestamp() -> None:
    record = sample("eks-container-insights-oomkilled.json")[2]
    del record["kubernetes"]["docker"]
    (restart,) = parse_container_insights(record).evidence
    assert (
        restart.event_id == f"eks:jobs/celery-worker-6d5f7c9b8-x2k4p/worker/t{record['Timestamp']}"
    )


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        pytest.param("OOMKilled", (Cause.OOM_KILLED, 137, False), id="oom"),
        pytest.param("Error", (Cause.EXITED, None, False), id="error"),
        pytest.param("Completed", (Cause.EXITED, 0, True), id="completed"),
        pytest.param("ContainerCannotRun", (Cause.EXITED, None, False), id="cannot-run"),
        pytest.param(None, (Cause.UNKNOWN, None, False), id="no-reason"),
    ],
)
def test_eks_cause(reason: str | None, expected: tuple[Cause, int | None, bool]) -> None:
    assert eks_cause(reason) == expected
    record = sample("eks-container-insights-oomkilled.json")[2]
    record.pop("container_last_termination_reason")
    if reason is not None:
        record["container_last_termination_reason"] = reason
    (restart,) = parse_container_insights(record).evidence
    assert (restart.cause, restart.exit_code, restart.clean) == expected


def test_eks_container_filter() -> None:
    record = sample("eks-container-insights-oomkilled.json")[2]
    assert parse_container_insights(record, containers=("sidecar",)).evidence == ()
    assert len(parse_container_insights(record, containers=("work*",)).evidence) == 1


@pytest.mark.parametrize(
    "restarts",
    [pytest.param(-1, id="negative"), pytest.param("many", id="text"),
     pytest.param(True, id="bool"), pytest.param(1.5, id="fraction"),
     pytest.param(10**12, id="absurd")],
)  # fmt: skip
def test_eks_unusable_restart_count_is_skipped(restarts: object) -> None:
    record = sample("eks-container-insights-oomkilled.json")[2]
    record["number_of_container_restarts"] = restarts
    parsed = parse_message(json.dumps(record))
    assert parsed.evidence == () and parsed.skipped == 1


def test_eks_other_record_types_are_not_evidence() -> None:
    record = sample("eks-container-insights-oomkilled.json")[2]
    record["Type"] = "Pod"
    assert parse_message(json.dumps(record)).format == Format.OTHER


# ---------------------------------------------------------------------------------- kernel


def kernel_sample() -> list[str]:
    return (EVENTS / "kernel-oom.log").read_text().splitlines()


def test_kernel_sample_yields_every_kill_in_every_form_and_nothing_else() -> None:
    found = []
    for line in kernel_sample():
        parsed = parse_message(line, timestamp=LOGGED_AT, stream="i-0a1b2c3d4e5f67890")
        assert parsed.skipped == 0, line
        found += [(e.pid, e.process, e.hosts, e.at) for e in parsed.evidence]
    assert found == [
        (4321, "celery", ("ip-10-0-1-5",), LOGGED_AT),  # syslog, [uptime]
        (4388, "[celeryd: celer", ("ip-10-0-1-5",), LOGGED_AT),  # journald short, setproctitle
        (5120, "python3", ("ip-10-0-2-7",), iso("2025-11-24T13:53:10.123456+00:00")),  # RFC 3339
        (6001, "python", ("ip-10-0-3-9.eu-west-1.compute.internal",), 1763992450.123456),  # JSON
        (7001, "celery", ("ip-10-0-1-6",), LOGGED_AT),  # old kernel: second line of a pair
        (8002, "celery", ("i-0a1b2c3d4e5f67890",), LOGGED_AT),  # bare dmesg: host = stream
    ]


def test_kernel_evidence_fields() -> None:
    line = kernel_sample()[4]
    (kill,) = parse_kernel_line(line, timestamp=LOGGED_AT).evidence
    assert kill.source == "kernel"
    assert (kill.cause, kill.exit_code, kill.clean) == (Cause.OOM_KILLED, 137, False)
    assert kill.event_id.startswith("kernel:ip-10-0-1-5:4321:")
    assert kill.text == (
        "Memory cgroup out of memory: Killed process 4321 (celery), anon-rss 989 MiB on ip-10-0-1-5"
    )


def test_kernel_same_kill_in_syslog_and_journald_forms_has_one_id() -> None:
    kill = (
        "Memory cgroup out of memory: Killed process 4321 (celery) total-vm:1398212kB, "
        "anon-rss:1012736kB, file-rss:14080kB, shmem-rss:0kB, UID:0 pgtables:2204kB oom_score_adj:0"
    )
    syslog = f"Nov 24 13:50:29 ip-10-0-1-5 kernel: [12345.679012] {kill}"
    journal = json.dumps(
        {
            "_HOSTNAME": "ip-10-0-1-5.eu-west-1.compute.internal",
            "__REALTIME_TIMESTAMP": "1763992229679012",
            "_TRANSPORT": "kernel",
            "MESSAGE": kill,
        }
    )
    (a,) = parse_message(syslog, timestamp=LOGGED_AT).evidence
    (b,) = parse_message(journal, timestamp=LOGGED_AT).evidence
    assert a.event_id == b.event_id
    # ...while the next kill of a reused pid is another event
    other = syslog.replace("anon-rss:1012736kB", "anon-rss:1012740kB")
    assert parse_message(other, timestamp=LOGGED_AT).evidence[0].event_id != a.event_id


def test_kernel_journald_message_as_byte_list() -> None:
    message = "Out of memory: Killed process 77 (celery) total-vm:10kB, anon-rss:5kB"
    record = {"_HOSTNAME": "node-1", "MESSAGE": list(message.encode())}
    (kill,) = parse_message(json.dumps(record), timestamp=LOGGED_AT).evidence
    assert (kill.pid, kill.process, kill.hosts) == (77, "celery", ("node-1",))


def test_kernel_line_in_a_shippers_log_field() -> None:
    line = kernel_sample()[4]
    (kill,) = parse_message(json.dumps({"log": line}), timestamp=LOGGED_AT).evidence
    assert (kill.pid, kill.hosts) == (4321, ("ip-10-0-1-5",))


def test_kernel_rfc5424_form() -> None:
    line = (
        "<3>1 2025-11-24T13:50:29.679012Z ip-10-0-1-5 kernel - - - Out of memory: Killed "
        "process 4321 (celery) total-vm:1398212kB, anon-rss:1012736kB"
    )
    (kill,) = parse_kernel_line(line, timestamp=LOGGED_AT).evidence
    assert (kill.pid, kill.hosts, kill.at) == (4321, ("ip-10-0-1-5",), 1763992229.679012)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("celery[1]: worker: Killed process 12 (child) on shutdown", id="app-log"),
        pytest.param(
            "Nov 24 13:55:00 ip-10-0-1-6 kernel: Out of memory: Kill process 7001 (celery) "
            "score 912 or sacrifice child",
            id="old-kernel-first-line",
        ),
        pytest.param(
            "Nov 24 13:50:29 ip-10-0-1-5 kernel: oom_reaper: reaped process 4321 (celery), now "
            "anon-rss:0kB",
            id="reaper",
        ),
    ],
)
def test_kernel_lines_that_are_not_kills(line: str) -> None:
    assert parse_message(line, timestamp=LOGGED_AT).evidence == ()


def test_kernel_syslog_line_without_a_log_timestamp_is_skipped() -> None:
    # "Nov 24 13:50:29" has no year and no zone: without the log event's time there is none.
    parsed = parse_kernel_line(kernel_sample()[4])
    assert parsed.evidence == () and parsed.skipped == 1


def test_kernel_rfc3339_time_far_from_the_log_timestamp_is_not_trusted() -> None:
    line = kernel_sample()[8].replace("2025-11-24", "2021-01-01")
    assert parse_kernel_line(line, timestamp=LOGGED_AT).evidence[0].at == LOGGED_AT


@pytest.mark.parametrize(
    "pid", [pytest.param("0", id="zero"), pytest.param("99999999", id="above-pid-max")]
)
def test_kernel_impossible_pid_is_skipped(pid: str) -> None:
    line = kernel_sample()[4].replace("process 4321", f"process {pid}")
    parsed = parse_kernel_line(line, timestamp=LOGGED_AT)
    assert parsed.evidence == () and parsed.skipped == 1


def test_kernel_hostile_host_is_dropped_not_trusted() -> None:
    line = kernel_sample()[4].replace("ip-10-0-1-5", "évil\u202ehost")
    (kill,) = parse_kernel_line(line, timestamp=LOGGED_AT).evidence
    assert kill.hosts == ()


# ------------------------------------------------------------------ malformed and hostile input


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("{", id="broken-json"),
        pytest.param("{" + '"a":' * 20000 + "1", id="deep-broken-json"),
        pytest.param('{"a":' + "[" * 30000 + "]" * 30000 + "}", id="deeply-nested"),
        pytest.param('{"detail-type": "ECS Task State Change", "x": ' + "[" * 65 + "]" * 65
                     + ', "detail": {"lastStatus": "STOPPED"}}', id="nested-past-the-limit"),
        pytest.param("x" * (MAX_MESSAGE_CHARS + 1), id="too-long"),
        pytest.param(None, id="not-a-string"),
        pytest.param(b"Killed process 1 (celery)", id="bytes"),
        pytest.param('{"detail-type": "ECS Task State Change", "detail": 5}', id="ecs-no-detail"),
        pytest.param('{"Type": "Container", "kubernetes": {}, "number_of_container_restarts": 1}',
                     id="eks-no-names"),
        pytest.param('{"MESSAGE": [300, 1], "_HOSTNAME": "h"}', id="journald-bad-bytes"),
    ],
)  # fmt: skip
def test_malformed_messages_are_counted_not_raised(message: object) -> None:
    parsed = parse_message(message, timestamp=LOGGED_AT)
    assert parsed.evidence == ()
    assert parsed.skipped >= 1


def test_malformed_parts_of_an_ecs_event_are_skipped_and_the_rest_used() -> None:
    event = sample("ecs-task-stopped-oom.json")
    good = event["detail"]["containers"][0]
    event["detail"]["containers"] = [
        "not a container",
        {"name": ""},
        {**good, "name": "bad-code", "exitCode": "kill"},
        {**good, "name": "bool-code", "exitCode": True},
        {**good, "name": "huge-code", "exitCode": 1e300},
        {**good, "name": "ctl\x1b[31m\nname", "reason": "OutOfMemoryError\r\nSubject: x"},
        good,
    ]
    parsed = parse_ecs_event(event)
    assert parsed.skipped == 5
    assert [e.process for e in parsed.evidence] == ["ctl [31m name", "worker"]
    hostile = parsed.evidence[0]
    assert hostile.text.isprintable() and hostile.event_id.isprintable()
    assert hostile.cause == Cause.OOM_KILLED


def test_ecs_event_with_too_many_containers_is_bounded() -> None:
    event = sample("ecs-task-stopped-oom.json")
    good = event["detail"]["containers"][0]
    event["detail"]["containers"] = [{**good, "name": f"c{i}"} for i in range(500)]
    parsed = parse_ecs_event(event)
    assert len(parsed.evidence) == MAX_CONTAINERS
    assert parsed.skipped == 500 - MAX_CONTAINERS


def test_text_is_bounded() -> None:
    event = sample("ecs-task-stopped-oom.json")
    event["detail"]["stoppedReason"] = "r" * 250
    event["detail"]["containers"][0]["reason"] = "OutOfMemoryError: " + "m" * 230
    for evidence in parse_ecs_event(event).evidence:
        assert len(evidence.text) <= 300


def test_unrelated_messages_are_other() -> None:
    for message in ("", "GET /health 200", '{"level": "info", "msg": "ok"}', "[1, 2]"):
        parsed = parse_message(message, timestamp=LOGGED_AT)
        assert parsed.evidence == ()
    assert parse_message("GET /health 200").format == Format.OTHER
    assert parse_message('{"level": "info"}').format == Format.OTHER


def test_no_mutation_of_the_samples_makes_a_parser_raise() -> None:
    # Truncations, byte flips and splices of every sample: whatever comes out, nothing raises.
    texts = [(EVENTS / n).read_text() for n in sorted(p.name for p in EVENTS.iterdir())]
    texts += [json.dumps(r) for r in sample("eks-container-insights-oomkilled.json")]
    texts += kernel_sample()
    rng = random.Random(20251124)
    alphabet = '{}[]":,0123456789-. \\\nxKilled process()tT'
    for _ in range(3000):
        text = rng.choice(texts)
        chars = list(text)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(chars) + 1)
            op = rng.random()
            if op < 0.4 and chars:
                del chars[pos : pos + rng.randint(1, 40)]
            elif op < 0.8:
                chars.insert(pos, rng.choice(alphabet))
            else:
                chars = chars[:pos]
        parse_message("".join(chars), timestamp=LOGGED_AT, stream="s")

"""correlate: which worker a piece of exit evidence belongs to (IP, EC2 name, pod name, Docker id,
pid, the configured map), fed both with hand-made evidence and with what the parsers make of the
samples in events/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oomcheck.detect.correlate import WorkerIdentity, host_keys, is_celery_process, match_evidence
from oomcheck.exitparse import parse_message
from oomcheck.model import Cause, ExitEvidence

EVENTS = Path(__file__).resolve().parents[2] / "events"
AT = 1_763_992_300.0


def ev(*hosts: str, pid: int | None = None, process: str | None = None) -> ExitEvidence:
    return ExitEvidence(
        source="test",
        event_id=f"e:{','.join(hosts)}:{pid}",
        at=AT,
        cause=Cause.OOM_KILLED,
        exit_code=137,
        text="test",
        hosts=hosts,
        pid=pid,
        process=process,
    )


def claims(
    evidence: ExitEvidence,
    workers: list[WorkerIdentity],
    worker_map: dict[str, str] | None = None,
) -> list[str]:
    matched, unmatched = match_evidence([evidence], workers, worker_map)
    assert bool(matched) != bool(unmatched)
    return sorted(matched)


# ----------------------------------------------------------------------------------- hosts


@pytest.mark.parametrize(
    ("evidence_host", "nodename"),
    [
        pytest.param("10.0.1.5", "celery@ip-10-0-1-5", id="ip-to-ec2-name"),
        pytest.param("10.0.1.5", "celery@ip-10-0-1-5.eu-west-1.compute.internal", id="ip-to-fqdn"),
        pytest.param("10.0.1.5", "worker@10.0.1.5", id="ip-to-ip"),
        pytest.param("ip-10-0-1-5", "celery@10.0.1.5", id="ec2-name-to-ip"),
        pytest.param("ip-10-0-1-5", "celery@ip-10-0-1-5.ec2.internal", id="short-to-fqdn"),
        pytest.param("ip-10-0-1-5.eu-west-1.compute.internal", "celery@ip-10-0-1-5",
                     id="fqdn-to-short"),
        pytest.param("IP-10-0-1-5.EC2.INTERNAL.", "celery@ip-10-0-1-5", id="case-and-root-dot"),
        pytest.param("celery-worker-6d5f7c9b8-x2k4p", "celery@celery-worker-6d5f7c9b8-x2k4p",
                     id="pod"),
        pytest.param("3f4e5d6c7b8a", "celery@3f4e5d6c7b8a", id="docker-id"),
        pytest.param("worker-1.example.com", "celery@worker-1", id="fqdn-to-bare-name"),
        pytest.param("worker-1", "celery@worker-1.example.com", id="bare-name-to-fqdn"),
    ],
)  # fmt: skip
def test_host_forms_match(evidence_host: str, nodename: str) -> None:
    other = WorkerIdentity("celery@ip-10-0-9-9")
    assert claims(ev(evidence_host), [WorkerIdentity(nodename), other]) == [nodename]


@pytest.mark.parametrize(
    ("evidence_host", "nodename"),
    [
        pytest.param("10.0.1.6", "celery@ip-10-0-1-5", id="other-ip"),
        pytest.param("10", "celery@10.0.1.5", id="an-address-is-not-cut-at-its-dots"),
        pytest.param("10.0.1.5", "celery@10.0.1.55", id="prefix-of-an-address"),
        pytest.param("worker-1.staging.example.com", "celery@worker-1.prod.example.com",
                     id="same-label-other-domain"),
        pytest.param("celery-worker-6d5f7c9b8-x2k4p", "celery@celery-worker-6d5f7c9b8-abcde",
                     id="other-pod-of-the-deployment"),
    ],
)  # fmt: skip
def test_hosts_that_do_not_match(evidence_host: str, nodename: str) -> None:
    assert claims(ev(evidence_host), [WorkerIdentity(nodename)]) == []


def test_host_keys_of_an_address_worker() -> None:
    assert host_keys("celery@10.0.1.5") == frozenset({"celery@10.0.1.5", "10.0.1.5", "ip-10-0-1-5"})


def test_evidence_that_matches_nothing_stays_unmatched() -> None:
    evidence = [ev("10.0.7.7"), ev("some-pod"), ev(pid=31337)]
    workers = [WorkerIdentity("celery@ip-10-0-1-5", pid=100, pool_pids=(101,))]
    matched, unmatched = match_evidence(evidence, workers)
    assert matched == {} and unmatched == evidence


# ------------------------------------------------------------------------------------- pid


TWO_ON_ONE_HOST = [
    WorkerIdentity("fast@ip-10-0-1-5", pid=100, pool_pids=(101, 102)),
    WorkerIdentity("slow@ip-10-0-1-5", pid=200, pool_pids=(201,)),
    WorkerIdentity("celery@ip-10-0-2-7", pid=100, pool_pids=(101,)),
]


@pytest.mark.parametrize(
    ("pid", "process", "expected"),
    [
        pytest.param(100, "celery", ["fast@ip-10-0-1-5"], id="main-pid"),
        pytest.param(102, "[celeryd: celer", ["fast@ip-10-0-1-5"], id="pool-pid"),
        pytest.param(201, "python3", ["slow@ip-10-0-1-5"], id="pool-pid-of-the-other"),
        pytest.param(999, "celery", [], id="unknown-pid-two-workers"),
    ],
)
def test_two_workers_on_one_host_are_told_apart_by_pid(
    pid: int, process: str, expected: list[str]
) -> None:
    # the same pids on another host do not confuse it
    assert claims(ev("ip-10-0-1-5", pid=pid, process=process), TWO_ON_ONE_HOST) == expected


@pytest.mark.parametrize(
    ("process", "expected"),
    [
        pytest.param("celery", ["celery@ip-10-0-2-7"], id="celery"),
        pytest.param("[celeryd: celer", ["celery@ip-10-0-2-7"], id="setproctitle"),
        pytest.param("python3", ["celery@ip-10-0-2-7"], id="python"),
        pytest.param("java", [], id="not-celery"),
    ],
)
def test_unknown_pid_on_a_single_worker_host(process: str, expected: list[str]) -> None:
    # A child forked since the last run has a pid the roster never saw.
    assert claims(ev("10.0.2.7", pid=4321, process=process), TWO_ON_ONE_HOST) == expected


def test_pid_alone_only_when_it_is_unique() -> None:
    assert claims(ev(pid=201), TWO_ON_ONE_HOST) == ["slow@ip-10-0-1-5"]
    assert claims(ev(pid=101), TWO_ON_ONE_HOST) == []  # two workers have a child 101


def test_is_celery_process() -> None:
    assert all(map(is_celery_process, ["celery", "[celeryd: celer", "python3.11", None]))
    assert not any(map(is_celery_process, ["java", "postgres"]))


# ------------------------------------------------------------------------------- the map


BATCH = [
    WorkerIdentity("celery@batch-a", pid=10),
    WorkerIdentity("celery@batch-b", pid=20),
    WorkerIdentity("celery@ip-10-0-9-7", pid=30),
]


def test_worker_map_globs() -> None:
    worker_map = {"10.0.9.*": "celery@batch-*"}
    assert claims(ev("10.0.9.7"), BATCH, worker_map) == ["celery@batch-a", "celery@batch-b"]
    # narrowed by pid like any other host match
    assert claims(ev("10.0.9.7", pid=20), BATCH, worker_map) == ["celery@batch-b"]


def test_worker_map_decides_alone_when_it_names_a_worker() -> None:
    # Without the map, the address would match celery@ip-10-0-9-7 by name.
    assert claims(ev("10.0.9.7"), BATCH) == ["celery@ip-10-0-9-7"]
    assert claims(ev("10.0.9.7"), BATCH, {"10.0.9.7": "celery@batch-a"}) == ["celery@batch-a"]
    # a map entry that names no live worker leaves the host rules in force
    assert claims(ev("10.0.9.7"), BATCH, {"10.0.9.7": "celery@gone"}) == ["celery@ip-10-0-9-7"]


def test_worker_map_sees_every_form_of_the_host() -> None:
    worker_map = {"ip-10-0-9-*": "celery@batch-a", "i-0a1b*": "celery@batch-b"}
    assert claims(ev("10.0.9.8"), BATCH, worker_map) == ["celery@batch-a"]
    assert claims(ev("ip-10-0-9-8.ec2.internal"), BATCH, worker_map) == ["celery@batch-a"]
    # a kernel line whose host is the agent's {instance_id} stream name
    assert claims(ev("i-0a1b2c3d4e5f67890"), BATCH, worker_map) == ["celery@batch-b"]


# ------------------------------------------------------------------- the samples, end to end


def test_samples_find_their_workers() -> None:
    roster = [
        WorkerIdentity(
            "celery@ip-10-0-1-5.eu-west-1.compute.internal", pid=4300, pool_pids=(4321,)
        ),
        WorkerIdentity("celery@3f4e5d6c7b8a", pid=1),
        WorkerIdentity("celery@celery-worker-6d5f7c9b8-x2k4p", pid=7),
        WorkerIdentity("celery@ip-10-0-2-7", pid=5100, pool_pids=(5120,)),
        WorkerIdentity("celery@ip-10-0-3-9", pid=6000),
    ]
    evidence = [
        *parse_message((EVENTS / "ecs-task-stopped-oom.json").read_text()).evidence,
        *parse_message((EVENTS / "ecs-task-stopped-sigkill.json").read_text()).evidence,
        *parse_message((EVENTS / "ecs-task-stopped-error.json").read_text()).evidence,
    ]
    for record in json.loads((EVENTS / "eks-container-insights-oomkilled.json").read_text()):
        evidence += parse_message(json.dumps(record)).evidence
    for line in (EVENTS / "kernel-oom.log").read_text().splitlines():
        evidence += parse_message(line, timestamp=AT, stream="i-0a1b2c3d4e5f67890").evidence
    matched, unmatched = match_evidence(evidence, roster)
    found = {name: sorted(f"{e.source}:{e.pid or e.process}" for e in items)
             for name, items in matched.items()}  # fmt: skip
    assert found == {
        "celery@ip-10-0-1-5.eu-west-1.compute.internal": [
            "ecs:log_router",
            "ecs:worker",
            "kernel:4321",  # the pool child
            "kernel:4388",  # a child forked since: the only worker on that host
        ],
        "celery@3f4e5d6c7b8a": ["ecs:worker"],  # bridge networking: the Docker id
        "celery@celery-worker-6d5f7c9b8-x2k4p": ["eks:worker"],
        "celery@ip-10-0-2-7": ["kernel:5120"],
        "celery@ip-10-0-3-9": ["kernel:6001"],  # journald's FQDN hostname
    }
    assert sorted(f"{e.source}:{e.pid or e.event_id}" for e in unmatched) == [
        "ecs:ecs:celery-prod/7e8f9a0b1c2d43e4f5a6b7c8d9e0f1a2/worker",  # 10.0.3.42: no worker
        "kernel:7001",  # ip-10-0-1-6: no worker
        "kernel:8002",  # only the instance id is known
    ]

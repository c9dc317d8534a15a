"""Broker presence: whose connections CLIENT LIST shows, decided where the listing proves it."""

from __future__ import annotations

import pytest

from oomcheck.sources.presence.owners import Connection, Member, attribute, parse_client_list

NOW = 10_000.0


def conn(ip: str, born: float, *, pubsub: bool = True, name: str = "") -> Connection:
    return Connection(ip=ip, age_s=float(int(NOW - born)), pubsub=pubsub, name=name)


def judge(connections, *members):
    return attribute(connections, list(members), NOW)


def test_a_worker_alone_on_its_address_is_present_while_a_subscription_from_it_is_open():
    w = Member("celery@ip-10-0-1-5", boot_at=5_000, answered=False)
    other = [conn("10.0.1.9", 5_000)]
    assert judge([conn("10.0.1.5", 9_000), *other], w)[w.name].present is True
    gone = judge(other, w)[w.name]
    assert gone.present is False and "10.0.1.5" in gone.evidence
    # a producer on the same address (a web app in the same task) proves nothing
    producer = conn("10.0.1.5", 9_990, pubsub=False)
    assert judge([producer, *other], w)[w.name].present is False


def test_the_checkers_own_connections_never_count():
    w = Member("celery@ip-10-0-1-5", boot_at=5_000, answered=False)
    mine = conn("10.0.1.5", 9_990, name="oomcheck")
    assert judge([mine], w)[w.name].present is False


def test_a_connection_named_after_the_worker_is_proof():
    w = Member("celery@pod-a", boot_at=5_000, answered=False)
    assert judge([conn("10.9.9.9", 9_000, name="celery@pod-a")], w)[w.name].present is True


def test_workers_sharing_a_host_are_told_apart_by_their_start():
    dead = Member("a@host", boot_at=1_000, answered=False)
    live = Member("b@host", boot_at=2_000, answered=True)
    busy = Member("c@host", boot_at=3_000, answered=False)
    listing = [
        conn("127.0.0.1", 2_001),
        conn("127.0.0.1", 3_001),
        conn("127.0.0.1", 500, pubsub=False),
    ]
    found = judge(listing, dead, live, busy)
    assert found["a@host"].present is False
    assert found["c@host"].present is True
    assert "b@host" not in found  # it answered: nothing to judge


def test_workers_started_together_cannot_be_told_apart():
    a = Member("a@host", boot_at=1_000, answered=False)
    b = Member("b@host", boot_at=1_003, answered=True)
    found = judge([conn("127.0.0.1", 1_004)], a, b)
    assert found["a@host"].present is None
    assert "cannot tell it apart from b@host" in found["a@host"].evidence


def test_reconnected_connections_prove_nothing():
    # the broker failed over: every connection is younger than every worker
    a = Member("a@host", boot_at=1_000, answered=False)
    b = Member("b@host", boot_at=2_000, answered=True)
    found = judge([conn("127.0.0.1", 9_000), conn("127.0.0.1", 9_000)], a, b)
    assert found["a@host"].present is None and "reopened" in found["a@host"].evidence


@pytest.mark.parametrize(
    ("entries", "db", "expected"),
    [
        pytest.param(
            [{"addr": "10.0.0.1:5000", "age": "7", "db": "0", "psub": "1"}], 0, 1, id="ok"
        ),
        pytest.param([{"addr": "10.0.0.1:5000", "age": "7", "db": "3"}], 0, 0, id="other-db"),
        pytest.param([{"addr": "[::1]:5000", "age": "7", "db": "0"}], None, 1, id="ipv6"),
        pytest.param([{"addr": "10.0.0.1:5000", "age": "x", "db": "0"}], 0, 0, id="bad-age"),
        pytest.param([{"age": "7", "db": "0"}], 0, 0, id="no-addr"),
    ],
)
def test_parse_client_list(entries, db, expected):
    parsed = parse_client_list(entries, db)
    assert len(parsed) == expected
    if parsed:
        assert parsed[0].age_s == 7.0


def test_a_worker_never_seen_answering_is_judged_only_by_whether_any_subscription_remains():
    from oomcheck.sources.presence.owners import Connection, Member, attribute

    stranger = Member("celery@newcomer", None, False)
    sub = Connection(ident="7", ip="10.0.0.9", name="", age_s=40, pubsub=True)
    # its start is unknown: an open subscription on its host may be its own
    (seen,) = attribute([sub], [stranger], now=1000.0).values()
    assert seen.present is None
    # none at all: it holds none
    (gone,) = attribute([], [stranger], now=1000.0).values()
    assert gone.present is False

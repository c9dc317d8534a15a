"""Busy or dead among workers sharing an address, by what the counts of their pub/sub
connections prove (oomcheck.sources.presence.owners: learn_shares, then attribute)."""

from __future__ import annotations

import pytest

from oomcheck.sources.presence.owners import Connection, Member, Share, attribute, learn_shares

NOW = 10_000.0
HOST = "10.0.1.7"


def subs(n: int, ip: str = HOST, *, born: float = 9_000.0) -> list[Connection]:
    return [Connection(ip, NOW - born, True) for _ in range(n)]


def workers(*answered: bool, share: int | None = 2, host: str = "ip-10-0-1-7") -> list[Member]:
    # started within a second of each other: ages prove nothing
    return [
        Member(f"w{i}@{host}", boot_at=9_000.0 + i * 0.5, answered=a, share=share)
        for i, a in enumerate(answered)
    ]


def test_shares_are_learned_while_every_worker_on_the_address_answers():
    # Given three workers started together, gossip on: two pub/sub connections each
    members = workers(True, True, True, share=None)
    listing = [
        *subs(6),
        Connection(HOST, 10.0, False),  # a producer: not a subscription
        Connection(HOST, 10.0, True, name="oomcheck"),  # the checker's own
        *subs(4, "10.0.1.8"),  # another address
    ]
    assert learn_shares(listing, members) == {m.name: Share(2) for m in members}


def test_a_new_worker_gets_what_the_address_holds_beyond_the_known_shares():
    known = workers(True, True, share=2)
    new = Member("w9@ip-10-0-1-7", 9_900.0, True)  # --without-gossip: one
    assert learn_shares(subs(5), [*known, new]) == {new.name: Share(1)}


@pytest.mark.parametrize(
    ("answered", "count"),
    [
        pytest.param((True, False), 4, id="a worker silent: shares unknown"),
        pytest.param((True, True, True), 7, id="an uneven count: no even split"),
    ],
)
def test_nothing_is_learned_where_the_count_does_not_prove_it(answered, count):
    assert learn_shares(subs(count), workers(*answered, share=None)) == {}


def test_one_silent_worker_whose_share_closed_is_dead_whatever_the_start_times():
    members = workers(True, False, True)
    found = attribute(subs(4), members, NOW)
    dead = found["w1@ip-10-0-1-7"]
    assert dead.present is False
    assert dead.evidence == (
        "broker: 1 of 3 workers' subscriptions from 10.0.1.7 closed (4 of 6 open); "
        "the other 2 answered"
    )


def test_one_silent_worker_with_every_subscription_open_is_alive():
    found = attribute(subs(6), workers(True, False, True), NOW)
    assert found["w1@ip-10-0-1-7"].present is True


def test_workers_without_an_address_in_their_names_count_on_their_host():
    members = workers(False, True, host="oomcheck-test")
    found = attribute([*subs(2, "127.0.0.1"), *subs(2, "10.9.9.9", born=100.0)], members, NOW)
    # 10.9.9.9 is nobody's known address, so it counts as "the host" too: 4 of 4, alive
    assert found["w0@oomcheck-test"].present is True
    assert attribute(subs(2, "127.0.0.1"), members, NOW)["w0@oomcheck-test"].present is False


@pytest.mark.parametrize(
    ("members", "count"),
    [
        pytest.param(workers(False, False, True), 4, id="two silent, one share gone"),
        pytest.param(workers(True, False, True, share=None), 4, id="shares not learned"),
        pytest.param(workers(True, False, True), 3, id="a count no share explains"),
    ],
)
def test_counts_that_prove_nothing_leave_it_to_ages_which_cannot_tell(members, count):
    found = attribute(subs(count), members, NOW)
    silent = [m.name for m in members if not m.answered]
    assert {n: found[n].present for n in silent} == dict.fromkeys(silent)
    assert all("cannot tell" in found[n].evidence for n in silent)


def test_a_worker_that_names_its_connections_is_known_by_name_alive_or_dead():
    # Given a worker whose connections carry its nodename, among unnamed workers on its host
    name = "named@pod-a"
    listing = [Connection(HOST, 10.0, True, name=name), Connection(HOST, 10.0, False, name=name)]
    members = [Member(name, 9_000.0, True), *workers(True, share=None)]
    # When it answers: its share is its named subscriptions, and that it names them
    assert learn_shares([*listing, *subs(2)], members)[name] == Share(1, named=True)
    # Then while silent it lives as long as a named connection is open, and is dead once none is
    silent = Member(name, 9_000.0, False, share=1, named=True)
    assert attribute(listing, [silent], NOW)[name].present is True
    gone = attribute(subs(2), [silent, *workers(True)], NOW)[name]
    assert gone.present is False
    assert gone.evidence == "broker: no connection named after it is open any more"


def test_the_roster_keeps_what_was_learned_across_runs():
    from oomcheck.model import WorkerStatus
    from oomcheck.model.state import WorkerRecord
    from oomcheck.store.codec import worker_from_json, worker_to_json

    record = WorkerRecord(
        "w@h",
        7,
        1.0,
        "solo",
        (),
        WorkerStatus.ALIVE,
        1.0,
        1.0,
        subscriptions=2,
        named_connections=True,
    )
    assert worker_from_json(worker_to_json(record)) == record

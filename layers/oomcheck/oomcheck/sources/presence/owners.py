"""Busy or dead? Which silent workers still hold their broker connections. Pure.

A worker whose main loop is blocked by its task (solo pool, a threads pool under a CPU-bound task,
gevent with a greedy greenlet) does not answer remote control, but its connections to the Redis
broker stay open; within a second of SIGKILL the kernel closes them and they vanish from
``CLIENT LIST`` (FACTS.md, "Broker presence"). What ``CLIENT LIST`` does not say is whose a
connection is: it shows the client's address, the connection's age and its subscriptions. So a
silent worker is judged only by what the listing proves:

1. by name: a connection named after the worker's nodename (an app that sets
   ``broker_transport_options={"client_name": ...}`` to it) is the worker's;
2. by address: a worker whose nodename encodes its address (``ip-10-0-1-5``, as ECS awsvpc and EC2
   give) and that is the only known worker there owns every pub/sub connection from that address
   (a worker subscribes to its pidbox for life; producers sharing the address only publish);
3. by count, where workers share an address: while every worker there answers, each one's share
   of the address's pub/sub connections is learned (:func:`learn_shares`); when one is silent,
   every other worker there answered and the address holds exactly its share fewer, it is dead;
   exactly as many, it lives. Whatever the pools or start times;
4. by age, where workers share an address (EC2 with several workers, every test on 127.0.0.1):
   a worker subscribes to its pidbox within seconds of starting, so a pub/sub connection born in
   its start window is its own, if no other worker started in that window and every worker that
   answered owns one in its own window (else the broker has reconnected everyone since and ages
   prove nothing).
Anything else is "cannot tell" (None): detection then behaves as it would without this source.
The checker's own connections are named ``oomcheck`` and never counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from oomcheck.detect.correlate import host_forms
from oomcheck.model import Presence

OWN_NAME = "oomcheck"
# A worker's connections open after its boot: Celery's uptime is whole seconds, a connection's age
# too, and bootsteps take a moment before the pidbox subscribes.
WINDOW_BEFORE_S = 2.0
WINDOW_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class Connection:
    """One line of ``CLIENT LIST``."""

    ip: str
    age_s: float
    pubsub: bool
    name: str = ""
    ident: str = ""

    @property
    def own(self) -> bool:
        return self.name.startswith(OWN_NAME)


@dataclass(frozen=True, slots=True)
class Member:
    """A worker the roster knows: its nodename, boot time (broker clock) and whether it answered."""

    name: str
    # None: never seen answering (a worker named only by a STARTED record), its start unknown
    boot_at: float | None
    answered: bool
    # its long-lived pub/sub connections to the broker (pidbox, event consumer), as learned while
    # every worker on its address answered; None: not learned yet
    share: int | None = None
    # its connections carry its nodename as their name (oomcheck.naming), as learned while it
    # answered: once none does, it is dead
    named: bool = False


def parse_client_list(entries: Iterable[Mapping[str, object]], db: int | None) -> list[Connection]:
    """redis-py's ``client_list()`` dicts -> connections to ``db`` (None: every db). Malformed
    lines are skipped."""
    out: list[Connection] = []
    for entry in entries:
        try:
            if db is not None and int(str(entry.get("db", db))) != db:
                continue
            addr = str(entry["addr"])
            ip = addr.rsplit(":", 1)[0].strip("[]")
            subs = int(str(entry.get("sub", 0))) + int(str(entry.get("psub", 0)))
            out.append(
                Connection(
                    ip,
                    float(str(entry["age"])),
                    subs > 0,
                    str(entry.get("name") or ""),
                    # the server's id of the connection: what watch mode compares between polls
                    str(entry.get("id") or ""),
                )
            )
        except (KeyError, ValueError):
            continue
    return out


def attribute(
    connections: Sequence[Connection], members: Sequence[Member], now: float
) -> dict[str, Presence]:
    """The presence of every member that did not answer, judged from the broker's connections
    (``now`` and the members' boot times on the broker's clock)."""
    foreign = [c for c in connections if not c.own]
    named = {c.name for c in foreign if c.name}
    out: dict[str, Presence] = {}
    for member in members:
        if member.answered:
            continue
        if member.name in named:
            out[member.name] = Presence(
                member.name, True, "broker: its named connection is open", now
            )
            continue
        if member.named:
            out[member.name] = Presence(
                member.name, False, "broker: no connection named after it is open any more", None
            )
            continue
        out[member.name] = _judge(member, foreign, members, now)
    return out


def _ips(name: str) -> frozenset[str]:
    host = name.split("@", 1)[1] if "@" in name else name
    return frozenset(f for f in host_forms(host) if f[:1].isdigit())


def _judge(
    member: Member, foreign: Sequence[Connection], members: Sequence[Member], now: float
) -> Presence:
    ips = _ips(member.name)
    if ips:
        # Only pub/sub connections count: a worker holds its pidbox subscription for life, while
        # a producer on the same address (a web app in the same task) publishes and leaves.
        here = [c for c in foreign if c.ip in ips and c.pubsub]
        peers = [m for m in members if m is not member and _ips(m.name) & ips]
        where = f"from {sorted(ips)[0]}"
        if not here:
            return Presence(
                member.name, False, f"broker: no subscription {where} is open any more", None
            )
        if not peers:
            return Presence(
                member.name, True, f"broker: its subscription(s) {where} are still open", now
            )
    else:
        known_ips = frozenset().union(*(_ips(m.name) for m in members))
        here = [c for c in foreign if c.ip not in known_ips]
        peers = [m for m in members if m is not member and not _ips(m.name)]
        where = "on its host"
    pubsub = [c for c in here if c.pubsub]
    counted = _by_count(member, len(pubsub), peers, now, where)
    if counted is not None:
        return counted
    return _by_age(member, pubsub, peers, now, where)


@dataclass(frozen=True, slots=True)
class Share:
    """What a worker holds of the broker's connections: its long-lived pub/sub connections, and
    whether they carry its nodename as their name."""

    count: int
    named: bool = False


def learn_shares(connections: Sequence[Connection], members: Sequence[Member]) -> dict[str, Share]:
    """The share of each answering member whose share is unknown. A member whose connections
    carry its name: its named pub/sub connections. Else where every member on its address
    answered: the address's count less the known shares, for the one unknown; or an even split,
    where none is known and the count divides (workers started together by one command run one
    configuration: gossip on, two each; ``--without-gossip``, one)."""
    foreign = [c for c in connections if not c.own and c.pubsub]
    by_name = {c.name for c in connections if c.name and not c.own}
    learned = {
        m.name: Share(sum(1 for c in foreign if c.name == m.name), named=True)
        for m in members
        if m.answered and m.share is None and m.name in by_name
    }
    known_ips = frozenset().union(*(_ips(m.name) for m in members))
    for group in _groups(members):
        if not all(m.answered for m in group):
            continue
        ips = _ips(group[0].name)
        count = sum(1 for c in foreign if (c.ip in ips if ips else c.ip not in known_ips))
        unknown = [m for m in group if m.share is None]
        known = sum(m.share or 0 for m in group)
        if len(unknown) == 1 and count - known > 0:
            learned.setdefault(unknown[0].name, Share(count - known))
        elif unknown and len(unknown) == len(group) and count and count % len(group) == 0:
            for m in group:
                learned.setdefault(m.name, Share(count // len(group)))
    return learned


def _groups(members: Sequence[Member]) -> list[list[Member]]:
    """Members by the address their nodenames give (those that give none: one group, "its
    host", as the age rule treats them)."""
    groups: dict[frozenset[str], list[Member]] = {}
    for member in members:
        ips = _ips(member.name)
        key = next((k for k in groups if k & ips), ips) if ips else ips
        groups.setdefault(key, []).append(member)
    return list(groups.values())


def _by_count(
    member: Member, count: int, peers: list[Member], now: float, where: str
) -> Presence | None:
    """Dead or alive by how many pub/sub connections the address holds, where the shares of
    every worker there are known and every other worker answered; None where counts prove
    nothing."""
    group = [member, *peers]
    if not peers or any(p.share is None or not p.answered for p in peers):
        return None
    if member.share is None:
        return None
    full = sum(m.share or 0 for m in group)
    others = f"the other {len(peers)} answered"
    if count == full - member.share:
        return Presence(
            member.name,
            False,
            f"broker: 1 of {len(group)} workers' subscriptions {where} closed "
            f"({count} of {full} open); {others}",
            None,
        )
    if count == full:
        return Presence(
            member.name,
            True,
            f"broker: all {len(group)} workers' subscriptions {where} are open; {others}",
            now,
        )
    return None


def _window(boot_at: float) -> tuple[float, float]:
    return boot_at - WINDOW_BEFORE_S, boot_at + WINDOW_AFTER_S


def _born_in(connection: Connection, now: float, boot_at: float) -> bool:
    low, high = _window(boot_at)
    return low - 1.0 <= now - connection.age_s <= high  # ages are whole seconds


def _by_age(
    member: Member, pubsub: list[Connection], peers: list[Member], now: float, where: str
) -> Presence:
    if member.boot_at is None:
        # never seen answering: no subscription proves it gone, any one may be its own
        if not pubsub:
            return Presence(member.name, False, f"broker: no subscription {where} is open", None)
        return Presence(
            member.name,
            None,
            f"broker: it never answered, so which of the {len(pubsub)} subscription(s) {where} "
            "are its own is unknown",
        )
    span = WINDOW_BEFORE_S + WINDOW_AFTER_S + 1.0
    close = [p for p in peers if p.boot_at is None or abs(p.boot_at - member.boot_at) <= span]
    if close:
        names = ", ".join(sorted(p.name for p in close)[:3])
        return Presence(
            member.name,
            None,
            f"broker: cannot tell it apart from {names}, started within {span:.0f} s of it {where}",
        )
    unexplained = [
        p.name
        for p in peers
        if p.answered
        and p.boot_at is not None
        and not any(_born_in(c, now, p.boot_at) for c in pubsub)
    ]
    if unexplained:
        return Presence(
            member.name,
            None,
            f"broker: connections {where} were reopened since the workers started "
            f"({unexplained[0]} has none from its start); ages prove nothing",
        )
    own = [c for c in pubsub if _born_in(c, now, member.boot_at)]
    if own:
        return Presence(
            member.name, True, f"broker: its pidbox subscription {where} is still open", now
        )
    return Presence(
        member.name,
        False,
        f"broker: the pidbox subscription it opened at start {where} is gone",
        None,
    )

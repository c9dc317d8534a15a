"""A real three-primary Redis Cluster on loopback: the result scan must cover every primary."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from oomcheck.demo import services
from oomcheck.sources.redis_client import make_redis
from oomcheck.sources.results import RedisResultScanner

pytestmark = pytest.mark.integration

PREFIX = "cl:"
SLOTS = 16384


def _form_with_redis_cli(cli: Path, ports: list[int]) -> str | None:
    done = subprocess.run(
        [
            str(cli),
            "--cluster",
            "create",
            *(f"127.0.0.1:{p}" for p in ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return None if done.returncode == 0 else (done.stdout + done.stderr)[-300:]


def _form_by_hand(ports: list[int]) -> None:
    """What redis-cli does: split the slots, then introduce the nodes to each other."""
    nodes = [redis.Redis(port=p) for p in ports]
    share = SLOTS // len(nodes)
    for index, node in enumerate(nodes):
        last = SLOTS - 1 if index == len(nodes) - 1 else (index + 1) * share - 1
        node.execute_command("CLUSTER ADDSLOTS", *range(index * share, last + 1))
    for port in ports[1:]:
        nodes[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
    for node in nodes:
        node.close()


def _port_with_free_bus() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    for _ in range(200):
        port = services.free_port()
        if port + 10000 < 65536 and not services.port_open(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _cluster_ready(ports: list[int]) -> bool:
    for port in ports:
        client = redis.Redis(port=port, socket_timeout=2)
        try:
            info = client.execute_command("CLUSTER INFO")
            assert isinstance(info, dict), info
            if str(info.get("cluster_state")) != "ok" or int(
                info.get("cluster_known_nodes", 0)
            ) != len(ports):
                return False
        finally:
            client.close()
    return True


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[int]]:
    binary = services.redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary to start a cluster with")
    servers: list[services.RedisServer] = []
    try:
        for _ in range(3):
            servers.append(
                services.start_redis(
                    port=_port_with_free_bus(),
                    args=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "3000",
                        "--cluster-config-file",
                        "nodes.conf",
                    ],
                )
            )
        ports = [s.port for s in servers]
        cli = Path(binary).with_name("redis-cli")
        failure = _form_with_redis_cli(cli, ports) if cli.exists() else None
        if failure is not None or not cli.exists():
            _form_by_hand(ports)
        deadline = time.monotonic() + 20
        while not _cluster_ready(ports):
            if time.monotonic() > deadline:
                pytest.skip(f"the cluster did not form within 20 s ({failure or 'by hand'})")
            time.sleep(0.1)
        yield ports
    except RuntimeError as exc:
        pytest.skip(f"cannot start cluster nodes: {exc}")
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def loaded(cluster: list[int]) -> Iterator[tuple[redis.RedisCluster, set[str], set[str]]]:
    client = make_redis(f"redis+cluster://127.0.0.1:{cluster[0]},127.0.0.1:{cluster[1]}")
    assert isinstance(client, redis.RedisCluster)
    started: set[str] = set()
    others: set[str] = set()
    pipe = client.pipeline()
    for i in range(600):
        task_id = f"c{i}"
        if i % 3 == 0:
            value = {"status": "STARTED", "result": {"pid": i, "hostname": f"w{i % 4}@c"}}
            started.add(task_id)
        else:
            value = {"status": "SUCCESS", "result": i}
            others.add(task_id)
        pipe.set(f"{PREFIX}celery-task-meta-{task_id}", json.dumps(value), ex=3600)
    pipe.execute()
    try:
        yield client, started, others
    finally:
        client.flushdb(target_nodes=redis.RedisCluster.PRIMARIES)
        client.close()


def test_keys_live_on_every_primary(loaded, cluster: list[int]) -> None:
    for port in cluster:
        node = redis.Redis(port=port)
        assert node.dbsize() > 100, f"primary {port} holds too few keys for the test to mean much"
        node.close()


@pytest.mark.parametrize("scripted", [True, False], ids=["lua", "client-side"])
def test_scan_finds_keys_on_every_primary(loaded, scripted: bool) -> None:
    client, started, _ = loaded
    scanner = RedisResultScanner(client, keyprefix=PREFIX, batch=50)
    if not scripted:
        for node in client.get_primaries():
            scanner._scripted[str(node.name)] = False
    scan = scanner.scan(time.time())
    assert scan.keys_scanned == 600
    assert {t.id for t in scan.started} == started
    assert len(scan.started) == len(started)
    assert scan.cursor is None and scan.skipped_values == 0
    # The script reads keys SCAN found on its own node: no cluster refusal, no fallback.
    assert all(scanner._scripted.get(str(n.name), True) is scripted for n in client.get_primaries())


def test_budget_cursor_walks_every_node_exactly_once(loaded) -> None:
    client, started, _ = loaded
    scanner = RedisResultScanner(client, keyprefix=PREFIX, batch=20)
    seen: list[str] = []
    nodes_in_cursors: set[str] = set()
    cursor: str | None = None
    scanned = 0
    for _ in range(200):
        scan = scanner.scan(time.time(), budget=45, cursor=cursor)
        seen.extend(t.id for t in scan.started)
        scanned += scan.keys_scanned
        cursor = scan.cursor
        if cursor is None:
            break
        nodes_in_cursors.add(cursor.rpartition("/")[0])
    else:
        pytest.fail("the budgeted scan never completed")
    assert scanned == 600
    assert sorted(seen) == sorted(started)
    assert nodes_in_cursors == {str(n.name) for n in client.get_primaries()}


def test_cursor_for_a_vanished_node_continues_after_it(loaded) -> None:
    client, _, _ = loaded
    names = sorted(str(n.name) for n in client.get_primaries())
    scanner = RedisResultScanner(client, keyprefix=PREFIX)
    # A node that sorted between the first and the second primary: resume with the second.
    gone = names[0] + "0"
    assert names[0] < gone < names[1]
    scan = scanner.scan(time.time(), cursor=f"{gone}/12345")
    expected = sum(redis.Redis.from_url(f"redis://{name}").dbsize() for name in names[1:])
    assert scan.keys_scanned == expected and scan.cursor is None


def test_lookup_across_slots(loaded) -> None:
    client, started, others = loaded
    scanner = RedisResultScanner(client, keyprefix=PREFIX, batch=7)
    some_started = sorted(started)[:20]
    some_others = sorted(others)[:20]
    found = scanner.lookup([*some_started, *some_others, "absent-1", "absent-2"])
    assert found == {
        **dict.fromkeys(some_started, "STARTED"),
        **dict.fromkeys(some_others, "SUCCESS"),
    }


def test_unreachable_or_non_cluster_node_fails_fast_without_password() -> None:
    closed = services.free_port()
    plain = services.start_redis()
    try:
        for port, reason in ((closed, "refused"), (plain.port, "not enabled")):
            started = time.monotonic()
            # built without I/O, like a plain client: the failure belongs to the run's source
            client = make_redis(f"redis+cluster://:hunter2@127.0.0.1:{port}")
            with pytest.raises(redis.ConnectionError, match=reason) as info:
                RedisResultScanner(client).scan(time.time())
            assert time.monotonic() - started < 5
            assert "hunter2" not in str(info.value)
            assert info.value.__cause__ is None and info.value.__suppress_context__
    finally:
        plain.stop()

"""`make test` runs the suite in several pytest-xdist workers at once: on a shared Redis each worker
flushes databases of its own, and never one another worker uses."""

from __future__ import annotations

import pytest

from tests.conftest import MAX_SHARED_WORKERS, shared_dbs


def test_a_session_without_workers_keeps_databases_15_and_14() -> None:
    assert shared_dbs(None) == (15, 14)
    assert shared_dbs("master") == (15, 14)


def test_every_worker_gets_two_databases_no_other_worker_has() -> None:
    pairs = [shared_dbs(f"gw{i}") for i in range(MAX_SHARED_WORKERS)]
    assert pairs[0] == (15, 14)
    taken = [db for pair in pairs for db in pair]
    assert len(set(taken)) == 2 * MAX_SHARED_WORKERS
    # db 0 is an application's default: the tests keep off the low databases
    assert min(taken) >= 8


def test_more_workers_than_databases_set_aside_is_refused() -> None:
    with pytest.raises(pytest.UsageError, match=f"at most {MAX_SHARED_WORKERS} workers"):
        shared_dbs(f"gw{MAX_SHARED_WORKERS}")

"""State in one local JSON file (the CLI, cron), guarded by an flock (oomcheck.store.base)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from oomcheck.model import State
from oomcheck.store import codec
from oomcheck.store.base import LeaseBusy, LeaseLost, SaveStats, StateError


class FileStateStore:
    """The whole state in one JSON file, guarded by an flock on a sibling .lock file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._lock: IO[str] | None = None
        self._owner: str | None = None

    def describe(self) -> str:
        return f"file:{self.path}"

    def acquire(self, owner: str, now: float, lease_s: float) -> None:
        del now, lease_s  # an flock dies with its process: no expiry needed
        if self._lock is not None and self._owner == owner:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = self.path.with_suffix(self.path.suffix + ".lock").open("a")
        except OSError as exc:
            raise StateError(f"state file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise LeaseBusy(f"another run holds {self.path}.lock") from exc
        self._lock = lock
        self._owner = owner

    def _read_items(self) -> dict[str, codec.Json]:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StateError(f"state file {self.path}: {exc.strerror}") from exc
        try:
            items = json.loads(raw)["items"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"state file {self.path} is not oomcheck state: {exc}") from exc
        if not isinstance(items, dict):
            raise StateError(
                f"state file {self.path} is not oomcheck state: items is not an object"
            )
        return items

    def load(self) -> State:
        try:
            return codec.state_from_items(self._read_items())
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"state file {self.path} holds an item oomcheck cannot read: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _write(self, items: Mapping[str, codec.Json]) -> None:
        payload = json.dumps({"schema": codec.SCHEMA, "items": items}, sort_keys=True, indent=1)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-", suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            Path(tmp).replace(self.path)
        except OSError as exc:
            raise StateError(f"state file {self.path}: {exc.strerror}") from exc

    def _check_owner(self, owner: str) -> None:
        if self._owner != owner or self._lock is None:
            raise LeaseLost(f"{owner} does not hold the lock on {self.path}")

    def save(self, owner: str, before: State, after: State, retention_s: float) -> SaveStats:
        del retention_s  # pruning is done by evaluate(); a file has no TTL
        self._check_owner(owner)
        puts, deletes = codec.changed_items(before, after)
        if not puts and not deletes:
            return SaveStats()
        items = self._read_items()
        items.update(puts)
        for key in deletes:
            items.pop(key, None)
        self._write(items)
        return SaveStats(puts=len(puts), deletes=len(deletes))

    def release(self, owner: str, state: State) -> None:
        self._check_owner(owner)
        try:
            items = self._read_items()
            items["meta"] = codec.meta_to_json(state)
            self._write(items)
        finally:
            self._unlock()

    def abandon(self, owner: str) -> None:
        if self._owner == owner:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
        self._lock = None
        self._owner = None

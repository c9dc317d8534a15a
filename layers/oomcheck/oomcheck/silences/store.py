"""Where silences live: the state table (items ``silence#<id>`` beside the state's, deleted by
DynamoDB's TTL a while after they end), or, for the CLI without a table, a file beside the state
file. The state codec skips these items, and a run's save never writes or deletes them: adding a
silence needs no lease and never races a run."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from oomcheck.ports import SilenceStore
from oomcheck.silences.model import Silence, SilenceError
from oomcheck.store.base import StateError

PREFIX = "silence#"
# An ended silence stays listed (and explains an alert that was held) this long, then goes.
KEEP_ENDED_S = 7 * 86400.0


class DynamoDBSilences:
    def __init__(self, table: str, target: str = "default", client: Any | None = None) -> None:
        if client is None:
            from oomcheck.aws import client as make_client

            client = make_client("dynamodb")
        self.table = table
        self.target = target
        self.client = client

    def describe(self) -> str:
        return f"dynamodb:{self.table}/{self.target}"

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise StateError(f"dynamodb {operation}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StateError(f"dynamodb {operation}: {type(exc).__name__}") from exc

    def _item(self, silence: Silence) -> dict[str, Any]:
        return {
            "pk": {"S": self.target},
            "sk": {"S": PREFIX + silence.id},
            "data": {"S": json.dumps(silence.to_json(), separators=(",", ":"), sort_keys=True)},
            "expires_at": {"N": str(int(silence.ends_at + KEEP_ENDED_S))},
        }

    def read(self) -> tuple[Silence, ...]:
        """Every silence not yet deleted, active or not (one query, paged)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": self.target}, ":prefix": {"S": PREFIX}},
            "ConsistentRead": True,
        }
        found: list[Silence] = []
        for _ in range(100):  # 100 pages of 1 MB: far more silences than anyone keeps
            page = self._call("query", **kwargs)
            found += [Silence.from_json(json.loads(i["data"]["S"])) for i in page.get("Items", ())]
            if not page.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return tuple(found)

    def add(self, silence: Silence) -> None:
        self._call(
            "put_item",
            TableName=self.table,
            Item=self._item(silence),
            ConditionExpression="attribute_not_exists(sk)",
        )

    def put(self, silence: Silence, now: float) -> None:
        del now  # DynamoDB's TTL deletes what ended long ago
        self._call("put_item", TableName=self.table, Item=self._item(silence))


class FileSilences:
    """Silences in one JSON file, written whole under an flock (the CLI without a table)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"file:{self.path}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = self.path.with_suffix(self.path.suffix + ".lock").open("a")
        except OSError as exc:
            raise StateError(f"silences file {self.path}: {exc.strerror}") from exc
        with lock:
            # held for one read or one read-modify-write: milliseconds
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _load(self) -> dict[str, Silence]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(f"silences file {self.path} cannot be read: {exc}") from exc
        return {s["id"]: Silence.from_json(s) for s in raw.get("silences", ())}

    def _write(self, silences: dict[str, Silence], now: float) -> None:
        kept = [s.to_json() for s in silences.values() if s.ends_at + KEEP_ENDED_S > now]
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".silences-", suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                json.dump({"silences": kept}, handle, indent=1, sort_keys=True)
            Path(tmp).replace(self.path)
        except OSError as exc:
            raise StateError(f"silences file {self.path}: {exc.strerror}") from exc

    def read(self) -> tuple[Silence, ...]:
        with self._locked():
            return tuple(self._load().values())

    def add(self, silence: Silence) -> None:
        with self._locked():
            silences = self._load()
            if silence.id in silences:
                raise SilenceError(f"silence {silence.id} exists already")
            silences[silence.id] = silence
            self._write(silences, silence.created_at)

    def put(self, silence: Silence, now: float) -> None:
        with self._locked():
            silences = self._load()
            silences[silence.id] = silence
            self._write(silences, now)


def expire(store: SilenceStore, ident: str, now: float) -> Silence:
    """End a silence now (an ended one stays as it is). SilenceError when there is none."""
    found = {s.id: s for s in store.read()}.get(ident)
    if found is None:
        raise SilenceError(f"no silence {ident!r} (oomcheck silence list shows them)")
    if found.ends_at <= now:
        return found
    ended = replace(found, ends_at=max(now, found.starts_at))
    store.put(ended, now)
    return ended


def silences_path(state_file: str) -> str:
    return state_file + ".silences.json"


def silence_store(
    table: str | None, target: str, state_file: str, client: Any | None = None
) -> DynamoDBSilences | FileSilences:
    """Where the run (and the CLI's ``silence`` commands) find silences: the state table when
    one is configured, else a file beside the state file."""
    if table:
        return DynamoDBSilences(table, target, client=client)
    return FileSilences(silences_path(state_file))

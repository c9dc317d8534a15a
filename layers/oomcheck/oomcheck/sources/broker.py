"""The Redis broker's unacked messages: what workers fetched and have not acknowledged.

kombu's Redis transport keeps, under the broker's ``global_keyprefix`` (seen by running a worker
with ``task_acks_late``, kombu 5.7):

- ``unacked``: hash ``delivery_tag -> JSON [message, exchange, routing_key]`` where ``message`` is
  ``{"body": "<base64>", "content-encoding", "content-type", "headers": {...}, "properties":
  {...}}`` - the body (the task's arguments, any size) comes FIRST, ``headers.id`` /
  ``headers.task`` after it.
- ``unacked_index``: sorted set ``delivery_tag -> time.time()`` of the worker that fetched it.
- A message restored after a worker died (visibility timeout, or a warm shutdown) is pushed back
  with ``headers["redelivered"] = true`` AND ``properties["delivery_info"]["redelivered"] = true``;
  when a worker fetches it again, the new ``unacked`` entry (same delivery tag) carries both.

So that a message with a 10 MB body costs the client nothing, a Lua script HSCANs the hash and
cuts the body string out of each entry on the server before replying. Without scripting the
entries are read one by one, the oversized ones skipped; tags then come from HSCAN NOVALUES
(Redis 7.4+), else HKEYS when the hash is within ``max_entries``, else ``unacked_index`` (an
entry missing from the index is then not seen).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from oomcheck.model import UnackedMessage
from oomcheck.safejson import loads

__all__ = ["TRIM_SCRIPT", "RedisBrokerScanner", "UnackedScan", "parse_unacked_entry"]

log = logging.getLogger(__name__)

# KEYS[1]: the unacked hash. ARGV: cursor, count, max bytes per entry.
# Reply: {next_cursor, tag1, entry1, tag2, entry2, ...} with each entry's body string emptied
# (the first unescaped quote after `"body": "` ends it) and anything still longer cut to the cap.
TRIM_SCRIPT = """
local find, sub, byte = string.find, string.sub, string.byte
local reply = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local items = reply[2]
local cap = tonumber(ARGV[3])
local out = {reply[1]}
for i = 1, #items, 2 do
  local v = items[i + 1]
  local _, e = find(v, '^%s*%[%s*{%s*"body"%s*:%s*"')
  if e then
    local q = find(v, '"', e + 1, true)
    while q do
      local j = q - 1
      while j > e and byte(v, j) == 92 do j = j - 1 end
      if (q - 1 - j) % 2 == 0 then break end
      q = find(v, '"', q + 1, true)
    end
    if q then v = sub(v, 1, e) .. sub(v, q) end
  end
  if #v > cap then v = sub(v, 1, cap) end
  out[#out + 1] = items[i]
  out[#out + 1] = v
end
return out
"""

# NOSCRIPT right after SCRIPT LOAD means a proxy spreads requests over servers: read plainly.
_SCRIPT_REFUSALS = (
    "NOPERM",
    "NOSCRIPT",
    "unknown command",
    "not allowed",
    "disabled",
    "no scripts",
)


@dataclass(frozen=True, slots=True)
class UnackedScan:
    messages: tuple[UnackedMessage, ...]
    entries_scanned: int
    # entries that are not kombu JSON messages with headers.id: malformed, not JSON (pickle),
    # nested too deep, or oversized
    skipped: int
    truncated: bool  # max_entries reached before the hash was fully read


def parse_unacked_entry(
    tag: str, raw: bytes | str, fetched_at: float | None
) -> UnackedMessage | None:
    """One ``unacked`` hash entry as an UnackedMessage; None when it is not a task message
    (malformed JSON, nested deeper than ``safejson.MAX_DEPTH``, no ``headers.id``, task protocol
    1 whose id lives in the body)."""
    try:
        entry = loads(raw)
    except ValueError:  # includes UnicodeDecodeError and safejson.TooDeep
        return None
    if not isinstance(entry, list) or not entry or not isinstance(entry[0], dict):
        return None
    message: dict[str, Any] = entry[0]
    headers = message.get("headers")
    if not isinstance(headers, dict):
        return None
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not task_id:
        return None
    name = headers.get("task")
    properties = message.get("properties")
    delivery = properties.get("delivery_info") if isinstance(properties, dict) else None
    redelivered = headers.get("redelivered") is True or (
        isinstance(delivery, dict) and delivery.get("redelivered") is True
    )
    return UnackedMessage(
        task_id=task_id,
        name=name if isinstance(name, str) else None,
        delivery_tag=tag,
        fetched_at=fetched_at,
        redelivered=redelivered,
    )


class RedisBrokerScanner:
    """Reads kombu's ``unacked`` hash and ``unacked_index`` zset of a Redis broker.

    ``keyprefix`` is the broker's ``global_keyprefix`` (``broker_transport_options``);
    ``unacked_key`` / ``unacked_index_key`` are the transport options of the same names.
    At most ``max_entries`` entries are read per call; ``max_entry_bytes`` bounds what one entry
    may cost once its body is removed. After each call, ``last_scan`` holds the counts and
    ``skipped`` the number of malformed or oversized entries.
    """

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        *,
        keyprefix: str = "",
        max_entries: int = 100_000,
        batch: int = 200,
        unacked_key: str = "unacked",
        unacked_index_key: str = "unacked_index",
        max_entry_bytes: int = 256 * 1024,
    ) -> None:
        if max_entries < 1 or batch < 1 or max_entry_bytes < 256:
            raise ValueError("max_entries and batch must be >= 1, max_entry_bytes >= 256")
        self._client = client
        self._hash = (keyprefix + unacked_key).encode()
        self._index = (keyprefix + unacked_index_key).encode()
        self._max_entries = max_entries
        self._batch = batch
        self._max_entry_bytes = max_entry_bytes
        self._sha: str | None = None
        self._scripted = True
        self._stopped_early = False
        self.last_scan: UnackedScan | None = None

    @property
    def skipped(self) -> int:
        return self.last_scan.skipped if self.last_scan else 0

    def unacked(self, now: float) -> tuple[UnackedMessage, ...]:
        return self.scan(now).messages

    def scan(self, now: float) -> UnackedScan:
        """Every unacked task message, oldest fetch first.

        ``now`` caps ``fetched_at``: a fetch time later than this read is clock skew between the
        worker's host and ours, and capping it keeps any redelivery estimate within one
        visibility timeout of now.
        """
        # By delivery tag: HSCAN may return an entry twice while the hash is being resized.
        messages: dict[str, UnackedMessage] = {}
        scanned = 0
        skipped = 0
        truncated = False
        for batch in self._entries():
            chunk = batch
            if scanned + len(batch) > self._max_entries:
                chunk = batch[: self._max_entries - scanned]
                truncated = True
            tags = [tag for tag, _ in chunk]
            scores = self._scores(tags)
            for (tag, raw), score in zip(chunk, scores, strict=True):
                scanned += 1
                fetched = None if score is None else min(float(score), now)
                msg = None if raw is None else parse_unacked_entry(tag, raw, fetched)
                if msg is None:
                    skipped += 1
                else:
                    messages[tag] = msg
            if truncated:
                break
        # The generators stop at max_entries on their own; reaching it with entries left over is
        # reported as truncated even when the cut fell exactly on a batch boundary.
        truncated = truncated or self._stopped_early
        ordered = sorted(
            messages.values(),
            key=lambda m: (m.fetched_at is None, m.fetched_at or 0.0, m.delivery_tag),
        )
        result = UnackedScan(
            messages=tuple(ordered), entries_scanned=scanned, skipped=skipped, truncated=truncated
        )
        self.last_scan = result
        if truncated:
            log.warning(
                "unacked hash has more than %d entries; read only that many", self._max_entries
            )
        return result

    # -- internals ------------------------------------------------------------------------------

    def _entries(self) -> Iterator[list[tuple[str, bytes | None]]]:
        """Chunks of (tag, entry without body, or None when unreadable/oversized)."""
        if self._scripted:
            # Falling back after some chunks went out would read those entries twice.
            yielded = False
            try:
                for chunk in self._scripted_entries():
                    yielded = True
                    yield chunk
            except NoPermissionError:
                if yielded:
                    raise
                self._fall_back("scripting not permitted")
            except ResponseError as exc:
                text = str(exc)
                if yielded or not any(m.lower() in text.lower() for m in _SCRIPT_REFUSALS):
                    raise
                self._fall_back(text[:120])
            else:
                return
        yield from self._plain_entries()

    def _fall_back(self, why: str) -> None:
        log.info("unacked scan reads from the client: %s", why)
        self._scripted = False

    def _scripted_entries(self) -> Iterator[list[tuple[str, bytes | None]]]:
        self._stopped_early = False
        cursor = 0
        seen = 0
        # One iteration per HSCAN batch; bounded by max_entries even if the hash keeps growing.
        while seen < self._max_entries:
            reply = self._run_script(cursor)
            cursor = int(reply[0])
            chunk: list[tuple[str, bytes | None]] = []
            for i in range(1, len(reply) - 1, 2):
                raw = bytes(reply[i + 1])
                chunk.append((_text(reply[i]), None if len(raw) >= self._max_entry_bytes else raw))
            seen += len(chunk)
            if chunk:
                yield chunk
            if cursor == 0:
                return
        self._stopped_early = True

    def _run_script(self, cursor: int) -> list[Any]:
        args = (cursor, self._batch, self._max_entry_bytes)
        if self._sha is None:
            self._sha = str(self._client.script_load(TRIM_SCRIPT))
        try:
            reply = self._client.evalsha(self._sha, 1, self._hash, *args)
        except NoScriptError:
            self._sha = str(self._client.script_load(TRIM_SCRIPT))
            reply = self._client.evalsha(self._sha, 1, self._hash, *args)
        return list(reply)

    def _plain_entries(self) -> Iterator[list[tuple[str, bytes | None]]]:
        for tags in self._tags():
            pipe = self._client.pipeline(transaction=False)
            for tag in tags:
                pipe.hstrlen(self._hash, tag)
            sizes = pipe.execute()
            pipe = self._client.pipeline(transaction=False)
            wanted = [
                t
                for t, size in zip(tags, sizes, strict=True)
                if 0 < int(size) <= self._max_entry_bytes
            ]
            for tag in wanted:
                pipe.hget(self._hash, tag)
            values = dict(zip(wanted, pipe.execute(), strict=True)) if wanted else {}
            chunk: list[tuple[str, bytes | None]] = []
            for tag, size in zip(tags, sizes, strict=True):
                if int(size) == 0:
                    continue  # acked between the listing and the read
                value = values.get(tag)
                chunk.append((_text(tag), bytes(value) if value is not None else None))
            if chunk:
                yield chunk

    def _tags(self) -> Iterator[list[bytes]]:
        """Delivery tags in batches, without values: HSCAN NOVALUES (Redis 7.4+), else HKEYS
        when the hash is within max_entries, else the index's members."""
        self._stopped_early = False
        cursor = 0
        seen = 0
        try:
            while seen < self._max_entries:
                cursor, fields = self._client.hscan(
                    self._hash, cursor, count=self._batch, no_values=True
                )
                tags = [_raw(f) for f in fields]
                seen += len(tags)
                if tags:
                    yield tags
                if cursor == 0:
                    return
        except ResponseError:
            if seen:
                raise
        else:
            self._stopped_early = True
            return
        size = int(self._client.hlen(self._hash))
        if size <= self._max_entries:
            # Tags are ~36 bytes, so the whole field list is small at this bound.
            names = [_raw(f) for f in self._client.hkeys(self._hash)]
            for offset in range(0, len(names), self._batch):
                yield names[offset : offset + self._batch]
            return
        log.info("unacked hash has %d entries; listing tags from %s", size, self._index.decode())
        while seen < self._max_entries:
            cursor, pairs = self._client.zscan(self._index, cursor, count=self._batch)
            tags = [_raw(tag) for tag, _ in pairs]
            seen += len(tags)
            if tags:
                yield tags
            if cursor == 0:
                return
        self._stopped_early = True

    def _scores(self, tags: Sequence[str]) -> list[float | None]:
        pipe = self._client.pipeline(transaction=False)
        for tag in tags:
            pipe.zscore(self._index, tag)
        return [None if s is None else float(s) for s in pipe.execute()]


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

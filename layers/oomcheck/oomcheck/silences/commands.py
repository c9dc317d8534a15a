"""``oomcheck silence add | list | expire``, and the same through a Lambda payload
(``{"silence": {"action": "add", ...}}``, events/silence.json). Each returns a JSON object and a
line of text; a refused request is a one-line SilenceError."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from oomcheck.detect.text import utc
from oomcheck.model import State
from oomcheck.ports import SilenceStore
from oomcheck.silences.match import matching_now
from oomcheck.silences.model import Silence, SilenceError, new_silence
from oomcheck.silences.store import expire

ACTIONS = ("add", "list", "expire")
# Keys that say who or what a silence is about, checked against what oomcheck knows now.
_KNOWN_NOW = ("worker", "queue", "task")


def new_id() -> str:
    return f"sil-{uuid.uuid4().hex[:12]}"


def add(
    store: SilenceStore,
    state: State | None,
    *,
    matches: Sequence[str],
    comment: str | None,
    now: float,
    for_: str | None = None,
    until: str | None = None,
    by: str | None = None,
    ident: Callable[[], str] = new_id,
) -> tuple[dict[str, Any], str]:
    """Save a new silence. ``state``: what oomcheck knows now (None: could not be read), to say
    when the silence matches nothing."""
    silence = new_silence(
        matches, comment=comment, now=now, ident=ident(), for_=for_, until=until, by=by
    )
    store.add(silence)
    out: dict[str, Any] = {"id": silence.id, "silence": _row(silence, now)}
    if state is not None and any(m.key in _KNOWN_NOW for m in silence.matchers):
        out["matches_now"] = count = matching_now(silence, state)
        if count == 0:
            out["note"] = (
                "matches no open incident and no worker, queue or task oomcheck knows of now"
            )
    return out, silence.id


def listing(store: SilenceStore, now: float) -> tuple[dict[str, Any], str]:
    silences = sorted(store.read(), key=lambda s: (not s.active(now), s.ends_at, s.id))
    rows = [_row(s, now) for s in silences]
    if not rows:
        return {"silences": []}, "no silences"
    lines = [f"{'ID':<18} {'STATUS':<8} {'ENDS (UTC)':<20} {'BY':<12} MATCH / COMMENT"]
    for silence, row in zip(silences, rows, strict=True):
        lines.append(
            f"{silence.id:<18} {row['status']:<8} {utc(silence.ends_at)[:19]:<20} "
            f"{(silence.created_by or '-')[:12]:<12} "
            f"{' '.join(str(m) for m in silence.matchers)}  # {silence.comment}"
        )
    return {"silences": rows}, "\n".join(lines)


def end(store: SilenceStore, ident: str, now: float) -> tuple[dict[str, Any], str]:
    ended = expire(store, ident, now)
    return {"id": ended.id, "silence": _row(ended, now)}, f"{ended.id} expired"


def _row(silence: Silence, now: float) -> dict[str, Any]:
    status = (
        "active" if silence.active(now) else ("pending" if now < silence.starts_at else "ended")
    )
    return {**silence.to_json(), "status": status}


def from_payload(
    request: Mapping[str, Any], store: SilenceStore, state: State | None, now: float
) -> dict[str, Any]:
    """The Lambda's ``{"silence": {...}}``: ``action`` add (``match`` a list of KEY=GLOB,
    ``for`` or ``until``, ``comment``, ``by``), list, or expire (``id``)."""
    action = request.get("action", "list")
    if action not in ACTIONS:
        raise SilenceError(f"silence action {action!r}: use one of {', '.join(ACTIONS)}")
    if action == "list":
        return listing(store, now)[0]
    if action == "expire":
        if not isinstance(request.get("id"), str):
            raise SilenceError('expire needs the silence\'s "id"')
        return end(store, request["id"], now)[0]
    matches = request.get("match") or []
    if isinstance(matches, str):
        matches = [matches]
    if not isinstance(matches, list) or not all(isinstance(m, str) for m in matches):
        raise SilenceError('"match" must be a list of "KEY=GLOB" strings')
    return add(
        store,
        state,
        matches=matches,
        comment=_text(request, "comment"),
        now=now,
        for_=_text(request, "for"),
        until=_text(request, "until"),
        by=_text(request, "by"),
    )[0]


def _text(request: Mapping[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise SilenceError(f'"{key}" must be a string')
    return str(value)

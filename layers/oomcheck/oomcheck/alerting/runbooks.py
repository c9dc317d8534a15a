"""Runbook links: where the person paged reads what to do. One URL for every kind, with per-kind
overrides (``OOMCHECK_RUNBOOK_URL``, ``OOMCHECK_RUNBOOK_URLS``); every channel carries the link
(the email text, the chat notification, the SNS JSON and the EventBridge detail, whose ``links``
is the shape PagerDuty's Events API v2 takes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from oomcheck.config.parsers import json_object
from oomcheck.model import Kind


@dataclass(frozen=True, slots=True)
class Runbooks:
    default: str | None = None
    by_kind: Mapping[str, str] = field(default_factory=dict)  # Kind value -> URL

    def for_kind(self, kind: Kind) -> str | None:
        """The runbook of ``kind``; None: no runbook configured for it."""
        return self.by_kind.get(kind.value) or self.default


def link_url(raw: str) -> str:
    """An http(s) URL a person can open: a settings parser (ValueError says what it wants)."""
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError("must be an http:// or https:// URL such as https://wiki.example/oomcheck")
    return value


def kind_links(raw: str) -> dict[str, str]:
    """A JSON object of finding kind -> runbook URL, e.g. ``{"worker_lost": "https://..."}``."""
    value = json_object(raw)
    known = {k.value for k in Kind}
    out: dict[str, str] = {}
    for kind, url in value.items():
        if kind not in known:
            kinds = ", ".join(sorted(known))
            raise ValueError(f"names {str(kind)[:40]!r}, which is not a finding kind ({kinds})")
        out[kind] = link_url(str(url))
    return out

"""Keep secrets out of logs, reports and alerts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

_SECRET_QUERY = re.compile(
    r"(?i)((?:^|[?&;\s])[^=&;#\s]*(?:password|passwd|pwd|secret|token|auth)[^=&;#\s]*=)"
    r"[^&;#\s]*"
)
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def redact(url: str) -> str:
    """``url`` with every password replaced by ``***``; safe to log.

    Handles several URLs joined by ``;`` (Sentinel), passwords that contain ``@``, ``/`` or
    ``:`` unescaped, and password-like query parameters. A userinfo without a colon is redacted
    whole, since some tools put a bare token there.
    """
    out: list[str] = []
    pos = 0
    starts = [m.start() for m in _SCHEME_RE.finditer(url)]
    if not starts:
        return _SECRET_QUERY.sub(r"\1***", url)
    out.append(url[: starts[0]])
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(url)
        out.append(_redact_one(url[start:end]))
        pos = end
    out.append(url[pos:])
    return _SECRET_QUERY.sub(r"\1***", "".join(out))


def _redact_one(chunk: str) -> str:
    scheme_end = chunk.index("://") + 3
    rest = chunk[scheme_end:]
    # Userinfo ends at the last '@' before the query: an unescaped '@' or '/' inside a password
    # must not leak the part after it.
    query_at = rest.find("?")
    authority = rest if query_at < 0 else rest[:query_at]
    at = authority.rfind("@")
    if at < 0:
        return chunk
    userinfo = authority[:at]
    user, colon, _password = userinfo.partition(":")
    masked = f"{user}:***" if colon else "***"
    return chunk[:scheme_end] + masked + rest[at:]


# Where URL parsers cut a password they misread (kombu splits a broker URL at ';', urllib at
# '#', '?', '/', '@'): an error message may quote any piece.
_CUTS = re.compile(r"[;#?/@:]")


def _forms(secret: str) -> set[str]:
    """The secret, its percent-encoded form, and the pieces a parser may have cut it into."""
    forms = {secret, quote(secret, safe="")}
    forms.update(piece for piece in _CUTS.split(secret) if len(piece) >= 4)
    return forms


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords and every known secret value (whole, percent-encoded, or a
    piece a parser cut it into) replaced by ``***``."""
    text = redact(text)
    forms = {f for s in secrets if s and len(s) >= 3 for f in _forms(s)}
    for secret in sorted(forms, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text

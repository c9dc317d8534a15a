"""Where a broker/backend URL's password is, whatever characters it holds. Pure, no I/O.

People paste passwords into URLs unencoded: ``redis://:pa;ss#w?rd@host:6379/0``. A standard
URL parser cuts such a password at ``;``, ``#``, ``?`` or ``/`` and then reports (or logs) the
rest as a host, a path or a query. Here the userinfo always runs to the *last* ``@`` of the URL,
and ``;`` separates URLs only where another ``scheme://`` follows (Celery's Sentinel form), so a
password is found whole and can be masked whole.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote

_JOIN = re.compile(r";(?=\s*[A-Za-z][A-Za-z0-9+.\-]*://)")
_PASSWORD_PARAMS = ("password", "passwd", "pwd")


def split_urls(url: str) -> list[str]:
    """The URLs joined by ``;`` in ``url`` (one item for an ordinary URL); blanks dropped."""
    return [chunk.strip() for chunk in _JOIN.split(url) if chunk.strip()]


def scheme_of(url: str) -> str | None:
    """The lower-case scheme, or None when ``url`` has no ``scheme://``."""
    scheme, sep, _ = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        return None
    return scheme.lower()


def userinfo_and_rest(chunk: str) -> tuple[str, str]:
    """``(userinfo, everything after it)`` of one URL, without the scheme; userinfo may be ''."""
    _, _, rest = chunk.partition("://")
    at = rest.rfind("@")
    if at < 0:
        return "", rest
    return rest[:at], rest[at + 1 :]


def credentials(userinfo: str) -> tuple[str | None, str | None]:
    """``(username, password)``, percent-decoded. A lone userinfo is the password, as kombu
    reads ``redis://secret@host``."""
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    if colon:
        return unquote(user) or None, unquote(password) or None
    return None, unquote(user) or None


def for_kombu(url: str) -> str:
    """``url`` with each userinfo percent-encoded whole, so that kombu reads the same password.

    kombu splits a broker URL at every ``;`` before parsing it, then ends the userinfo at the first
    ``/``, ``?`` or ``#`` (urllib's rules): an unencoded password holding one of them reaches the
    broker cut, and kombu's errors quote the pieces. kombu percent-decodes the userinfo it finds,
    so the encoded form connects with the password as typed. A password that is already encoded
    comes out unchanged (decoded, then encoded again); ``;`` between Sentinel URLs stays.
    """
    out: list[str] = []
    for chunk in split_urls(url):
        userinfo, rest = userinfo_and_rest(chunk)
        if not userinfo:
            out.append(chunk)
            continue
        scheme = chunk.partition("://")[0]
        user, colon, password = userinfo.partition(":")
        encoded = _encode(user) + (colon + _encode(password) if colon else "")
        out.append(f"{scheme}://{encoded}@{rest}")
    return ";".join(out)


def _encode(text: str) -> str:
    return quote(unquote(text), safe="")


def passwords(url: str) -> tuple[str, ...]:
    """Every password in ``url`` (userinfo or ``?password=``), raw and percent-decoded forms."""
    found: list[str] = []
    for chunk in split_urls(url):
        userinfo, rest = userinfo_and_rest(chunk)
        if userinfo:
            # the raw text may appear in messages too, not only its decoded form
            raw = userinfo.partition(":")[2] if ":" in userinfo else userinfo
            found.extend((raw, credentials(userinfo)[1] or ""))
        query = rest.partition("?")[2].partition("#")[0]
        for name, value in parse_qsl(query, keep_blank_values=False):
            if name.lower() in _PASSWORD_PARAMS:
                found.append(value)
    return tuple(dict.fromkeys(p for p in found if p))

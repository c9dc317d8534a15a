"""Keep secrets out of logs, reports and alerts."""

from __future__ import annotations

import re
from collections.abc import Iterable

# scheme://user:password@host -> scheme://user:***@host (also for ;-joined Sentinel lists)
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]+)@"
)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask URL passwords and every known secret value in ``text``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text

"""Reading the layer's lock (layers/oomcheck/requirements.txt, written by `make lock`)."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parents[1] / "layers" / "oomcheck" / "requirements.txt"


def requirements(path: Path = LOCK) -> list[str]:
    """The lock's requirement lines, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", path.read_text())
    lines = (line.split("#", 1)[0].strip() for line in joined.splitlines())
    return [line for line in lines if line]


def pins(path: Path = LOCK) -> dict[str, str]:
    """Canonical name -> exact version; a line that is not ``name==version`` fails here."""
    out: dict[str, str] = {}
    for line in requirements(path):
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)(?:\s+--hash=\S+)*", line)
        assert match, f"not an exact, hashed pin: {line[:120]!r}"
        out[canonicalize_name(match.group(1))] = match.group(2)
    return out


def hashes(path: Path = LOCK) -> dict[str, list[str]]:
    """Canonical name -> its sha256 hashes."""
    return {
        canonicalize_name(line.split("==", 1)[0]): re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        for line in requirements(path)
    }

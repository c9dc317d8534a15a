"""Old published versions of the checker, deleted (``make prune-versions FUNCTION=name``).

With SnapStart on, every published version keeps a cached snapshot, charged per GB-s for as long
as the version exists; SAM retains each version a deploy replaces. This deletes the versions no
alias points at, newest ``keep`` aside, at most ``limit`` per call.

    python -m oomcheck.entry.versions FUNCTION [--keep N] [--limit N] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

MAX_PAGES = 50


def stale_versions(client: Any, function: str, keep: int) -> list[str]:
    """Published versions (numbers, oldest first) that no alias names, beyond the newest
    ``keep`` of them."""
    versions: list[int] = []
    aliased: set[str] = set()
    marker: str | None = None
    for _ in range(MAX_PAGES):
        page = client.list_versions_by_function(
            FunctionName=function, **({"Marker": marker} if marker else {})
        )
        versions += [int(v["Version"]) for v in page["Versions"] if v["Version"] != "$LATEST"]
        marker = page.get("NextMarker")
        if not marker:
            break
    marker = None
    for _ in range(MAX_PAGES):
        page = client.list_aliases(FunctionName=function, **({"Marker": marker} if marker else {}))
        for alias in page["Aliases"]:
            aliased.add(alias["FunctionVersion"])
            aliased.update((alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights", {}))
        marker = page.get("NextMarker")
        if not marker:
            break
    unaliased = sorted(v for v in versions if str(v) not in aliased)
    return [str(v) for v in unaliased[: max(0, len(unaliased) - keep)]]


def prune(client: Any, function: str, *, keep: int = 1, limit: int = 50) -> list[str]:
    """Deletes up to ``limit`` stale versions; returns those deleted."""
    deleted: list[str] = []
    for version in stale_versions(client, function, keep)[:limit]:
        client.delete_function(FunctionName=function, Qualifier=version)
        deleted.append(version)
    return deleted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oomcheck.entry.versions", description=__doc__)
    parser.add_argument("function", help="the checker's function name (stack output FunctionName)")
    parser.add_argument("--keep", type=int, default=1, help="unaliased versions to keep (1)")
    parser.add_argument("--limit", type=int, default=50, help="most deletions per call (50)")
    parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    args = parser.parse_args(argv)
    from oomcheck import aws

    client = aws.client("lambda")
    if args.dry_run:
        found = stale_versions(client, args.function, args.keep)[: args.limit]
        sys.stdout.write(f"would delete versions: {', '.join(found) or 'none'}\n")
        return 0
    done = prune(client, args.function, keep=args.keep, limit=args.limit)
    sys.stdout.write(f"deleted versions: {', '.join(done) or 'none'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

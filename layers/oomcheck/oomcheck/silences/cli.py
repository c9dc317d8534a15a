"""``oomcheck silence add | list | expire``: only the state's location is read (table, target or
state file), so a silence can be added from a laptop with no broker URL at hand."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from oomcheck.config.settings import default_state_file
from oomcheck.model import State
from oomcheck.report.document import ExitCode
from oomcheck.silences import commands
from oomcheck.silences.model import SilenceError
from oomcheck.silences.store import silence_store
from oomcheck.store.base import StateError


def run_silence(
    args: argparse.Namespace,
    env: Mapping[str, str],
    clock: Callable[[], float] = time.time,
) -> int:
    table = args.table or env.get("OOMCHECK_TABLE") or None
    target = args.target or env.get("OOMCHECK_TARGET") or "default"
    state_file = args.state_file or env.get("OOMCHECK_STATE_FILE") or default_state_file()
    store = silence_store(table, target, state_file)
    now = clock()
    try:
        if args.verb == "add":
            out, text = commands.add(
                store,
                _state(table, target, state_file),
                matches=args.match,
                comment=args.comment,
                now=now,
                for_=args.for_,
                until=args.until,
                by=args.by or env.get("USER"),
            )
        elif args.verb == "expire":
            out, text = commands.end(store, args.id, now)
        else:
            out, text = commands.listing(store, now)
    except SilenceError as exc:
        sys.stderr.write(f"oomcheck silence: {exc}\n")
        return ExitCode.USAGE
    except StateError as exc:
        sys.stderr.write(f"oomcheck silence: {exc}\n")
        return ExitCode.UNAVAILABLE
    sys.stdout.write((json.dumps(out, indent=2, default=str) if args.json else text) + "\n")
    if not args.json and out.get("note"):
        # stdout stays the id alone, for `id=$(oomcheck silence add ...)`
        sys.stderr.write(f"note: {out['id']} {out['note']}\n")
    return ExitCode.OK


def _state(table: str | None, target: str, state_file: str) -> State | None:
    """What oomcheck knows now, to tell a silence that matches nothing; None if unreadable."""
    store: Any
    if table:
        from oomcheck.store.dynamodb import DynamoDBStateStore

        store = DynamoDBStateStore(table, target)
    else:
        from oomcheck.store.file import FileStateStore

        store = FileStateStore(state_file)
    try:
        state: State = store.load()
    except StateError:
        return None
    return state

"""Silences: planned quiet for alerts that match, without blinding detection.

A silence holds the messages of the incidents it matches while it lasts; the incidents are still
opened, tracked and reported (``silenced_by``). When it ends, what is still open goes out; what
resolved meanwhile and was never sent sends nothing. model (the silence and its matchers),
match (pure: which incidents a silence holds), store (the state table, or a file beside the
state file), commands (add / list / expire, for the CLI and the Lambda's payload).
"""

from oomcheck.silences.match import held_by, without_unsent_resolved
from oomcheck.silences.model import MATCH_KEYS, Matcher, Silence, SilenceError

__all__ = [
    "MATCH_KEYS",
    "Matcher",
    "Silence",
    "SilenceError",
    "held_by",
    "without_unsent_resolved",
]

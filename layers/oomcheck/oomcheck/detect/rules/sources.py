"""Sources that failed this run (source_unavailable), counted run over run."""

from __future__ import annotations

from oomcheck.detect import keys
from oomcheck.detect.carried import Carried
from oomcheck.detect.context import Context
from oomcheck.detect.signals import Carry, Outcome, Signal
from oomcheck.model import Finding, IncidentKey, Kind, Severity

KINDS = frozenset({Kind.SOURCE_UNAVAILABLE})


def failures(ctx: Context) -> dict[str, int]:
    """Consecutive failed runs per source, after this run."""
    counts = {s: n for s, n in ctx.state.source_failures.items() if s in ctx.obs.errors}
    for source in ctx.obs.errors:
        counts[source] = ctx.state.source_failures.get(source, 0) + 1
    return counts


def gone(key: IncidentKey) -> str:
    return f"source {key.subject} works again"


def judge(ctx: Context, carried: Carried) -> Outcome:
    """Every failed source is signalled; an open incident of a source that did not fail is over."""
    counts = failures(ctx)
    signals = []
    for source, error in sorted(ctx.obs.errors.items()):
        count = counts[source]
        persistent = count >= ctx.policy.source_alert_after
        signals.append(
            Signal(
                Finding(
                    kind=Kind.SOURCE_UNAVAILABLE,
                    severity=Severity.WARNING if persistent else Severity.INFO,
                    worker=None,
                    evidence=(f"{source}: {error}", f"failed {count} run(s) in a row"),
                    summary=f"source {source} unavailable: {error}",
                    advice=(
                        "The rest of the run went on without it; deaths it would show may be "
                        "missed until it is back.",
                    ),
                    key=keys.source(source),
                )
            )
        )
    return Outcome(KINDS, signals=tuple(signals), gone=gone, carry=Carry(source_failures=counts))

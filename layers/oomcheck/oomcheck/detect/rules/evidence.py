"""Exit evidence that no known worker claims: an OOM kill is still news (oom_kill)."""

from __future__ import annotations

from oomcheck.detect import keys
from oomcheck.detect.carried import Carried
from oomcheck.detect.context import Context
from oomcheck.detect.signals import Carry, Outcome, Signal
from oomcheck.model import Cause, Finding, Kind, Severity

KINDS = frozenset({Kind.OOM_KILL})


def judge(ctx: Context, carried: Carried) -> Outcome:
    signals = tuple(
        Signal(
            Finding(
                kind=Kind.OOM_KILL,
                severity=Severity.WARNING,
                worker=None,
                cause=Cause.OOM_KILLED,
                exit_code=e.exit_code,
                evidence=(f"{e.source}: {e.text}",),
                summary=f"OOM kill that matches no known worker: {e.text}"[:300],
                advice=(
                    "If this was a Celery worker, set OOMCHECK_WORKER_MAP so that oomcheck can "
                    "tie its host to the nodename.",
                ),
                key=keys.oom(e.event_id),
            )
        )
        for e in ctx.unmatched
        # an exit a family before this one claimed (beat's own container, a worker on SQS) is
        # explained there
        if not e.clean and e.cause == Cause.OOM_KILLED and e.event_id not in carried.events
    )
    # Unmatched evidence is judged here once and for all: an OOM kill becomes a finding, any
    # other exit of an unknown process is not ours to report.
    return Outcome(
        KINDS, signals=signals, carry=Carry(events=frozenset(e.event_id for e in ctx.unmatched))
    )

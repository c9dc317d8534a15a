"""The weekly digest sent: built from the stored history by oomcheck.report.digest, published to
the alert topic (or written out), outside any check: no lease, no detection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oomcheck.model import Mode, WorkerStatus
from oomcheck.redact import scrub

if TYPE_CHECKING:
    from oomcheck.ports import Deps

RUNNING = (WorkerStatus.ALIVE, WorkerStatus.BUSY)


@dataclass(frozen=True, slots=True)
class DigestSent:
    subject: str
    text: str
    published: bool
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": Mode.DIGEST.value, "subject": self.subject}
        out["published"] = self.published
        if self.error:
            out["error"] = self.error
        return out


def send_digest(
    deps: Deps, write: Callable[[str], object], *, sns: Any | None = None
) -> DigestSent:
    """The weekly digest from the stored history (read only: no lease, no check), to the alert
    topic when one is configured (``sns``: its client), else written out."""
    from oomcheck.report import digest

    settings = deps.settings
    state = deps.store.load()
    running = {n for n, r in state.workers.items() if r.status in RUNNING}
    built = digest.build(state.task_history, state.pressure, settings.target, deps.clock(), running)
    request = digest.sns_request(built)
    text = digest.text(built)
    if sns is None or not settings.topic_arn:
        write(f"Subject: {request['Subject']}\n\n{text}\n")
        return DigestSent(request["Subject"], text, published=False)
    try:
        sns.publish(TopicArn=settings.topic_arn, **request)
    except Exception as exc:  # noqa: BLE001 - reported (scrubbed), the next week tries again
        return DigestSent(
            request["Subject"], text, False, scrub(f"sns publish: {exc}", settings.secrets())
        )
    return DigestSent(request["Subject"], text, published=True)

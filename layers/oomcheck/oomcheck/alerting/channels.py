"""Several channels for one alert: the alert topic, the chat topic, an EventBridge bus.

An alert is marked sent (oomcheck.alerting.delivery) once every configured channel took it. A
channel that fails leaves the alert pending, and the next run retries it on that channel alone:
the channels that took it are saved with the pending alert (``PendingAlert.taken``, handed back
as ``AlertMessage.taken``), so a new container does not send it to them again; until that save,
this process remembers them too (per dedup key), for a warm container or a watch whose save
failed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from oomcheck.alerting.render import AlertMessage, PublishError
from oomcheck.ports import Publisher

# Dedup keys whose channels are remembered; the oldest are forgotten first (a retry then
# repeats channels, which the dedup key makes harmless).
REMEMBERED = 512


class FanoutPublisher:
    def __init__(self, channels: Sequence[Publisher]) -> None:
        if not channels:
            raise ValueError("FanoutPublisher needs at least one channel")
        self.channels = tuple(channels)
        self.taken: OrderedDict[str, set[str]] = OrderedDict()

    def describe(self) -> str:
        return " + ".join(c.describe() for c in self.channels)

    def publish(self, message: AlertMessage) -> str:
        """Every channel that has not taken ``message`` yet; raises when one of them failed,
        ``permanent`` only when every failure was."""
        taken = self.taken.setdefault(message.dedup_key, set())
        taken.update(message.taken)
        self.taken.move_to_end(message.dedup_key)
        failures: list[PublishError] = []
        replies = []
        for channel in self.channels:
            name = channel.describe()
            if name in taken:
                continue
            try:
                replies.append(channel.publish(message))
            except PublishError as exc:
                failures.append(PublishError(f"{name}: {exc}", permanent=exc.permanent))
                continue
            except Exception as exc:  # noqa: BLE001 - one channel's bug must not stop the others
                failures.append(PublishError(f"{name}: {type(exc).__name__}: {exc}"))
                continue
            taken.add(name)
        while len(self.taken) > REMEMBERED:
            self.taken.popitem(last=False)
        if failures:
            raise PublishError(
                "; ".join(str(f) for f in failures),
                permanent=all(f.permanent for f in failures),
                taken=frozenset(taken),
            )
        self.taken.pop(message.dedup_key, None)
        return ",".join(replies)


def channel_names(publisher: Publisher) -> tuple[str, ...]:
    """The channels behind ``publisher``, by the names ``PendingAlert.taken`` keeps."""
    if isinstance(publisher, FanoutPublisher):
        return tuple(c.describe() for c in publisher.channels)
    return (publisher.describe(),)


def outcomes(
    names: Sequence[str], earlier: frozenset[str], error: PublishError | None
) -> dict[str, str]:
    """What each channel did with one message, for the report: ``published`` (now),
    ``sent earlier`` (by a previous run), or ``failed`` (retried next run, alone)."""
    now_taken = error.taken if error is not None else frozenset(names)
    out = {}
    for name in names:
        if name in earlier:
            out[name] = "sent earlier"
        elif name in now_taken:
            out[name] = "published"
        else:
            out[name] = "failed"
    return out

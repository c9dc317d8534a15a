"""Several channels for one alert: the alert topic, the chat topic, an EventBridge bus.

An alert is marked sent (oomcheck.alerting.delivery) once every configured channel took it. A
channel that fails leaves the alert pending, and the next run retries it; the channels that took it
already are remembered by this process (per dedup key), so a warm Lambda container or a watch
retries the failing channel alone. After a cold start that memory is gone and the retry goes to
every channel again, with the same dedup key, which subscribers (and PagerDuty) deduplicate on.
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
                "; ".join(str(f) for f in failures), permanent=all(f.permanent for f in failures)
            )
        self.taken.pop(message.dedup_key, None)
        return ",".join(replies)

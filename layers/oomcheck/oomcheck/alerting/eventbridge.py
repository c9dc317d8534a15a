"""EventBridge: every alert as an event on a configured bus, for rules that route incidents to
PagerDuty, Opsgenie, Step Functions or another bus.

The event's detail is the alert topic's JSON payload unchanged (incident id, incident ids, dedup
key and all); its source is ``oomcheck`` and its detail-type names the action, so a rule tells a
trigger from a resolve without reading the detail.
"""

from __future__ import annotations

import json
from typing import Any

from oomcheck.alerting.render import AlertMessage, PublishError
from oomcheck.model import Action

SOURCE = "oomcheck"
DETAIL_TYPES = {
    Action.OPEN: "oomcheck Incident Opened",
    Action.UPDATE: "oomcheck Incident Updated",
    Action.REMIND: "oomcheck Incident Reminder",
    Action.RESOLVE: "oomcheck Incident Resolved",
}
# PutEvents' limit for one entry: source, detail-type, detail and resources, in bytes; the
# timestamp counts 14 more. Kept back a little, as for SNS.
ENTRY_MAX_BYTES = 256 * 1024 - 1024
# Codes about the entry itself (PutEvents reports them per entry, with HTTP 200): sending the
# same entry again can never succeed.
PERMANENT_CODES = frozenset(
    {"InvalidArgument", "MalformedDetail", "ValidationException", "InvalidEventPatternException"}
)


def put_events_entry(message: AlertMessage, bus: str) -> dict[str, Any]:
    return {
        "Source": SOURCE,
        "DetailType": DETAIL_TYPES[message.action],
        "Detail": json.dumps(message.payload, separators=(",", ":"), default=str),
        "EventBusName": bus,
    }


def entry_size(entry: dict[str, Any]) -> int:
    return 14 + sum(len(str(entry[k]).encode()) for k in ("Source", "DetailType", "Detail"))


class EventBridgeAlerter:
    """PutEvents to one bus (a name, or an ARN for another account's bus)."""

    def __init__(self, bus: str, client: Any | None = None) -> None:
        if client is None:
            from oomcheck.aws import client as make_client

            client = make_client("events")
        self.bus = bus
        self.client = client

    def describe(self) -> str:
        return f"events:{self.bus}"

    def publish(self, message: AlertMessage) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        entry = put_events_entry(message, self.bus)
        size = entry_size(entry)
        if size > ENTRY_MAX_BYTES:
            raise PublishError(f"events put: event of {size} bytes is over 256 KiB", permanent=True)
        try:
            reply = self.client.put_events(Entries=[entry])
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "error"))
            raise PublishError(f"events put: {code}", permanent=code in PERMANENT_CODES) from exc
        except BotoCoreError as exc:
            raise PublishError(f"events put: {type(exc).__name__}") from exc
        result = (reply.get("Entries") or [{}])[0]
        code = result.get("ErrorCode")
        if reply.get("FailedEntryCount") or code:
            code = str(code or "failed")
            raise PublishError(f"events put: {code}", permanent=code in PERMANENT_CODES)
        return str(result.get("EventId", ""))

"""The weekly digest's schedule: off unless DigestSchedule is set, invoking the checker with
the digest event (the same as events/digest.json), through the tick's role."""

from __future__ import annotations

import json
from typing import Any

from oomcheck.entry.invocation import parse_invocation
from oomcheck.model import Mode
from tests.template import cfn


def test_the_digest_schedule_is_off_by_default_and_sends_the_digest_event(
    template: dict[str, Any],
) -> None:
    assert template["Parameters"]["DigestSchedule"]["Default"] == ""
    tick = template["Resources"]["DigestTick"]
    assert tick["Type"] == "AWS::Scheduler::Schedule" and tick["Condition"] == "DigestOn"
    assert template["Conditions"]["DigestOn"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "DigestSchedule"}, ""]}]
    }
    target = tick["Properties"]["Target"]
    assert target["Arn"] == {
        "Fn::If": [
            "SnapStartOn",
            {"Ref": "CheckerFunction.Alias"},
            {"Fn::GetAtt": ["CheckerFunction", "Arn"]},
        ]
    }
    assert target["RoleArn"] == {"Fn::GetAtt": ["TickRole", "Arn"]}
    event = json.loads(target["Input"])
    assert event == json.loads((cfn.ROOT / "events" / "digest.json").read_text())
    assert parse_invocation(event).mode is Mode.DIGEST

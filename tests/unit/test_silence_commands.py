"""`oomcheck silence add | list | expire`, the Lambda's silence payload, and silences in the
state table beside the state (which never reads or deletes them)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from oomcheck.cli import main
from oomcheck.entry.invocation import InvocationError, parse_invocation
from oomcheck.runner import run_once
from oomcheck.silences.store import KEEP_ENDED_S, DynamoDBSilences, FileSilences, expire
from oomcheck.store.dynamodb import DynamoDBStateStore, table_definition
from tests.unit.test_handler import Context, handler_module  # noqa: F401 - a fixture
from tests.unit.test_runner import _death_setup

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture
def state_env(monkeypatch, tmp_path):
    monkeypatch.delenv("OOMCHECK_TABLE", raising=False)
    monkeypatch.setenv("OOMCHECK_STATE_FILE", str(tmp_path / "state.json"))
    monkeypatch.setenv("USER", "alice")
    return tmp_path


def test_add_list_expire_from_the_command_line(state_env, capsys):
    # add prints the id alone; the note about matching nothing goes to stderr
    assert (
        main(["silence", "add", "--match", "worker=celery@batch-*", "--for", "2h",
              "--comment", "resizing the batch fleet"])
        == 0
    )  # fmt: skip
    out, err = capsys.readouterr()
    silence_id = out.strip()
    assert silence_id.startswith("sil-") and "\n" not in silence_id
    assert "matches no open incident" in err
    # --json: an object with "id"
    assert main(["silence", "add", "--match", "kind=poison_task", "--until",
                 "2099-01-01T00:00Z", "--comment", "x", "--json"]) == 64  # fmt: skip
    assert "at most 90 days" in capsys.readouterr().err
    assert main(["silence", "add", "--match", "task=app.tasks.*", "--for", "30m",
                 "--comment", "deploy", "--by", "bob", "--json"]) == 0  # fmt: skip
    added = json.loads(capsys.readouterr().out)
    assert added["id"].startswith("sil-") and added["silence"]["created_by"] == "bob"
    # list shows both, active, with who and why
    assert main(["silence", "list"]) == 0
    listed = capsys.readouterr().out
    assert silence_id in listed and added["id"] in listed
    assert "alice" in listed and "resizing the batch fleet" in listed
    # expire ends one; list --json says so
    assert main(["silence", "expire", silence_id]) == 0
    assert capsys.readouterr().out.strip() == f"{silence_id} expired"
    assert main(["silence", "list", "--json"]) == 0
    rows = {r["id"]: r["status"] for r in json.loads(capsys.readouterr().out)["silences"]}
    assert rows == {silence_id: "ended", added["id"]: "active"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["silence", "add", "--match", "worker=x", "--for", "1h"], "needs --comment"),
        (["silence", "add", "--match", "worker=x", "--comment", "c"], "needs an end"),
        (["silence", "add", "--for", "1h", "--comment", "c"], "at least one --match"),
        (["silence", "expire", "sil-nope"], "no silence 'sil-nope'"),
    ],
)
def test_bad_silence_commands_are_one_line_and_exit_64(state_env, capsys, argv, message):
    assert main(argv) == 64
    out, err = capsys.readouterr()
    assert out == "" and message in err and err.count("\n") == 1


def test_a_silence_matching_a_known_worker_says_nothing_more(tmp_path, capsys, monkeypatch):
    deps, *_ = _death_setup(tmp_path)  # the state now knows celery@w1
    monkeypatch.setenv("OOMCHECK_STATE_FILE", deps.settings.state_file)
    monkeypatch.delenv("OOMCHECK_TABLE", raising=False)
    argv = ["silence", "add", "--match", "worker=celery@w1", "--for", "1h", "--comment", "c"]
    assert main([*argv, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["matches_now"] == 1 and err == ""


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_the_sample_event_adds_a_silence_through_the_lambda(handler_module, tmp_path):  # noqa: F811
    handler_module._deps.silences = FileSilences(str(tmp_path / "silences.json"))
    event = json.loads((EVENTS / "silence.json").read_text())
    assert parse_invocation(event).silence == event["silence"]
    added = handler_module.handler(event, Context())
    assert added["id"].startswith("sil-") and added["silence"]["status"] == "active"
    listed = handler_module.handler({"silence": {"action": "list"}}, Context())
    assert [s["id"] for s in listed["silences"]] == [added["id"]]
    ended = handler_module.handler({"silence": {"action": "expire", "id": added["id"]}}, Context())
    assert ended["silence"]["status"] == "ended"
    refused = handler_module.handler(
        {"silence": {"action": "add", "match": ["worker=x"], "for": "1h"}}, Context()
    )
    assert refused == {"error": "a silence needs --comment: why, for whoever is paged next"}


def test_a_silence_payload_must_be_an_object():
    with pytest.raises(InvocationError, match='"silence" must be a JSON object'):
        parse_invocation({"silence": "worker=x"})


def test_silences_live_in_the_state_table_beside_the_state(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(**table_definition("oomcheck-state"))
        # Given a check that saved state for the target, and a silence for the same target
        deps, *_ = _death_setup(tmp_path)
        deps.store = DynamoDBStateStore("oomcheck-state", "app", client=client)
        run_once(deps)
        silences = DynamoDBSilences("oomcheck-state", "app", client=client)
        deps.silences = silences
        from oomcheck.silences import commands

        out, _ = commands.add(
            silences, None, matches=["kind=worker_lost"], comment="c", now=deps.clock(), for_="1h"
        )
        # Then the silence reads back, with a TTL a week after it ends
        [silence] = silences.read()
        item = client.get_item(
            TableName="oomcheck-state",
            Key={"pk": {"S": "app"}, "sk": {"S": f"silence#{out['id']}"}},
        )["Item"]
        assert int(item["expires_at"]["N"]) == int(silence.ends_at + KEEP_ENDED_S)
        # And runs load the state and save it without touching the silence
        deps.clock.now += 60
        report = run_once(deps)
        assert report.sources["state"].state.value == "ok"
        assert [s.id for s in silences.read()] == [out["id"]]
        # And another target sees none of it
        assert DynamoDBSilences("oomcheck-state", "other", client=client).read() == ()
        ended = expire(silences, out["id"], deps.clock())
        assert not ended.active(deps.clock())

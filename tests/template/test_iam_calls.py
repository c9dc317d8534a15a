"""The function's IAM policy is exactly what the code uses.

The real handler (functions/checker/app.py) runs with the environment template.yaml gives it,
against moto (resources made as the template declares them) and a real Redis with a real Celery
worker that dies mid-task: scheduled checks, an alert, state saved and pruned, a watch, an audit.
Every AWS call it makes is recorded and mapped to the IAM permissions it is authorized against
(tests/template/iam.py). The test fails if the policy of the function's role does not allow one
of them, or allows an action that no call needed.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
import redis
from botocore.client import BaseClient

from oomcheck.demo import services
from oomcheck.demo.arrivals import sqs_batch
from oomcheck.demo.invoke import LocalContext
from oomcheck.demo.workers import WorkerProcess, wait_for
from tests.template import cfn, iam

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = cfn.ROOT / "functions" / "checker" / "app.py"
EVENTS = cfn.ROOT / "events"
WORKER = "worker@oomcheck-e2e"
BROKER_PARAM = "/oomcheck-e2e/broker-url"
BACKEND_PARAM = "/oomcheck-e2e/result-backend"
EXTRA_GROUP = "/aws/containerinsights/e2e/performance"
TARGET = "e2e-app"


@dataclass
class Recorder:
    """Every botocore API call made while ``on``."""

    calls: list[iam.Call] = field(default_factory=list)
    on: bool = False


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    original = BaseClient._make_api_call

    def recording(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if recorder.on:
            service = client.meta.service_model.service_name
            recorder.calls.append(iam.Call(service, operation, json.loads(json.dumps(params))))
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    return recorder


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = services.start_moto()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture
def private_redis() -> Iterator[str]:
    """A redis-server of this test's own (redis://127.0.0.1:PORT): workers of other test runs
    on the machine's shared Redis would answer this test's broadcasts."""
    server = services.start_redis()
    try:
        yield server.url.rsplit("/", 1)[0]
    finally:
        server.stop()


@dataclass
class Deployed:
    stack: cfn.Stack
    keys: iam.KeyInfo
    table: str


def _client(name: str) -> Any:
    return boto3.client(name, region_name=cfn.REGION)


def _deploy(
    template: dict[str, Any], broker: str, backend: str, extra: dict[str, str] | None = None
) -> Deployed:
    """Make on moto what the template declares, with every optional part on (and ``extra``
    parameters), and return the template resolved against it."""
    kms = _client("kms")
    alerts_key = kms.create_key(Description="alerts")["KeyMetadata"]
    url_key = kms.create_key(Description="url parameters")["KeyMetadata"]
    params = {
        "BrokerUrlParameter": BROKER_PARAM,
        "ResultBackendParameter": BACKEND_PARAM,
        "UrlParametersKmsKeyArn": url_key["Arn"],
        "ExtraLogGroups": EXTRA_GROUP,
        "Target": TARGET,
        "InspectTimeout": "0.5",
        "RepingTimeout": "0.5",
        "DiscoveryInterval": "0",
        "WatchInterval": "1",
        "EventBusArn": f"arn:aws:events:{cfn.REGION}:{cfn.ACCOUNT}:event-bus/oncall",
        **(extra or {}),
    }
    stack = cfn.Stack(template, params, stack_name="oomcheck-e2e")
    logs = _client("logs")
    groups = {}
    for logical in ("EcsEventsLogGroup", "CheckerLogGroup"):
        name = stack.properties(logical)["LogGroupName"]
        logs.create_log_group(logGroupName=name)
        groups[logical] = cfn.Physical(
            name, {"Arn": f"arn:aws:logs:{cfn.REGION}:{cfn.ACCOUNT}:log-group:{name}:*"}
        )
    logs.create_log_group(logGroupName=EXTRA_GROUP)

    declared = stack.properties("StateTable")
    table = f"oomcheck-e2e-StateTable-{uuid.uuid4().hex[:8]}"
    dynamodb = _client("dynamodb")
    table_arn = dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=declared["AttributeDefinitions"],
        KeySchema=declared["KeySchema"],
        BillingMode=declared["BillingMode"],
    )["TableDescription"]["TableArn"]
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification=declared["TimeToLiveSpecification"]
    )
    topic_arn = _client("sns").create_topic(
        Name="oomcheck-e2e-alerts", Attributes={"KmsMasterKeyId": alerts_key["Arn"]}
    )["TopicArn"]
    chat_arn = _client("sns").create_topic(
        Name="oomcheck-e2e-chat", Attributes={"KmsMasterKeyId": alerts_key["Arn"]}
    )["TopicArn"]
    _client("events").create_event_bus(Name="oncall")
    ssm = _client("ssm")
    for name, url in ((BROKER_PARAM, broker), (BACKEND_PARAM, backend)):
        ssm.put_parameter(Name=name, Value=url, Type="SecureString", KeyId=url_key["Arn"])

    sqs = _client("sqs")
    queue_url = sqs.create_queue(QueueName="oomcheck-e2e-ecs-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    stack.physical.update(groups)
    stack.physical["EcsEventsQueue"] = cfn.Physical(queue_url, {"Arn": queue_arn})
    stack.physical["StateTable"] = cfn.Physical(table, {"Arn": table_arn})
    stack.physical["AlertsTopic"] = cfn.Physical(topic_arn)
    stack.physical["ChatTopic"] = cfn.Physical(chat_arn)
    stack.physical["AlertsKey"] = cfn.Physical(alerts_key["KeyId"], {"Arn": alerts_key["Arn"]})
    keys = iam.KeyInfo(
        topic_keys={topic_arn: alerts_key["Arn"], chat_arn: alerts_key["Arn"]},
        parameter_keys={BROKER_PARAM: url_key["Arn"], BACKEND_PARAM: url_key["Arn"]},
    )
    return Deployed(stack, keys, table)


def _seed_stale_item(table: str) -> None:
    """State an earlier run left, old enough that this run prunes it (a Delete in the save)."""
    _client("dynamodb").put_item(
        TableName=table,
        Item={
            "pk": {"S": TARGET},
            "sk": {"S": "event#ecs-stopped-long-ago"},
            "data": {"S": json.dumps({"at": 1_000_000.0})},
            "expires_at": {"N": "1604800"},
        },
    )


def _load_handler() -> Any:
    name = f"oomcheck_checker_app_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _started(backend: str, task_id: str) -> bool:
    client = redis.Redis.from_url(backend)
    try:
        raw = client.get(f"celery-task-meta-{task_id}")
    finally:
        client.close()
    return isinstance(raw, bytes) and raw.startswith(b'{"status": "STARTED"')


def _assert_policy_is_exact(
    policy_template: dict[str, Any], deployed: Deployed, recorder: Recorder
) -> None:
    """Every recorded call is granted by the function's role, and every grant was needed."""
    needs = [n for call in recorder.calls for n in iam.needs(call, deployed.keys)]
    stack = cfn.Stack(
        policy_template,
        deployed.stack.params,
        deployed.stack.physical,
        stack_name=deployed.stack.stack_name,
    )
    [policy] = stack.properties("CheckerRole", "Policies")["Policies"]
    statements = iam.statements([policy["PolicyDocument"]])

    missing = sorted(
        {(n.action, n.resource, n.because) for n in needs if not iam.allowed(statements, n)}
    )
    assert not missing, "the code needs, the template does not grant:\n" + "\n".join(
        f"  {a} on {r} ({why})" for a, r, why in missing
    )

    unused = []
    for statement in statements:
        if str(statement.get("Sid", "")).startswith("Runtime"):
            continue  # used by the Lambda service for the function, not by the code
        for action in iam._as_list(statement["Action"]):
            one = dict(statement, Action=action)
            if not any(iam.grants(one, n) for n in needs):
                unused.append(f"{statement.get('Sid')}: {action} on {statement['Resource']}")
    assert not unused, "granted, never needed by the code:\n  " + "\n  ".join(unused)


@pytest.fixture
def policy_template(request: pytest.FixtureRequest, template: dict[str, Any]) -> dict[str, Any]:
    """The role as CloudFormation will get it: from the SAM-transformed template when the SAM
    toolchain is here, else from template.yaml (the role is plain CloudFormation in both)."""
    try:
        translate = request.getfixturevalue("translate")
    except pytest.skip.Exception:
        return template
    return dict(
        translate({"BrokerUrlParameter": BROKER_PARAM, "ResultBackendParameter": BACKEND_PARAM})
    )


def test_policy_is_exactly_what_the_code_calls(
    template: dict[str, Any],
    policy_template: dict[str, Any],
    recorder: Recorder,
    moto_endpoint: str,
    private_redis: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    started = time.monotonic()
    broker_db_url, redis_db_url = f"{private_redis}/1", f"{private_redis}/2"
    deployed = _deploy(template, broker_db_url, redis_db_url)
    _seed_stale_item(deployed.table)
    env = deployed.stack.properties("CheckerFunction", "Environment")["Environment"]["Variables"]
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    app = _load_handler()

    from celery import Celery

    client = Celery("e2e-client", broker=broker_db_url, backend=redis_db_url, set_as_current=False)
    worker = WorkerProcess(
        WORKER, broker_db_url, redis_db_url, concurrency=1, log_path=str(tmp_path / "worker.log")
    )

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        recorder.on = True
        try:
            return dict(app.handler(event, LocalContext(timeout_s=30)))
        finally:
            recorder.on = False

    reports: list[dict[str, Any]] = []
    try:
        worker.start()
        worker.wait_ready(client.control)
        scheduled = json.loads((EVENTS / "scheduled.json").read_text())
        reports.append(invoke(scheduled))
        assert [w["name"] for w in reports[-1]["workers"]] == [WORKER], reports[-1]
        task_id = str(client.send_task("demo.sleepy", args=[120]).id)
        wait_for(lambda: _started(redis_db_url, task_id), 20, what="the task to start")
        reports.append(invoke(json.loads((EVENTS / "scheduled-eventbridge.json").read_text())))
        worker.kill(signal.SIGKILL)
        assert worker.wait(10) is not None

        def alerted() -> bool:
            reports.append(invoke(scheduled))
            return any(a["published"] for a in reports[-1]["alerts"])

        wait_for(alerted, 30, interval=0.5, what="an alert about the killed worker")
        reports.append(invoke({"mode": "watch", "duration_s": 3, "interval_s": 1}))
        reports.append(invoke(json.loads((EVENTS / "audit.json").read_text())))
        # an ECS task-stopped event through the queue: a check, answered as a partial batch
        oom = json.loads((EVENTS / "ecs-task-stopped-oom.json").read_text())
        assert invoke(sqs_batch([oom], sent_at=time.time())) == {"batchItemFailures": []}
    finally:
        worker.stop()
        client.close()
        deps = getattr(app, "_deps", None)
        if deps is not None and deps.inspector is not None:
            deps.inspector.close()
        parameters.clear_caches()

    for report in reports:
        bad = {
            k: v
            for k, v in report["sources"].items()
            if k != "alerts" and not (v == "ok" or v.startswith("off"))
        }
        assert not bad, f"a source failed in a {report['mode']} run: {bad}"
    assert reports[-1]["mode"] == "audit" and reports[-1]["incidents"]

    _assert_policy_is_exact(policy_template, deployed, recorder)

    operations = {f"{c.service}:{c.operation}" for c in recorder.calls}
    transact = {
        kind
        for c in recorder.calls
        if c.operation == "TransactWriteItems"
        for item in c.params["TransactItems"]
        for kind in item
    }
    assert {"ConditionCheck", "Put", "Delete"} <= transact, transact
    assert {
        "dynamodb:UpdateItem",
        "dynamodb:Query",
        "sns:Publish",
        "events:PutEvents",
        "ssm:GetParameter",
        "logs:FilterLogEvents",
    } <= operations, operations
    # the alert and the chat topic each got the alert, with the attributes filters rely on
    publishes = [c.params for c in recorder.calls if c.operation == "Publish"]
    env_topics = {env["OOMCHECK_TOPIC_ARN"], env["OOMCHECK_CHAT_TOPIC_ARN"]}
    assert {p["TopicArn"] for p in publishes} == env_topics
    for publish in publishes:
        assert {"kind", "severity", "action", "dedup_key"} <= set(publish["MessageAttributes"])
    assert time.monotonic() - started < 60, "the end-to-end IAM check must stay under a minute"


def _celery_body(task_id: str, name: str) -> str:
    """A Celery message as kombu's SQS transport puts it on a queue: base64 of the envelope."""
    envelope = {"body": "", "headers": {"id": task_id, "task": name}, "properties": {}}
    return base64.b64encode(json.dumps(envelope).encode()).decode()


def test_an_sqs_deployment_calls_exactly_what_the_template_grants(
    template: dict[str, Any],
    policy_template: dict[str, Any],
    recorder: Recorder,
    moto_endpoint: str,
    private_redis: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the function deployed for Celery on SQS (broker sqs://, SqsQueueArns and
    # SqsDeadLetterQueueArns set), a queue whose redrive policy has moved a task to its DLQ
    started = time.monotonic()
    queue, dlq = "e2e-celery", "e2e-celery-dlq"
    arn = f"arn:aws:sqs:{cfn.REGION}:{cfn.ACCOUNT}:{{}}"
    deployed = _deploy(
        template,
        "sqs://",
        f"{private_redis}/2",
        {
            "Queues": queue,
            "SqsQueueArns": arn.format(queue),
            "SqsDeadLetterQueueArns": arn.format(dlq),
            "TaskAcksLate": json.dumps({"*": True}),
        },
    )
    _seed_stale_item(deployed.table)
    sqs = _client("sqs")
    dlq_url = sqs.create_queue(QueueName=dlq)["QueueUrl"]
    redrive = {"deadLetterTargetArn": arn.format(dlq), "maxReceiveCount": "3"}
    sqs.create_queue(QueueName=queue, Attributes={"RedrivePolicy": json.dumps(redrive)})
    task_id = str(uuid.uuid4())
    sqs.send_message(QueueUrl=dlq_url, MessageBody=_celery_body(task_id, "shop.tasks.report"))
    env = deployed.stack.properties("CheckerFunction", "Environment")["Environment"]["Variables"]
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    app = _load_handler()

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        recorder.on = True
        try:
            return dict(app.handler(event, LocalContext(timeout_s=30)))
        finally:
            recorder.on = False

    # When scheduled checks, a watch and an audit run
    scheduled = json.loads((EVENTS / "scheduled.json").read_text())
    try:
        reports = [invoke(scheduled), invoke(scheduled)]
        reports.append(invoke({"mode": "watch", "duration_s": 2, "interval_s": 1}))
        reports.append(invoke(json.loads((EVENTS / "audit.json").read_text())))
    finally:
        parameters.clear_caches()

    # Then the SQS source read the queues, the dead letter was alerted, and the role grants
    # exactly the calls made: no receive from the live queue, only from its dead-letter queue
    for report in reports:
        assert report["sources"]["sqs"] == "ok", report["sources"]
        assert report["sources"]["inspect"].startswith("off"), report["sources"]
    dead = [f for f in reports[0]["findings"] if f["kind"] == "task_dead_lettered"]
    assert [f["tasks"][0]["id"] for f in dead] == [task_id]
    assert any(a["published"] for a in reports[0]["alerts"])
    receives = {c.params["QueueUrl"] for c in recorder.calls if c.operation == "ReceiveMessage"}
    assert receives == {dlq_url}
    _assert_policy_is_exact(policy_template, deployed, recorder)
    assert time.monotonic() - started < 60, "the SQS IAM check must stay under a minute"

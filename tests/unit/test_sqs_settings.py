"""Celery on SQS settings: sqs:// is its own transport, each task's ack mode and limit come from
the app (-A) or OOMCHECK_TASK_ACKS_LATE, and predefined queues' keys never show."""

from __future__ import annotations

import json

import pytest
from celery import Celery

from oomcheck.config.celery_app import app_variables
from oomcheck.config.settings import SettingsError, from_env

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"


def sqs_app() -> Celery:
    app = Celery("shop", broker="sqs://", backend="redis://127.0.0.1:1/4", set_as_current=False)
    app.conf.update(
        task_acks_late=False,
        task_time_limit=900,
        broker_transport_options={"region": "eu-west-1", "queue_name_prefix": "prod-"},
    )

    @app.task(name="shop.report", acks_late=True, time_limit=60)
    def report() -> None: ...

    @app.task(name="shop.mail")
    def mail() -> None: ...

    return app


def test_the_app_gives_each_tasks_ack_mode_and_limit_on_sqs() -> None:
    found = app_variables(sqs_app())
    modes = json.loads(found["OOMCHECK_TASK_ACKS_LATE"])
    assert modes == {"*": False, "shop.mail": False, "shop.report": True}
    limits = json.loads(found["OOMCHECK_TASK_LIMITS"])
    assert limits == {"shop.mail": 900.0, "shop.report": 60.0}
    options = json.loads(found["OOMCHECK_BROKER_TRANSPORT_OPTIONS"])
    assert options == {"region": "eu-west-1", "queue_name_prefix": "prod-"}
    settings = from_env(found)
    assert settings.broker_transport == "sqs"
    assert settings.policy.task_acks_late["shop.report"] is True


def test_on_redis_the_app_gives_no_ack_modes() -> None:
    app = Celery("shop", broker="redis://127.0.0.1:1/3", set_as_current=False)
    assert "OOMCHECK_TASK_ACKS_LATE" not in app_variables(app)


@pytest.mark.parametrize("raw", ['{"a": 1}', '{"a": "yes"}', "[true]"])
def test_an_ack_mode_must_be_true_or_false(raw: str) -> None:
    with pytest.raises(SettingsError, match="OOMCHECK_TASK_ACKS_LATE"):
        from_env({"OOMCHECK_BROKER_URL": "sqs://", "OOMCHECK_TASK_ACKS_LATE": raw})


def test_predefined_queue_keys_are_secrets() -> None:
    options = {"predefined_queues": {"celery": {"url": "https://q", "secret_access_key": SECRET}}}
    settings = from_env(
        {
            "OOMCHECK_BROKER_URL": "sqs://",
            "OOMCHECK_BROKER_TRANSPORT_OPTIONS": json.dumps(options),
        }
    )
    assert SECRET in settings.secrets()

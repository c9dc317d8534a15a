"""RabbitMQ quorum queues' delivery limits, from the environment (the Lambda) and from the app's
own task_queues with -A (AMQP's passive declare does not return a queue's arguments)."""

from __future__ import annotations

import json

import pytest
from celery import Celery
from kombu import Exchange, Queue

from oomcheck.config import parsers
from oomcheck.config.celery_app import app_variables
from oomcheck.model import QuorumLimit


def test_quorum_queues_parse_limits_and_dead_letter_targets():
    raw = json.dumps(
        {
            "work": {"delivery_limit": 2, "dead_letter_exchange": "dlx"},
            "reports": {"delivery_limit": 20, "dead_letter_routing_key": "k"},
        }
    )
    assert parsers.quorum_queues(raw) == {
        "work": QuorumLimit(2, "dlx", None),
        "reports": QuorumLimit(20, None, "k"),
    }


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        pytest.param('{"work": 2}', "['work'].delivery_limit must be a whole number", id="bare"),
        pytest.param('{"work": {"delivery_limit": -1}}', "0 or more", id="negative"),
        pytest.param('{"work": {"delivery_limit": true}}', "whole number", id="bool"),
        pytest.param(
            '{"work": {"delivery_limit": 2, "dead_letter_exchange": 5}}',
            "must be text",
            id="exchange-not-text",
        ),
        pytest.param("[]", "must be a JSON object", id="not-object"),
    ],
)
def test_bad_quorum_queues_say_what_is_wanted(raw: str, said: str):
    with pytest.raises(ValueError) as caught:
        parsers.quorum_queues(raw)
    assert said in str(caught.value)


def test_task_queues_refuse_an_empty_queue():
    assert parsers.task_queues('{"*": "celery", "a.b": "work"}') == {"*": "celery", "a.b": "work"}
    with pytest.raises(ValueError, match="must be a queue name"):
        parsers.task_queues('{"a.b": ""}')


def _app(queues: list[Queue], **conf: object) -> Celery:
    app = Celery(
        "shop",
        broker="amqp://guest:guest@127.0.0.1:5672//",
        backend="redis://127.0.0.1/1",
        set_as_current=False,
    )
    app.conf.update(task_queues=queues, **conf)
    return app


def test_the_app_gives_its_quorum_queues_and_each_task_queue():
    # Given an app with a quorum queue (limit, dead-letter exchange), a classic queue, a route
    work = Queue(
        "work",
        Exchange("work"),
        routing_key="work",
        queue_arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": 3,
            "x-dead-letter-exchange": "dlx",
            "x-dead-letter-routing-key": "dead",
        },
    )
    app = _app(
        [work, Queue("celery"), Queue("plain", queue_arguments={"x-queue-type": "quorum"})],
        task_default_queue="celery",
        task_routes={"shop.heavy": {"queue": "work"}},
    )

    @app.task(name="shop.heavy", shared=False)
    def heavy() -> None: ...

    @app.task(name="shop.light", shared=False)
    def light() -> None: ...

    found = app_variables(app)
    # Then only the queue with a delivery limit is listed, and only tasks off the default queue
    assert json.loads(found["OOMCHECK_QUORUM_QUEUES"]) == {
        "work": {
            "delivery_limit": 3,
            "dead_letter_exchange": "dlx",
            "dead_letter_routing_key": "dead",
        }
    }
    assert json.loads(found["OOMCHECK_TASK_QUEUES"]) == {"*": "celery", "shop.heavy": "work"}


def test_an_app_without_a_delivery_limit_sets_neither():
    found = app_variables(_app([Queue("celery")]))
    assert "OOMCHECK_QUORUM_QUEUES" not in found and "OOMCHECK_TASK_QUEUES" not in found

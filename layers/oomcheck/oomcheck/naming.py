"""Exact identity for broker presence in one line of worker config.

A worker whose broker connections carry its nodename as their name is told apart from every
other worker by the broker's own listing, wherever it runs (EKS pods, whose names encode no
address; several workers on one host). In the workers' Celery app module::

    from oomcheck.naming import name_broker_connections

    name_broker_connections(app)

The name is set when the worker starts (Celery's ``celeryd_init`` signal, sent with the nodename
before any broker connection opens), so ``-n`` and ``%h`` forms are the names the checker sees.
Only this module is imported into the worker: it needs Celery and nothing of oomcheck's.
"""

from __future__ import annotations

from typing import Any


def name_broker_connections(app: Any) -> None:
    """Name every broker connection of ``app``'s workers after their nodename (Redis brokers:
    ``CLIENT SETNAME`` through kombu's ``client_name`` transport option)."""
    from celery import signals

    def on_init(sender: object = None, instance: Any = None, **_: object) -> None:
        if instance is not None and getattr(instance, "app", app) is not app:
            return  # another app's worker in the same process
        options = dict(app.conf.broker_transport_options or {})
        options["client_name"] = str(sender)
        app.conf.broker_transport_options = options

    signals.celeryd_init.connect(on_init, weak=False)

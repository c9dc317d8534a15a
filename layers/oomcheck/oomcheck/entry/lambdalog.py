"""Logging in the Lambda: oomcheck's, kombu's and Celery's loggers write through the handler's
Powertools Logger, so every line is one JSON shape with the run's correlation keys on it (the
target, the mode, the lease owner, the scheduled time, the request id), and nothing they log
carries a password.

The CLI does not call this: its lines stay plain text on stderr.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING

from oomcheck.redact import scrub

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

# Top-level loggers whose lines go through Powertools; their children propagate to them.
LIBRARY_LOGGERS = frozenset({"oomcheck", "kombu", "celery", "amqp"})


class SecretFilter(logging.Filter):
    """Removes the configured passwords, and any URL's userinfo, from a line before it is
    written: a library may put a connection URL in a message or an exception."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__("oomcheck-secrets")
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            # An exception's text (and its causes') may quote a URL: the traceback is rendered
            # here, cleaned, into the message, instead of by the formatter from exc_info.
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = scrub(message, self.secrets), None
        return True


def route_library_logs(logger: Logger, secrets: Iterable[str] = ()) -> None:
    """Send the library loggers' lines through ``logger``'s handler, with a secret filter on it.
    Idempotent: a warm container calls it on every invocation."""
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    for name in LIBRARY_LOGGERS:
        logging.getLogger(name)  # registered now, so Powertools finds it before its import
    copy_config_to_registered_loggers(source_logger=logger, include=set(LIBRARY_LOGGERS))
    for handler in logger.handlers:
        for old in [f for f in handler.filters if isinstance(f, SecretFilter)]:
            handler.removeFilter(old)
        handler.addFilter(SecretFilter(secrets))


def bind_run(
    logger: Logger, *, target: str, mode: str, owner: str, scheduled_time: str | None = None
) -> None:
    """The run's correlation keys, on every line until the next invocation clears them; ``name``
    says which logger wrote the line (Powertools' own, kombu.connection...)."""
    logger.append_keys(
        target=target, mode=mode, run_owner=owner, scheduled_time=scheduled_time, name="%(name)s"
    )

"""Publishers: SNS (the deployed checker's alert topic and its chat topic) and a printer (no
topic configured)."""

from __future__ import annotations

from typing import Any

from oomcheck.alerting.chat import chat_request
from oomcheck.alerting.render import (
    SNS_MAX_BYTES,
    AlertMessage,
    PublishError,
    request_size,
    sns_request,
)

# Errors about the message itself: sending the same message again can never succeed.
PERMANENT_CODES = frozenset({"InvalidParameter", "InvalidParameterValue", "ParameterValueInvalid"})


class SnsAlerter:
    def __init__(self, topic_arn: str, client: Any | None = None) -> None:
        if client is None:
            from oomcheck.aws import client as make_client

            client = make_client("sns")
        self.topic_arn = topic_arn
        self.client = client

    def describe(self) -> str:
        return f"sns:{self.topic_arn}"

    def publish(self, message: AlertMessage) -> str:
        return _publish(self.client, self.topic_arn, sns_request(message))


class ChatAlerter(SnsAlerter):
    """The chat topic: custom notifications for Amazon Q Developer in chat applications
    (oomcheck.alerting.chat), on a topic of their own so the alert topic's subscribers keep their
    shape."""

    def describe(self) -> str:
        return f"chat:{self.topic_arn}"

    def publish(self, message: AlertMessage) -> str:
        return _publish(self.client, self.topic_arn, chat_request(message))


def _publish(client: Any, topic_arn: str, request: dict[str, Any]) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    size = request_size(request)
    if size > SNS_MAX_BYTES:
        raise PublishError(f"sns publish: message of {size} bytes is over 256 KiB", permanent=True)
    try:
        reply = client.publish(TopicArn=topic_arn, **request)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "error"))
        raise PublishError(f"sns publish: {code}", permanent=code in PERMANENT_CODES) from exc
    except BotoCoreError as exc:
        raise PublishError(f"sns publish: {type(exc).__name__}") from exc
    return str(reply.get("MessageId", ""))


class PrintAlerter:
    """No topic configured: alerts go to a stream (the CLI prints them) and the report."""

    def __init__(self, write: Any) -> None:
        self.write = write

    def describe(self) -> str:
        return "printed (no topic configured)"

    def publish(self, message: AlertMessage) -> str:
        rule = "=" * 72
        self.write(f"{rule}\nSubject: {message.subject}\n\n{message.text}\n{rule}\n")
        return "printed"

"""The custom-notification schema of Amazon Q Developer in chat applications (formerly AWS
Chatbot), as its documentation states it ("Custom notifications using Amazon Q Developer in chat
applications", Event schema and Parameter details):

    version      required  must be "1.0"
    source       required  must be "custom"
    id           optional  string, a unique event identifier
    content      required
      textType     optional  only "client-markdown" is supported
      title        optional  string (markdown, emojis)
      description  required  string (markdown)
      nextSteps    optional  list of strings (rendered as a bulleted list)
      keywords     optional  list of strings (rendered as tags)
    metadata     optional
      threadId          optional  string; notifications with the same one thread together
      summary           optional  string
      eventType         optional  string
      relatedResources  optional  list of strings
      additionalContext optional  object of string values

Anything else, or another type, and the channel does not render the notification.
"""

from __future__ import annotations

from typing import Any

_CONTENT = {"textType", "title", "description", "nextSteps", "keywords"}
_METADATA = {"threadId", "summary", "eventType", "relatedResources", "additionalContext"}


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return [f"{where} must be a list of strings"]
    return []


def _content(content: Any) -> list[str]:
    if not isinstance(content, dict):
        return ["content must be an object"]
    errors = [f"content.{k} is not in the schema" for k in set(content) - _CONTENT]
    if content.get("textType", "client-markdown") != "client-markdown":
        errors.append("content.textType must be client-markdown")
    if "title" in content and not isinstance(content["title"], str):
        errors.append("content.title must be a string")
    if not isinstance(content.get("description"), str) or not content["description"]:
        errors.append("content.description is required, a string")
    for key in ("nextSteps", "keywords"):
        if key in content:
            errors += _strings(content[key], f"content.{key}")
    return errors


def _metadata(metadata: Any) -> list[str]:
    if not isinstance(metadata, dict):
        return ["metadata must be an object"]
    errors = [f"metadata.{k} is not in the schema" for k in set(metadata) - _METADATA]
    for key in ("threadId", "summary", "eventType"):
        if key in metadata and not isinstance(metadata[key], str):
            errors.append(f"metadata.{key} must be a string")
    if "relatedResources" in metadata:
        errors += _strings(metadata["relatedResources"], "metadata.relatedResources")
    context = metadata.get("additionalContext", {})
    if not isinstance(context, dict) or not all(isinstance(v, str) for v in context.values()):
        errors.append("metadata.additionalContext must map keys to strings")
    return errors


def violations(message: Any) -> list[str]:
    """What in ``message`` the documented schema does not allow; empty when it renders."""
    if not isinstance(message, dict):
        return ["the message must be a JSON object"]
    errors = [
        f"{k} is not in the schema"
        for k in set(message) - {"version", "source", "id", "content", "metadata"}
    ]
    if message.get("version") != "1.0":
        errors.append('version must be "1.0"')
    if message.get("source") != "custom":
        errors.append('source must be "custom"')
    if "id" in message and not isinstance(message["id"], str):
        errors.append("id must be a string")
    errors += _content(message.get("content"))
    if "metadata" in message:
        errors += _metadata(message["metadata"])
    return errors

"""State in a DynamoDB table (the Lambda), fenced by the lease (oomcheck.store.base).

Table layout (single table, see template.yaml): partition key ``pk`` = the target (one per
monitored Celery app), sort key ``sk`` = the item key from codec.state_to_items, ``data`` = the
item as a JSON string, ``expires_at`` = epoch seconds for DynamoDB TTL on finished items.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from oomcheck.model import State
from oomcheck.store import codec
from oomcheck.store.base import LEASE_KEY, LeaseBusy, LeaseLost, SaveStats, StateError

# TransactWriteItems takes 100 actions; one of them is the lease condition.
_TX_CHUNK = 99


class DynamoDBStateStore:
    def __init__(self, table: str, target: str = "default", client: Any | None = None) -> None:
        if client is None:
            from oomcheck.aws import client as make_client

            client = make_client("dynamodb")
        self.table = table
        self.target = target
        self.client = client
        # The state this store last wrote or read, with the version token of the lease item at
        # that moment: a container that runs check after check (watch mode, a warm Lambda)
        # reads the table again only when another container wrote since.
        self._cache: tuple[str, State] | None = None
        self._leased_version: str | None = None

    def describe(self) -> str:
        return f"dynamodb:{self.table}/{self.target}"

    def _key(self, sk: str) -> dict[str, Any]:
        return {"pk": {"S": self.target}, "sk": {"S": sk}}

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                raise
            if code == "TransactionCanceledException":
                raise
            raise StateError(f"dynamodb {operation}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StateError(f"dynamodb {operation}: {type(exc).__name__}") from exc

    def acquire(self, owner: str, now: float, lease_s: float) -> None:
        from botocore.exceptions import ClientError

        self._leased_version = None
        try:
            reply = self._call(
                "update_item",
                TableName=self.table,
                Key=self._key(LEASE_KEY),
                ReturnValues="ALL_OLD",
                UpdateExpression="SET #o = :me, #u = :until",
                ConditionExpression="attribute_not_exists(#o) OR #u < :now OR #o = :me",
                ExpressionAttributeNames={"#o": "owner", "#u": "lease_until"},
                ExpressionAttributeValues={
                    ":me": {"S": owner},
                    ":until": {"N": f"{now + lease_s:.3f}"},
                    ":now": {"N": f"{now:.3f}"},
                },
            )
        except ClientError as exc:
            raise LeaseBusy("another run holds the state lease") from exc
        self._leased_version = reply.get("Attributes", {}).get("version", {}).get("S")

    def load(self) -> State:
        cached, leased = self._cache, self._leased_version
        self._leased_version = None  # good for this load only; an audit takes no lease
        if cached is not None and leased is not None and cached[0] == leased:
            return cached[1]
        items: dict[str, codec.Json] = {}
        version: str | None = None
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": self.target}},
            "ConsistentRead": True,
        }
        while True:
            page = self._call("query", **kwargs)
            for item in page.get("Items", ()):
                sk = item["sk"]["S"]
                if sk == LEASE_KEY:
                    version = item.get("version", {}).get("S")
                    meta = item.get("meta", {}).get("S")
                    if meta:
                        items["meta"] = json.loads(meta)
                    continue
                items[sk] = json.loads(item["data"]["S"])
            last = page.get("LastEvaluatedKey")
            if not last:
                break
            kwargs["ExclusiveStartKey"] = last
        try:
            state = codec.state_from_items(items)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"state table {self.table} holds an item oomcheck cannot read: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._cache = (version, state) if version else None
        return state

    def save(self, owner: str, before: State, after: State, retention_s: float) -> SaveStats:
        from botocore.exceptions import ClientError

        puts, deletes = codec.changed_items(before, after)
        # Until the release records a new version, the table matches no cached state.
        self._cache = None
        actions: list[dict[str, Any]] = []
        for sk, value in sorted(puts.items()):
            item: dict[str, Any] = self._key(sk) | {
                "data": {"S": json.dumps(value, separators=(",", ":"), sort_keys=True)}
            }
            expiry = codec.item_expiry(sk, value, retention_s)
            if expiry is not None:
                item["expires_at"] = {"N": str(int(expiry))}
            actions.append({"Put": {"TableName": self.table, "Item": item}})
        for sk in deletes:
            actions.append({"Delete": {"TableName": self.table, "Key": self._key(sk)}})
        fence = {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": self._key(LEASE_KEY),
                "ConditionExpression": "#o = :me",
                "ExpressionAttributeNames": {"#o": "owner"},
                "ExpressionAttributeValues": {":me": {"S": owner}},
            }
        }
        for start in range(0, len(actions), _TX_CHUNK):
            chunk = actions[start : start + _TX_CHUNK]
            try:
                self._call("transact_write_items", TransactItems=[fence, *chunk])
            except ClientError as exc:
                reasons = exc.response.get("CancellationReasons") or []
                if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                    raise LeaseLost("the state lease was taken by another run") from exc
                code = exc.response.get("Error", {}).get("Code", "")
                raise StateError(f"dynamodb transact_write_items: {code}") from exc
        return SaveStats(puts=len(puts), deletes=len(deletes))

    def release(self, owner: str, state: State) -> None:
        from botocore.exceptions import ClientError

        meta = json.dumps(codec.meta_to_json(state), separators=(",", ":"), sort_keys=True)
        version = uuid.uuid4().hex
        self._cache = None
        try:
            self._call(
                "update_item",
                TableName=self.table,
                Key=self._key(LEASE_KEY),
                UpdateExpression="SET #m = :meta, #v = :version REMOVE #o, #u",
                ConditionExpression="#o = :me",
                ExpressionAttributeNames={
                    "#o": "owner",
                    "#u": "lease_until",
                    "#m": "meta",
                    "#v": "version",
                },
                ExpressionAttributeValues={
                    ":me": {"S": owner},
                    ":meta": {"S": meta},
                    ":version": {"S": version},
                },
            )
        except ClientError as exc:
            raise LeaseLost("the state lease was taken by another run") from exc
        self._cache = (version, state)

    def abandon(self, owner: str) -> None:
        from botocore.exceptions import ClientError

        self._cache = None
        try:
            self._call(
                "update_item",
                TableName=self.table,
                Key=self._key(LEASE_KEY),
                # a new version: what this run wrote before failing must be read, not cached
                UpdateExpression="SET #v = :version REMOVE #o, #u",
                ConditionExpression="#o = :me",
                ExpressionAttributeNames={"#o": "owner", "#u": "lease_until", "#v": "version"},
                ExpressionAttributeValues={
                    ":me": {"S": owner},
                    ":version": {"S": uuid.uuid4().hex},
                },
            )
        except ClientError as exc:
            raise LeaseLost("the state lease was taken by another run") from exc


def table_definition(table: str) -> dict[str, Any]:
    """CreateTable arguments, matching the table in template.yaml (a test holds them equal)."""
    return {
        "TableName": table,
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


TTL_ATTRIBUTE = "expires_at"

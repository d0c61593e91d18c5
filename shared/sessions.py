"""The session record: its DynamoDB item, its TTL, expiry, history bound and list cursors.

Items are written with the low-level client API (typed attribute values) because that API is
identical in boto3 and aiobotocore.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.contracts import ChatMessage, SessionRecord, SessionSummary

USER_INDEX = "user_id-updated_at-index"
HEALTH_KEY = "__health__"
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_ts(ts: datetime) -> str:
    """Fixed-width UTC timestamps, so the GSI's string sort key sorts by time."""
    return ts.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(value: str) -> datetime:
    return datetime.strptime(value, _TS_FORMAT).replace(tzinfo=UTC)


def new_session_id() -> str:
    return f"sess_{secrets.token_hex(16)}"


def is_expired(record: SessionRecord, now: datetime) -> bool:
    """Expired items count as missing even before DynamoDB's TTL sweep deletes them."""
    return record.expires_at <= now


def next_record(
    existing: SessionRecord | None,
    *,
    session_id: str,
    user_id: str | None,
    user_text: str,
    reply_text: str,
    now: datetime,
    ttl_s: int,
    history_limit: int,
) -> SessionRecord:
    """The record after one chat turn: two more messages, a refreshed TTL."""
    turn = [
        ChatMessage(role="user", content=user_text, timestamp=now),
        ChatMessage(role="assistant", content=reply_text, timestamp=now),
    ]
    previous = list(existing.messages) if existing else []
    history = (previous + turn)[-history_limit:] if history_limit else []
    return SessionRecord(
        session_id=session_id,
        user_id=(existing.user_id if existing and existing.user_id else user_id),
        created_at=existing.created_at if existing else now,
        updated_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
        message_count=(existing.message_count if existing else 0) + len(turn),
        messages=history,
    )


# --- DynamoDB items -------------------------------------------------------------------------

@dataclass(frozen=True)
class StoredSession:
    record: SessionRecord
    version: int


def to_item(record: SessionRecord, version: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "session_id": {"S": record.session_id},
        "created_at": {"S": format_ts(record.created_at)},
        "updated_at": {"S": format_ts(record.updated_at)},
        "expires_at": {"N": str(int(record.expires_at.timestamp()))},
        "message_count": {"N": str(record.message_count)},
        "version": {"N": str(version)},
        "messages": {"L": [
            {"M": {"role": {"S": m.role}, "content": {"S": m.content},
                   "timestamp": {"S": format_ts(m.timestamp)}}}
            for m in record.messages
        ]},
    }
    if record.user_id is not None:  # absent user_id keeps the item out of the sparse GSI
        item["user_id"] = {"S": record.user_id}
    return item


def from_item(item: dict[str, Any]) -> StoredSession:
    messages = [
        ChatMessage(role=m["M"]["role"]["S"], content=m["M"]["content"]["S"],
                    timestamp=parse_ts(m["M"]["timestamp"]["S"]))
        for m in item.get("messages", {}).get("L", [])
    ]
    record = SessionRecord(
        session_id=item["session_id"]["S"],
        user_id=item["user_id"]["S"] if "user_id" in item else None,
        created_at=parse_ts(item["created_at"]["S"]),
        updated_at=parse_ts(item["updated_at"]["S"]),
        expires_at=datetime.fromtimestamp(int(item["expires_at"]["N"]), UTC),
        message_count=int(item["message_count"]["N"]),
        messages=messages,
    )
    return StoredSession(record=record, version=int(item.get("version", {"N": "0"})["N"]))


def summary_from_item(item: dict[str, Any]) -> SessionSummary:
    return SessionSummary(
        session_id=item["session_id"]["S"],
        created_at=parse_ts(item["created_at"]["S"]),
        updated_at=parse_ts(item["updated_at"]["S"]),
        expires_at=datetime.fromtimestamp(int(item["expires_at"]["N"]), UTC),
        message_count=int(item["message_count"]["N"]),
    )


# --- cursors for GET /api/v1/users/{user_id}/sessions ----------------------------------------

class InvalidCursor(ValueError):
    pass


def encode_cursor(last_key: dict[str, Any]) -> str:
    plain = {name: value["S"] for name, value in sorted(last_key.items())}
    raw = json.dumps(plain, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, user_id: str) -> dict[str, Any]:
    """The ExclusiveStartKey a cursor stands for; refused if forged or from another user."""
    if len(cursor) > 1024:
        raise InvalidCursor("cursor is too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        plain = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("cursor is not one this API issued") from exc
    expected = {"session_id", "user_id", "updated_at"}
    if (not isinstance(plain, dict) or set(plain) != expected
            or not all(isinstance(v, str) for v in plain.values())):
        raise InvalidCursor("cursor is not one this API issued")
    if plain["user_id"] != user_id:
        raise InvalidCursor("cursor belongs to a different user_id")
    return {name: {"S": value} for name, value in plain.items()}


# --- table definitions (devstack creates them; docs/aws.md shows them for real AWS) ----------

def sessions_table_spec(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "session_id", "AttributeType": "S"},
            {"AttributeName": "user_id", "AttributeType": "S"},
            {"AttributeName": "updated_at", "AttributeType": "S"},
        ],
        "KeySchema": [{"AttributeName": "session_id", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [{
            "IndexName": USER_INDEX,
            "KeySchema": [
                {"AttributeName": "user_id", "KeyType": "HASH"},
                {"AttributeName": "updated_at", "KeyType": "RANGE"},
            ],
            "Projection": {
                "ProjectionType": "INCLUDE",
                "NonKeyAttributes": ["created_at", "expires_at", "message_count"],
            },
        }],
    }


def rate_limit_table_spec(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "bucket", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "bucket", "KeyType": "HASH"}],
    }


TTL_ATTRIBUTE = "expires_at"
CUTOVER_TABLE = "chat_cutovers"
CUTOVER_KEY = "cutover_id"


def cutover_table_spec(name: str = CUTOVER_TABLE) -> dict[str, Any]:
    """The cutover controller's state: one item per cutover, and one lease-lock item per
    traffic rule (``lock:<rule arn>``), both under ``cutover_id`` (deploy/state.py)."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": CUTOVER_KEY, "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": CUTOVER_KEY, "KeyType": "HASH"}],
    }

"""State, lock and audit: each cutover is a DynamoDB item; one lease lock per traffic rule.

- The **lock** is an item ``lock:<rule arn>``, taken with a conditional write (free, expired, or
  already ours), renewed by a heartbeat every third of its lease, and released with a
  conditional delete. A second controller is refused with :class:`LockHeld`, which names the
  holder and when its lease ends. A controller whose heartbeat was refused has lost the lock
  (:class:`LockLost`) and must stop moving traffic.
- The **record** (``cutover_id``) holds the plan, the state, the step reached and the last
  weights; every write is conditional on the version read, so two writers cannot interleave.
  ``resume`` continues from ``step`` (the step that was running; earlier steps passed).
- The **audit log** is JSON lines, one per transition and window, with the figures behind it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from shared.sessions import CUTOVER_KEY

ACTIVE = ("pre_traffic", "baking", "paused", "rolling_back")
FINAL = ("completed", "rolled_back", "blocked", "aborted", "failed")
_ser, _de = TypeSerializer(), TypeDeserializer()


class StateError(RuntimeError):
    """The state table could not be read or written as expected."""


class LockHeld(StateError):
    def __init__(self, holder: str, cutover_id: str, expires_in_s: float) -> None:
        self.holder, self.cutover_id, self.expires_in_s = holder, cutover_id, expires_in_s
        super().__init__(f"another controller holds the cutover lock: {holder} (cutover "
                         f"{cutover_id}, lease ends in {expires_in_s:.1f} s)")


class LockLost(StateError):
    """Our lease was taken over or could not be renewed: stop moving traffic."""


def _conditional(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _to_item(data: dict[str, Any]) -> dict[str, Any]:
    def fix(v: Any) -> Any:
        if isinstance(v, float):
            return Decimal(repr(v))
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [fix(x) for x in v]
        return v
    return {k: _ser.serialize(fix(v)) for k, v in data.items() if v is not None}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    def fix(v: Any) -> Any:
        if isinstance(v, Decimal):
            return int(v) if v == v.to_integral_value() else float(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return {k: fix(_de.deserialize(v)) for k, v in item.items()}


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Record:
    cutover_id: str
    rule_arn: str
    plan: dict[str, Any]
    plan_digest: str
    state: str = "pre_traffic"
    step: int = 0  # index of the step running (or to run next); earlier ones passed
    weights: dict[str, int] = field(default_factory=lambda: {"blue": 100, "green": 0})
    started_at: str = ""
    updated_at: str = ""
    owner: str = ""
    reason: str = ""
    requested: str = ""  # pause | abort | promote, asked by another command
    windows: int = 0
    pre_traffic: dict[str, Any] = field(default_factory=dict)
    rollback_s: float | None = None
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StateStore:
    def __init__(self, dynamodb: Any, table: str, clock: Callable[[], float] = time.time
                 ) -> None:
        self.ddb = dynamodb
        self.table = table
        self.clock = clock

    # --- the lease lock ---------------------------------------------------------------------

    @staticmethod
    def lock_key(rule_arn: str) -> str:
        return f"lock:{rule_arn}"

    def acquire(self, rule_arn: str, owner: str, cutover_id: str, lease_s: float) -> None:
        now = self.clock()
        try:
            self.ddb.put_item(
                TableName=self.table,
                Item=_to_item({CUTOVER_KEY: self.lock_key(rule_arn), "owner": owner,
                               "holds": cutover_id, "lease_expires": now + lease_s,
                               "acquired_at": now}),
                ConditionExpression="attribute_not_exists(#k) OR lease_expires < :now "
                                    "OR #o = :me",
                ExpressionAttributeNames={"#k": CUTOVER_KEY, "#o": "owner"},
                ExpressionAttributeValues=_to_item({":now": now, ":me": owner}))
        except ClientError as exc:
            if not _conditional(exc):
                raise
            held = self.lock(rule_arn) or {}
            raise LockHeld(str(held.get("owner", "?")), str(held.get("holds", "?")),
                           float(held.get("lease_expires", now)) - now) from None

    def lock(self, rule_arn: str) -> dict[str, Any] | None:
        got = self.ddb.get_item(TableName=self.table, ConsistentRead=True,
                                Key=_to_item({CUTOVER_KEY: self.lock_key(rule_arn)}))
        return _from_item(got["Item"]) if "Item" in got else None

    def renew(self, rule_arn: str, owner: str, lease_s: float) -> None:
        try:
            self.ddb.update_item(
                TableName=self.table, Key=_to_item({CUTOVER_KEY: self.lock_key(rule_arn)}),
                UpdateExpression="SET lease_expires = :until",
                ConditionExpression="#o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues=_to_item({":until": self.clock() + lease_s,
                                                    ":me": owner}))
        except ClientError as exc:
            if _conditional(exc):
                raise LockLost(f"the lock of {rule_arn} is no longer ours ({owner})") from None
            raise

    def release(self, rule_arn: str, owner: str) -> None:
        try:
            self.ddb.delete_item(
                TableName=self.table, Key=_to_item({CUTOVER_KEY: self.lock_key(rule_arn)}),
                ConditionExpression="#o = :me", ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues=_to_item({":me": owner}))
        except ClientError as exc:
            if not _conditional(exc):
                raise

    # --- records ----------------------------------------------------------------------------

    def create(self, record: Record) -> Record:
        record.version = 1
        try:
            self.ddb.put_item(TableName=self.table, Item=_to_item(_encode(record)),
                              ConditionExpression="attribute_not_exists(#k)",
                              ExpressionAttributeNames={"#k": CUTOVER_KEY})
        except ClientError as exc:
            if _conditional(exc):
                raise StateError(f"cutover {record.cutover_id} exists already") from None
            raise
        return record

    def get(self, cutover_id: str) -> Record | None:
        got = self.ddb.get_item(TableName=self.table, ConsistentRead=True,
                                Key=_to_item({CUTOVER_KEY: cutover_id}))
        return _decode(_from_item(got["Item"])) if "Item" in got else None

    def save(self, record: Record) -> Record:
        """Write the record if nobody wrote it since we read it (its version)."""
        expected = record.version
        record.version += 1
        record.updated_at = _iso(self.clock())
        try:
            self.ddb.put_item(TableName=self.table, Item=_to_item(_encode(record)),
                              ConditionExpression="version = :v",
                              ExpressionAttributeValues=_to_item({":v": expected}))
        except ClientError as exc:
            record.version = expected
            if _conditional(exc):
                raise StateError(f"cutover {record.cutover_id} was changed by another "
                                 "writer; read it again") from None
            raise
        return record

    def request(self, cutover_id: str, what: str) -> Record:
        """Ask the running controller to pause, abort or promote (it reads this each tick)."""
        for _ in range(5):
            record = self.get(cutover_id)
            if record is None:
                raise StateError(f"no cutover {cutover_id}")
            if record.state not in ACTIVE:
                raise StateError(f"cutover {cutover_id} is {record.state}; nothing to {what}")
            record.requested = what
            try:
                return self.save(record)
            except StateError:
                continue
        raise StateError(f"cutover {cutover_id}: could not record the request")

    def active(self, rule_arn: str) -> Record | None:
        """The newest cutover of this rule that has not ended (a scan: the table is small)."""
        found: list[Record] = []
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = self.ddb.scan(**kwargs)
            for item in page.get("Items", []):
                data = _from_item(item)
                if str(data[CUTOVER_KEY]).startswith("lock:"):
                    continue
                record = _decode(data)
                if record.rule_arn == rule_arn and record.state in ACTIVE:
                    found.append(record)
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return max(found, key=lambda r: r.started_at) if found else None


def _encode(record: Record) -> dict[str, Any]:
    data = record.to_dict()
    data["plan"] = json.dumps(record.plan, sort_keys=True)
    data["pre_traffic"] = json.dumps(record.pre_traffic, sort_keys=True, default=str)
    return data


def _decode(data: dict[str, Any]) -> Record:
    data = dict(data)
    data["plan"] = json.loads(data.get("plan") or "{}")
    data["pre_traffic"] = json.loads(data.get("pre_traffic") or "{}")
    known = set(Record.__dataclass_fields__)
    return Record(**{k: v for k, v in data.items() if k in known})


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


class Heartbeat:
    """Renews the lease every third of it in a thread; ``lost`` is set when a renewal was
    refused or the lease ran out without one."""

    def __init__(self, store: StateStore, rule_arn: str, owner: str, lease_s: float) -> None:
        self.store, self.rule_arn, self.owner, self.lease_s = store, rule_arn, owner, lease_s
        self.lost = threading.Event()
        self.error: str = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
        self._last_ok = time.monotonic()

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.store.renew(self.rule_arn, self.owner, self.lease_s)
                self._last_ok = time.monotonic()
            except LockLost as exc:
                self.error = str(exc)
                self.lost.set()
                return
            except (ClientError, OSError, RuntimeError) as exc:  # botocore errors included
                self.error = f"lease renewal failed: {type(exc).__name__}: {exc}"
                if time.monotonic() - self._last_ok > self.lease_s:
                    self.lost.set()
                    return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class AuditLog:
    """JSON lines, appended and flushed one per event."""

    def __init__(self, path: Path, cutover_id: str, clock: Callable[[], float] = time.time
                 ) -> None:
        self.path = path
        self.cutover_id = cutover_id
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        now = self.clock()
        line = {"t": round(now, 3), "ts": _iso(now), "cutover_id": self.cutover_id,
                "event": event, **fields}
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line, default=str, sort_keys=False) + "\n")
        return line


def read_audit(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]

"""State, lock and resume on devstack's DynamoDB (moto server, the real wire)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import boto3
import pytest

from deploy.state import LockHeld, LockLost, Record, StateError, StateStore
from devstack.stack import DevStack
from shared.sessions import CUTOVER_TABLE

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ddb(stack: DevStack) -> Any:
    return boto3.client("dynamodb", endpoint_url=stack.moto_url, region_name="us-east-1")


def rule() -> str:
    return ("arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/t/"
            + uuid.uuid4().hex)


def test_a_second_controller_is_refused_with_the_holders_name(ddb: Any) -> None:
    clock = Clock()
    store = StateStore(ddb, CUTOVER_TABLE, clock)
    arn = rule()
    store.acquire(arn, "ops-1:123", "c-1", lease_s=30)
    with pytest.raises(LockHeld) as info:
        store.acquire(arn, "ops-2:456", "c-2", lease_s=30)
    assert info.value.holder == "ops-1:123"
    assert info.value.cutover_id == "c-1"
    assert "ops-1:123" in str(info.value)
    assert info.value.expires_in_s == pytest.approx(30)
    store.acquire(arn, "ops-1:123", "c-1", lease_s=30)  # re-entrant for its owner


def test_an_expired_lease_is_taken_over_and_the_old_owner_has_lost_it(ddb: Any) -> None:
    clock = Clock()
    store = StateStore(ddb, CUTOVER_TABLE, clock)
    arn = rule()
    store.acquire(arn, "dead", "c-1", lease_s=10)
    clock.now += 9
    with pytest.raises(LockHeld):
        store.acquire(arn, "new", "c-1", lease_s=10)
    clock.now += 2  # the dead controller's lease ran out
    store.acquire(arn, "new", "c-1", lease_s=10)
    with pytest.raises(LockLost):
        store.renew(arn, "dead", lease_s=10)
    store.release(arn, "dead")  # not ours: a no-op
    assert (store.lock(arn) or {})["owner"] == "new"
    store.renew(arn, "new", lease_s=10)
    store.release(arn, "new")
    assert store.lock(arn) is None


def test_two_controllers_racing_exactly_one_wins(ddb: Any) -> None:
    store = StateStore(ddb, CUTOVER_TABLE)
    for _ in range(15):
        arn = rule()
        barrier = threading.Barrier(2)
        won: list[str] = []
        refused: list[str] = []

        def contend(owner: str, arn: str = arn, barrier: threading.Barrier = barrier,
                    won: list[str] = won, refused: list[str] = refused) -> None:
            barrier.wait()
            try:
                store.acquire(arn, owner, owner, lease_s=30)
                won.append(owner)
            except LockHeld as exc:
                refused.append(exc.holder)

        threads = [threading.Thread(target=contend, args=(f"c{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, (won, refused)
        assert refused == won  # the loser is told who won


def test_record_writes_are_conditional_on_the_version_read(ddb: Any) -> None:
    store = StateStore(ddb, CUTOVER_TABLE)
    arn = rule()
    record = store.create(Record(cutover_id=uuid.uuid4().hex, rule_arn=arn,
                                 plan={"name": "t"}, plan_digest="x",
                                 started_at="2026-12-01T00:00:00Z"))
    with pytest.raises(StateError, match="exists"):
        store.create(Record(cutover_id=record.cutover_id, rule_arn=arn, plan={}, plan_digest=""))
    stale = store.get(record.cutover_id)
    assert stale is not None
    record.step, record.state = 1, "baking"
    store.save(record)
    stale.state = "paused"
    with pytest.raises(StateError, match="another writer"):
        store.save(stale)
    fresh = store.get(record.cutover_id)
    assert fresh is not None
    assert (fresh.step, fresh.state, fresh.plan) == (1, "baking", {"name": "t"})
    assert store.active(arn) == fresh
    store.request(record.cutover_id, "pause")
    assert (store.get(record.cutover_id) or fresh).requested == "pause"
    fresh = store.get(record.cutover_id)
    assert fresh is not None
    fresh.state = "completed"
    store.save(fresh)
    assert store.active(arn) is None
    with pytest.raises(StateError, match="completed"):
        store.request(record.cutover_id, "abort")

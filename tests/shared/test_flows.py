"""The flows, driven by an in-memory fake of the AWS calls (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import urllib3
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from shared import flows
from shared import sessions as sess
from shared.agent import AgentReply
from shared.calls import AgentCall, AwsCall, Call, run_sync
from shared.contracts import ChatRequest
from shared.errors import ApiError, ErrorCode
from shared.settings import Settings

pytestmark = pytest.mark.unit
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


class FakeAws:
    """A dict-backed session table with scripted failures per operation."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.fail: dict[str, BaseException] = {}
        self.reply = AgentReply("hello there", 1, None)

    def execute(self, call: Call) -> Any:
        self.calls.append(call)
        if isinstance(call, AgentCall):
            if "agent" in self.fail:
                raise self.fail["agent"]
            return self.reply
        if call.operation in self.fail:
            raise self.fail[call.operation]
        key = call.params.get("Key", {}).get("session_id", {}).get("S")
        if call.operation == "get_item":
            return {"Item": self.items[key]} if key in self.items else {}
        if call.operation == "put_item":
            item = call.params["Item"]
            self.items[item["session_id"]["S"]] = item
            return {}
        if call.operation == "delete_item":
            old = self.items.pop(key, None)
            return {"Attributes": old} if old else {}
        raise AssertionError(call)


@pytest.fixture
def aws() -> FakeAws:
    return FakeAws()


def ctx_at(now: datetime, **settings: Any) -> flows.Context:
    return flows.Context(Settings(**settings), now=lambda: now, new_session_id=lambda: "sess_new")


def test_chat_creates_session_and_persists_turn(aws: FakeAws) -> None:
    resp = run_sync(flows.chat(ctx_at(T0), ChatRequest(message="hi", user_id="u1")), aws.execute)
    assert resp.session_id == "sess_new"
    assert resp.response == "hello there"
    stored = sess.from_item(aws.items["sess_new"])
    assert stored.record.message_count == 2
    assert stored.record.user_id == "u1"
    assert stored.record.expires_at == T0 + timedelta(seconds=86_400)
    assert stored.version == 1
    put = next(c for c in aws.calls if isinstance(c, AwsCall) and c.operation == "put_item")
    assert "attribute_not_exists" in put.params["ConditionExpression"]


def test_second_turn_increments_and_uses_version_condition(aws: FakeAws) -> None:
    run_sync(flows.chat(ctx_at(T0), ChatRequest(message="one", session_id="s1")), aws.execute)
    later = T0 + timedelta(minutes=5)
    run_sync(flows.chat(ctx_at(later), ChatRequest(message="two", session_id="s1")), aws.execute)
    stored = sess.from_item(aws.items["s1"])
    assert stored.record.message_count == 4
    assert stored.record.created_at == T0
    assert stored.record.updated_at == later
    assert [m.content for m in stored.record.messages] == ["one", "hello there", "two",
                                                          "hello there"]
    put = [c for c in aws.calls if isinstance(c, AwsCall) and c.operation == "put_item"][-1]
    assert put.params["ConditionExpression"] == "version = :v"
    assert put.params["ExpressionAttributeValues"] == {":v": {"N": "1"}}


def test_history_is_bounded(aws: FakeAws) -> None:
    for i in range(5):
        run_sync(flows.chat(ctx_at(T0, session_history_limit=4),
                            ChatRequest(message=f"m{i}", session_id="s1")), aws.execute)
    record = sess.from_item(aws.items["s1"]).record
    assert record.message_count == 10
    assert [m.content for m in record.messages][::2] == ["m3", "m4"]


def test_expired_session_counts_as_missing(aws: FakeAws) -> None:
    run_sync(flows.chat(ctx_at(T0), ChatRequest(message="one", session_id="s1")), aws.execute)
    after_ttl = T0 + timedelta(days=2)
    with pytest.raises(ApiError) as err:
        run_sync(flows.get_session(ctx_at(after_ttl), "s1"), aws.execute)
    assert err.value.code is ErrorCode.SESSION_NOT_FOUND
    resp = run_sync(flows.chat(ctx_at(after_ttl), ChatRequest(message="again", session_id="s1")),
                    aws.execute)
    assert resp.session_id == "s1"
    assert sess.from_item(aws.items["s1"]).record.message_count == 2  # a fresh session


def test_user_mismatch_refused_before_agent_call(aws: FakeAws) -> None:
    run_sync(flows.chat(ctx_at(T0), ChatRequest(message="x", session_id="s1", user_id="a")),
             aws.execute)
    calls_before = len(aws.calls)
    with pytest.raises(ApiError) as err:
        run_sync(flows.chat(ctx_at(T0), ChatRequest(message="x", session_id="s1", user_id="b")),
                 aws.execute)
    assert err.value.code is ErrorCode.SESSION_USER_MISMATCH
    assert not any(isinstance(c, AgentCall) for c in aws.calls[calls_before:])


@pytest.mark.parametrize(("failure", "code"), [
    (client_error("ThrottlingException", 429), ErrorCode.AGENT_THROTTLED),
    (client_error("throttlingException", 200), ErrorCode.AGENT_THROTTLED),
    (client_error("ServiceQuotaExceededException", 400), ErrorCode.AGENT_THROTTLED),
    (client_error("InternalServerException", 500), ErrorCode.AGENT_ERROR),
    (client_error("DependencyFailedException", 424), ErrorCode.AGENT_UNAVAILABLE),
    (client_error("ServiceUnavailableException", 503), ErrorCode.AGENT_UNAVAILABLE),
    (client_error("AccessDeniedException", 403), ErrorCode.AGENT_ERROR),
    (EndpointConnectionError(endpoint_url="http://x"), ErrorCode.AGENT_UNAVAILABLE),
    (ReadTimeoutError(endpoint_url="http://x"), ErrorCode.AGENT_TIMEOUT),
    (TimeoutError(), ErrorCode.AGENT_TIMEOUT),
    (urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"), ErrorCode.AGENT_TIMEOUT),
    (urllib3.exceptions.ProtocolError("connection broken"), ErrorCode.AGENT_UNAVAILABLE),
])
def test_agent_failures_map_and_nothing_is_written(aws: FakeAws, failure: BaseException,
                                                   code: ErrorCode) -> None:
    aws.fail["agent"] = failure
    with pytest.raises(ApiError) as err:
        run_sync(flows.chat(ctx_at(T0), ChatRequest(message="x")), aws.execute)
    assert err.value.code is code
    assert aws.items == {}


def test_empty_completion_is_a_bad_response(aws: FakeAws) -> None:
    aws.reply = AgentReply("  ", 0, None)
    with pytest.raises(ApiError) as err:
        run_sync(flows.chat(ctx_at(T0), ChatRequest(message="x")), aws.execute)
    assert err.value.code is ErrorCode.AGENT_BAD_RESPONSE
    assert err.value.status == 502


def test_failed_write_is_never_a_success(aws: FakeAws) -> None:
    aws.fail["put_item"] = EndpointConnectionError(endpoint_url="http://x")
    with pytest.raises(ApiError) as err:
        run_sync(flows.chat(ctx_at(T0), ChatRequest(message="x")), aws.execute)
    assert err.value.code is ErrorCode.SESSION_WRITE_FAILED
    assert err.value.status == 503


def test_lost_race_is_a_conflict(aws: FakeAws) -> None:
    aws.fail["put_item"] = client_error("ConditionalCheckFailedException")
    with pytest.raises(ApiError) as err:
        run_sync(flows.chat(ctx_at(T0), ChatRequest(message="x")), aws.execute)
    assert err.value.code is ErrorCode.SESSION_CONFLICT


def test_a_retried_write_that_had_landed_is_a_success(aws: FakeAws) -> None:
    """The SDK retries a write whose answer timed out; if the first attempt landed, the retry's
    condition fails on that very write. Reading it back shows it is ours: a success, stored once."""
    def landed_then_refused(call: Call) -> Any:
        result = aws.execute(call)
        if isinstance(call, AwsCall) and call.operation == "put_item":
            raise client_error("ConditionalCheckFailedException")
        return result

    resp = run_sync(flows.chat(ctx_at(T0), ChatRequest(message="x", user_id="u")),
                    landed_then_refused)
    assert resp.session_id == "sess_new"
    stored = sess.from_item(aws.items["sess_new"])
    assert stored.version == 1
    assert stored.record.message_count == 2
    # the read-back was consistent, and it came after the refused write
    assert [c.operation for c in aws.calls if isinstance(c, AwsCall)] == [
        "get_item", "put_item", "get_item"]
    assert all(c.params["ConsistentRead"] for c in aws.calls
               if isinstance(c, AwsCall) and c.operation == "get_item")


def test_another_requests_write_is_a_conflict(aws: FakeAws) -> None:
    """A refused write whose stored item is someone else's (same version, other content)."""
    run_sync(flows.chat(ctx_at(T0), ChatRequest(message="first", session_id="s-1")), aws.execute)

    def other_writer_first(call: Call) -> Any:
        if isinstance(call, AwsCall) and call.operation == "put_item":
            other = ctx_at(T0 + timedelta(seconds=1))
            run_sync(flows.chat(other, ChatRequest(message="other", session_id="s-1")),
                     aws.execute)
            raise client_error("ConditionalCheckFailedException")
        return aws.execute(call)

    with pytest.raises(ApiError) as err:
        run_sync(flows.chat(ctx_at(T0 + timedelta(seconds=2)),
                            ChatRequest(message="mine", session_id="s-1")), other_writer_first)
    assert err.value.code is ErrorCode.SESSION_CONFLICT
    stored = sess.from_item(aws.items["s-1"])
    assert stored.version == 2
    assert stored.record.messages[-2].content == "other"


def test_a_refused_write_that_cannot_be_read_back_is_not_a_success(aws: FakeAws) -> None:
    reads = 0

    def refused_then_unreadable(call: Call) -> Any:
        nonlocal reads
        if isinstance(call, AwsCall) and call.operation == "put_item":
            raise client_error("ConditionalCheckFailedException")
        if isinstance(call, AwsCall) and call.operation == "get_item":
            reads += 1
            if reads > 1:
                raise EndpointConnectionError(endpoint_url="http://x")
        return aws.execute(call)

    with pytest.raises(ApiError) as err:
        run_sync(flows.chat(ctx_at(T0), ChatRequest(message="x")), refused_then_unreadable)
    assert err.value.code is ErrorCode.SESSION_WRITE_FAILED


def test_store_read_failures(aws: FakeAws) -> None:
    aws.fail["get_item"] = client_error("ProvisionedThroughputExceededException")
    with pytest.raises(ApiError) as err:
        run_sync(flows.get_session(ctx_at(T0), "s1"), aws.execute)
    assert err.value.code is ErrorCode.STORE_THROTTLED
    assert err.value.headers["Retry-After"] == "1"
    aws.fail["get_item"] = client_error("ResourceNotFoundException")
    with pytest.raises(ApiError) as err:
        run_sync(flows.get_session(ctx_at(T0), "s1"), aws.execute)
    assert err.value.code is ErrorCode.STORE_UNAVAILABLE


def test_a_bug_is_not_disguised_as_an_upstream_error(aws: FakeAws) -> None:
    aws.fail["agent"] = KeyError("bug")
    with pytest.raises(KeyError):
        run_sync(flows.chat(ctx_at(T0), ChatRequest(message="x")), aws.execute)


def test_delete_then_delete_again(aws: FakeAws) -> None:
    run_sync(flows.chat(ctx_at(T0), ChatRequest(message="x", session_id="s1")), aws.execute)
    assert run_sync(flows.delete_session(ctx_at(T0), "s1"), aws.execute).deleted
    with pytest.raises(ApiError) as err:
        run_sync(flows.delete_session(ctx_at(T0), "s1"), aws.execute)
    assert err.value.code is ErrorCode.SESSION_NOT_FOUND


def test_rate_limit_decision_from_counter() -> None:
    def execute(call: Call) -> Any:
        assert isinstance(call, AwsCall)
        assert call.params["Key"]["bucket"]["S"].startswith("ip:1.2.3.4#")
        return {"Attributes": {"request_count": {"N": "3"}}}

    ctx = ctx_at(T0, rate_limit_requests=2, rate_limit_window_s=60)
    decision = run_sync(flows.rate_limit(ctx, "ip:1.2.3.4"), execute)
    assert not decision.allowed
    assert decision.remaining == 0
    assert 1 <= decision.retry_after_s <= 60


def test_rate_limit_increment_carries_a_token_and_refuses_its_own_retry() -> None:
    seen: list[dict[str, Any]] = []

    def execute(call: Call) -> Any:
        assert isinstance(call, AwsCall)
        seen.append(call.params)
        return {"Attributes": {"request_count": {"N": "1"}}}

    ctx = ctx_at(T0, rate_limit_requests=5, rate_limit_window_s=60)
    run_sync(flows.rate_limit(ctx, "ip:1.2.3.4"), execute)
    run_sync(flows.rate_limit(ctx, "ip:1.2.3.4"), execute)
    tokens = [p["ExpressionAttributeValues"][":token"]["S"] for p in seen]
    assert tokens[0] != tokens[1]  # one per increment, so a retry (same call) is told apart
    assert "last_request = :token" in seen[0]["UpdateExpression"]
    assert seen[0]["ConditionExpression"] == (
        "attribute_not_exists(last_request) OR last_request <> :token")
    assert seen[0]["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"


def test_rate_limit_retry_of_a_landed_increment_counts_once() -> None:
    """The SDK's retry meets its own token: the count is the stored one, not one more."""
    def execute(call: Call) -> Any:
        error = client_error("ConditionalCheckFailedException")
        error.response["Item"] = {"request_count": {"N": "4"}}  # type: ignore[typeddict-unknown-key]
        raise error

    ctx = ctx_at(T0, rate_limit_requests=4, rate_limit_window_s=60)
    decision = run_sync(flows.rate_limit(ctx, "ip:1.2.3.4"), execute)
    assert decision.allowed
    assert decision.remaining == 0


def test_rate_limit_refusal_without_the_item_is_a_store_error() -> None:
    def execute(call: Call) -> Any:
        raise client_error("ConditionalCheckFailedException")

    with pytest.raises(ApiError) as err:
        run_sync(flows.rate_limit(ctx_at(T0), "ip:1.2.3.4"), execute)
    assert err.value.code is ErrorCode.STORE_UNAVAILABLE


def test_detailed_health_reports_each_dependency() -> None:
    def execute(call: Call) -> Any:
        assert isinstance(call, AwsCall)
        if call.service == "bedrock":
            raise EndpointConnectionError(endpoint_url="http://x")
        return {}

    status, body = run_sync(flows.detailed_health(ctx_at(T0)), execute)
    assert status == 503
    assert {c.name: c.status for c in body.checks} == {"dynamodb": "up", "agent": "down"}
    assert body.checks[1].error == "AGENT_UNAVAILABLE"


def test_agent_answering_access_denied_counts_as_reachable() -> None:
    def execute(call: Call) -> Any:
        if isinstance(call, AwsCall) and call.service == "bedrock":
            raise client_error("AccessDeniedException", 403)
        return {}

    status, _ = run_sync(flows.detailed_health(ctx_at(T0)), execute)
    assert status == 200

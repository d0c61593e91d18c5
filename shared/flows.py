"""Every operation of the API, written once as a flow that yields AWS calls.

A flow never performs I/O itself: it yields :class:`~shared.calls.AwsCall` /
:class:`~shared.calls.AgentCall` values, gets each result back (or the call's exception thrown
in), and returns a contract model or raises :class:`~shared.errors.ApiError`. Blue drives these
with boto3 (:func:`shared.calls.run_sync`), green with aioboto3 (:func:`shared.calls.run_async`),
so the two colors cannot decide anything differently.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from shared import sessions as sess
from shared.agent import AgentReply, invoke_call
from shared.calls import AwsCall, Flow
from shared.contracts import (
    ChatRequest,
    ChatResponse,
    DependencyCheck,
    DetailedHealthResponse,
    ErrorDetail,
    HealthResponse,
    SessionDeleted,
    SessionList,
    SessionRecord,
)
from shared.errors import ApiError, ErrorCode
from shared.faults import agent_failure, is_conditional_failure, store_failure
from shared.ratelimit import RateDecision, bucket, decide
from shared.settings import Settings

MAX_LIST_PAGES = 5


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Context:
    """What a flow may consult besides its input: settings and injectable clocks/ids."""

    settings: Settings
    now: Callable[[], datetime] = _now
    perf: Callable[[], float] = time.perf_counter
    new_session_id: Callable[[], str] = field(default=sess.new_session_id)
    # one per rate-limit increment: the SDK's retry of it carries the same token
    new_token: Callable[[], str] = field(default=lambda: secrets.token_hex(8))


def _reraise(mapped: ApiError | None, exc: BaseException) -> ApiError:
    if mapped is None:
        raise exc
    return mapped


# --- chat ---------------------------------------------------------------------------------

def _load_session(ctx: Context, session_id: str) -> Flow[sess.StoredSession | None]:
    try:
        result = yield AwsCall("dynamodb", "get_item", {
            "TableName": ctx.settings.sessions_table,
            "Key": {"session_id": {"S": session_id}},
            "ConsistentRead": True,
        })
    except Exception as exc:
        raise _reraise(store_failure(exc), exc) from None
    item = result.get("Item")
    if not item:
        return None
    stored = sess.from_item(item)
    if sess.is_expired(stored.record, ctx.now()):
        return None
    return stored


def _is_own_write(ctx: Context, session_id: str, record: SessionRecord,
                  version: int) -> Flow[bool]:
    """After a refused conditional write: is the stored item exactly the one this request wrote?

    The SDK retries a write whose answer timed out; when the first attempt had landed, the retry
    finds its own write and the condition fails. Read back (consistently): the same version and
    the same record (its timestamps to the microsecond included) is this request's write, so the
    chat succeeded; anything else is another request's, a real conflict.
    """
    try:
        stored = yield from _load_session(ctx, session_id)
    except ApiError:
        raise ApiError(ErrorCode.SESSION_WRITE_FAILED) from None
    # compared as stored: the item keeps expires_at in whole seconds (shared/sessions.py), so
    # the record in hand never equals the read-back unless the clock stood on a whole second
    written = sess.from_item(sess.to_item(record, version)).record
    return stored is not None and stored.version == version and stored.record == written


def chat(ctx: Context, req: ChatRequest) -> Flow[ChatResponse]:
    started = ctx.perf()
    settings = ctx.settings
    session_id = req.session_id or ctx.new_session_id()
    existing = yield from _load_session(ctx, session_id)
    if (existing and existing.record.user_id and req.user_id
            and existing.record.user_id != req.user_id):
        raise ApiError(ErrorCode.SESSION_USER_MISMATCH)

    try:
        reply: AgentReply = yield invoke_call(settings, session_id, req.message)
    except Exception as exc:
        raise _reraise(agent_failure(exc), exc) from None
    if not reply.text.strip():
        raise ApiError(ErrorCode.AGENT_BAD_RESPONSE, "The agent's completion held no text.")

    now = ctx.now()
    record = sess.next_record(
        existing.record if existing else None,
        session_id=session_id, user_id=req.user_id, user_text=req.message,
        reply_text=reply.text, now=now, ttl_s=settings.session_ttl_s,
        history_limit=settings.session_history_limit,
    )
    if existing:
        condition = "version = :v"
        values = {":v": {"N": str(existing.version)}}
    else:  # new, or replacing an expired item that the TTL sweep has not removed yet
        condition = "attribute_not_exists(session_id) OR expires_at <= :now"
        values = {":now": {"N": str(int(now.timestamp()))}}
    version = (existing.version if existing else 0) + 1
    try:
        yield AwsCall("dynamodb", "put_item", {
            "TableName": settings.sessions_table,
            "Item": sess.to_item(record, version),
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        })
    except Exception as exc:
        if not is_conditional_failure(exc):
            raise _reraise(store_failure(exc, writing=True), exc) from None
        if not (yield from _is_own_write(ctx, session_id, record, version)):
            raise ApiError(ErrorCode.SESSION_CONFLICT) from None

    return ChatResponse(
        response=reply.text,
        session_id=session_id,
        timestamp=now,
        processing_time_ms=round((ctx.perf() - started) * 1000, 3),
        tokens_used=reply.tokens_used,
    )


# --- sessions -------------------------------------------------------------------------------

def get_session(ctx: Context, session_id: str) -> Flow[SessionRecord]:
    stored = yield from _load_session(ctx, session_id)
    if stored is None:
        raise ApiError(ErrorCode.SESSION_NOT_FOUND)
    return stored.record


def delete_session(ctx: Context, session_id: str) -> Flow[SessionDeleted]:
    try:
        result = yield AwsCall("dynamodb", "delete_item", {
            "TableName": ctx.settings.sessions_table,
            "Key": {"session_id": {"S": session_id}},
            "ReturnValues": "ALL_OLD",
        })
    except Exception as exc:  # no agent answer is at stake: STORE_THROTTLED/STORE_UNAVAILABLE
        raise _reraise(store_failure(exc), exc) from None
    old = result.get("Attributes")
    if not old or sess.is_expired(sess.from_item(old).record, ctx.now()):
        raise ApiError(ErrorCode.SESSION_NOT_FOUND)
    return SessionDeleted(session_id=session_id)


def list_user_sessions(
    ctx: Context, user_id: str, limit: int, cursor: str | None
) -> Flow[SessionList]:
    start_key: dict[str, Any] | None = None
    if cursor:
        try:
            start_key = sess.decode_cursor(cursor, user_id)
        except sess.InvalidCursor as exc:
            raise ApiError(ErrorCode.VALIDATION_ERROR, details=[
                ErrorDetail(loc=["query", "cursor"], msg=str(exc), type="value_error")
            ]) from None
    now_epoch = str(int(ctx.now().timestamp()))
    items: list[dict[str, Any]] = []
    last_key: dict[str, Any] | None = None
    for _ in range(MAX_LIST_PAGES):  # expired items are filtered out after Limit applies
        params: dict[str, Any] = {
            "TableName": ctx.settings.sessions_table,
            "IndexName": sess.USER_INDEX,
            "KeyConditionExpression": "user_id = :u",
            "FilterExpression": "expires_at > :now",
            "ExpressionAttributeValues": {":u": {"S": user_id}, ":now": {"N": now_epoch}},
            "ScanIndexForward": False,
            "Limit": limit - len(items),
        }
        if start_key:
            params["ExclusiveStartKey"] = start_key
        try:
            page = yield AwsCall("dynamodb", "query", params)
        except Exception as exc:
            raise _reraise(store_failure(exc), exc) from None
        items.extend(page.get("Items", []))
        last_key = page.get("LastEvaluatedKey")
        if not last_key or len(items) >= limit:
            break
        start_key = last_key
    return SessionList(
        user_id=user_id,
        sessions=[sess.summary_from_item(i) for i in items],
        next_cursor=sess.encode_cursor(last_key) if last_key else None,
    )


# --- rate limit -------------------------------------------------------------------------------

def rate_limit(ctx: Context, ident: str) -> Flow[RateDecision]:
    """Count this request in its identity's window, once.

    ``ADD`` alone is not idempotent: when an increment lands but its answer times out, the
    SDK retries the same call and the request would count twice. Each increment carries a
    token (``last_request``) and is refused when the counter already holds it; a refused
    retry reads the count from the item DynamoDB returns with the refusal. (Another request
    landing between an attempt and its retry still lets the retry count: the guard covers
    the retry that follows at once, the common case, without an ever-growing set of tokens.)
    """
    settings = ctx.settings
    now = ctx.now().timestamp()
    window = settings.rate_limit_window_s
    try:
        result = yield AwsCall("dynamodb", "update_item", {
            "TableName": settings.rate_limit_table,
            "Key": {"bucket": {"S": bucket(ident, now, window)}},
            "UpdateExpression": "ADD request_count :one SET expires_at = if_not_exists("
                                "expires_at, :exp), last_request = :token",
            "ConditionExpression": "attribute_not_exists(last_request) OR "
                                   "last_request <> :token",
            "ExpressionAttributeValues": {
                ":one": {"N": "1"},
                ":exp": {"N": str(int(now) + 2 * window)},
                ":token": {"S": ctx.new_token()},
            },
            "ReturnValues": "UPDATED_NEW",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        })
        count = int(result["Attributes"]["request_count"]["N"])
    except Exception as exc:
        if not is_conditional_failure(exc):
            raise _reraise(store_failure(exc), exc) from None
        # this very increment had landed (its answer was lost): counted once, as it is
        item = getattr(exc, "response", {}).get("Item") or {}
        if "request_count" not in item:
            raise _reraise(store_failure(exc), exc) from None
        count = int(item["request_count"]["N"])
    return decide(count, settings.rate_limit_requests, now, window)


# --- health -------------------------------------------------------------------------------------

def health(ctx: Context) -> HealthResponse:
    s = ctx.settings
    return HealthResponse(status="healthy", version=s.app_version, environment=s.environment,
                          timestamp=ctx.now())


def detailed_health(ctx: Context) -> Flow[tuple[int, DetailedHealthResponse]]:
    """Checks DynamoDB (a point read) and the agent endpoint (ListSessions, read-only).

    The agent check counts any answer below 500 as *up*: the endpoint answered, even if the
    role may not list sessions. Connection failures, timeouts and 5xx count as *down*.
    """
    checks: list[DependencyCheck] = []
    started = ctx.perf()
    try:
        yield AwsCall("dynamodb", "get_item", {
            "TableName": ctx.settings.sessions_table,
            "Key": {"session_id": {"S": sess.HEALTH_KEY}},
            "ProjectionExpression": "session_id",
        })
        checks.append(_check("dynamodb", started, ctx, None))
    except Exception as exc:
        mapped = store_failure(exc)
        checks.append(_check("dynamodb", started, ctx,
                             mapped.code.value if mapped else ErrorCode.INTERNAL_ERROR.value))
    started = ctx.perf()
    try:
        yield AwsCall("bedrock", "list_sessions", {"maxResults": 1})
        checks.append(_check("agent", started, ctx, None))
    except Exception as exc:
        answered = 0 < _http_status(exc) < 500  # e.g. AccessDenied: reachable, so up
        mapped = None if answered else agent_failure(exc)
        error = None if answered else (mapped.code if mapped else ErrorCode.INTERNAL_ERROR)
        checks.append(_check("agent", started, ctx, error.value if error else None))
    healthy = all(c.status == "up" for c in checks)
    s = ctx.settings
    body = DetailedHealthResponse(
        status="healthy" if healthy else "unhealthy", version=s.app_version,
        environment=s.environment, timestamp=ctx.now(), checks=checks,
    )
    return (200 if healthy else 503), body


def _http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return 0


def _check(name: Literal["dynamodb", "agent"], started: float, ctx: Context,
           error: str | None) -> DependencyCheck:
    return DependencyCheck(
        name=name,
        status="down" if error else "up",
        latency_ms=round((ctx.perf() - started) * 1000, 3),
        error=error,
    )

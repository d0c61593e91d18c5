"""Every route of the API, in both colors, against devstack over the real SDK wire path."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from devstack.agent_emulator import reply_for
from devstack.stack import DevStack
from shared.contracts import (
    ChatResponse,
    DetailedHealthResponse,
    ErrorResponse,
    HealthResponse,
    PerformanceSnapshot,
    SessionDeleted,
    SessionList,
    SessionRecord,
)
from shared.openapi import openapi_bytes
from tests.conftest import ColorClient, unique

pytestmark = pytest.mark.integration
CHAT = "/api/v1/chat"


def chat(client: ColorClient, message: str, **extra: Any) -> Any:
    return client.post(CHAT, json={"message": message, **extra})


def error_of(resp: Any, status: int, code: str) -> ErrorResponse:
    assert resp.status_code == status, resp.text
    body = ErrorResponse.model_validate_json(resp.content)
    assert body.error_code == code
    assert body.request_id == resp.headers["x-request-id"]
    return body


# --- health -------------------------------------------------------------------------------------

def test_health(client: ColorClient) -> None:
    resp = client.get("/health", headers={"X-Request-ID": "req-123"})
    assert resp.status_code == 200
    body = HealthResponse.model_validate_json(resp.content)
    assert body.environment == "local"
    assert resp.headers["x-request-id"] == "req-123"
    assert resp.headers["x-app-color"] == client.color
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["content-type"] == "application/json"


def test_bad_request_id_is_replaced(client: ColorClient) -> None:
    resp = client.get("/health", headers={"X-Request-ID": "x" * 500})
    assert resp.headers["x-request-id"] != "x" * 500
    assert len(resp.headers["x-request-id"]) == 32


def test_health_detailed_up(client: ColorClient) -> None:
    resp = client.get("/health/detailed")
    assert resp.status_code == 200, resp.text
    body = DetailedHealthResponse.model_validate_json(resp.content)
    assert {c.name: c.status for c in body.checks} == {"dynamodb": "up", "agent": "up"}
    assert all(c.latency_ms > 0 for c in body.checks)


def test_health_detailed_agent_down(make_client: Callable[..., ColorClient], color: str) -> None:
    client = make_client(color, bedrock_endpoint_url="http://127.0.0.1:9",
                         agent_connect_timeout_s=0.5)
    resp = client.get("/health/detailed")
    assert resp.status_code == 503
    body = DetailedHealthResponse.model_validate_json(resp.content)
    assert body.status == "unhealthy"
    assert {c.name: (c.status, c.error) for c in body.checks} == {
        "dynamodb": ("up", None), "agent": ("down", "AGENT_UNAVAILABLE")}


# --- chat and sessions ------------------------------------------------------------------------

def test_chat_round_trip(client: ColorClient, stack: DevStack) -> None:
    user = unique("user")
    message = f"hello from {client.color} {unique('m')}"
    first = chat(client, message, user_id=user)
    assert first.status_code == 200, first.text
    body = ChatResponse.model_validate_json(first.content)
    assert body.response == reply_for(message)
    assert body.session_id.startswith("sess_")
    assert body.tokens_used is None
    calls = [c for c in stack.agent.calls() if c["input_text"] == message]  # type: ignore[union-attr]
    assert [c["session_id"] for c in calls] == [body.session_id]

    second = chat(client, "and again", session_id=body.session_id, user_id=user)
    assert second.status_code == 200
    record = SessionRecord.model_validate_json(
        client.get(f"{CHAT}/sessions/{body.session_id}").content)
    assert record.message_count == 4
    assert record.user_id == user
    assert [m.role for m in record.messages] == ["user", "assistant"] * 2
    assert record.messages[0].content == message
    assert record.messages[3].content == reply_for("and again")
    assert record.expires_at > record.updated_at >= record.created_at


def test_session_item_in_dynamodb(client: ColorClient, stack: DevStack) -> None:
    sid = unique("sess")
    assert chat(client, "store me", session_id=sid, user_id="u-1").status_code == 200
    ddb = boto3.client("dynamodb", endpoint_url=stack.moto_url, region_name="us-east-1")
    item = ddb.get_item(TableName="chat_sessions", Key={"session_id": {"S": sid}})["Item"]
    assert item["message_count"] == {"N": "2"}
    assert item["user_id"] == {"S": "u-1"}
    assert int(item["expires_at"]["N"]) > 0
    assert set(item) >= {"created_at", "updated_at", "version", "messages"}


def test_chat_with_session_of_another_user(client: ColorClient) -> None:
    sid = unique("sess")
    assert chat(client, "mine", session_id=sid, user_id="alice").status_code == 200
    error_of(chat(client, "theirs", session_id=sid, user_id="bob"), 409,
             "SESSION_USER_MISMATCH")


def test_get_and_delete_session(client: ColorClient) -> None:
    sid = unique("sess")
    error_of(client.get(f"{CHAT}/sessions/{sid}"), 404, "SESSION_NOT_FOUND")
    assert chat(client, "x", session_id=sid).status_code == 200
    deleted = client.delete(f"{CHAT}/sessions/{sid}")
    assert deleted.status_code == 200
    assert SessionDeleted.model_validate_json(deleted.content).session_id == sid
    error_of(client.get(f"{CHAT}/sessions/{sid}"), 404, "SESSION_NOT_FOUND")
    error_of(client.delete(f"{CHAT}/sessions/{sid}"), 404, "SESSION_NOT_FOUND")


@pytest.mark.parametrize("bad", ["a", "x" * 101, "..x..", "bad%20id"])
def test_bad_session_ids(client: ColorClient, bad: str) -> None:
    resp = client.get(f"{CHAT}/sessions/{bad}")
    if bad == "..x..":  # a valid id (it has letters), simply unknown
        error_of(resp, 404, "SESSION_NOT_FOUND")
        return
    body = error_of(resp, 422, "VALIDATION_ERROR")
    assert body.details
    assert body.details[0].loc == ["path", "session_id"]


def test_list_user_sessions_paginates_newest_first(client: ColorClient) -> None:
    user = unique("user")
    sids = [unique("s") for _ in range(3)]
    for sid in sids:
        assert chat(client, "hi", session_id=sid, user_id=user).status_code == 200
    page = SessionList.model_validate_json(
        client.get(f"/api/v1/users/{user}/sessions", params={"limit": 2}).content)
    assert [s.session_id for s in page.sessions] == [sids[2], sids[1]]
    assert page.next_cursor
    rest = client.get(f"/api/v1/users/{user}/sessions",
                      params={"limit": 2, "cursor": page.next_cursor})
    page2 = SessionList.model_validate_json(rest.content)
    assert [s.session_id for s in page2.sessions] == [sids[0]]
    assert page2.next_cursor is None
    error_of(client.get(f"/api/v1/users/{unique('other')}/sessions",
                        params={"cursor": page.next_cursor}), 422, "VALIDATION_ERROR")
    empty = SessionList.model_validate_json(
        client.get(f"/api/v1/users/{unique('nobody')}/sessions").content)
    assert empty.sessions == []


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=100000", "cursor=%%%"])
def test_list_bad_query(client: ColorClient, query: str) -> None:
    body = error_of(client.get(f"/api/v1/users/u1/sessions?{query}"), 422, "VALIDATION_ERROR")
    assert body.details
    assert body.details[0].loc[0] == "query"


# --- metrics and docs -------------------------------------------------------------------------

def test_metrics_performance_and_prometheus(client: ColorClient) -> None:
    for _ in range(3):
        client.get("/health")
    perf = PerformanceSnapshot.model_validate_json(client.get("/metrics/performance").content)
    assert perf.requests >= 3
    assert perf.window_s == 60
    text = client.get("/metrics").text
    assert f'chatbot_requests_total{{color="{client.color}",endpoint="/health"' in text


def test_cloudwatch_receives_request_metrics(client: ColorClient, stack: DevStack) -> None:
    for _ in range(3):
        client.get("/health")
    client.get("/nope")
    assert client.flush_metrics() >= 4
    cw = boto3.client("cloudwatch", endpoint_url=stack.moto_url, region_name="us-east-1")
    names = {(m["MetricName"], m["Dimensions"][0]["Value"])
             for m in cw.list_metrics(Namespace=client.settings.metrics_namespace)["Metrics"]}
    assert {("RequestCount", "/health"), ("SuccessCount", "/health"),
            ("RequestLatency", "/health"), ("ClientErrorCount", "unmatched")} <= names


def test_openapi_is_the_shared_document(client: ColorClient) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.content == openapi_bytes()
    assert json.loads(resp.content)["paths"]["/api/v1/chat"]["post"]["operationId"] == "chat"


def test_docs_only_on_green(client: ColorClient) -> None:
    for path in ("/docs", "/redoc"):
        resp = client.get(path)
        assert resp.status_code == (200 if client.color == "green" else 404)


# --- errors -------------------------------------------------------------------------------------

def test_unknown_route_and_wrong_method(client: ColorClient) -> None:
    error_of(client.get("/nope"), 404, "NOT_FOUND")
    error_of(client.get("/health/"), 404, "NOT_FOUND")
    resp = client.put(CHAT, json={})
    error_of(resp, 405, "METHOD_NOT_ALLOWED")
    assert resp.headers["allow"] == "POST"
    assert client.post("/health").headers["allow"] == "GET, HEAD"


def test_head(client: ColorClient) -> None:
    resp = client.head("/health")
    assert resp.status_code == 200
    assert resp.content == b""


@pytest.mark.parametrize(("content_type", "body", "status", "code"), [
    ("text/plain", b'{"message": "x"}', 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("application/json", b'{"message": ', 400, "MALFORMED_JSON"),
    ("application/json", b"", 400, "MALFORMED_JSON"),
    ("application/json", b"[1]", 422, "VALIDATION_ERROR"),
    ("application/json", b'{"message": "  "}', 422, "VALIDATION_ERROR"),
])
def test_bad_chat_bodies(client: ColorClient, content_type: str, body: bytes, status: int,
                         code: str) -> None:
    error_of(client.post(CHAT, content=body, headers={"Content-Type": content_type}), status,
             code)


def test_body_over_the_limit(make_client: Callable[..., ColorClient], color: str) -> None:
    client = make_client(color, max_body_bytes=2048)
    big = json.dumps({"message": "x" * 3000}).encode()
    error_of(client.post(CHAT, content=big, headers={"Content-Type": "application/json"}), 413,
             "PAYLOAD_TOO_LARGE")
    # chunked bodies (no Content-Length) are checked against real servers in tests/e2e


def test_api_keys(make_client: Callable[..., ColorClient], color: str) -> None:
    client = make_client(color, api_keys="k-one,k-two")
    error_of(client.get("/api/v1/users/u1/sessions"), 401, "UNAUTHORIZED")
    error_of(client.get("/api/v1/users/u1/sessions", headers={"X-API-Key": "nope"}), 401,
             "UNAUTHORIZED")
    ok = client.get("/api/v1/users/u1/sessions", headers={"X-API-Key": "k-two"})
    assert ok.status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/metrics/performance").status_code == 200


def test_rate_limit(make_client: Callable[..., ColorClient], color: str) -> None:
    key = unique("key")
    client = make_client(color, api_keys=key, rate_limit_requests=3)
    statuses = []
    for _ in range(4):
        resp = client.get("/api/v1/users/u1/sessions", headers={"X-API-Key": key})
        statuses.append(resp.status_code)
    assert statuses == [200, 200, 200, 429]
    assert resp.headers["x-ratelimit-limit"] == "3"
    assert resp.headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    error_of(resp, 429, "RATE_LIMITED")


def test_cors(make_client: Callable[..., ColorClient], color: str) -> None:
    client = make_client(color, cors_origins="https://app.example.com")
    pre = client.options(CHAT, headers={"Origin": "https://app.example.com",
                                        "Access-Control-Request-Method": "POST",
                                        "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-credentials" not in pre.headers
    refused = client.options(CHAT, headers={"Origin": "https://evil.test",
                                            "Access-Control-Request-Method": "POST"})
    error_of(refused, 403, "CORS_ORIGIN_NOT_ALLOWED")
    plain = client.get("/health", headers={"Origin": "https://app.example.com"})
    assert plain.headers["access-control-allow-origin"] == "https://app.example.com"
    other = client.get("/health", headers={"Origin": "https://evil.test"})
    assert "access-control-allow-origin" not in other.headers


def test_gzip_for_large_bodies(client: ColorClient) -> None:
    sid = unique("sess")
    assert chat(client, "y" * 1500, session_id=sid).status_code == 200
    resp = client.get(f"{CHAT}/sessions/{sid}", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip"
    assert SessionRecord.model_validate_json(resp.content).session_id == sid  # httpx decoded
    small = client.get("/health", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers
    raw = client.get(f"{CHAT}/sessions/{sid}", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert SessionRecord.model_validate_json(raw.content).session_id == sid  # plain JSON bytes
    assert len(gzip.compress(raw.content)) < len(raw.content)  # the gzipped one was smaller


# --- upstream faults ----------------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "status", "code"), [
    ("throttle", 503, "AGENT_THROTTLED"),
    ("internal", 502, "AGENT_ERROR"),
    ("midstream", 502, "AGENT_ERROR"),
    ("midstream-throttle", 503, "AGENT_THROTTLED"),
    ("malformed", 502, "AGENT_BAD_RESPONSE"),
    ("empty", 502, "AGENT_BAD_RESPONSE"),
    ("timeout", 504, "AGENT_TIMEOUT"),
    ("stall", 504, "AGENT_TIMEOUT"),
    ("bad-gateway", 502, "AGENT_ERROR"),
    ("unavailable", 503, "AGENT_UNAVAILABLE"),
    ("dependency", 503, "AGENT_UNAVAILABLE"),
    ("disconnect", 503, "AGENT_UNAVAILABLE"),
    ("model-not-ready", 503, "AGENT_UNAVAILABLE"),
    ("quota", 503, "AGENT_THROTTLED"),
    ("access-denied", 502, "AGENT_ERROR"),
    ("validation", 502, "AGENT_ERROR"),
])
def test_agent_faults_fail_cleanly_and_write_nothing(client: ColorClient, fault: str,
                                                     status: int, code: str) -> None:
    sid = unique("sess")
    resp = chat(client, f"please [[fault:{fault}]]", session_id=sid)
    body = error_of(resp, status, code)
    assert "Traceback" not in resp.text
    assert "Exception" not in body.error
    error_of(client.get(f"{CHAT}/sessions/{sid}"), 404, "SESSION_NOT_FOUND")


def test_agent_unreachable(make_client: Callable[..., ColorClient], color: str) -> None:
    client = make_client(color, bedrock_endpoint_url="http://127.0.0.1:9")
    error_of(chat(client, "hello"), 503, "AGENT_UNAVAILABLE")


def test_store_table_missing(make_client: Callable[..., ColorClient], color: str) -> None:
    client = make_client(color, sessions_table="no_such_table")
    error_of(chat(client, "hello"), 503, "STORE_UNAVAILABLE")
    error_of(client.get(f"{CHAT}/sessions/abc"), 503, "STORE_UNAVAILABLE")


# --- cross-cutting ------------------------------------------------------------------------------

def test_a_bug_is_a_fixed_500_without_exception_text(client: ColorClient) -> None:
    from dataclasses import replace

    runtime = (client.app.extensions["chatbot"] if client.color == "blue"
               else client.app.state.runtime)

    def boom() -> str:
        raise RuntimeError("secret detail /etc/passwd")

    runtime.ctx = replace(runtime.ctx, new_session_id=boom)
    resp = chat(client, "trigger the bug")
    body = error_of(resp, 500, "INTERNAL_ERROR")
    assert body.error == "Internal server error."
    assert "secret" not in resp.text
    assert "passwd" not in resp.text
    assert resp.headers["x-app-color"] == client.color


def test_one_json_log_line_per_request_without_secrets(
        make_client: Callable[..., ColorClient], color: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    key = unique("very-secret-key")
    client = make_client(color, api_keys=key)
    capsys.readouterr()
    resp = client.get("/api/v1/users/u1/sessions", headers={"X-API-Key": key,
                                                            "X-Request-ID": "log-test-1"})
    assert resp.status_code == 200
    out = capsys.readouterr().out
    assert key not in out
    access = [json.loads(line) for line in out.splitlines()
              if line.startswith("{") and '"chatbot.access"' in line]
    assert len(access) == 1
    line = access[0]
    assert line["request_id"] == "log-test-1"
    assert (line["method"], line["path"], line["status"], line["color"]) == (
        "GET", "/api/v1/users/u1/sessions", 200, color)
    assert line["duration_ms"] > 0

"""DynamoDB and CloudWatch faults in both colors, over the wire: from devstack's fault injector
(markers and switches, devstack/moto_faults.py) and from a dependency really missing (a closed
port, a table that does not exist). Each fault is one status and error_code (shared/faults.py);
no chat is a success without its session write; metrics never fail a request, and past their
retry bound they are dropped with a log line and a count."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devstack.stack import DevStack
from shared.contracts import DetailedHealthResponse, ErrorResponse
from shared.metrics import MAX_SEND_ATTEMPTS
from tests.conftest import ColorClient, unique

pytestmark = pytest.mark.integration
CHAT = "/api/v1/chat"


def error_of(resp: Any, code: str) -> ErrorResponse:
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "1"
    body = ErrorResponse.model_validate_json(resp.content)
    assert body.error_code == code
    return body


@pytest.fixture
def switches(stack: DevStack) -> Iterator[Callable[[dict[str, Any]], None]]:
    assert stack.moto is not None
    yield stack.moto.switches.update
    stack.moto.switches.reset()


@pytest.mark.parametrize(("kind", "code"), [
    ("throughput", "STORE_THROTTLED"), ("throttle", "STORE_THROTTLED"),
    ("request-limit", "STORE_THROTTLED"), ("missing-table", "STORE_UNAVAILABLE"),
    ("internal", "STORE_UNAVAILABLE"), ("unavailable", "STORE_UNAVAILABLE"),
    ("disconnect", "STORE_UNAVAILABLE"),
])
def test_chat_read_fault(client: ColorClient, kind: str, code: str) -> None:
    sid = unique("s") + f"-ddb:{kind}:GetItem"
    error_of(client.post(CHAT, json={"message": "hi", "session_id": sid}), code)


def test_chat_write_fault_is_never_a_success(client: ColorClient) -> None:
    sid = unique("s") + "-ddb:throughput:PutItem"
    error_of(client.post(CHAT, json={"message": "hi", "session_id": sid}),
             "SESSION_WRITE_FAILED")
    assert client.get(f"{CHAT}/sessions/{sid}").status_code == 404  # nothing stored


def test_get_delete_and_list_faults(client: ColorClient) -> None:
    sid = unique("s") + "-ddb:throttle:DeleteItem"
    user = unique("u") + "-ddb:internal:Query"
    assert client.post(CHAT, json={"message": "hi", "session_id": sid, "user_id": user}
                       ).status_code == 200
    error_of(client.delete(f"{CHAT}/sessions/{sid}"), "STORE_THROTTLED")
    assert client.get(f"{CHAT}/sessions/{sid}").status_code == 200  # not deleted
    error_of(client.get(f"/api/v1/users/{user}/sessions"), "STORE_UNAVAILABLE")
    error_of(client.get(f"{CHAT}/sessions/{unique('s')}-ddb:disconnect:GetItem"),
             "STORE_UNAVAILABLE")


def test_rate_limiter_fails_closed(client: ColorClient,
                                   switches: Callable[[dict[str, Any]], None]) -> None:
    switches({"dynamodb": {"UpdateItem": "throttle"}})
    error_of(client.get(f"{CHAT}/sessions/{unique('s')}"), "STORE_THROTTLED")
    assert client.get("/health").status_code == 200
    switches({"dynamodb": {}})
    assert client.get(f"{CHAT}/sessions/{unique('s')}").status_code == 404


def test_health_detailed_when_dynamodb_is_down(client: ColorClient,
                                               switches: Callable[[dict[str, Any]], None]
                                               ) -> None:
    switches({"dynamodb": {"*": "disconnect"}})
    resp = client.get("/health/detailed")
    assert resp.status_code == 503
    body = DetailedHealthResponse.model_validate_json(resp.content)
    checks = {c.name: (c.status, c.error) for c in body.checks}
    assert checks == {"dynamodb": ("down", "STORE_UNAVAILABLE"), "agent": ("up", None)}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_dynamodb_really_unreachable(make_client: Callable[..., ColorClient],
                                     color: str) -> None:
    client = make_client(color, dynamodb_endpoint_url=f"http://127.0.0.1:{closed_port()}",
                         dynamodb_connect_timeout_s=0.5)
    error_of(client.post(CHAT, json={"message": "hi"}), "STORE_UNAVAILABLE")
    assert client.get("/health/detailed").status_code == 503


def test_table_really_missing(make_client: Callable[..., ColorClient], color: str) -> None:
    client = make_client(color, sessions_table=unique("no_such_table"))
    error_of(client.post(CHAT, json={"message": "hi"}), "STORE_UNAVAILABLE")
    error_of(client.get(f"{CHAT}/sessions/{unique('s')}"), "STORE_UNAVAILABLE")
    health = client.get("/health/detailed")
    assert health.status_code == 503
    assert "STORE_UNAVAILABLE" in health.text
    limited = make_client(color, rate_limit_table=unique("no_such_table"))
    error_of(limited.get(f"{CHAT}/sessions/{unique('s')}"), "STORE_UNAVAILABLE")


def dropped(client: ColorClient) -> float:
    text = client.get("/metrics").text
    match = re.search(r'chatbot_cloudwatch_observations_dropped_total\{color="'
                      + client.color + r'"\} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


def test_cloudwatch_outage_within_the_bound_loses_nothing(
        client: ColorClient, switches: Callable[[dict[str, Any]], None]) -> None:
    client.flush_metrics()
    before = dropped(client)
    client.flush_metrics()  # the /metrics read above
    switches({"cloudwatch": "down"})
    assert client.post(CHAT, json={"message": "hi"}).status_code == 200  # never fails a chat
    for _ in range(MAX_SEND_ATTEMPTS - 1):
        assert client.flush_metrics() == 0
    switches({"cloudwatch": "up"})
    assert client.flush_metrics() == 1  # the chat's observation, retried and delivered
    assert dropped(client) == before


def test_cloudwatch_outage_past_the_bound_drops_with_a_log_line_and_a_count(
        client: ColorClient, switches: Callable[[dict[str, Any]], None],
        caplog: pytest.LogCaptureFixture) -> None:
    client.flush_metrics()
    before = dropped(client)
    client.flush_metrics()
    switches({"cloudwatch": "down"})
    assert client.get("/health").status_code == 200
    with caplog.at_level(logging.WARNING, logger="chatbot.metrics"):
        for _ in range(MAX_SEND_ATTEMPTS):
            assert client.flush_metrics() == 0
    drops = [r for r in caplog.records if r.getMessage() == "metrics batch dropped"]
    assert len(drops) == 1
    assert drops[0].__dict__["observations"] == 1
    assert drops[0].__dict__["attempts"] == MAX_SEND_ATTEMPTS
    switches({"cloudwatch": "up"})
    assert dropped(client) == before + 1
    assert client.flush_metrics() == 1  # only the /metrics read: the dropped one is gone

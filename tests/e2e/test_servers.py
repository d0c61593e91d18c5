"""Real servers: gunicorn (blue) and uvicorn (green) processes, booted with the shipped commands,
answering over TCP through devstack. Includes SIGTERM: buffered metrics are flushed, none lost."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from devstack.agent_emulator import reply_for
from devstack.run import Server
from devstack.stack import DevStack
from shared.contracts import ChatResponse, PerformanceSnapshot, SessionRecord
from shared.settings import DEV_API_KEY

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def request_count(stack: DevStack, namespace: str) -> float:
    """RequestCount observations CloudWatch (moto) holds for ``namespace``, every endpoint."""
    cw = boto3.client("cloudwatch", endpoint_url=stack.moto_url, region_name="us-east-1")
    now = dt.datetime.now(dt.UTC)
    total = 0.0
    for metric in cw.list_metrics(Namespace=namespace, MetricName="RequestCount")["Metrics"]:
        stats = cw.get_metric_statistics(
            Namespace=namespace, MetricName="RequestCount", Dimensions=metric["Dimensions"],
            StartTime=now - dt.timedelta(minutes=10), EndTime=now + dt.timedelta(minutes=1),
            Period=60, Statistics=["SampleCount"])
        total += sum(p["SampleCount"] for p in stats["Datapoints"])
    return total
PORTS = {"blue": 18401, "green": 18402}


@pytest.fixture(scope="module")
def e2e_stack() -> Iterator[DevStack]:
    with DevStack() as s:
        yield s


@pytest.fixture(params=["blue", "green"])
def server(request: pytest.FixtureRequest, e2e_stack: DevStack, tmp_path: Path
           ) -> Iterator[tuple[Server, str]]:
    color = str(request.param)
    namespace = f"E2E/{uuid.uuid4().hex}"
    env = {**e2e_stack.env(), "API_KEYS": DEV_API_KEY, "METRICS_NAMESPACE": namespace,
           "METRICS_FLUSH_INTERVAL_S": "60"}  # nothing flushes on its own during the test
    srv = Server(color, PORTS[color], env, workers=2, log_path=tmp_path / f"{color}.log")
    srv.start()
    try:
        srv.wait_healthy(30)
        yield srv, namespace
    finally:
        srv.stop()


def test_chat_through_real_server(server: tuple[Server, str], e2e_stack: DevStack) -> None:
    srv, namespace = server
    headers = {"X-API-Key": DEV_API_KEY}
    with httpx.Client(base_url=srv.url, headers=headers, timeout=10) as http:
        resp = http.post("/api/v1/chat", json={"message": "hello over tcp", "user_id": "e2e"})
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-app-color"] == srv.color
        body = ChatResponse.model_validate_json(resp.content)
        assert body.response == reply_for("hello over tcp")
        record = SessionRecord.model_validate_json(
            http.get(f"/api/v1/chat/sessions/{body.session_id}").content)
        assert record.message_count == 2
        for _ in range(20):  # spread over both workers
            assert http.get("/health").status_code == 200
        prom = http.get("/metrics").text
        health = re.search(rf'chatbot_requests_total{{color="{srv.color}",endpoint="/health",'
                           r'method="GET",status="200"} ([0-9.]+)', prom)
        assert health is not None
        assert float(health.group(1)) >= 20  # summed over both workers
        assert (f'chatbot_requests_total{{color="{srv.color}",endpoint="/api/v1/chat",'
                'method="POST",status="200"} 1.0') in prom
        assert http.post("/api/v1/chat", json={"message": "x"}, headers={"X-API-Key": "bad"}
                         ).status_code == 401

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
            yield b'{"message": "'
            for _ in range(1100):
                yield b"x" * 1000
            yield b'"}'

        too_big = http.post("/api/v1/chat", content=chunked(),
                            headers={"Content-Type": "application/json"})
        assert too_big.status_code == 413, too_big.text
        assert too_big.json()["error_code"] == "PAYLOAD_TOO_LARGE"
        # the last request: the instance's own count of everything it answered before it
        perf = PerformanceSnapshot.model_validate_json(http.get("/metrics/performance").content)
        served = perf.requests + 1
        assert served >= 26  # probe(s) + chat + get + 20 health + metrics + 2 refused + this

    # SIGTERM: every worker flushes its buffer on the way out; count what CloudWatch got.
    assert srv.stop() == 0
    total = request_count(e2e_stack, namespace)
    assert total == served, "request observations were lost (or counted twice) on SIGTERM"

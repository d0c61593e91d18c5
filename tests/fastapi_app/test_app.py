"""Green's lifespan, on an event loop against devstack: the aioboto3 clients are made once when
it starts and closed when it ends, and the metrics flusher runs in between and flushes on the
way out (what uvicorn does at start and at SIGTERM, without the server around it)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import aioboto3
import boto3
import httpx
import pytest
from aiobotocore.client import AioBaseClient

from devstack.stack import DevStack
from fastapi_app.app import create_app

pytestmark = pytest.mark.integration

SDK_NAMES = ["bedrock-agent-runtime", "cloudwatch", "dynamodb"]


def sample_count(stack: DevStack, namespace: str, metric: str, endpoint: str) -> float:
    cw = boto3.client("cloudwatch", endpoint_url=stack.moto_url, region_name="us-east-1")
    now = dt.datetime.now(dt.UTC)
    stats = cw.get_metric_statistics(
        Namespace=namespace, MetricName=metric,
        Dimensions=[{"Name": "Endpoint", "Value": endpoint}],
        StartTime=now - dt.timedelta(hours=1), EndTime=now + dt.timedelta(minutes=1),
        Period=60, Statistics=["SampleCount"])
    return float(sum(p["SampleCount"] for p in stats["Datapoints"]))


@pytest.mark.asyncio
async def test_lifespan_makes_the_clients_once_runs_the_flusher_and_closes_both(
        stack: DevStack, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    closed: list[str] = []
    real_client = aioboto3.Session.client
    real_exit = AioBaseClient.__aexit__

    def counting(self: Any, name: str, **kwargs: Any) -> Any:
        made.append(name)
        return real_client(self, name, **kwargs)

    async def closing(self: AioBaseClient, *exc: Any) -> None:  # closes its HTTP session
        closed.append(self.meta.service_model.service_name)
        await real_exit(self, *exc)

    monkeypatch.setattr(aioboto3.Session, "client", counting)
    monkeypatch.setattr(AioBaseClient, "__aexit__", closing)
    namespace = f"Test/{uuid.uuid4().hex}"
    # no periodic flush during the test: what reaches CloudWatch came from the final flush
    app = create_app(stack.settings(metrics_namespace=namespace, metrics_flush_interval_s=300))
    runtime = app.state.runtime
    assert runtime.aws is None
    assert made == []  # nothing is made before the lifespan starts

    async with app.router.lifespan_context(app):
        assert sorted(made) == SDK_NAMES
        task = runtime.flusher._task
        assert task is not None
        assert not task.done()  # the periodic flusher runs
        transport = httpx.ASGITransport(app=app)  # runs no lifespan of its own
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            for _ in range(3):
                assert (await http.get("/health")).status_code == 200
            assert (await http.get("/health/detailed")).status_code == 200
        assert sorted(made) == SDK_NAMES  # never per request
        assert closed == []

    assert sorted(closed) == SDK_NAMES  # every client closed at exit
    assert runtime.aws is None
    assert task.done()
    assert runtime.flusher._task is None
    assert runtime.flusher.telemetry.buffer.pending == 0
    assert sample_count(stack, namespace, "RequestCount", "/health") == 3
    assert sample_count(stack, namespace, "RequestCount", "/health/detailed") == 1

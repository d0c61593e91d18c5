"""Green's metrics flusher on an event loop: the periodic task, and what close() does with a
flush in flight (it finishes, within METRICS_SHUTDOWN_TIMEOUT_S; past it, what was not sent is
counted as dropped, never lost uncounted).

The executor here is a stand-in whose PutMetricData the test holds and releases: that is the
point of these tests (the moment SIGTERM meets a flush). The real wire path, the same moment on
real servers against moto, is the graceful_shutdown check (tests/e2e/test_checks.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from fastapi_app.aws import AsyncAws
from fastapi_app.telemetry import Flusher
from shared import prom
from shared.calls import AwsCall
from shared.settings import Settings

pytestmark = pytest.mark.unit


class HeldCloudWatch:
    """PutMetricData calls wait for ``release`` (set: they answer at once)."""

    def __init__(self, *, held: bool = True, fail: bool = False) -> None:
        self.release = asyncio.Event()
        if not held:
            self.release.set()
        self.fail = fail
        self.started = asyncio.Event()
        self.calls: list[AwsCall] = []
        self.answered: list[AwsCall] = []

    async def execute(self, call: AwsCall) -> dict[str, Any]:
        assert call.operation == "put_metric_data"
        self.calls.append(call)
        self.started.set()
        await self.release.wait()
        if self.fail:
            raise ConnectionError("CloudWatch unreachable")
        self.answered.append(call)
        return {}

    def delivered(self) -> int:
        return sum(int(d["StatisticValues"]["SampleCount"]) for c in self.answered
                   for d in c.params["MetricData"] if d["MetricName"] == "RequestCount")


def dropped_total() -> float:
    return float(prom.DATUMS_DROPPED.labels("green")._value.get())


def flusher(**settings: Any) -> Flusher:
    values: dict[str, Any] = {"metrics_flush_interval_s": 0.01, **settings}
    return Flusher(Settings(**values))


def record(f: Flusher, n: int) -> None:
    for _ in range(n):
        assert f.telemetry.buffer.record("/api/v1/chat", 200, 12.0)


@pytest.mark.asyncio
async def test_periodic_flush_sends_what_was_recorded() -> None:
    cw = HeldCloudWatch(held=False)
    f = flusher()
    f.start(cast(AsyncAws, cw))
    record(f, 3)
    await asyncio.wait_for(cw.started.wait(), 5)
    await f.close()
    assert cw.delivered() == 3
    assert f.telemetry.buffer.sent == 3
    assert f.telemetry.buffer.pending == 0


@pytest.mark.asyncio
async def test_close_lets_the_flush_in_flight_finish_then_flushes_the_rest() -> None:
    cw = HeldCloudWatch()
    f = flusher(metrics_shutdown_timeout_s=10)
    f.start(cast(AsyncAws, cw))
    record(f, 4)
    await asyncio.wait_for(cw.started.wait(), 5)  # a PutMetricData is in flight, held
    record(f, 2)  # answered while it is: only the final flush can carry these
    before = dropped_total()
    closing = asyncio.create_task(f.close())
    await asyncio.sleep(0.2)
    assert not closing.done()  # close() waits for the flush in flight: it is not cancelled
    cw.release.set()
    await asyncio.wait_for(closing, 5)
    assert cw.delivered() == 6
    assert len(cw.calls) == 2  # the one in flight, then the final flush; nothing sent twice
    assert f.telemetry.buffer.sent == 6
    assert f.telemetry.buffer.dropped == 0
    assert dropped_total() == before


@pytest.mark.asyncio
async def test_past_the_budget_what_was_not_sent_is_counted_as_dropped() -> None:
    cw = HeldCloudWatch()  # never released: CloudWatch holds every call
    f = flusher(metrics_shutdown_timeout_s=0.3)
    f.start(cast(AsyncAws, cw))
    record(f, 5)
    await asyncio.wait_for(cw.started.wait(), 5)
    record(f, 2)
    before = dropped_total()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(f.close(), 5)
    assert loop.time() - started < 3  # bounded by the budget (0.3 s), with room for a busy box
    assert cw.delivered() == 0
    buf = f.telemetry.buffer
    assert buf.dropped == 7  # the batch in flight and the rest: counted, not vanished
    assert buf.pending == 0
    assert dropped_total() - before == 7


@pytest.mark.asyncio
async def test_a_failed_flush_is_retried_by_the_final_flush() -> None:
    cw = HeldCloudWatch(held=False, fail=True)
    f = flusher(metrics_flush_interval_s=300)  # no periodic flush in this test
    f.start(cast(AsyncAws, cw))
    record(f, 3)
    assert await f.flush_now() == 0
    assert f.telemetry.buffer.pending == 3  # kept for the next flush
    cw.fail = False
    await f.close()
    assert cw.delivered() == 3
    assert f.telemetry.buffer.dropped == 0


@pytest.mark.asyncio
async def test_no_flush_after_close_and_nothing_when_metrics_are_off() -> None:
    cw = HeldCloudWatch(held=False)
    f = flusher()
    f.start(cast(AsyncAws, cw))
    await f.close()
    record(f, 1)
    await asyncio.sleep(0.1)
    assert cw.calls == []  # the periodic task is gone
    off = flusher(metrics_enabled=False)
    off.start(cast(AsyncAws, cw))
    record(off, 2)
    await off.close()
    assert cw.calls == []

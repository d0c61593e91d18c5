"""Blue's metrics flusher thread: close() lets a PutMetricData in flight finish (it joins the
thread, for up to METRICS_SHUTDOWN_TIMEOUT_S), then flushes what was recorded meanwhile, as
green's does (tests/fastapi_app/test_telemetry.py). The executor is a stand-in the test holds."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest

from legacy_flask.aws import SyncAws
from legacy_flask.telemetry import Flusher
from shared.calls import AwsCall
from shared.settings import Settings

pytestmark = pytest.mark.unit


class HeldCloudWatch:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.answered: list[AwsCall] = []

    def execute(self, call: AwsCall) -> dict[str, Any]:
        self.started.set()
        assert self.release.wait(10)
        self.answered.append(call)
        return {}

    def delivered(self) -> int:
        return sum(int(d["StatisticValues"]["SampleCount"]) for c in self.answered
                   for d in c.params["MetricData"] if d["MetricName"] == "RequestCount")


def test_close_lets_the_flush_in_flight_finish_then_flushes_the_rest() -> None:
    cw = HeldCloudWatch()
    f = Flusher(Settings(metrics_flush_interval_s=0.01, metrics_shutdown_timeout_s=10),
                cast(SyncAws, cw))
    f.start()
    for _ in range(4):
        f.telemetry.buffer.record("/api/v1/chat", 200, 10.0)
    assert cw.started.wait(5)  # the thread's PutMetricData is in flight, held
    for _ in range(2):
        f.telemetry.buffer.record("/health", 200, 1.0)
    closer = threading.Thread(target=f.close)
    closer.start()
    time.sleep(0.2)
    assert closer.is_alive()  # waiting for the flush in flight
    cw.release.set()
    closer.join(10)
    assert not closer.is_alive()
    assert cw.delivered() == 6
    assert len(cw.answered) == 2  # the one in flight, then the final flush
    assert f.telemetry.buffer.dropped == 0
    assert f.telemetry.buffer.pending == 0

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.calls import AwsCall, Call, run_sync
from shared.metrics import (
    MAX_DATUMS_PER_CALL,
    MAX_SEND_ATTEMPTS,
    MAX_VALUES_PER_CALL,
    MAX_VALUES_PER_DATUM,
    RELATIVE_ERROR,
    MetricBuffer,
    bucketed,
    flush,
    outcome_metric,
)
from shared.perfwindow import PerfWindow, percentile

pytestmark = pytest.mark.unit
T = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)


def test_outcome_metric() -> None:
    assert [outcome_metric(s) for s in (200, 404, 503)] == [
        "SuccessCount", "ClientErrorCount", "ErrorCount"]


def test_buffer_aggregates_per_minute_and_endpoint() -> None:
    buf = MetricBuffer("ChatBot/Test")
    for status, ms in [(200, 10.0), (200, 30.0), (503, 5.0)]:
        buf.record("/api/v1/chat", status, ms, when=T)
    (batch,) = buf.take()
    by_name = {d["MetricName"]: d for d in batch.datums}
    assert by_name["RequestCount"]["StatisticValues"]["SampleCount"] == 3
    assert by_name["SuccessCount"]["StatisticValues"]["Sum"] == 2
    assert by_name["ErrorCount"]["StatisticValues"]["Sum"] == 1
    lat = by_name["RequestLatency"]
    assert lat["Unit"] == "Milliseconds"
    assert "StatisticValues" not in lat  # percentiles need the values
    assert lat["Values"] == [bucketed(5.0), bucketed(10.0), bucketed(30.0)]
    assert lat["Counts"] == [1.0, 1.0, 1.0]
    assert lat["Dimensions"] == [{"Name": "Endpoint", "Value": "/api/v1/chat"}]
    assert {d["Timestamp"] for d in batch.datums} == {T.replace(second=0)}
    assert {d["StorageResolution"] for d in batch.datums} == {60}
    assert batch.observations == 3
    assert buf.take() == []


def test_bucketing_stays_within_the_relative_error() -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(3, 2) for _ in range(20_000)]
    samples += [1e-3, 0.5, 1.0, 999.999, 1000.0, 1000.001, 60_000.0, 3_600_000.0]
    worst = max(abs(bucketed(v) - v) / v for v in samples)
    assert worst <= RELATIVE_ERROR
    assert worst > RELATIVE_ERROR / 2  # the buckets are not needlessly fine
    assert bucketed(0.0) == 0.0
    assert bucketed(-1.0) == 0.0
    assert bucketed(math.nan) == 0.0
    # deterministic and monotonic: both colors publish the same value for the same latency
    assert bucketed(123.456) == bucketed(123.456)
    ordered = sorted(samples)
    published = [bucketed(v) for v in ordered]
    assert published == sorted(published)
    # a bucket's representative is a fixed point: re-bucketing changes nothing
    assert all(bucketed(p) == p for p in published[::97])


def test_more_than_150_distinct_latencies_split_into_datums_totals_kept() -> None:
    buf = MetricBuffer("ns")
    latencies = [1.0 * 1.05 ** i for i in range(400)]  # about 1 bucket apart or more
    for ms in latencies:
        buf.record("/api/v1/chat", 200, ms, when=T)
        buf.record("/api/v1/chat", 200, ms, when=T)  # each one twice
    (batch,) = buf.take()
    lat = [d for d in batch.datums if d["MetricName"] == "RequestLatency"]
    assert len(lat) > 2
    assert all(len(d["Values"]) == len(d["Counts"]) <= MAX_VALUES_PER_DATUM for d in lat)
    values = [v for d in lat for v in d["Values"]]
    assert len(values) == len(set(values)) == len({bucketed(ms) for ms in latencies})
    assert values == sorted(values)
    assert sum(c for d in lat for c in d["Counts"]) == 800  # the SampleCount CloudWatch sums
    (count,) = [d for d in batch.datums if d["MetricName"] == "RequestCount"]
    assert count["StatisticValues"]["SampleCount"] == 800
    assert batch.observations == 800
    assert len({(d["Timestamp"], str(d["Dimensions"])) for d in lat}) == 1


def test_a_batch_holds_at_most_max_values_per_call() -> None:
    buf = MetricBuffer("ns")
    minutes = 3 * MAX_VALUES_PER_CALL // MAX_VALUES_PER_DATUM // 2
    for m in range(minutes):  # 150 distinct latencies in each of many minutes
        for i in range(MAX_VALUES_PER_DATUM):
            buf.record("/e", 200, 1.0 * 1.05 ** i, when=T + timedelta(minutes=m))
    batches = buf.take()
    assert len(batches) >= 2
    for b in batches:
        assert len(b.datums) <= MAX_DATUMS_PER_CALL
        assert sum(len(d.get("Values", ())) or 1 for d in b.datums) <= MAX_VALUES_PER_CALL
    total = sum(c for b in batches for d in b.datums if d["MetricName"] == "RequestLatency"
                for c in d["Counts"])
    assert total == minutes * MAX_VALUES_PER_DATUM
    assert sum(b.observations for b in batches) == minutes * MAX_VALUES_PER_DATUM


def test_storage_resolution_1_buckets_per_second() -> None:
    buf = MetricBuffer("ns", storage_resolution=1)
    for offset_ms in (0, 400, 999, 1000, 2500):
        buf.record("/health", 200, 2.0, when=T + timedelta(milliseconds=offset_ms))
    (batch,) = buf.take()
    assert {d["StorageResolution"] for d in batch.datums} == {1}
    by_second = {d["Timestamp"]: d["StatisticValues"]["SampleCount"] for d in batch.datums
                 if d["MetricName"] == "RequestCount"}
    assert by_second == {T: 3.0, T + timedelta(seconds=1): 1.0, T + timedelta(seconds=2): 1.0}
    lat = {d["Timestamp"]: d["Counts"] for d in batch.datums
           if d["MetricName"] == "RequestLatency"}
    assert lat == {T: [3.0], T + timedelta(seconds=1): [1.0], T + timedelta(seconds=2): [1.0]}
    with pytest.raises(ValueError, match="1 or 60"):
        MetricBuffer("ns", storage_resolution=5)


def test_full_buffer_drops_and_counts() -> None:
    buf = MetricBuffer("ns", max_observations=100)
    accepted = sum(buf.record("/health", 200, 1.0, when=T) for _ in range(105))
    assert accepted == 100
    assert buf.dropped == 5


def test_flush_retries_then_drops_with_a_count() -> None:
    buf = MetricBuffer("ns")
    buf.record("/health", 200, 1.0, when=T)
    sent: list[AwsCall] = []

    def failing(call: Call) -> Any:
        raise ConnectionError("down")

    counted: list[int] = []
    for _ in range(MAX_SEND_ATTEMPTS - 1):
        assert run_sync(flush(buf, counted.append), failing) == 0
        assert buf.pending == 1
        assert buf.dropped == 0
    assert counted == []
    assert run_sync(flush(buf, counted.append), failing) == 0
    assert buf.dropped == 1
    assert buf.pending == 0
    assert counted == [1]  # the apps add it to chatbot_cloudwatch_observations_dropped_total

    buf.record("/health", 200, 1.0, when=T)

    def ok(call: Call) -> Any:
        assert isinstance(call, AwsCall)
        sent.append(call)
        return {}

    assert run_sync(flush(buf), ok) == 1
    assert sent[0].params["Namespace"] == "ns"
    assert buf.sent == 1


def test_many_endpoints_split_into_batches_of_1000() -> None:
    buf = MetricBuffer("ns")
    for i in range(400):
        buf.record(f"/e{i}", 200, 1.0, when=T)
    batches = buf.take()
    assert [len(b.datums) for b in batches] == [1000, 200]
    assert sum(b.observations for b in batches) == 400


def test_percentile_nearest_rank() -> None:
    data = [float(i) for i in range(1, 101)]
    assert percentile(data, 50) == 50
    assert percentile(data, 90) == 90
    assert percentile(data, 99) == 99
    assert percentile([], 50) == 0


def test_perf_window_in_memory_and_on_disk(tmp_path: Any) -> None:
    for directory in (None, str(tmp_path)):
        win = PerfWindow(directory, capacity=8)
        now = 1_000_000.0
        win.record(500.0, 200, now=now - 120)  # outside the window
        for i in range(10):  # wraps the ring of 8
            win.record(float(i), 503 if i == 9 else 200, now=now - 1)
        snap = win.snapshot(now=now)
        assert snap.requests == 8
        assert snap.p99_ms == 9.0
        assert snap.error_rate == pytest.approx(1 / 8)


def test_perf_window_reads_every_worker(tmp_path: Any) -> None:
    a = PerfWindow(str(tmp_path))
    a.record(10.0, 200, now=100.0)
    (tmp_path / "perf-99999.ring").write_bytes((tmp_path.glob("perf-*.ring").__next__())
                                               .read_bytes())  # a second worker's ring
    assert a.snapshot(now=101.0).requests == 2


def test_local_calls_run_in_a_thread_under_the_async_driver() -> None:
    import asyncio
    import threading

    from shared.calls import LocalCall, run_async

    def flow() -> Any:
        name = yield LocalCall(lambda: threading.current_thread().name)
        return name

    async def never(call: object) -> Any:
        raise AssertionError("a LocalCall never reaches the AWS executor")

    loop_thread = asyncio.run(run_async(flow(), never))
    assert loop_thread != threading.main_thread().name
    assert run_sync(flow(), lambda call: None) == threading.main_thread().name

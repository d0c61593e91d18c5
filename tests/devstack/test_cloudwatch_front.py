"""devstack's CloudWatch read path (GetMetricData, GetMetricStatistics): the rules on their own,
then over the real wire (boto3 and aioboto3 against moto behind the fault injector)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import uuid
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import aioboto3
import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from devstack.cloudwatch_front import (
    Cell,
    SeriesIndex,
    aligned_start,
    is_statistic,
    percentile_of,
    retained,
    unflatten,
)
from devstack.moto_faults import FaultyMotoServer
from shared.metrics import RELATIVE_ERROR, MetricBuffer
from shared.perfwindow import percentile

MINUTE = 60
HOUR = 3600
DAY = 86_400
ENDPOINT = [{"Name": "Endpoint", "Value": "/api/v1/chat"}]


# --- the rules ---------------------------------------------------------------------------------

@pytest.mark.unit
def test_nearest_rank_percentiles_of_known_data() -> None:
    cell = Cell(values=[float(v) for v in range(100, 0, -1)])  # 1..100, unordered
    got = {p: cell.percentile(percentile_of(p)) for p in
           ("p0", "p1", "p50", "p90", "p99", "p99.5", "p99.99", "p100")}
    assert got == {"p0": 1.0, "p1": 1.0, "p50": 50.0, "p90": 90.0, "p99": 99.0,
                   "p99.5": 100.0, "p99.99": 100.0, "p100": 100.0}
    # counts weight the values: 50 x 10, 40 x 20, 9 x 30, 1 x 1000
    weighted = Cell(values=[10.0] * 50 + [20.0] * 40 + [30.0] * 9 + [1000.0])
    assert [weighted.percentile(Fraction(p)) for p in (50, 51, 90, 91, 99)] == [
        10.0, 20.0, 20.0, 30.0, 30.0]
    assert weighted.percentile(Fraction("99.1")) == 1000.0
    assert weighted.statistic("SampleCount") == 100
    assert weighted.statistic("Average") == pytest.approx((500 + 800 + 270 + 1000) / 100)
    assert (weighted.statistic("Minimum"), weighted.statistic("Maximum")) == (10.0, 1000.0)


@pytest.mark.unit
def test_statistic_sets_give_percentiles_only_when_count_1_or_min_equals_max() -> None:
    assert Cell(sets=[(1, 7.0, 7.0, 7.0)]).percentile(Fraction(99)) == 7.0
    flat = Cell(values=[1.0], sets=[(9, 45.0, 5.0, 5.0)])  # nine 5s and a 1
    assert flat.percentile(Fraction(10)) == 1.0
    assert flat.percentile(Fraction(11)) == 5.0
    spread = Cell(values=[1.0], sets=[(3, 45.0, 5.0, 30.0)])
    assert spread.percentile(Fraction(50)) is None
    assert spread.statistic("SampleCount") == 4
    assert spread.statistic("Sum") == 46.0
    assert spread.statistic("Maximum") == 30.0
    assert Cell(values=[-1.0, 5.0]).percentile(Fraction(50)) is None  # negatives: none


@pytest.mark.unit
def test_statistic_names() -> None:
    for ok in ("SampleCount", "Average", "p0", "p50", "p99", "p99.9", "p99.99", "p100"):
        assert is_statistic(ok), ok
    for bad in ("p", "p100.1", "p101", "p99.999", "P99", "tm99", "IQM", "average", ""):
        assert not is_statistic(bad), bad


@pytest.mark.unit
def test_start_alignment_and_retention_as_documented() -> None:
    now = dt.datetime(2026, 3, 1, 15, 7, 17, tzinfo=dt.UTC).timestamp()
    at = dt.datetime(2026, 3, 1, 1, 5, 23, tzinfo=dt.UTC).timestamp()
    hhmm = dt.datetime(2026, 3, 1, 1, 5, tzinfo=dt.UTC).timestamp()
    assert aligned_start(at, 10, now) == hhmm + 20  # "01:05:23 ... from 01:05:10" for 10 s
    assert aligned_start(at, 5, now) == hhmm + 20
    assert aligned_start(at, 30, now) == hhmm
    assert aligned_start(at + 0.7, 1, now) == at
    assert aligned_start(at, 60, now) == hhmm  # the whole minute
    assert aligned_start(at, 300, now) == hhmm  # still the minute, not the 5-minute clock
    # the documented example: 12:32:34 is 12:32:00, 12:30:00 (15-63 days ago), 12:00:00 (older)
    doc = dt.datetime(2026, 3, 1, 12, 32, 34, tzinfo=dt.UTC).timestamp()
    noon = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC).timestamp()
    assert aligned_start(doc, 300, doc + HOUR) == noon + 32 * MINUTE
    assert aligned_start(doc, 300, doc + 20 * DAY) == noon + 30 * MINUTE
    assert aligned_start(doc, 3600, doc + 70 * DAY) == noon
    assert retained(now - 2 * HOUR, 5, now)
    assert not retained(now - 4 * HOUR, 5, now)  # high resolution is kept 3 hours
    assert retained(now - 4 * HOUR, 60, now)
    assert not retained(now - 20 * DAY, 60, now)
    assert retained(now - 20 * DAY, 300, now)
    assert not retained(now - 70 * DAY, 300, now)


@pytest.mark.unit
def test_query_protocol_parameters_unflatten() -> None:
    params = unflatten([
        ("MetricDataQueries.member.2.Id", "b"),
        ("MetricDataQueries.member.1.Id", "a"),
        ("MetricDataQueries.member.1.MetricStat.Metric.Dimensions.member.1.Name", "Endpoint"),
        ("MetricDataQueries.member.1.MetricStat.Metric.Dimensions.member.1.Value", "/x"),
        ("MetricDataQueries.member.1.MetricStat.Period", "60"),
        ("ExtendedStatistics.member.1", "p99"), ("ExtendedStatistics.member.2", "p50"),
        ("Dimensions", ""),
    ])
    assert params == {
        "MetricDataQueries": [
            {"Id": "a", "MetricStat": {"Metric": {"Dimensions": [
                {"Name": "Endpoint", "Value": "/x"}]}, "Period": "60"}},
            {"Id": "b"}],
        "ExtendedStatistics": ["p99", "p50"], "Dimensions": ""}


@pytest.mark.unit
def test_the_series_index_reads_only_what_was_appended() -> None:
    class Datum:
        def __init__(self, namespace: str, value: float) -> None:
            self.namespace, self.name, self.unit = namespace, "L", "Milliseconds"
            self.dimensions = [{"Name": "Endpoint", "Value": "/x"}]
            self.timestamp = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
            self.value = value

    series = ("A", "L", (("Endpoint", "/x"),))
    stored = [Datum("A", 1.0), Datum("B", 2.0)]
    index = SeriesIndex()
    index.update(stored)
    assert [e.value for e in index.entries(series)] == [1.0]
    stored.append(Datum("A", 3.0))
    index.update(stored)
    index.update(stored)  # nothing new: nothing added twice
    assert [e.value for e in index.entries(series)] == [1.0, 3.0]
    index.update([Datum("A", 9.0)])  # another list (moto reset its backend): read afresh
    assert [e.value for e in index.entries(series)] == [9.0]


# --- over the wire ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[FaultyMotoServer]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    srv = FaultyMotoServer(fault_timeout_s=1.0).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def cw(server: FaultyMotoServer) -> Any:
    config = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=1,
                    read_timeout=5)
    return boto3.client("cloudwatch", endpoint_url=server.url, region_name="us-east-1",
                        config=config, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def ns() -> str:
    return f"Front/{uuid.uuid4().hex[:8]}"


def minute_ago(n: int = 1) -> dt.datetime:
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    return now - dt.timedelta(minutes=n)


def stat_query(qid: str, namespace: str, stat: str, period: int = 60,
               dims: list[dict[str, str]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"Id": qid, "MetricStat": {"Metric": {
        "Namespace": namespace, "MetricName": "RequestLatency",
        "Dimensions": ENDPOINT if dims is None else dims}, "Period": period, "Stat": stat},
        **extra}


def gmd(cw: Any, queries: list[dict[str, Any]], start: dt.datetime, end: dt.datetime,
        **extra: Any) -> dict[str, dict[str, Any]]:
    resp = cw.get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end, **extra)
    return {r["Id"]: r for r in resp["MetricDataResults"]}


def put_latencies(cw: Any, namespace: str, when: dt.datetime, values: list[float],
                  counts: list[float], dims: list[dict[str, str]] | None = None) -> None:
    cw.put_metric_data(Namespace=namespace, MetricData=[{
        "MetricName": "RequestLatency", "Dimensions": ENDPOINT if dims is None else dims,
        "Timestamp": when, "Unit": "Milliseconds", "Values": values, "Counts": counts}])


@pytest.mark.integration
def test_known_values_and_counts_give_their_percentiles(cw: Any) -> None:
    namespace, t = ns(), minute_ago(3)
    put_latencies(cw, namespace, t, [10.0, 20.0, 30.0, 1000.0], [50.0, 40.0, 9.0, 1.0])
    put_latencies(cw, namespace, t + dt.timedelta(minutes=1), [5.0], [3.0])
    stats = {"p50": "p50", "p90": "p90", "p99": "p99", "p99_9": "p99.9", "n": "SampleCount",
             "avg": "Average", "hi": "Maximum"}
    got = gmd(cw, [stat_query(qid, namespace, stat) for qid, stat in stats.items()],
              t - dt.timedelta(minutes=1), t + dt.timedelta(minutes=5))
    newest, oldest = t + dt.timedelta(minutes=1), t
    for r in got.values():
        assert r["StatusCode"] == "Complete"
        assert r["Label"] == "RequestLatency"
        assert r["Timestamps"] == [newest, oldest]  # newest first by default
    assert {qid: r["Values"] for qid, r in got.items()} == {
        "p50": [5.0, 10.0], "p90": [5.0, 20.0], "p99": [5.0, 30.0], "p99_9": [5.0, 1000.0],
        "n": [3.0, 100.0], "avg": [5.0, 25.7], "hi": [5.0, 1000.0]}

    # GetMetricStatistics with ExtendedStatistics (moto ignores them)
    resp = cw.get_metric_statistics(
        Namespace=namespace, MetricName="RequestLatency", Dimensions=ENDPOINT,
        StartTime=t, EndTime=t + dt.timedelta(minutes=5), Period=120,
        ExtendedStatistics=["p50", "p90", "p99"])
    assert resp["Label"] == "RequestLatency"
    (point,) = resp["Datapoints"]  # both minutes in one 2-minute period
    assert point["Timestamp"] == t
    assert point["Unit"] == "Milliseconds"
    assert point["ExtendedStatistics"] == {"p50": 10.0, "p90": 20.0, "p99": 30.0}
    resp = cw.get_metric_statistics(
        Namespace=namespace, MetricName="RequestLatency", Dimensions=ENDPOINT,
        StartTime=t, EndTime=t + dt.timedelta(minutes=5), Period=60,
        Statistics=["SampleCount", "Sum", "Minimum"])
    assert [(p["SampleCount"], p["Sum"], p["Minimum"]) for p in resp["Datapoints"]] == [
        (100.0, 2570.0, 10.0), (3.0, 15.0, 5.0)]


@pytest.mark.integration
def test_both_colors_namespaces_stay_apart(cw: Any) -> None:
    """moto's own GetMetricData drops the namespace filter when a query has dimensions: both
    colors' series came back as their sum. This fails on moto alone."""
    run, t = uuid.uuid4().hex[:6], minute_ago(2)
    blue, green = f"ChatBot/Flask/{run}", f"ChatBot/FastAPI/{run}"
    put_latencies(cw, blue, t, [100.0], [10.0])
    put_latencies(cw, green, t, [50.0, 400.0], [19.0, 1.0])
    counts = gmd(cw, [stat_query("bn", blue, "SampleCount"),
                      stat_query("gn", green, "SampleCount")], t, t + dt.timedelta(minutes=1))
    assert {qid: r["Values"] for qid, r in counts.items()} == {"bn": [10.0], "gn": [20.0]}
    got = gmd(cw, [stat_query("bp", blue, "p99"), stat_query("gp", green, "p99"),
                   stat_query("gp90", green, "p90")], t, t + dt.timedelta(minutes=1))
    assert {qid: r["Values"] for qid, r in got.items()} == {
        "bp": [100.0], "gp": [400.0], "gp90": [50.0]}


@pytest.mark.integration
def test_dimensions_match_as_an_exact_set(cw: Any) -> None:
    namespace, t = ns(), minute_ago(2)
    extra = [*ENDPOINT, {"Name": "Color", "Value": "green"}]
    put_latencies(cw, namespace, t, [1.0], [1.0])
    put_latencies(cw, namespace, t, [2.0], [2.0], dims=extra[::-1])  # order does not matter
    got = gmd(cw, [stat_query("one", namespace, "SampleCount"),
                   stat_query("two", namespace, "SampleCount", dims=extra),
                   stat_query("none", namespace, "SampleCount", dims=[])],
              t, t + dt.timedelta(minutes=1))
    assert {qid: r["Values"] for qid, r in got.items()} == {
        "one": [1.0], "two": [2.0], "none": []}
    resp = cw.get_metric_statistics(  # moto's GMS matched a subset: 1 + 2
        Namespace=namespace, MetricName="RequestLatency", Dimensions=ENDPOINT,
        StartTime=t, EndTime=t + dt.timedelta(minutes=1), Period=60, Statistics=["SampleCount"])
    assert [p["SampleCount"] for p in resp["Datapoints"]] == [1.0]


@pytest.mark.integration
def test_statistic_values_data_gets_percentiles_only_when_flat(cw: Any) -> None:
    namespace, t = ns(), minute_ago(3)

    def put(when: dt.datetime, count: float, total: float, low: float, high: float) -> None:
        cw.put_metric_data(Namespace=namespace, MetricData=[{
            "MetricName": "RequestLatency", "Dimensions": ENDPOINT, "Timestamp": when,
            "Unit": "Milliseconds", "StatisticValues": {
                "SampleCount": count, "Sum": total, "Minimum": low, "Maximum": high}}])

    put(t, 3, 45.0, 5.0, 30.0)  # a summary of distinct values: no percentile
    put(t + dt.timedelta(minutes=1), 4, 28.0, 7.0, 7.0)  # Min = Max
    got = gmd(cw, [stat_query("p", namespace, "p90"), stat_query("n", namespace, "SampleCount")],
              t, t + dt.timedelta(minutes=2), ScanBy="TimestampAscending")
    assert got["p"]["Timestamps"] == [t + dt.timedelta(minutes=1)]
    assert got["p"]["Values"] == [7.0]
    assert got["n"]["Values"] == [3.0, 4.0]
    resp = cw.get_metric_statistics(
        Namespace=namespace, MetricName="RequestLatency", Dimensions=ENDPOINT, StartTime=t,
        EndTime=t + dt.timedelta(minutes=2), Period=60, ExtendedStatistics=["p90"])
    assert [p.get("ExtendedStatistics") for p in resp["Datapoints"]] == [{}, {"p90": 7.0}]


@pytest.mark.integration
def test_high_resolution_periods_align_to_the_period(cw: Any) -> None:
    namespace, t = ns(), minute_ago(2)
    for second, value in ((1, 10.0), (4, 20.0), (5, 30.0), (12, 40.0)):
        cw.put_metric_data(Namespace=namespace, MetricData=[{
            "MetricName": "RequestLatency", "Dimensions": ENDPOINT, "Unit": "Milliseconds",
            "Timestamp": t + dt.timedelta(seconds=second), "StorageResolution": 1,
            "Values": [value], "Counts": [1.0]}])
    # a start at :07 is rounded down to :05; the end (exclusive) at :12 leaves the 40 out
    got = gmd(cw, [stat_query("m", namespace, "Maximum", period=5, Label="max 5s")],
              t + dt.timedelta(seconds=7), t + dt.timedelta(seconds=12),
              ScanBy="TimestampAscending")
    assert got["m"]["Label"] == "max 5s"
    assert got["m"]["Timestamps"] == [t + dt.timedelta(seconds=5)]
    assert got["m"]["Values"] == [30.0]
    got = gmd(cw, [stat_query("n", namespace, "SampleCount", period=5),
                   stat_query("hidden", namespace, "Sum", period=5, ReturnData=False)],
              t, t + dt.timedelta(minutes=1))
    assert set(got) == {"n"}
    assert got["n"]["Timestamps"] == [t + dt.timedelta(seconds=s) for s in (10, 5, 0)]
    assert got["n"]["Values"] == [1.0, 1.0, 2.0]


@pytest.mark.integration
def test_what_is_refused_as_cloudwatch_refuses_it(cw: Any) -> None:
    namespace, t = ns(), minute_ago(5)
    end = t + dt.timedelta(minutes=1)

    def code(call: Any, **params: Any) -> str:
        with pytest.raises(ClientError) as info:
            call(**params)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        return str(info.value.response["Error"]["Code"])

    gmd_call, gms_call = cw.get_metric_data, cw.get_metric_statistics
    assert code(gmd_call, MetricDataQueries=[{"Id": "e", "Expression": "SUM(METRICS())"}],
                StartTime=t, EndTime=end) == "ValidationError"
    assert code(gmd_call, MetricDataQueries=[stat_query("q", namespace, "tm99")],
                StartTime=t, EndTime=end) == "ValidationError"
    assert code(gmd_call, MetricDataQueries=[stat_query("q", namespace, "p50", period=7)],
                StartTime=t, EndTime=end) == "ValidationError"
    assert code(gmd_call, MetricDataQueries=[stat_query("Q", namespace, "p50")],
                StartTime=t, EndTime=end) == "ValidationError"
    assert code(gmd_call, MetricDataQueries=[stat_query("q", namespace, "p50")] * 2,
                StartTime=t, EndTime=end) == "ValidationError"
    assert code(gmd_call, MetricDataQueries=[stat_query("q", namespace, "p50")],
                StartTime=end, EndTime=t) == "ValidationError"
    base = {"Namespace": namespace, "MetricName": "RequestLatency", "StartTime": t,
            "EndTime": end, "Period": 60}
    assert code(gms_call, **base) == "InvalidParameterCombination"
    assert code(gms_call, **base, Statistics=["Sum"],
                ExtendedStatistics=["p99"]) == "InvalidParameterCombination"
    assert code(gms_call, **base, ExtendedStatistics=["p101"]) == "InvalidParameterValue"
    assert code(gms_call, **{**base, "Period": 45},
                Statistics=["Sum"]) == "InvalidParameterValue"
    assert code(gms_call, **{**base, "StartTime": end - dt.timedelta(days=2)},
                Statistics=["Sum"]) == "InvalidParameterCombination"  # 2,880 > 1,440 points


@pytest.mark.integration
def test_the_outage_switch_drops_reads_and_the_rest_still_goes_to_moto(
        server: FaultyMotoServer, cw: Any) -> None:
    namespace, t = ns(), minute_ago(2)
    put_latencies(cw, namespace, t, [3.0], [1.0])
    assert [m["MetricName"] for m in cw.list_metrics(Namespace=namespace)["Metrics"]] == [
        "RequestLatency"]
    alarm = f"front-{uuid.uuid4().hex[:6]}"
    cw.put_metric_alarm(AlarmName=alarm, Namespace=namespace, MetricName="RequestLatency",
                        Dimensions=ENDPOINT, Period=60, EvaluationPeriods=1, Threshold=1.0,
                        ExtendedStatistic="p99", ComparisonOperator="GreaterThanThreshold")
    cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="test")
    (described,) = cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
    assert described["StateValue"] == "ALARM"
    httpx.post(server.url + "/_faults/config", json={"cloudwatch": "down"})
    try:
        with pytest.raises(ConnectionClosedError):
            gmd(cw, [stat_query("q", namespace, "p99")], t, t + dt.timedelta(minutes=1))
    finally:
        httpx.post(server.url + "/_faults/config", json={"cloudwatch": "up"})
    got = gmd(cw, [stat_query("q", namespace, "p99")], t, t + dt.timedelta(minutes=1))
    assert got["q"]["Values"] == [3.0]


@pytest.mark.integration
def test_a_moto_reset_empties_the_read_path(server: FaultyMotoServer, cw: Any) -> None:
    namespace, t = ns(), minute_ago(2)
    put_latencies(cw, namespace, t, [1.0], [2.0])
    window = (t, t + dt.timedelta(minutes=1))
    assert gmd(cw, [stat_query("n", namespace, "SampleCount")], *window)["n"]["Values"] == [2.0]
    assert httpx.post(server.url + "/moto-api/reset").status_code == 200
    assert gmd(cw, [stat_query("n", namespace, "SampleCount")], *window)["n"]["Values"] == []
    put_latencies(cw, namespace, t, [1.0], [5.0])
    assert gmd(cw, [stat_query("n", namespace, "SampleCount")], *window)["n"]["Values"] == [5.0]


@pytest.mark.integration
def test_json_protocol(server: FaultyMotoServer, cw: Any) -> None:
    """botocore >= 1.42.7 speaks JSON 1.0 to CloudWatch (timestamps in epoch seconds)."""
    namespace, t = ns(), minute_ago(2)
    put_latencies(cw, namespace, t, [1.0, 2.0], [1.0, 1.0])
    headers = {"Content-Type": "application/x-amz-json-1.0",
               "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/"
                                "monitoring/aws4_request, SignedHeaders=host, Signature=0"}
    body = {"MetricDataQueries": [stat_query("q", namespace, "p50")],
            "StartTime": t.timestamp(), "EndTime": t.timestamp() + 60}
    resp = httpx.post(server.url, json=body, headers={
        **headers, "X-Amz-Target": "GraniteServiceVersion20100801.GetMetricData"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/x-amz-json-1.0"
    (result,) = resp.json()["MetricDataResults"]
    assert (result["Timestamps"], result["Values"]) == ([t.timestamp()], [1.0])
    resp = httpx.post(server.url, content=json.dumps({
        "Namespace": namespace, "MetricName": "RequestLatency", "Dimensions": ENDPOINT,
        "StartTime": t.timestamp(), "EndTime": t.timestamp() + 60, "Period": 60,
        "ExtendedStatistics": ["p100"]}), headers={
        **headers, "X-Amz-Target": "GraniteServiceVersion20100801.GetMetricStatistics"})
    assert resp.json()["Datapoints"][0]["ExtendedStatistics"] == {"p100": 2.0}
    resp = httpx.post(server.url, json={**body, "StartTime": body["EndTime"]}, headers={
        **headers, "X-Amz-Target": "GraniteServiceVersion20100801.GetMetricData"})
    assert resp.status_code == 400
    assert resp.json()["__type"] == "ValidationError"
    assert resp.headers["x-amzn-query-error"] == "ValidationError;Sender"


@pytest.mark.integration
def test_aioboto3_reads_percentiles(server: FaultyMotoServer, cw: Any) -> None:
    namespace, t = ns(), minute_ago(2)
    put_latencies(cw, namespace, t, [float(v) for v in range(1, 101)], [1.0] * 100)

    async def read() -> list[float]:
        session = aioboto3.Session(aws_access_key_id="testing",
                                   aws_secret_access_key="testing", region_name="us-east-1")
        async with session.client("cloudwatch", endpoint_url=server.url) as client:
            resp = await client.get_metric_data(
                MetricDataQueries=[stat_query("q", namespace, "p90")], StartTime=t,
                EndTime=t + dt.timedelta(minutes=1))
        return list(resp["MetricDataResults"][0]["Values"])

    assert asyncio.run(read()) == [90.0]


@pytest.mark.integration
def test_the_apps_buffer_gives_percentiles_within_the_bucket_error(cw: Any) -> None:
    """shared.metrics' datums, sent as the apps send them, read back as the cutover gate reads
    them: p50/p90/p99 within 1% of the exact nearest-rank figures, SampleCount exact."""
    namespace, t = ns(), minute_ago(2)
    rng = random.Random(3)
    latencies = [rng.lognormvariate(5, 0.8) for _ in range(2000)]  # ~150 ms, a long tail
    buf = MetricBuffer(namespace, storage_resolution=1)
    for i, ms in enumerate(latencies):
        buf.record("/api/v1/chat", 200, ms, when=t + dt.timedelta(seconds=i % 10))
    for batch in buf.take():
        cw.put_metric_data(Namespace=namespace, MetricData=batch.datums)
    got = gmd(cw, [stat_query(f"p{p}", namespace, f"p{p}", period=10) for p in (50, 90, 99)]
              + [stat_query("n", namespace, "SampleCount", period=10)],
              t, t + dt.timedelta(seconds=10))
    ordered = sorted(latencies)
    for p in (50, 90, 99):
        (value,) = got[f"p{p}"]["Values"]
        exact = percentile(ordered, p)
        assert abs(value - exact) / exact <= RELATIVE_ERROR, (p, value, exact)
    assert got["n"]["Values"] == [2000.0]

"""The DynamoDB/CloudWatch fault injector in front of moto, over the wire with boto3."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from devstack.moto_faults import ERROR_FAULTS, MARKER, FaultyMotoServer, dynamodb_fault
from devstack.stack import create_tables

pytestmark = pytest.mark.integration
SESSIONS, LIMITS = "faults_sessions", "faults_limits"


@pytest.fixture(scope="module")
def server() -> Iterator[FaultyMotoServer]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    srv = FaultyMotoServer(fault_timeout_s=1.0).start()
    create_tables(srv.url, SESSIONS, LIMITS)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def healthy(server: FaultyMotoServer) -> Iterator[None]:
    yield
    httpx.delete(server.url + "/_faults/config")


def client(server: FaultyMotoServer, service: str, read_timeout: float = 5.0,
           attempts: int = 1) -> Any:
    config = Config(retries={"mode": "standard", "total_max_attempts": attempts},
                    connect_timeout=1, read_timeout=read_timeout)
    make: Any = boto3.client  # service is not a literal here
    return make(service, endpoint_url=server.url, region_name="us-east-1", config=config,
                aws_access_key_id="testing", aws_secret_access_key="testing")


def put(ddb: Any, sid: str, user: str = "u") -> None:
    ddb.put_item(TableName=SESSIONS, Item={"session_id": {"S": sid}, "user_id": {"S": user},
                                           "updated_at": {"S": "2026-01-01"}})


def get(ddb: Any, sid: str) -> dict[str, Any]:
    return dict(ddb.get_item(TableName=SESSIONS, Key={"session_id": {"S": sid}}))


@pytest.mark.parametrize("kind", sorted(ERROR_FAULTS))
def test_each_error_marker_answers_like_dynamodb_on_every_attempt(
        server: FaultyMotoServer, kind: str) -> None:
    retried = kind == "throughput"  # one retried kind proves a fault outlasts the retries
    ddb = client(server, "dynamodb", attempts=2 if retried else 1)
    sid = f"s-{uuid.uuid4().hex[:8]}-ddb:{kind}:GetItem"
    with pytest.raises(ClientError) as info:
        get(ddb, sid)
    fault = ERROR_FAULTS[kind]
    response = info.value.response
    assert response["Error"]["Code"] == fault.code
    assert response["ResponseMetadata"]["HTTPStatusCode"] == fault.status
    assert response["ResponseMetadata"]["RequestId"]
    assert response["ResponseMetadata"]["RetryAttempts"] == (1 if retried else 0)
    injected = httpx.get(server.url + "/_faults/config").json()["injected"]["dynamodb"]
    assert injected[SESSIONS] >= (2 if retried else 1)


def test_a_marker_fails_only_its_operation(server: FaultyMotoServer) -> None:
    ddb = client(server, "dynamodb")
    sid = f"s-{uuid.uuid4().hex[:8]}-ddb:internal:PutItem"
    assert "Item" not in get(ddb, sid)  # the read is not PutItem: it goes to moto
    with pytest.raises(ClientError) as info:
        put(ddb, sid)
    assert info.value.response["Error"]["Code"] == "InternalServerError"
    assert "Item" not in get(ddb, sid)  # nothing was stored
    with pytest.raises(ClientError):  # the same id fails a delete only with its own marker
        ddb.delete_item(TableName=SESSIONS, Key={"session_id": {"S": sid + "-ddb:throttle:"
                                                                      "DeleteItem"}})
    ddb.delete_item(TableName=SESSIONS, Key={"session_id": {"S": sid}})


def test_a_user_id_marker_fails_the_query_not_the_write(server: FaultyMotoServer) -> None:
    ddb = client(server, "dynamodb")
    user = f"u-{uuid.uuid4().hex[:8]}-ddb:throttle:Query"
    sid = f"s-{uuid.uuid4().hex[:8]}"
    put(ddb, sid, user)
    assert get(ddb, sid)["Item"]["user_id"]["S"] == user
    with pytest.raises(ClientError) as info:
        ddb.query(TableName=SESSIONS, IndexName="user_id-updated_at-index",
                  KeyConditionExpression="user_id = :u",
                  ExpressionAttributeValues={":u": {"S": user}})
    assert info.value.response["Error"]["Code"] == "ThrottlingException"


def test_ids_without_a_whole_marker_are_untouched(server: FaultyMotoServer) -> None:
    ddb = client(server, "dynamodb")
    for sid in ("ddb-throttle-GetItem", "s-ddb:throttle", "ddb:throttle:getitem",
                "ddb::GetItem", "x.ddb.throttle.GetItem"):
        assert "Item" not in get(ddb, sid)
    assert dynamodb_fault("GetItem", '{"k": "ddb:throttle:PutItem"}', {}) is None
    assert MARKER.search("s-1-ddb:missing-table:GetItem") is not None


def test_an_unknown_kind_is_a_visible_error_not_a_success(server: FaultyMotoServer) -> None:
    with pytest.raises(ClientError) as info:
        get(client(server, "dynamodb"), "s-ddb:nosuchfault:GetItem")
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "nosuchfault" in info.value.response["Error"]["Message"]


def test_disconnect_drops_the_connection(server: FaultyMotoServer) -> None:
    with pytest.raises(ConnectionClosedError):
        get(client(server, "dynamodb"), "s-ddb:disconnect:GetItem")


def test_timeout_answers_nothing_past_the_read_timeout(server: FaultyMotoServer) -> None:
    with pytest.raises(ReadTimeoutError):
        get(client(server, "dynamodb", read_timeout=0.2), "s-ddb:timeout:GetItem")


def test_switch_fails_one_operation_and_not_the_observers(server: FaultyMotoServer) -> None:
    ddb = client(server, "dynamodb")
    resp = httpx.post(server.url + "/_faults/config", json={"dynamodb": {"UpdateItem":
                                                                         "throughput"}})
    assert resp.status_code == 200
    assert resp.json()["dynamodb"] == {"UpdateItem": "throughput"}
    with pytest.raises(ClientError) as info:
        ddb.update_item(TableName=LIMITS, Key={"bucket": {"S": "b"}},
                        UpdateExpression="ADD request_count :one",
                        ExpressionAttributeValues={":one": {"N": "1"}})
    assert info.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert "Item" not in get(ddb, "s-other")
    httpx.post(server.url + "/_faults/config", json={"dynamodb": {"*": "missing-table"}})
    for call in (lambda: get(ddb, "s-other"), lambda: put(ddb, "s-other")):
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # what the parity harness reads to observe the lanes is never switched off
    ddb.describe_table(TableName=SESSIONS)
    ddb.scan(TableName=SESSIONS, Limit=1)
    assert httpx.delete(server.url + "/_faults/config").json()["dynamodb"] == {}
    put(ddb, "s-other")
    assert get(ddb, "s-other")["Item"]


@pytest.mark.parametrize("body", [
    {"dynamodb": {"Scan": "throttle"}}, {"dynamodb": {"GetItem": "nope"}},
    {"cloudwatch": "sideways"}, {"s3": "down"}, [1],
])
def test_a_bad_switch_is_refused(server: FaultyMotoServer, body: Any) -> None:
    resp = httpx.post(server.url + "/_faults/config", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]
    assert httpx.get(server.url + "/_faults/config").json()["dynamodb"] == {}


def test_cloudwatch_down_then_up(server: FaultyMotoServer) -> None:
    cw = client(server, "cloudwatch")
    namespace = f"Faults/{uuid.uuid4().hex[:8]}"
    datum = [{"MetricName": "RequestCount", "Value": 1.0, "Unit": "Count"}]
    assert httpx.post(server.url + "/_faults/config",
                      json={"cloudwatch": "down"}).json()["cloudwatch"] == "down"
    with pytest.raises(ConnectionClosedError):
        cw.put_metric_data(Namespace=namespace, MetricData=datum)
    ddb = client(server, "dynamodb")
    assert "Item" not in get(ddb, "s-cw")  # DynamoDB is not affected
    state = httpx.get(server.url + "/_faults/config").json()
    assert state["injected"]["cloudwatch"][namespace] == 1
    httpx.post(server.url + "/_faults/config", json={"cloudwatch": "up"})
    assert cw.list_metrics(Namespace=namespace)["Metrics"] == []  # nothing got through
    cw.put_metric_data(Namespace=namespace, MetricData=datum)
    assert [m["MetricName"] for m in cw.list_metrics(Namespace=namespace)["Metrics"]] == [
        "RequestCount"]


def test_a_gzipped_batch_is_counted_under_its_namespace(server: FaultyMotoServer) -> None:
    """botocore gzips PutMetricData bodies from 10 KiB on: the outage is still counted under the
    batch's namespace (the parity harness waits on that count), and moto still reads the body."""
    cw = client(server, "cloudwatch")
    namespace = f"Faults/{uuid.uuid4().hex[:8]}"
    data = [{"MetricName": "RequestCount", "Value": 1.0, "Unit": "Count",
             "Dimensions": [{"Name": "Endpoint", "Value": f"/e/{i:04d}/" + "x" * 40}]}
            for i in range(300)]  # well over 10 KiB
    httpx.post(server.url + "/_faults/config", json={"cloudwatch": "down"})
    with pytest.raises(ConnectionClosedError):
        cw.put_metric_data(Namespace=namespace, MetricData=data)
    assert httpx.get(server.url + "/_faults/config").json()["injected"]["cloudwatch"][
        namespace] == 1
    httpx.post(server.url + "/_faults/config", json={"cloudwatch": "up"})
    cw.put_metric_data(Namespace=namespace, MetricData=data)
    assert len(cw.list_metrics(Namespace=namespace)["Metrics"]) == 300


def test_the_process_serves_cloudwatch_percentiles(tmp_path: Any) -> None:
    """moto in its own process (devstack.procs.MotoProcess, as the harness and `make run` start
    it) answers GetMetricData percentiles through the CloudWatch front."""
    import datetime as dt

    from devstack.procs import MotoProcess

    proc = MotoProcess(tmp_path / "moto.log")
    try:
        proc.wait()
        make: Any = boto3.client
        cw = make("cloudwatch", endpoint_url=proc.url, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
        t = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=1)
        dims = [{"Name": "Endpoint", "Value": "/api/v1/chat"}]
        for namespace, values in (("ChatBot/Flask", [10.0, 20.0]), ("ChatBot/FastAPI", [30.0])):
            cw.put_metric_data(Namespace=namespace, MetricData=[{
                "MetricName": "RequestLatency", "Dimensions": dims, "Timestamp": t,
                "Unit": "Milliseconds", "StorageResolution": 1, "Values": values,
                "Counts": [9.0] * len(values)}])
        end = t + dt.timedelta(minutes=1)
        resp = cw.get_metric_data(StartTime=t, EndTime=end, MetricDataQueries=[
            {"Id": f"{color}_{stat}", "MetricStat": {"Metric": {
                "Namespace": namespace, "MetricName": "RequestLatency", "Dimensions": dims},
                "Period": 60, "Stat": stat}}
            for color, namespace in (("blue", "ChatBot/Flask"), ("green", "ChatBot/FastAPI"))
            for stat in ("p50", "p99", "SampleCount")])
        assert {r["Id"]: r["Values"] for r in resp["MetricDataResults"]} == {
            "blue_p50": [10.0], "blue_p99": [20.0], "blue_SampleCount": [18.0],
            "green_p50": [30.0], "green_p99": [30.0], "green_SampleCount": [9.0]}
    finally:
        proc.stop()


def test_cloudwatch_delay_holds_each_put_then_stores_it(server: FaultyMotoServer) -> None:
    """A PutMetricData held on cue (``held`` shows it while it is): a shutdown can be made to
    meet a flush in flight every time (parity_tests/harness/checks.py graceful_shutdown)."""
    cw = client(server, "cloudwatch")
    namespace = f"Faults/{uuid.uuid4().hex[:8]}"
    datum = [{"MetricName": "RequestCount", "Value": 1.0, "Unit": "Count"}]
    assert httpx.post(server.url + "/_faults/config", json={"cloudwatch_delay_s": 1.0}).json()[
        "cloudwatch_delay_s"] == 1.0
    started = time.monotonic()
    sender = threading.Thread(target=cw.put_metric_data,
                              kwargs={"Namespace": namespace, "MetricData": datum})
    sender.start()
    seen = 0
    while time.monotonic() - started < 0.8 and not seen:
        seen = httpx.get(server.url + "/_faults/config").json()["held"].get(namespace, 0)
        time.sleep(0.02)
    assert seen == 1
    cw.list_metrics(Namespace=namespace)  # other calls are not held: answered while the
    assert sender.is_alive()  # put is still held (a held list would have waited it out)
    sender.join(10)
    assert time.monotonic() - started >= 1.0  # the put was held for the delay
    assert httpx.get(server.url + "/_faults/config").json()["held"][namespace] == 0
    assert [m["MetricName"] for m in cw.list_metrics(Namespace=namespace)["Metrics"]] == [
        "RequestCount"]  # stored once held
    assert httpx.delete(server.url + "/_faults/config").json()["cloudwatch_delay_s"] == 0.0
    for bad in (-1, 61, "3", True):
        assert httpx.post(server.url + "/_faults/config",
                          json={"cloudwatch_delay_s": bad}).status_code == 400


def test_a_put_whose_client_left_while_held_is_not_stored(server: FaultyMotoServer) -> None:
    """A flush cancelled mid-call closes its connection: the held call never reaches moto, so
    a client that abandons a batch really loses it (what the shutdown check must never see)."""
    impatient = client(server, "cloudwatch", read_timeout=0.3)
    namespace = f"Faults/{uuid.uuid4().hex[:8]}"
    datum = [{"MetricName": "RequestCount", "Value": 1.0, "Unit": "Count"}]
    httpx.post(server.url + "/_faults/config", json={"cloudwatch_delay_s": 1.0})
    with pytest.raises(ReadTimeoutError):
        impatient.put_metric_data(Namespace=namespace, MetricData=datum)
    time.sleep(1.2)  # the hold ends
    state = httpx.get(server.url + "/_faults/config").json()
    assert state["abandoned"] == {namespace: 1}
    assert state["held"][namespace] == 0
    assert client(server, "cloudwatch").list_metrics(Namespace=namespace)["Metrics"] == []

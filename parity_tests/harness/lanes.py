"""Lanes: one target per column of the comparison, each with isolated, identically seeded state.

Locally there are three lanes, each a real server on its own tables and its own agent emulator:
``blue``, ``blue-aa`` (a second blue for the A/A noise baseline) and ``green``. Against deployed
URLs (staging) there are two lanes and no side-effect checks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import httpx
from prometheus_client.parser import text_string_to_metric_families

from devstack.agent_emulator import AgentEmulator
from devstack.procs import EmulatorProcess, MotoProcess, free_port
from devstack.run import Server
from devstack.stack import FAKE_CREDENTIALS, create_tables

API_KEYS = ("parity-key-1", "parity-key-2")


def case_keys(number: int) -> tuple[str, str]:
    """The API keys of a local run's case ``number`` (its 1st and 2nd key). Each case has its
    own, so its own rate-limit counter: X-RateLimit-Remaining is the same in every lane however
    many cases are in flight at once, and a difference in one case never shifts the next's."""
    return (f"parity-key-1-c{number}", f"parity-key-2-c{number}")


CORS_ORIGIN = "https://app.example.com"
LOCAL_LANES = (("blue", "blue"), ("blue-aa", "blue"), ("green", "green"))
# Only what removes noise at the source differs from what each color ships with.
PARITY_ENV = {
    "API_KEYS": ",".join(API_KEYS),  # and each case's (case_keys), added by LocalLanes
    "CORS_ORIGINS": CORS_ORIGIN,
    "RATE_LIMIT_WINDOW_S": "3600",  # a window edge between lanes would split their counters
    # fault cases (timeout, stall) answer in about 2 s, below the emulator's 3 s stall; other
    # cases run meanwhile (the runner's concurrency), so the bound is set for a loaded 2-core
    # machine, where an answer that is merely slow must not look like a timeout
    "AGENT_READ_TIMEOUT_S": "2",
    # store fault cases (parity_tests/cases/store_faults.yaml): a persistent fault still meets
    # one retry, and a silent DynamoDB times out in 2.5 s (moto's stall is 3 s)
    "DYNAMODB_MAX_ATTEMPTS": "2",
    "DYNAMODB_READ_TIMEOUT_S": "2.5",
    # a CloudWatch outage case sees a flush fail in every lane within about a second
    "METRICS_FLUSH_INTERVAL_S": "1",
    # the wire corpus's slow and idle clients (parity_tests/cases/wire_slow.yaml) are closed
    # within seconds (10 s and 30 s by default); not tighter: on a loaded 2-core machine a
    # 1 MiB body (limits/) must still be read whole within the body bound
    "CLIENT_HEADER_TIMEOUT_S": "2",
    "CLIENT_BODY_TIMEOUT_S": "3",
    "ENVIRONMENT": "test",
}


def plain(value: dict[str, Any]) -> Any:
    """A DynamoDB AttributeValue as plain JSON."""
    (kind, inner), = value.items()
    if kind == "S":
        return inner
    if kind == "N":
        number = Decimal(inner)
        return int(number) if number == number.to_integral_value() else float(number)
    if kind == "BOOL":
        return bool(inner)
    if kind == "NULL":
        return None
    if kind == "L":
        return [plain(v) for v in inner]
    if kind == "M":
        return {k: plain(v) for k, v in inner.items()}
    if kind in ("SS", "NS", "BS"):
        return sorted(inner)
    return inner


@dataclass
class Lane:
    name: str
    color: str
    url: str
    http: httpx.Client
    emulator: AgentEmulator | EmulatorProcess | None = None
    tables: dict[str, str] = field(default_factory=dict)  # role -> table, read per step
    # tables compared once, at the end of the run (the rate-limit counters, whose per-step
    # effect is already compared through X-RateLimit-Remaining on every answer)
    final_tables: dict[str, str] = field(default_factory=dict)
    namespace: str | None = None
    server: Server | None = None
    api_key: str = API_KEYS[0]
    api_keys: tuple[str, ...] = API_KEYS  # key: N in a request sends api_keys[N - 1]
    aws_url: str | None = None  # this lane's DynamoDB/CloudWatch endpoint
    _items: dict[str, dict[str, Any]] = field(default_factory=dict)
    _iterators: dict[str, list[str]] = field(default_factory=dict)  # role -> shard iterators
    _calls_seen: int = 0
    _prom: dict[str, float] = field(default_factory=dict)
    baseline_prom: dict[str, float] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.emulator is not None


def as_cloudwatch(prom: dict[str, float]) -> dict[str, float]:
    """Prometheus request counters (``METHOD endpoint status``) in CloudWatch's terms."""
    from shared.metrics import outcome_metric

    out: dict[str, float] = {}
    for series, count in prom.items():
        _, endpoint, status = series.split(" ")
        for name in ("RequestCount", "RequestLatency", outcome_metric(int(status))):
            key = f"{name}|{endpoint}"
            out[key] = out.get(key, 0.0) + count
    return out


def cloudwatch_lost(served: dict[str, dict[str, float]],
                    totals: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Per lane, every ``metric|endpoint`` whose CloudWatch total is not what the lane served
    (its Prometheus counters): an observation lost, or counted twice, on the way (a CloudWatch
    outage must end in delivery). ``/metrics`` is left out: the harness reads it."""
    out: list[dict[str, Any]] = []
    for lane, counters in served.items():
        want = {k: v for k, v in as_cloudwatch(counters).items() if not k.endswith("|/metrics")}
        got = {k: v for k, v in totals.get(lane, {}).items()
               if not k.endswith("|/metrics") and not k.startswith("datum:")}
        for key in sorted(set(want) | set(got)):
            if want.get(key, 0.0) != got.get(key, 0.0):
                out.append({"path": f"cloudwatch.{key}", "kind": "served-vs-cloudwatch",
                            "blue": want.get(key, 0.0), "other": got.get(key, 0.0),
                            "lane": lane})
    return out


class MetricRecorder:
    """A pass-through HTTP proxy in front of a CloudWatch endpoint that keeps every datum of
    every PutMetricData the endpoint accepted (a 2xx answer), whole: metric name, dimension
    names and values, unit, storage resolution and form (StatisticValues or Values/Counts),
    which moto does not keep all of. The lanes point CLOUDWATCH_ENDPOINT_URL here; what is not a
    PutMetricData (or fails) is relayed unchanged."""

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading

        self.upstream = upstream.rstrip("/")
        self.datums: list[tuple[str, dict[str, Any]]] = []  # (namespace, datum)
        self._lock = threading.Lock()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                recorder._relay(self)

            do_GET = do_POST

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="metric-recorder")
        self._http = httpx.Client(timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> MetricRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def _relay(self, handler: Any) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() not in ("host", "content-length", "connection")}
        try:
            resp = self._http.request(handler.command, self.upstream + handler.path,
                                      headers=headers, content=body)
        except httpx.HTTPError:
            handler.close_connection = True  # as the endpoint did: no answer
            return
        if 200 <= resp.status_code < 300:
            with contextlib.suppress(ValueError, KeyError, OSError):
                self._keep(body, handler.headers)
        handler.send_response(resp.status_code)
        for name, value in resp.headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding",
                                    "content-encoding", "server", "date"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(resp.content)))
        handler.end_headers()
        handler.wfile.write(resp.content)

    def _keep(self, body: bytes, headers: Any) -> None:
        import gzip
        from urllib.parse import parse_qsl

        if (headers.get("Content-Encoding") or "").lower() == "gzip":
            body = gzip.decompress(body)
        if "json" in (headers.get("Content-Type") or ""):
            doc = json.loads(body)
            if not str(headers.get("X-Amz-Target", "")).endswith("PutMetricData"):
                return
            namespace, datums = doc["Namespace"], list(doc.get("MetricData", []))
        else:
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
            if form.get("Action") != "PutMetricData":
                return
            namespace, datums = form["Namespace"], _query_datums(form)
        with self._lock:
            self.datums.extend((namespace, d) for d in datums)

    def shapes(self, namespace: str) -> dict[str, float]:
        """Every datum shape delivered in ``namespace`` (``datum:`` name | dimensions | unit |
        storage resolution | form), each as 1: the whole datum but its values and time."""
        with self._lock:
            datums = [d for ns, d in self.datums if ns == namespace]
        return {datum_shape(d): 1.0 for d in datums}


def _query_datums(form: dict[str, str]) -> list[dict[str, Any]]:
    """PutMetricData's query-protocol form (``MetricData.member.N.*``) as JSON datums."""
    datums: dict[int, dict[str, Any]] = {}
    for key, value in form.items():
        parts = key.split(".")
        if len(parts) < 4 or parts[0] != "MetricData" or parts[1] != "member":
            continue
        datum = datums.setdefault(int(parts[2]), {})
        field_name, rest = parts[3], parts[4:]
        if field_name in ("Dimensions",) and len(rest) == 3:  # Dimensions.member.M.Name
            dims = datum.setdefault("Dimensions", {})
            dims.setdefault(int(rest[1]), {})[rest[2]] = value
        elif field_name in ("Values", "Counts") and len(rest) == 2:
            datum.setdefault(field_name, {})[int(rest[1])] = float(value)
        elif field_name == "StatisticValues" and len(rest) == 1:
            datum.setdefault("StatisticValues", {})[rest[0]] = float(value)
        elif not rest:
            datum[field_name] = value
    out = []
    for _, datum in sorted(datums.items()):
        if isinstance(datum.get("Dimensions"), dict):
            datum["Dimensions"] = [d for _, d in sorted(datum["Dimensions"].items())]
        for name in ("Values", "Counts"):
            if isinstance(datum.get(name), dict):
                datum[name] = [v for _, v in sorted(datum[name].items())]
        out.append(datum)
    return out


def datum_shape(datum: dict[str, Any]) -> str:
    """A datum but its values and timestamp: what two colors' datums must agree on."""
    dims = ",".join(f"{d.get('Name')}={d.get('Value')}" for d in datum.get("Dimensions", []))
    form = "+".join(k for k in ("StatisticValues", "Values", "Counts", "Value") if k in datum)
    resolution = datum.get("StorageResolution", "(unset)")
    return (f"datum:{datum.get('MetricName')}|{dims}|{datum.get('Unit', '(unset)')}|"
            f"{int(float(resolution)) if resolution != '(unset)' else resolution}|{form}")


class SideEffects:
    """Reads what a lane wrote since the last look: items, agent calls, Prometheus counters."""

    def __init__(self, prometheus: bool = True, streams: bool = True) -> None:
        self.prometheus = prometheus
        self.use_streams = streams
        self._clients: dict[str, tuple[Any, Any]] = {}
        from concurrent.futures import ThreadPoolExecutor

        self._reader = ThreadPoolExecutor(max_workers=4, thread_name_prefix="agent-calls")

    def _aws(self, lane: Lane) -> tuple[Any, Any]:
        """(dynamodb, dynamodbstreams) clients for the lane's endpoint, made once."""
        assert lane.aws_url is not None
        if lane.aws_url not in self._clients:
            self._clients[lane.aws_url] = tuple(  # type: ignore[assignment]
                boto3.client(name, endpoint_url=lane.aws_url, region_name="us-east-1")
                for name in ("dynamodb", "dynamodbstreams"))
        return self._clients[lane.aws_url]

    def client(self, lane: Lane) -> Any:
        """The lane's DynamoDB client (seeding, reading a record back)."""
        return self._aws(lane)[0]

    def _open_streams(self, lane: Lane) -> None:
        """Start reading each table's stream at its end; tables without one are scanned."""
        if not self.use_streams:
            return
        ddb, streams = self._aws(lane)
        for role, table in lane.tables.items():
            arn = ddb.describe_table(TableName=table)["Table"].get("LatestStreamArn")
            if not arn:
                continue
            shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
            lane._iterators[role] = [streams.get_shard_iterator(
                StreamArn=arn, ShardId=s["ShardId"], ShardIteratorType="LATEST",
            )["ShardIterator"] for s in shards]

    def _stream_changes(self, lane: Lane, role: str) -> dict[str, Any]:
        changed: dict[str, Any] = {}
        iterators = []
        streams = self._aws(lane)[1]
        for iterator in lane._iterators[role]:
            page = streams.get_records(ShardIterator=iterator)
            for record in page["Records"]:
                data = record["dynamodb"]
                key = plain(next(iter(data["Keys"].values())))
                image = data.get("NewImage")
                changed[key] = ({k: plain(v) for k, v in sorted(image.items())}
                                if image is not None and record["eventName"] != "REMOVE"
                                else None)
            iterators.append(page.get("NextShardIterator") or iterator)
        lane._iterators[role] = iterators
        return changed

    def _scan(self, lane: Lane, table: str) -> dict[str, Any]:
        items: dict[str, Any] = {}
        kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
        ddb = self._aws(lane)[0]
        while True:
            page = ddb.scan(**kwargs)
            for item in page.get("Items", []):
                key = item.get("session_id") or item.get("bucket")
                items[plain(key) if key else repr(sorted(item))] = {
                    k: plain(v) for k, v in sorted(item.items())}
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def baseline(self, lane: Lane) -> None:
        self._open_streams(lane)
        self.collect(lane)
        lane.baseline_prom = self._read_prometheus(lane)
        lane._prom = dict(lane.baseline_prom)

    def final_state(self, lane: Lane) -> dict[str, Any]:
        """The end-of-run tables, without their TTL attribute (a time) and the rate-limit
        counter's last increment token (random, shared/flows.py rate_limit)."""
        return {role: {key: {k: v for k, v in item.items()
                             if k not in ("expires_at", "last_request")}
                       for key, item in self._scan(lane, table).items()}
                for role, table in lane.final_tables.items()}

    def run_counters(self, lane: Lane) -> dict[str, float]:
        """Requests the lane counted since the baseline, per ``METHOD endpoint status``."""
        now = self._read_prometheus(lane)
        return {k: v - lane.baseline_prom.get(k, 0.0) for k, v in now.items()
                if v != lane.baseline_prom.get(k, 0.0)}

    def collect(self, lane: Lane) -> dict[str, Any]:
        """The side effects since the previous call, as one JSON document. The agent calls are
        read while the tables are (two services, two round trips at once)."""
        assert lane.emulator is not None
        pending = self._reader.submit(lane.emulator.calls)
        dynamodb: dict[str, Any] = {}
        for role, table in lane.tables.items():
            if role in lane._iterators:
                changed = self._stream_changes(lane, role)
            else:
                now = self._scan(lane, table)
                before = lane._items.get(role, {})
                changed = {k: v for k, v in now.items() if before.get(k) != v}
                changed.update({k: None for k in before if k not in now})  # deleted
                lane._items[role] = now
            if changed:
                dynamodb[role] = changed
        calls = pending.result()
        new_calls = [{"session_id": c["session_id"], "input_text": c["input_text"],
                      "fault": c.get("fault")} for c in calls[lane._calls_seen:]]
        lane._calls_seen = len(calls)
        prom = self._prometheus(lane)
        delta = {k: v - lane._prom.get(k, 0.0) for k, v in prom.items()
                 if v != lane._prom.get(k, 0.0)}
        lane._prom = prom
        doc: dict[str, Any] = {}
        if dynamodb:
            doc["dynamodb"] = dynamodb
        if new_calls:
            doc["agent_calls"] = new_calls
        if delta:
            doc["prometheus"] = delta
        return doc

    def _prometheus(self, lane: Lane) -> dict[str, float]:
        if not self.prometheus:
            return lane._prom  # per-step reads off: no delta
        return self._read_prometheus(lane)

    @staticmethod
    def _read_prometheus(lane: Lane) -> dict[str, float]:
        text = lane.http.get("/metrics").text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "chatbot_requests":
                continue
            for sample in family.samples:
                labels = sample.labels
                if not sample.name.endswith("_total") or labels.get("endpoint") == "/metrics":
                    continue
                key = f"{labels['method']} {labels['endpoint']} {labels['status']}"
                out[key] = out.get(key, 0.0) + sample.value
        return out


class LocalLanes(contextlib.AbstractContextManager["LocalLanes"]):
    """devstack (moto) + one emulator, two tables and one real server per lane."""

    def __init__(self, log_dir: Path, fault_timeout_s: float = 3.0,
                 metrics_per_step: bool = False, cases: int = 0) -> None:
        self.metrics_per_step = metrics_per_step
        self.cases = cases  # the servers also accept case_keys(0 .. cases - 1)
        self.log_dir = log_dir
        self.fault_timeout_s = fault_timeout_s
        self.motos: list[MotoProcess] = []
        self.emulators: list[EmulatorProcess] = []
        self.lanes: list[Lane] = []
        self.boot_s = 0.0
        self.effects: SideEffects | None = None
        self.recorder: MetricRecorder | None = None

    def __enter__(self) -> LocalLanes:
        started = time.perf_counter()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        try:
            # Everything starts at once; servers need neither moto nor the emulators to boot.
            # moto runs in its own process (not on the harness's GIL), one for all lanes: each
            # lane has its own tables and CloudWatch namespace.
            moto = MotoProcess(self.log_dir / "moto.log", self.fault_timeout_s)
            self.motos = [moto]
            self.recorder = MetricRecorder(moto.url).start()
            for name, color in LOCAL_LANES:
                prefix = name.replace("-", "_")
                sessions, limits = f"{prefix}_chat_sessions", f"{prefix}_rate_limits"
                emulator = EmulatorProcess(self.log_dir / f"{name}-agent.log",
                                           self.fault_timeout_s)
                self.emulators.append(emulator)
                keys = API_KEYS + tuple(k for n in range(self.cases) for k in case_keys(n))
                env = {**FAKE_CREDENTIALS, **PARITY_ENV, "API_KEYS": ",".join(keys),
                       "DYNAMODB_ENDPOINT_URL": moto.url,
                       "CLOUDWATCH_ENDPOINT_URL": self.recorder.url,
                       "BEDROCK_ENDPOINT_URL": emulator.url,
                       "SESSIONS_TABLE": sessions, "RATE_LIMIT_TABLE": limits,
                       "METRICS_NAMESPACE": f"Parity/{name}",
                       "METRICS_DIR": tempfile.mkdtemp(prefix=f"parity-{name}-")}
                server = Server(color, free_port(), env,
                                log_path=self.log_dir / f"{name}.log").start()
                self.lanes.append(Lane(
                    name=name, color=color, url=server.url, emulator=emulator,
                    http=httpx.Client(base_url=server.url, timeout=30),
                    tables={"sessions": sessions}, final_tables={"rate_limits": limits},
                    namespace=f"Parity/{name}", server=server, aws_url=moto.url))
            moto.wait()
            for lane in self.lanes:
                create_tables(moto.url, lane.tables["sessions"],
                              lane.final_tables["rate_limits"], streams=True)
            for emulator in self.emulators:
                emulator.wait()
            self.effects = SideEffects(prometheus=self.metrics_per_step)
            for lane in self.lanes:
                assert lane.server is not None
                lane.server.wait_healthy(90)
            for lane in self.lanes:
                self.effects.baseline(lane)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.boot_s = time.perf_counter() - started
        return self

    def stop_servers(self) -> None:
        """SIGTERM every server (they flush their metrics), in parallel."""
        for lane in self.lanes:
            if lane.server:
                lane.server.terminate()
        for lane in self.lanes:
            if lane.server:
                lane.server.stop()

    def cloudwatch_totals(self) -> dict[str, dict[str, float]]:
        return cloudwatch_totals(self.lanes, self.recorder)

    def __exit__(self, *exc: object) -> None:
        self.stop_servers()
        for lane in self.lanes:
            lane.http.close()
        for emulator in self.emulators:
            emulator.stop()
        for moto in self.motos:
            moto.stop()
        if self.recorder is not None:
            self.recorder.stop()
            self.recorder = None


def cloudwatch_totals(lanes: list[Lane], recorder: MetricRecorder | None = None
                      ) -> dict[str, dict[str, float]]:
    """Per lane: SampleCount per ``metric|endpoint`` that reached CloudWatch, less what the
    lane had answered before the run (readiness probes, whose count is not deterministic);
    with a :class:`MetricRecorder`, also every whole datum shape delivered (``datum:...``)."""
    now = dt.datetime.now(dt.UTC)
    totals: dict[str, dict[str, float]] = {}
    for lane in lanes:
        cw = boto3.client("cloudwatch", endpoint_url=lane.aws_url, region_name="us-east-1")
        out: dict[str, float] = {}
        assert lane.namespace is not None
        for metric in cw.list_metrics(Namespace=lane.namespace)["Metrics"]:
            endpoint = metric["Dimensions"][0]["Value"]
            stats = cw.get_metric_statistics(
                Namespace=lane.namespace, MetricName=metric["MetricName"],
                Dimensions=metric["Dimensions"], StartTime=now - dt.timedelta(hours=1),
                EndTime=now + dt.timedelta(minutes=1), Period=60, Statistics=["SampleCount"])
            out[f"{metric['MetricName']}|{endpoint}"] = sum(
                p["SampleCount"] for p in stats["Datapoints"])
        for name, count in as_cloudwatch(lane.baseline_prom).items():
            out[name] = out.get(name, 0.0) - count
        if recorder is not None:
            out.update(recorder.shapes(lane.namespace))
        totals[lane.name] = {k: v for k, v in out.items() if v}
    return totals


def fault_note(lanes: list[Lane]) -> str:
    """How many faults the devstack injector answered over the run (DynamoDB, CloudWatch)."""
    counts = {"dynamodb": 0, "cloudwatch": 0}
    for url in sorted({lane.aws_url for lane in lanes if lane.aws_url}):
        try:
            injected = httpx.get(url + "/_faults/config", timeout=10).json()["injected"]
        except (httpx.HTTPError, ValueError, KeyError):
            return "fault injector: unreadable"
        for service in counts:
            counts[service] += sum(injected.get(service, {}).values())
    return (f"fault injector: {counts['dynamodb']} DynamoDB and {counts['cloudwatch']} "
            "CloudWatch faults answered (retries included)")


def remote_lanes(blue_url: str, green_url: str, keys: tuple[str, ...] | None = None
                 ) -> list[Lane]:
    if keys is None:
        keys = (os.environ.get("PARITY_API_KEY", API_KEYS[0]),)
    return [Lane(name=name, color=name, url=url, api_key=keys[0], api_keys=keys,
                 http=httpx.Client(base_url=url.rstrip("/"), timeout=30))
            for name, url in (("blue", blue_url), ("green", green_url))]

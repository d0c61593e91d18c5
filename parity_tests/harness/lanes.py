"""Lanes: one target per column of the comparison, each with isolated, identically seeded state.

Locally there are three lanes, each a real server on its own tables and its own agent emulator:
``blue``, ``blue-aa`` (a second blue for the A/A noise baseline) and ``green``. Against deployed
URLs (staging) there are two lanes and no side-effect checks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
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
from devstack.run import Server
from devstack.stack import DevStack

API_KEYS = ("parity-key-1", "parity-key-2")
CORS_ORIGIN = "https://app.example.com"
LOCAL_LANES = (("blue", "blue"), ("blue-aa", "blue"), ("green", "green"))
# Only what removes noise at the source differs from what each color ships with.
PARITY_ENV = {
    "API_KEYS": ",".join(API_KEYS),
    "CORS_ORIGINS": CORS_ORIGIN,
    "RATE_LIMIT_WINDOW_S": "3600",  # a window edge between lanes would split their counters
    "AGENT_READ_TIMEOUT_S": "1",  # fault cases (timeout, stall) answer in about a second
    "ENVIRONMENT": "test",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    emulator: AgentEmulator | None = None
    tables: dict[str, str] = field(default_factory=dict)  # role -> table name
    namespace: str | None = None
    server: Server | None = None
    api_key: str = API_KEYS[0]
    _items: dict[str, dict[str, Any]] = field(default_factory=dict)
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


class SideEffects:
    """Reads what a lane wrote since the last look: items, agent calls, Prometheus counters."""

    def __init__(self, ddb: Any, prometheus: bool = True) -> None:
        self.ddb = ddb
        self.prometheus = prometheus

    def _scan(self, table: str) -> dict[str, Any]:
        items: dict[str, Any] = {}
        kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
        while True:
            page = self.ddb.scan(**kwargs)
            for item in page.get("Items", []):
                key = item.get("session_id") or item.get("bucket")
                items[plain(key) if key else repr(sorted(item))] = {
                    k: plain(v) for k, v in sorted(item.items())}
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def baseline(self, lane: Lane) -> None:
        self.collect(lane)
        lane.baseline_prom = dict(lane._prom)

    def final(self, lane: Lane) -> dict[str, float]:
        """Every request the lane answered (but the harness's own /metrics reads)."""
        return self._prometheus(lane)

    def collect(self, lane: Lane) -> dict[str, Any]:
        """The side effects since the previous call, as one JSON document."""
        dynamodb: dict[str, Any] = {}
        for role, table in lane.tables.items():
            now = self._scan(table)
            before = lane._items.get(role, {})
            changed = {k: v for k, v in now.items() if before.get(k) != v}
            changed.update({k: None for k in before if k not in now})  # deleted
            lane._items[role] = now
            if changed:
                dynamodb[role] = changed
        assert lane.emulator is not None
        calls = lane.emulator.calls()
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
            return {}
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

    def __init__(self, log_dir: Path, fault_timeout_s: float = 3.0) -> None:
        self.log_dir = log_dir
        self.fault_timeout_s = fault_timeout_s
        self.stack: DevStack | None = None
        self.lanes: list[Lane] = []
        self.boot_s = 0.0
        self.effects: SideEffects | None = None

    def __enter__(self) -> LocalLanes:
        started = time.perf_counter()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        names = [name for name, _ in LOCAL_LANES]
        tables = [(f"{n.replace('-', '_')}_chat_sessions", f"{n.replace('-', '_')}_rate_limits")
                  for n in names]
        self.stack = DevStack(tables=tables).start()
        self.effects = SideEffects(boto3.client(
            "dynamodb", endpoint_url=self.stack.moto_url, region_name="us-east-1"))
        try:
            for (name, color), (sessions, limits) in zip(LOCAL_LANES, tables, strict=True):
                emulator = AgentEmulator(fault_timeout_s=self.fault_timeout_s).start()
                env = {**self.stack.env(sessions, limits), **PARITY_ENV,
                       "BEDROCK_ENDPOINT_URL": emulator.url,
                       "METRICS_NAMESPACE": f"Parity/{name}",
                       "METRICS_DIR": tempfile.mkdtemp(prefix=f"parity-{name}-")}
                server = Server(color, free_port(), env,
                                log_path=self.log_dir / f"{name}.log").start()
                self.lanes.append(Lane(
                    name=name, color=color, url=server.url, emulator=emulator,
                    http=httpx.Client(base_url=server.url, timeout=30),
                    tables={"sessions": sessions, "rate_limits": limits},
                    namespace=f"Parity/{name}", server=server))
            for lane in self.lanes:
                assert lane.server is not None
                lane.server.wait_healthy(60)
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
            if lane.server and lane.server.proc and lane.server.proc.poll() is None:
                lane.server.proc.send_signal(15)
        for lane in self.lanes:
            if lane.server:
                lane.server.stop()

    def cloudwatch_totals(self) -> dict[str, dict[str, float]]:
        assert self.stack is not None
        return cloudwatch_totals(self.stack.moto_url, self.lanes)

    def __exit__(self, *exc: object) -> None:
        self.stop_servers()
        for lane in self.lanes:
            lane.http.close()
            if lane.emulator:
                lane.emulator.stop()
        if self.stack:
            self.stack.stop()


def cloudwatch_totals(moto_url: str, lanes: list[Lane]) -> dict[str, dict[str, float]]:
    """Per lane: SampleCount per ``metric|endpoint`` that reached CloudWatch, less what the
    lane had answered before the run (readiness probes, whose count is not deterministic)."""
    cw = boto3.client("cloudwatch", endpoint_url=moto_url, region_name="us-east-1")
    now = dt.datetime.now(dt.UTC)
    totals: dict[str, dict[str, float]] = {}
    for lane in lanes:
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
        totals[lane.name] = {k: v for k, v in out.items() if v}
    return totals


def remote_lanes(blue_url: str, green_url: str) -> list[Lane]:
    key = os.environ.get("PARITY_API_KEY", API_KEYS[0])
    return [Lane(name=name, color=name, url=url, api_key=key,
                 http=httpx.Client(base_url=url.rstrip("/"), timeout=30))
            for name, url in (("blue", blue_url), ("green", green_url))]

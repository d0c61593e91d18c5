"""CloudWatch metrics: what each request records, how datums are batched, retried and dropped.

Per request, under the ``Endpoint`` dimension (the route template): ``RequestCount``, then
``SuccessCount`` (status < 400), ``ClientErrorCount`` (4xx) or ``ErrorCount`` (5xx), and
``RequestLatency`` in milliseconds. Observations are aggregated per minute into
``StatisticValues`` so one PutMetricData call carries many requests. The buffer never blocks a
request: when it is full, or a batch has failed ``MAX_SEND_ATTEMPTS`` times, observations are
dropped and counted (``dropped``), and the app logs the count.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.calls import AwsCall, Flow

log = logging.getLogger("chatbot.metrics")

MAX_DATUMS_PER_CALL = 1000
MAX_SEND_ATTEMPTS = 5


def outcome_metric(status: int) -> str:
    if status >= 500:
        return "ErrorCount"
    if status >= 400:
        return "ClientErrorCount"
    return "SuccessCount"


@dataclass
class _Stat:
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, value: float, count: int = 1) -> None:
        self.count += count
        self.total += value * count
        self.low = min(self.low, value)
        self.high = max(self.high, value)


@dataclass
class Batch:
    datums: list[dict[str, Any]]
    observations: int
    attempts: int = 0


@dataclass
class MetricBuffer:
    """Thread-safe; the lock is never held across I/O, so async code may use it too."""

    namespace: str
    max_observations: int = 100_000
    dropped: int = 0
    sent: int = 0
    _stats: dict[tuple[str, str, str, int], _Stat] = field(default_factory=dict)
    _pending: int = 0
    _retry: list[Batch] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, endpoint: str, status: int, latency_ms: float,
               when: datetime | None = None) -> bool:
        """Add one request's observations; False (and counted) when the buffer is full."""
        minute = int((when or datetime.now(UTC)).timestamp()) // 60 * 60
        with self._lock:
            if self._pending >= self.max_observations:
                self.dropped += 1
                return False
            for name in ("RequestCount", outcome_metric(status)):
                self._stats.setdefault((name, endpoint, "Count", minute), _Stat()).add(1.0)
            self._stats.setdefault(("RequestLatency", endpoint, "Milliseconds", minute),
                                   _Stat()).add(latency_ms)
            self._pending += 1
            return True

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending + sum(b.observations for b in self._retry)

    def take(self) -> list[Batch]:
        """Everything waiting, as PutMetricData-sized batches (retries first)."""
        with self._lock:
            stats, self._stats = self._stats, {}
            self._pending = 0
            batches, self._retry = self._retry, []
        datums = [_datum(key, stat) for key, stat in sorted(stats.items())]
        for i in range(0, len(datums), MAX_DATUMS_PER_CALL):
            part = datums[i:i + MAX_DATUMS_PER_CALL]
            # a request is counted with the batch that carries its RequestCount sample
            share = sum(int(d["StatisticValues"]["SampleCount"]) for d in part
                        if d["MetricName"] == "RequestCount")
            batches.append(Batch(datums=part, observations=share))
        return batches

    def call_for(self, batch: Batch) -> AwsCall:
        return AwsCall("cloudwatch", "put_metric_data",
                       {"Namespace": self.namespace, "MetricData": batch.datums})

    def sent_ok(self, batch: Batch) -> None:
        with self._lock:
            self.sent += batch.observations

    def failed(self, batch: Batch) -> bool:
        """Put a failed batch back for the next flush; False when it was dropped instead."""
        batch.attempts += 1
        with self._lock:
            if batch.attempts >= MAX_SEND_ATTEMPTS:
                self.dropped += batch.observations
                return False
            self._retry.append(batch)
            return True


def _datum(key: tuple[str, str, str, int], stat: _Stat) -> dict[str, Any]:
    name, endpoint, unit, minute = key
    return {
        "MetricName": name,
        "Dimensions": [{"Name": "Endpoint", "Value": endpoint}],
        "Timestamp": datetime.fromtimestamp(minute, UTC),
        "Unit": unit,
        "StatisticValues": {"SampleCount": float(stat.count), "Sum": stat.total,
                            "Minimum": stat.low, "Maximum": stat.high},
    }


def flush(buffer: MetricBuffer, on_drop: Callable[[int], object] | None = None) -> Flow[int]:
    """Send everything buffered; failed batches are kept for the next flush, up to a bound.

    Returns the number of request observations delivered. Never raises: metrics must not fail
    anything else. A batch that failed ``MAX_SEND_ATTEMPTS`` times is dropped: one log line
    ("metrics batch dropped") and ``on_drop(observations)`` (the apps count it in
    ``chatbot_cloudwatch_observations_dropped_total``).
    """
    delivered = 0
    for batch in buffer.take():
        try:
            yield buffer.call_for(batch)
        except Exception as exc:
            kept = buffer.failed(batch)
            log.warning("metrics batch failed" if kept else "metrics batch dropped", extra={
                "exception": type(exc).__name__, "observations": batch.observations,
                "attempts": batch.attempts, "kept": kept, "dropped_total": buffer.dropped})
            if not kept and on_drop is not None:
                on_drop(batch.observations)
            continue
        buffer.sent_ok(batch)
        delivered += batch.observations
    return delivered

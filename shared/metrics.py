"""CloudWatch metrics: what each request records, how datums are batched, retried and dropped.

Per request, under the ``Endpoint`` dimension (the route template): ``RequestCount``, then
``SuccessCount`` (status < 400), ``ClientErrorCount`` (4xx) or ``ErrorCount`` (5xx), and
``RequestLatency`` in milliseconds. Observations are aggregated per storage-resolution bucket
(``METRICS_STORAGE_RESOLUTION``: per minute by default, per second when 1; the datums carry that
``StorageResolution``) so one PutMetricData call carries many requests:

- the counts as ``StatisticValues`` (their SampleCount is the number of requests);
- the latency as ``Values``/``Counts``, so that CloudWatch can compute percentiles (it computes
  them from StatisticValues only when SampleCount=1 or Min=Max). Each latency is published as
  the representative of its log-spaced bucket (:func:`bucketed`): within ``RELATIVE_ERROR`` (1%)
  of the measured value, the same buckets in both colors. A datum holds at most
  ``MAX_VALUES_PER_DATUM`` (150) distinct values; a bucket with more is split into several
  datums with the same name, dimensions and timestamp, which CloudWatch aggregates. The counts
  add up to the requests served, so SampleCount totals are what they were with StatisticValues;
  Sum, Minimum and Maximum are those of the bucketed values (within 1%).

The buffer never blocks a request: when it is full, or a batch has failed ``MAX_SEND_ATTEMPTS``
times, observations are dropped and counted (``dropped``), and the app logs the count.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.calls import AwsCall, Flow

log = logging.getLogger("chatbot.metrics")

MAX_DATUMS_PER_CALL = 1000
# PutMetricData takes at most 1 MB; a value and its count are ~90 bytes query-encoded
MAX_VALUES_PER_CALL = 5000
MAX_VALUES_PER_DATUM = 150
MAX_SEND_ATTEMPTS = 5
STORAGE_RESOLUTIONS = (1, 60)

RELATIVE_ERROR = 0.01
# DDSketch-style buckets: (g^(i-1), g^i] is published as 2 g^i / (g + 1), at most _ALPHA off in
# relative terms; _ALPHA leaves room under RELATIVE_ERROR for rounding to 6 significant digits
_ALPHA = 0.0099
_GAMMA = (1 + _ALPHA) / (1 - _ALPHA)
_LOG_GAMMA = math.log(_GAMMA)


def bucketed(latency_ms: float) -> float:
    """The value a latency is published as: its bucket's representative, within
    ``RELATIVE_ERROR`` of it (0 for 0, and for what is not a positive finite number)."""
    if not math.isfinite(latency_ms) or latency_ms <= 0:
        return 0.0
    index = math.ceil(math.log(latency_ms) / _LOG_GAMMA)
    return float(f"{2 * _GAMMA ** index / (_GAMMA + 1):.6g}")


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
    storage_resolution: int = 60  # METRICS_STORAGE_RESOLUTION: 1 or 60 seconds
    dropped: int = 0
    sent: int = 0
    _stats: dict[tuple[str, str, str, int], _Stat] = field(default_factory=dict)
    # (endpoint, bucket start) -> published latency value -> count
    _latency: dict[tuple[str, int], dict[float, int]] = field(default_factory=dict)
    _pending: int = 0
    _retry: list[Batch] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.storage_resolution not in STORAGE_RESOLUTIONS:
            raise ValueError(f"storage_resolution must be 1 or 60, not {self.storage_resolution}")

    def record(self, endpoint: str, status: int, latency_ms: float,
               when: datetime | None = None) -> bool:
        """Add one request's observations; False (and counted) when the buffer is full."""
        res = self.storage_resolution
        start = int((when or datetime.now(UTC)).timestamp()) // res * res
        value = bucketed(latency_ms)
        with self._lock:
            if self._pending >= self.max_observations:
                self.dropped += 1
                return False
            for name in ("RequestCount", outcome_metric(status)):
                self._stats.setdefault((name, endpoint, "Count", start), _Stat()).add(1.0)
            counts = self._latency.setdefault((endpoint, start), {})
            counts[value] = counts.get(value, 0) + 1
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
            latency, self._latency = self._latency, {}
            self._pending = 0
            batches, self._retry = self._retry, []
        res = self.storage_resolution
        keyed = [((key[0], key[1], key[3]), _stat_datum(key, stat, res))
                 for key, stat in stats.items()]
        for (endpoint, start), counts in latency.items():
            keyed.extend((("RequestLatency", endpoint, start), datum)
                         for datum in latency_datums(endpoint, start, counts, res))
        keyed.sort(key=lambda kd: kd[0])  # stable: split latency datums keep their order
        part: list[dict[str, Any]] = []
        values = 0
        for _, datum in keyed:
            size = len(datum.get("Values", ())) or 1
            if part and (len(part) >= MAX_DATUMS_PER_CALL or values + size > MAX_VALUES_PER_CALL):
                batches.append(_batch(part))
                part, values = [], 0
            part.append(datum)
            values += size
        if part:
            batches.append(_batch(part))
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


def _batch(datums: list[dict[str, Any]]) -> Batch:
    # a request is counted with the batch that carries its RequestCount sample
    share = sum(int(d["StatisticValues"]["SampleCount"]) for d in datums
                if d["MetricName"] == "RequestCount")
    return Batch(datums=datums, observations=share)


def _stat_datum(key: tuple[str, str, str, int], stat: _Stat, resolution: int
                ) -> dict[str, Any]:
    name, endpoint, unit, start = key
    return {
        "MetricName": name,
        "Dimensions": [{"Name": "Endpoint", "Value": endpoint}],
        "Timestamp": datetime.fromtimestamp(start, UTC),
        "Unit": unit,
        "StorageResolution": resolution,
        "StatisticValues": {"SampleCount": float(stat.count), "Sum": stat.total,
                            "Minimum": stat.low, "Maximum": stat.high},
    }


def latency_datums(endpoint: str, start: int, counts: dict[float, int], resolution: int = 60
                   ) -> list[dict[str, Any]]:
    """One bucket's ``RequestLatency`` as Values/Counts datums, ascending, at most
    ``MAX_VALUES_PER_DATUM`` distinct values each."""
    ordered = sorted(counts.items())
    out = []
    for i in range(0, len(ordered), MAX_VALUES_PER_DATUM):
        chunk = ordered[i:i + MAX_VALUES_PER_DATUM]
        out.append({
            "MetricName": "RequestLatency",
            "Dimensions": [{"Name": "Endpoint", "Value": endpoint}],
            "Timestamp": datetime.fromtimestamp(start, UTC),
            "Unit": "Milliseconds",
            "StorageResolution": resolution,
            "Values": [value for value, _ in chunk],
            "Counts": [float(count) for _, count in chunk],
        })
    return out


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

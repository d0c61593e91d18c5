"""Prometheus metrics for the whole instance (every worker process), for ``GET /metrics``.

Multi-process mode is on when ``PROMETHEUS_MULTIPROC_DIR`` is set before this module is first
imported; the launchers (``legacy_flask/gunicorn.conf.py``, ``fastapi_app/serve.py``) set it.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _mp

REQUESTS = Counter(
    "chatbot_requests_total", "Requests answered.", ["color", "endpoint", "method", "status"]
)
LATENCY = Histogram(
    "chatbot_request_duration_seconds", "Time to answer a request.", ["color", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DATUMS_DROPPED = Counter(
    "chatbot_cloudwatch_observations_dropped_total",
    "Request observations dropped before reaching CloudWatch (buffer full or send failed).",
    ["color"],
)
DATUMS_SENT = Counter(
    "chatbot_cloudwatch_observations_sent_total",
    "Request observations delivered to CloudWatch.", ["color"],
)


def observe(color: str, endpoint: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(color, endpoint, method, str(status)).inc()
    LATENCY.labels(color, endpoint).observe(seconds)


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]

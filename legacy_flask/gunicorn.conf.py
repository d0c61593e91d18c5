"""gunicorn settings for blue. The same file serves `make run`, the e2e tests and the image.

Workers build the Flask app (and so their boto3 clients) after the fork: ``preload_app`` stays
off; only the modules are imported in the master. The master prepares one metrics directory
for the instance, shared by every worker, for ``/metrics`` (Prometheus multi-process mode) and
``/metrics/performance``.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from typing import Any

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8001')}"
# the sync worker, plus: on SIGTERM it answers the connections already queued before it exits
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "legacy_flask.worker.DrainingSyncWorker")
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count() + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
# SIGTERM: requests in flight and queued finish within this (the drain stops 5 s before it so
# worker_exit can flush metrics); then the master SIGKILLs. Keep it at or below the orchestrator's
# stop timeout (ECS stopTimeout / Kubernetes terminationGracePeriodSeconds, 30 s by default).
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# gunicorn's own request-line limit (at most 8190 bytes) answers with its own HTML 414 before the
# app runs. Off (0), so the shared rule decides in both colors: 414 URI_TOO_LONG for a path over
# 2048 characters or a target over 8000 bytes (uvicorn has no request-line limit of its own either;
# in production the load balancer bounds the line, e.g. an ALB at 16 KB).
limit_request_line = 0
# Likewise for headers: the shared rule answers 431 HEADERS_TOO_LARGE past 8190 bytes a line or
# 100 names. gunicorn's own limits (its HTML 431) sit above it: 64 KiB a line (0 would mean its
# default 8190, not "unlimited"), 1000 lines; together they also cap the header buffer (~64 MiB).
limit_request_field_size = 65536
limit_request_fields = 1000
preload_app = False
accesslog = None  # the app writes one JSON line per request itself
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

_metrics_dir = os.environ.get("METRICS_DIR") or tempfile.mkdtemp(prefix="chatbot-blue-metrics-")
os.environ["METRICS_DIR"] = _metrics_dir
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

# A bad setting stops the master with one line naming it, exit status 2, before any worker boots
# (as green's serve.py), instead of a traceback per worker and "Worker failed to boot".
from shared.settings import settings_or_exit  # noqa: E402

settings_or_exit()

# Import the code (not the app) in the master: workers fork with the modules loaded, so a worker
# starts in milliseconds instead of seconds. Each worker still builds its own app, and so its own
# boto3 clients, after the fork (legacy_flask.wsgi runs create_app in the worker).
# Not under gevent workers: they monkey-patch the standard library when they start, and boto3,
# botocore and urllib3 imported before that keep unpatched ssl names (gunicorn_gevent.conf.py).
if "gevent" not in worker_class:
    import legacy_flask.app  # noqa: F401


def on_starting(server: Any) -> None:
    # a fresh instance starts with empty statistics
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)


def worker_exit(server: Any, worker: Any) -> None:
    """Flush this worker's buffered CloudWatch metrics before it exits (SIGTERM included)."""
    app = getattr(worker, "wsgi", None)
    runtime = getattr(app, "extensions", {}).get("chatbot") if app is not None else None
    if runtime is not None:
        runtime.flusher.close()


def child_exit(server: Any, worker: Any) -> None:
    from shared.prom import worker_exited

    worker_exited(worker.pid)

"""Serve green with uvicorn (uvloop, httptools), one worker per core by default.

The same command serves `make run`, the e2e tests and the image: ``python -m fastapi_app.serve``.
It prepares the instance's metrics directory before any worker imports prometheus_client.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import uvicorn

from shared.settings import settings_or_exit


def main() -> None:
    settings_or_exit()  # a bad setting: one line naming it, exit status 2, as blue's master
    metrics_dir = os.environ.get("METRICS_DIR") or tempfile.mkdtemp(
        prefix="chatbot-green-metrics-")
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir, exist_ok=True)
    os.environ["METRICS_DIR"] = metrics_dir
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    uvicorn.run(
        "fastapi_app.app:create_app",
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8002")),
        workers=int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1)),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        # the client address is decided in shared/web.py client_ip (TRUST_FORWARDED_FOR,
        # TRUSTED_PROXY_HOPS), the same in both colors; uvicorn's own rewrite would differ
        proxy_headers=False,
        # SIGTERM: stop accepting, let requests in flight finish for up to this long, then the
        # lifespan flushes metrics. As blue's GUNICORN_GRACEFUL_TIMEOUT: keep it at or below the
        # orchestrator's stop timeout (compose: stop_grace_period 40 s); a chat slower than it
        # (AGENT_DEADLINE_S is 45 s) is cut. The graceful_shutdown parity check covers this.
        timeout_graceful_shutdown=int(os.environ.get("GRACEFUL_TIMEOUT", "30")),
        # uvicorn kills a worker that has not answered its supervisor within this many seconds;
        # its 5 s default restarts workers forever on a busy 2-core box (imports take ~4 s)
        timeout_worker_healthcheck=int(os.environ.get("WORKER_HEALTHCHECK_TIMEOUT", "60")),
        log_level=os.environ.get("LOG_LEVEL", "info").lower(),
    )


if __name__ == "__main__":
    main()

"""Serve green with uvicorn (uvloop, httptools), one worker per core by default.

The same command serves `make run`, the e2e tests and the image: ``python -m fastapi_app.serve``.
It prepares the instance's metrics directory before any worker imports prometheus_client.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import uvicorn

from fastapi_app.protocol import WireProtocol
from shared.settings import load_settings, settings_or_exit


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
        # httptools, with the wire rules of shared/wire.py (fastapi_app/protocol.py): bounds on
        # the headers and the body (CLIENT_HEADER_TIMEOUT_S, CLIENT_BODY_TIMEOUT_S), the same
        # refusals as blue's gunicorn, a bounded discard of a body left unread after an answer
        http=WireProtocol,
        # a WebSocket upgrade on a plain route is served as plain HTTP, as blue serves it (no
        # route takes WebSockets; uvicorn's WebSocket support answered it with an empty 403)
        ws="none",
        # an ALB keeps idle connections to its targets for 60 s and answers 502 now and then
        # when a target closes one first: hold them longer (KEEPALIVE_TIMEOUT_S, 65 s)
        timeout_keep_alive=load_settings().keepalive_timeout_s,
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

"""Blue under gunicorn's gevent workers (legacy_flask/gunicorn_gevent.conf.py, the bench's
``blue-gevent``), booted as the bench boots it, through devstack: it answers, its boto3 calls are
cooperative (one worker has many agent calls in flight at once), its metrics flusher (a greenlet
after the patch) flushes on its own and on SIGTERM, and nothing was imported before the patch."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.agent_emulator import reply_for
from devstack.commands import BLUE_GEVENT_CMD
from devstack.procs import free_port
from devstack.run import Server
from devstack.stack import DevStack
from shared.contracts import ChatResponse, SessionRecord
from shared.settings import DEV_API_KEY
from tests.e2e.test_servers import request_count

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
CONCURRENT = 8
AGENT_LATENCY_MS = 800


@pytest.fixture(scope="module")
def stack() -> Iterator[DevStack]:
    with DevStack() as s:
        yield s


def _emulator(stack: DevStack, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(stack.agent_url + path, data=data,
                                 method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def _boot(stack: DevStack, log: Path, flush_s: str) -> tuple[Server, str]:
    namespace = f"E2E/{uuid.uuid4().hex}"
    env = {**stack.env(), "API_KEYS": DEV_API_KEY, "METRICS_NAMESPACE": namespace,
           "METRICS_FLUSH_INTERVAL_S": flush_s}
    srv = Server("blue", free_port(), env, workers=1, log_path=log, command=BLUE_GEVENT_CMD)
    srv.start()
    try:
        srv.wait_healthy(30)
    except BaseException:
        srv.stop()
        raise
    return srv, namespace


def test_one_gevent_worker_answers_and_overlaps_its_aws_calls(stack: DevStack,
                                                              tmp_path: Path) -> None:
    log = tmp_path / "blue-gevent.log"
    srv, namespace = _boot(stack, log, flush_s="60")  # nothing flushes on its own here
    headers = {"X-API-Key": DEV_API_KEY}
    try:
        with httpx.Client(base_url=srv.url, headers=headers, timeout=30) as http:
            assert http.get("/health").status_code == 200
            resp = http.post("/api/v1/chat", json={"message": "hello gevent", "user_id": "e2e"})
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-app-color"] == "blue"
            body = ChatResponse.model_validate_json(resp.content)
            assert body.response == reply_for("hello gevent")
            record = SessionRecord.model_validate_json(
                http.get(f"/api/v1/chat/sessions/{body.session_id}").content)
            assert record.message_count == 2
            bad = http.post("/api/v1/chat", json={"message": "x"}, headers={"X-API-Key": "no"})
            assert bad.status_code == 401
            assert bad.json()["error_code"] == "UNAUTHORIZED"

            # one worker, CONCURRENT chats: with boto3 cooperative, every InvokeAgent is in
            # flight at the emulator at once; a blocking socket would show one at a time
            _emulator(stack, "/_emulator/config", {"latency_ms": AGENT_LATENCY_MS})
            try:
                with ThreadPoolExecutor(CONCURRENT) as pool:
                    futures = [pool.submit(http.post, "/api/v1/chat",
                                           json={"message": f"at once {i}"})
                               for i in range(CONCURRENT)]
                    peak = 0
                    while not all(f.done() for f in futures):
                        peak = max(peak, int(_emulator(stack, "/_emulator/stats")["in_flight"]))
                        time.sleep(0.05)
                    statuses = [f.result().status_code for f in futures]
            finally:
                _emulator(stack, "/_emulator/config", {"latency_ms": 0})
            assert statuses == [200] * CONCURRENT
            assert peak >= CONCURRENT - 2, f"at most {peak} agent calls in flight at once"
    finally:
        code = srv.stop()
    # SIGTERM: the worker's flusher stopped and flushed everything in worker_exit
    assert code == 0
    # the boot probe, health, chat, session read, 401, the concurrent chats
    assert request_count(stack, namespace) == 5 + CONCURRENT
    text = log.read_text()
    assert "Using worker: gevent" in text
    # nothing imported ssl's names before the worker patched (gunicorn_gevent.conf.py)
    assert "MonkeyPatchWarning" not in text
    assert "Traceback" not in text


def test_the_flusher_greenlet_flushes_on_its_own(stack: DevStack, tmp_path: Path) -> None:
    srv, namespace = _boot(stack, tmp_path / "blue-gevent.log", flush_s="1")
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as http:
            assert http.get("/health").status_code == 200
        deadline = time.monotonic() + 15
        seen = 0.0
        while time.monotonic() < deadline and seen < 2:  # the probe and this health check
            time.sleep(0.5)
            seen = request_count(stack, namespace)
        assert seen >= 2, "the metrics flusher did not run while the worker was idle"
    finally:
        assert srv.stop() == 0

"""A generated reproducer replays a multi-step case, with its captured variables, against real
servers (blue under gunicorn, green under uvicorn, on devstack), and says whether what the run
found shows again."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.procs import free_port
from devstack.run import Server
from devstack.stack import DevStack, create_tables
from parity_tests.harness.compare import Delta
from parity_tests.harness.lanes import API_KEYS, remote_lanes
from parity_tests.harness.model import case_from_dict
from parity_tests.harness.reproduce import write_reproducers
from parity_tests.harness.rules import load_noise
from parity_tests.harness.runner import Runner

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("parity-reproduce")]

CASE = {"name": "two-turns", "steps": [
    {"name": "first", "request": {"method": "POST", "path": "/api/v1/chat",
                                  "json": {"message": "hello", "user_id": "u-{{case}}"}},
     "capture": {"sid": "session_id"}, "expect_status": 200},
    {"name": "second", "request": {"method": "POST", "path": "/api/v1/chat",
                                   "json": {"message": "again", "session_id": "{{sid}}",
                                            "user_id": "u-{{case}}"}},
     "expect_status": 200},
    {"name": "read", "request": {"method": "GET", "path": "/api/v1/chat/sessions/{{sid}}"},
     "expect_status": 201},  # wrong on purpose: an expectation failure in both colors
    {"name": "list", "request": {"method": "GET", "path": "/api/v1/users/u-{{case}}/sessions"},
     "expect_status": 200},
]}


@pytest.fixture(scope="module")
def servers(stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    logs = tmp_path_factory.mktemp("reproduce-logs")
    started: list[Server] = []
    try:
        for color in ("blue", "green"):
            tag = uuid.uuid4().hex[:8]
            sessions, limits = f"rp_{tag}_sessions", f"rp_{tag}_limits"
            create_tables(stack.moto_url, sessions, limits)
            env = {**stack.env(sessions, limits), "API_KEYS": ",".join(API_KEYS),
                   "METRICS_NAMESPACE": f"Reproduce/{tag}", "ENVIRONMENT": "test"}
            started.append(Server(color, free_port(), env, workers=1,
                                  log_path=logs / f"{color}.log").start())
        for server in started:
            server.wait_healthy(60)
        yield {s.color: s.url for s in started}
    finally:
        for server in started:
            server.stop()


def test_a_reproducer_replays_every_step_with_its_captures(servers: dict[str, str],
                                                          tmp_path: Path) -> None:
    case = case_from_dict(CASE, "cases/repro.yaml", 0)
    lanes = remote_lanes(servers["blue"], servers["green"], API_KEYS)
    try:
        noise = load_noise(Path("parity_tests/noise.yaml"), "remote")
        result = Runner(lanes, noise, [], None).run([case])[0]
    finally:
        for lane in lanes:
            lane.http.close()
    assert result.failed
    assert [s.differences for s in result.steps] == [[], [], [], []]
    assert result.steps[2].expectation == "expected 201; blue answered 200, green answered 200"
    # a difference the run "found" that the servers do not have: the script must say it is gone
    result.steps[1].differences.append(Delta("body.response", "x", "y"))
    written = write_reproducers([result], tmp_path, servers, API_KEYS)
    script = tmp_path / written[case.id]
    text = script.read_text()
    assert f"#   BLUE_URL={servers['blue']}" in text
    assert f"#   PARITY_API_KEY={API_KEYS[0]}" in text

    fresh = f"fresh-{uuid.uuid4().hex[:8]}"  # new users: the run's own are on the servers
    env = {"PATH": os.environ.get("PATH", ""), "BLUE_URL": servers["blue"],
           "GREEN_URL": servers["green"], "PARITY_API_KEY": API_KEYS[0], "PARITY_CASE": fresh}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr  # the expectation failure shows again
    for step in ("first", "second", "read", "list"):
        assert f"step {step}: " in out
    assert "AGAIN step read: expected 201" in out
    assert "  gone  step second: body.response blue=\"[agent-emulator " in out
    assert "REPRODUCED" in out
    # the second chat went to the session the first created, in each color (its own id)
    for url in servers.values():
        listed = httpx.get(f"{url}/api/v1/users/u-{fresh}/sessions",
                           headers={"X-API-Key": API_KEYS[0]}, timeout=10).json()
        assert [s["message_count"] for s in listed["sessions"]] == [4]

    missing = subprocess.run([sys.executable, str(script)], env={"PATH": env["PATH"]},
                             capture_output=True, text=True, timeout=30, check=False)
    assert missing.returncode == 2
    assert "BLUE_URL" in missing.stderr


# --- raw steps ---------------------------------------------------------------------------------

RAW_CASE = {"name": "raw-chat", "raw": {"send": [
    {"head": ["POST /api/v1/chat HTTP/1.1", "Host: {{host}}", "X-API-Key: {{api_key}}",
              "X-Case: {{case}}", "Content-Length: 16"]},
    {"pause": 0.2},
    '{"message":"hi"}'], "half_close": True, "read_timeout": 0.5},
    "expect_status": 200, "expect_end": "answered"}
ENVELOPE = b'{"error":"bad","error_code":"bad_request","request_id":"r-1"}'


class _Wire:
    """A tiny server on 127.0.0.1: reads each connection to the client's half-close, records
    the bytes, then answers ``answer`` and closes (``linger`` 0) or stays open ``linger`` s."""

    def __init__(self, answer: bytes, linger: float) -> None:
        import socket
        import threading

        self.answer, self.linger = answer, linger
        self.received: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: Any) -> None:
        import time

        with conn:
            data = bytearray()
            while chunk := conn.recv(65536):
                data += chunk
            self.received.append(bytes(data))
            conn.sendall(self.answer)
            time.sleep(self.linger)

    def close(self) -> None:
        self.sock.close()


def test_a_raw_step_reproducer_sends_the_same_bytes_and_gets_the_same_answer(
        tmp_path: Path) -> None:
    from parity_tests.harness import wire

    blue = _Wire(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: "
                 + str(len(ENVELOPE)).encode() + b"\r\n\r\n" + ENVELOPE, 0)
    green = _Wire(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1.5)
    try:
        case = case_from_dict(RAW_CASE, "cases/wire_repro.yaml", 0)
        urls = {"blue": blue.url, "green": green.url}
        lanes = remote_lanes(blue.url, green.url, API_KEYS)
        try:
            result = Runner(lanes, [], [], None).run([case])[0]
        finally:
            for lane in lanes:
                lane.http.close()
        paths = {d.path for d in result.steps[0].differences}
        assert {"status", "answers.0"} <= paths, result.steps[0]
        assert "blue answered 400" in (result.steps[0].expectation or "")
        sent = {name: server.received[:] for name, server in (("blue", blue),
                                                               ("green", green))}
        assert sent["blue"]
        assert sent["blue"][0].startswith(b"POST /api/v1/chat HTTP/1.1\r\n")
        assert f"X-API-Key: {API_KEYS[0]}\r\n".encode() in sent["blue"][0]
        assert f"X-Case: {case.slug}\r\n".encode() in sent["blue"][0]
        assert sent["blue"][0].endswith(b'\r\n\r\n{"message":"hi"}')

        written = write_reproducers([result], tmp_path, urls, API_KEYS)
        script = tmp_path / written[case.id]
        env = {"PATH": os.environ.get("PATH", ""), "BLUE_URL": blue.url,
               "GREEN_URL": green.url, "PARITY_API_KEY": API_KEYS[0]}
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                              text=True, timeout=30, check=False)
        out = done.stdout
        assert done.returncode == 1, out + done.stderr
        # the same bytes, pause and half-close included (the server read to the EOF)
        assert blue.received[1:] == sent["blue"]
        assert green.received[1:] == sent["green"]
        # and the same answers as wire.send_raw reads them
        for _name, server in (("blue", blue), ("green", green)):
            host, port = server.url.removeprefix("http://").split(":")
            seen = wire.send_raw(host, int(port), [server.received[0]], half_close=True,
                                 read_timeout=0.5)
            assert f"{' | '.join(seen.summaries())}; connection " in out
            assert wire.escape(seen.raw) in out
        assert "blue     400 in" in out
        assert "400 bad_request; connection answered (closed)" in out
        assert "green    200 in" in out
        assert "200 non-envelope; connection answered (open)" in out
        assert "step raw-chat: raw POST /api/v1/chat HTTP/1.1\\r\\nHost: 127.0.0.1:" in out
        assert "(pause 0.2 s)" in out
        assert "(then half-close)" in out
        assert "AGAIN step raw-chat: status blue=400 green=200" in out
        assert "AGAIN step raw-chat: expected 200" in out
        assert "REPRODUCED" in out
    finally:
        blue.close()
        green.close()

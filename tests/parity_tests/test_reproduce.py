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

"""Production defaults on real servers (gunicorn for blue, uvicorn for green, the shipped
commands): staging/prod refuse an empty API_KEYS with one line naming it; behind a proxy the
rate limiter keys on the hop the proxy appended, not one a client forged; METRICS_ACCESS=key
guards /metrics with its own bearer token. The same answers in both colors."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.loadbalancer import LoadBalancer, create_local_alb
from devstack.procs import free_port
from devstack.run import Server
from devstack.stack import DevStack, create_tables

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
COLORS = ("blue", "green")
METRICS_TOKEN = "scrape-token-e2e"


@pytest.fixture(scope="module")
def e2e_stack() -> Iterator[DevStack]:
    with DevStack() as s:
        yield s


def exit_of(server: Server, timeout_s: float = 60.0) -> tuple[int | None, str]:
    proc = server.proc
    assert proc is not None
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    code = proc.poll()
    server.stop()
    assert server.log_path is not None
    return code, server.log_path.read_text()


@pytest.mark.parametrize("color", COLORS)
@pytest.mark.parametrize("environment", ["prod", "staging"])
def test_an_empty_api_keys_refuses_to_start_in_prod(color: str, environment: str,
                                                    e2e_stack: DevStack, tmp_path: Path) -> None:
    env = {**e2e_stack.env(), "ENVIRONMENT": environment, "API_KEYS": ""}
    server = Server(color, free_port(), env, workers=1, log_path=tmp_path / "out.log").start()
    code, out = exit_of(server)
    assert code == 2, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines == [f"chatbot: refusing to start: API_KEYS is empty in ENVIRONMENT="
                     f"{environment}: set API_KEYS, or AUTH_DISABLED=true to serve /api without "
                     "auth"], out  # one line, before any worker: no traceback


@pytest.fixture(scope="module", params=COLORS)
def behind_alb(request: pytest.FixtureRequest, e2e_stack: DevStack,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One color as deployed behind an ALB with auth switched off on purpose: prod, no keys,
    AUTH_DISABLED=true, TRUST_FORWARDED_FOR=true, /metrics behind its own key."""
    color = str(request.param)
    env = {**e2e_stack.env(), "ENVIRONMENT": "prod", "API_KEYS": "", "AUTH_DISABLED": "true",
           "TRUST_FORWARDED_FOR": "true", "RATE_LIMIT_REQUESTS": "2",
           "RATE_LIMIT_WINDOW_S": "3600", "METRICS_ACCESS": "key",
           "METRICS_API_KEY": METRICS_TOKEN, "METRICS_NAMESPACE": f"E2E/{uuid.uuid4().hex}"}
    log = tmp_path_factory.mktemp(color) / f"{color}.log"
    server = Server(color, free_port(), env, workers=2, log_path=log).start()
    try:
        server.wait_healthy(60)
        yield server
    finally:
        server.stop()


def test_the_rate_limit_keys_on_the_hop_the_alb_appended(behind_alb: Server) -> None:
    # an address of this run only: the rate-limit table is shared by every test of the stack
    client = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    path = f"/api/v1/chat/sessions/s-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=behind_alb.url, timeout=15) as http:
        statuses = []
        for forged in ("6.6.6.6", "7.7.7.7", "8.8.8.8", "9.9.9.9"):
            # the client writes any first hop it likes; the ALB appends the address it saw
            resp = http.get(path, headers={"X-Forwarded-For": f"{forged}, {client}"})
            statuses.append(resp.status_code)
        assert statuses == [404, 404, 429, 429], statuses  # one bucket: the forged hops ignored
        refused = http.get(path, headers={"X-Forwarded-For": f"1.1.1.1, {client}"})
        assert refused.json()["error_code"] == "RATE_LIMITED"
        # the same forged first hop from another client is that client's own bucket
        other = http.get(path, headers={"X-Forwarded-For": f"6.6.6.6, {client}1"})
        assert other.status_code == 404, other.text


def test_metrics_need_their_own_bearer_token(behind_alb: Server) -> None:
    with httpx.Client(base_url=behind_alb.url, timeout=15) as http:
        for path in ("/metrics", "/metrics/performance"):
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"X-API-Key": METRICS_TOKEN}):
                resp = http.get(path, headers=headers)
                assert resp.status_code == 401, (path, headers, resp.text)
                assert resp.json()["error_code"] == "UNAUTHORIZED"
                assert resp.headers["www-authenticate"] == "Bearer"
                assert resp.headers["x-app-color"] == behind_alb.color
            ok = http.get(path, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert ok.status_code == 200, ok.text
        assert http.get("/health").status_code == 200  # the ALB's health check stays open


@pytest.fixture(scope="module")
def both_behind_local_alb(e2e_stack: DevStack, tmp_path_factory: pytest.TempPathFactory
                          ) -> Iterator[dict[str, str]]:
    """Both colors (each on its own rate-limit table) behind devstack's local ALB, which appends
    the address it was connected from to X-Forwarded-For, as an ALB does. Returns each color's
    URL through the ALB (production listener: blue; test listener: green)."""
    log_dir = tmp_path_factory.mktemp("alb")
    servers: dict[str, Server] = {}
    try:
        for color in COLORS:
            run = uuid.uuid4().hex[:6]
            tables = (f"alb_{color}_{run}_sessions", f"alb_{color}_{run}_limits")
            create_tables(e2e_stack.moto_url, *tables)
            env = {**e2e_stack.env(*tables), "ENVIRONMENT": "prod", "API_KEYS": "",
                   "AUTH_DISABLED": "true", "TRUST_FORWARDED_FOR": "true",
                   "RATE_LIMIT_REQUESTS": "2", "RATE_LIMIT_WINDOW_S": "3600",
                   "METRICS_NAMESPACE": f"E2E/{uuid.uuid4().hex}"}
            servers[color] = Server(color, free_port(), env, workers=1,
                                    log_path=log_dir / f"{color}.log").start()
        for server in servers.values():
            server.wait_healthy(60)
        alb = create_local_alb(e2e_stack.moto_url, {c: s.url for c, s in servers.items()},
                               name=f"e2e-{uuid.uuid4().hex[:8]}")
        with LoadBalancer(e2e_stack.moto_url, {alb.production_listener_arn: 0,
                                               alb.test_listener_arn: 0},
                          health_interval_s=0.25) as lb:
            yield {"blue": lb.urls[alb.production_listener_arn],
                   "green": lb.urls[alb.test_listener_arn]}
    finally:
        for server in servers.values():
            server.stop()


@pytest.mark.parametrize("color", COLORS)
def test_through_the_local_alb_a_forged_hop_buys_no_fresh_window(
        both_behind_local_alb: dict[str, str], color: str) -> None:
    path = f"/api/v1/chat/sessions/s-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=both_behind_local_alb[color], timeout=15) as http:
        answers = [http.get(path, headers={"X-Forwarded-For": forged})
                   for forged in ("6.6.6.1", "6.6.6.2", "6.6.6.3")]
    assert [r.headers.get("x-app-color") for r in answers] == [color] * 3
    assert [r.status_code for r in answers] == [404, 404, 429]  # one client: the ALB's hop

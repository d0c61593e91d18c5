"""Proof that the harness catches bugs: green variants with one deliberate change each must be
reported at the right case and path; blue against blue must report nothing.

Lanes here are in-process apps (httpx WSGI/ASGI transports), each on its own tables and its own
agent emulator in devstack, so the runner, the side-effect reads and the comparison are the real
ones. (Prometheus deltas are left out: in one process every app shares one registry; the real
``make parity`` compares them across server processes.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from anyio.from_thread import start_blocking_portal

from devstack.agent_emulator import AgentEmulator
from devstack.stack import DevStack, create_tables
from fastapi_app import create_app as create_green
from legacy_flask import create_app as create_blue
from parity_tests.harness.cli import cloudwatch_deltas
from parity_tests.harness.lanes import (
    API_KEYS,
    Lane,
    SideEffects,
    case_keys,
    cloudwatch_totals,
)
from parity_tests.harness.model import Case, case_from_dict
from parity_tests.harness.rules import KnownDifference, load_noise
from parity_tests.harness.runner import CaseResult, Runner
from tests.conftest import _SyncASGI

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("parity-self-test")]
NOISE = load_noise(__import__("pathlib").Path("parity_tests/noise.yaml"))
# the lanes also accept the keys of a run's first 200 cases (a runner with case_keys)
CASE_KEYS = tuple(k for n in range(200) for k in case_keys(n))

CORPUS = [
    {"name": "health", "request": {"method": "GET", "path": "/health"}},
    {"name": "lifecycle", "steps": [
        {"name": "create", "request": {"method": "POST", "path": "/api/v1/chat",
                                       "json": {"message": "hello", "user_id": "u-{{case}}"}},
         "capture": {"sid": "session_id"}},
        {"name": "get", "request": {"method": "GET", "path": "/api/v1/chat/sessions/{{sid}}"}},
        {"name": "list", "request": {"method": "GET", "path": "/api/v1/users/u-{{case}}/sessions"}},
        {"name": "delete", "request": {"method": "DELETE",
                                       "path": "/api/v1/chat/sessions/{{sid}}"}},
    ]},
    {"name": "bad-json", "request": {"method": "POST", "path": "/api/v1/chat", "body": "{",
                                     "headers": {"Content-Type": "application/json"}}},
]


def corpus() -> list[Case]:
    return [case_from_dict(raw, "selftest.yaml", i) for i, raw in enumerate(CORPUS)]


# --- mutations: each wraps the green ASGI app or its runtime ----------------------------------

Asgi = Callable[..., Any]


def rewrite(app: Asgi, change: Callable[[dict[str, Any], list[bytes]], None]) -> Asgi:
    """An ASGI wrapper that edits the response (start message and whole body) of ``app``."""
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        body: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                body.append(message.get("body", b""))

        await app(scope, receive, capture)
        start["scope"] = scope
        change(start, body)
        start.pop("scope")
        payload = b"".join(body)
        start["headers"] = [(k, v) for k, v in start["headers"] if k != b"content-length"] + [
            (b"content-length", str(len(payload)).encode())]
        await send(start)
        await send({"type": "http.response.body", "body": payload})

    return wrapped


def status_201_on_chat(start: dict[str, Any], body: list[bytes]) -> None:
    if start["scope"]["path"] == "/api/v1/chat" and start["status"] == 200:
        start["status"] = 201


def renamed_field(start: dict[str, Any], body: list[bytes]) -> None:
    scope = start["scope"]
    if (scope["method"] == "GET" and scope["path"].startswith("/api/v1/chat/sessions/")
            and start["status"] == 200):
        doc = json.loads(b"".join(body))
        doc["messageCount"] = doc.pop("message_count")
        body[:] = [json.dumps(doc).encode()]


def missing_header(start: dict[str, Any], body: list[bytes]) -> None:
    start["headers"] = [(k, v) for k, v in start["headers"] if k != b"x-ratelimit-remaining"]


def session_written_differently(runtime: Any) -> None:
    execute = runtime.execute

    async def wrong(call: Any) -> Any:
        if getattr(call, "operation", "") == "put_item":
            call.params["Item"]["message_count"] = {"N": "3"}
        return await execute(call)

    runtime.execute = wrong


def extra_metric(runtime: Any) -> None:
    buffer = runtime.flusher.telemetry.buffer
    record = buffer.record

    def twice(endpoint: str, status: int, latency_ms: float, when: Any = None) -> bool:
        record("/extra", status, latency_ms, when)
        return record(endpoint, status, latency_ms, when)

    buffer.record = twice


# --- lanes ----------------------------------------------------------------------------------

class Lanes:
    def __init__(self, stack: DevStack, exits: ExitStack) -> None:
        self.stack = stack
        self.exits = exits
        self.lanes: list[Lane] = []
        self.flushers: list[Callable[[], Any]] = []
        self.effects = SideEffects(prometheus=False)

    def add(self, name: str, color: str, wrap: Callable[[Asgi], Asgi] | None = None,
            patch_runtime: Callable[[Any], None] | None = None) -> None:
        tag = uuid.uuid4().hex[:10]
        sessions, limits = f"st_{tag}_sessions", f"st_{tag}_limits"
        create_tables(self.stack.moto_url, sessions, limits, streams=True)
        emulator = self.exits.enter_context(AgentEmulator())
        namespace = f"SelfTest/{tag}"
        settings = self.stack.settings(
            sessions_table=sessions, rate_limit_table=limits, bedrock_endpoint_url=emulator.url,
            api_keys=",".join(API_KEYS + CASE_KEYS), metrics_namespace=namespace,
            rate_limit_window_s=3600,
            # a busy machine can stall the in-process moto past the 3 s default: a retried
            # rate-limit ADD then counts twice in one lane only, and every later answer's
            # X-RateLimit-Remaining differs (a false finding, not the planted bug)
            dynamodb_read_timeout_s=20.0)
        if color == "blue":
            app = create_blue(settings)
            runtime = app.extensions["chatbot"]
            http = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://blue")
            self.flushers.append(runtime.flusher.flush_now)
        else:
            app = create_green(settings)
            runtime = app.state.runtime
            if patch_runtime:
                patch_runtime(runtime)
            portal = self.exits.enter_context(start_blocking_portal())
            self.exits.enter_context(
                portal.wrap_async_context_manager(app.router.lifespan_context(app)))
            served = wrap(app) if wrap else app
            http = httpx.Client(transport=_SyncASGI(served, portal), base_url="http://green")
            self.flushers.append(lambda p=portal, r=runtime: p.call(r.flusher.flush_now))
        self.exits.callback(http.close)
        lane = Lane(name=name, color=color, url=f"http://{name}", http=http, emulator=emulator,
                    tables={"sessions": sessions, "rate_limits": limits}, namespace=namespace,
                    aws_url=self.stack.moto_url)
        self.effects.baseline(lane)
        self.lanes.append(lane)

    def run(self, known: list[KnownDifference] | None = None
            ) -> tuple[list[CaseResult], list[dict[str, Any]]]:
        results = Runner(self.lanes, NOISE, known or [], self.effects).run(corpus())
        for flush in self.flushers:
            flush()
        return results, cloudwatch_deltas(cloudwatch_totals(self.lanes))


@pytest.fixture
def lanes(stack: DevStack) -> Iterator[Callable[..., Lanes]]:
    with ExitStack() as exits:
        def make(candidate: str = "green", wrap: Callable[[Asgi], Asgi] | None = None,
                 patch_runtime: Callable[[Any], None] | None = None) -> Lanes:
            built = Lanes(stack, exits)
            built.add("blue", "blue")
            built.add("blue-aa", "blue")
            built.add(candidate, "green" if candidate == "green" else "blue", wrap,
                      patch_runtime)
            return built
        yield make


def findings(results: list[CaseResult]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for case in results:
        for step in case.steps:
            paths = [d.path for d in step.differences] + [
                f"noise:{d.path}" for d in step.undeclared_noise] + [
                f"contract:{v}" for v in step.violations]
            if step.error:
                paths.append(f"error:{step.error}")
            if paths:
                out[(case.case.id, step.step)] = paths
        if case.error:
            out[(case.case.id, "*")] = [f"error:{case.error}"]
    return out


# --- the proofs -----------------------------------------------------------------------------

def test_blue_against_blue_reports_nothing(lanes: Callable[..., Lanes]) -> None:
    results, cloudwatch = lanes(candidate="blue-2").run()
    assert findings(results) == {}
    assert cloudwatch == []
    assert sum(len(c.steps) for c in results) == 6


def test_green_as_shipped_reports_nothing(lanes: Callable[..., Lanes]) -> None:
    results, cloudwatch = lanes().run()
    assert findings(results) == {}
    assert cloudwatch == []


def test_a_different_status_is_caught(lanes: Callable[..., Lanes]) -> None:
    results, _ = lanes(wrap=lambda app: rewrite(app, status_201_on_chat)).run()
    found = findings(results)
    assert "status" in found[("selftest/lifecycle", "create")]
    assert any(p.startswith("contract:green: status 201") for p in
               found[("selftest/lifecycle", "create")])
    assert set(found) == {("selftest/lifecycle", "create")}


def test_a_renamed_field_is_caught(lanes: Callable[..., Lanes]) -> None:
    found = findings(lanes(wrap=lambda app: rewrite(app, renamed_field)).run()[0])
    paths = found[("selftest/lifecycle", "get")]
    assert "body.message_count" in paths
    assert "body.messageCount" in paths
    assert any(p.startswith("contract:green: body does not match SessionRecord") for p in paths)
    assert set(found) == {("selftest/lifecycle", "get")}


def test_a_missing_header_is_caught(lanes: Callable[..., Lanes]) -> None:
    found = findings(lanes(wrap=lambda app: rewrite(app, missing_header)).run()[0])
    api_steps = {("selftest/lifecycle", s) for s in ("create", "get", "list", "delete")} | {
        ("selftest/bad-json", "bad-json")}
    assert set(found) == api_steps
    assert all(paths == ["headers.x-ratelimit-remaining"] for paths in found.values())


def test_a_session_written_differently_is_caught(lanes: Callable[..., Lanes]) -> None:
    found = findings(lanes(patch_runtime=session_written_differently).run()[0])
    create = found[("selftest/lifecycle", "create")]
    assert create == ["dynamodb.sessions.<id:1>.message_count"]
    # the stored record is read back wrong too, and the list shows it
    assert "body.message_count" in found[("selftest/lifecycle", "get")]


def test_an_extra_metric_is_caught(lanes: Callable[..., Lanes]) -> None:
    results, cloudwatch = lanes(patch_runtime=extra_metric).run()
    assert findings(results) == {}  # answers and stored state are the same...
    paths = {d["path"] for d in cloudwatch}
    assert "cloudwatch.RequestCount|/extra" in paths  # ...but green emitted more metrics


def test_a_known_difference_is_reported_but_accepted(lanes: Callable[..., Lanes]) -> None:
    import datetime as dt

    known = [KnownDifference(path="headers.x-ratelimit-remaining", reason="test", owner="qa",
                             expires=dt.date.today() + dt.timedelta(days=1))]
    results = lanes(wrap=lambda app: rewrite(app, missing_header)).run(known)[0]
    assert findings(results) == {}
    assert sum(len(s.known) for c in results for s in c.steps) == 5

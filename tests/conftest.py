"""Fixtures shared by every test: devstack, and each color's app behind one client API.

``client`` is parametrized over blue and green: blue is driven through httpx's
``WSGITransport``; green through httpx's ``ASGITransport`` on an event loop in a helper
thread, with the lifespan entered, so its aioboto3 clients are the real ones. Both talk to
devstack over the wire.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from anyio.from_thread import start_blocking_portal

from devstack.stack import DevStack
from fastapi_app import create_app as create_green
from legacy_flask import create_app as create_blue
from shared.settings import Settings

COLORS = ("blue", "green")


@pytest.fixture(scope="session")
def stack() -> Iterator[DevStack]:
    with DevStack(agent_fault_timeout_s=5.0, moto_fault_timeout_s=1.0) as s:
        yield s


@dataclass
class ColorClient:
    color: str
    http: httpx.Client
    app: Any
    settings: Settings
    _flush: Callable[[], int]

    def flush_metrics(self) -> int:
        return self._flush()

    def __getattr__(self, name: str) -> Any:  # get/post/delete/request/...
        return getattr(self.http, name)


def open_client(color: str, settings: Settings, stack: ExitStack) -> ColorClient:
    if color == "blue":
        app = create_blue(settings)
        runtime = app.extensions["chatbot"]
        http = stack.enter_context(httpx.Client(transport=httpx.WSGITransport(app=app),
                                                base_url="http://testserver"))
        stack.callback(runtime.flusher.close)
        return ColorClient(color, http, app, settings, runtime.flusher.flush_now)
    app = create_green(settings)
    portal = stack.enter_context(start_blocking_portal())
    stack.enter_context(portal.wrap_async_context_manager(app.router.lifespan_context(app)))
    runtime = app.state.runtime
    http = stack.enter_context(httpx.Client(transport=_SyncASGI(app, portal),
                                            base_url="http://testserver"))
    return ColorClient(color, http, app, settings, lambda: portal.call(runtime.flusher.flush_now))


class _SyncASGI(httpx.BaseTransport):
    """A sync httpx transport that runs httpx.ASGITransport on the portal's event loop."""

    def __init__(self, app: Any, portal: Any) -> None:
        self._asgi = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def send() -> httpx.Response:
            req = httpx.Request(request.method, request.url, headers=request.headers,
                                content=body)
            resp = await self._asgi.handle_async_request(req)
            content = b"".join([part async for part in resp.aiter_raw()])
            return httpx.Response(resp.status_code, headers=resp.headers, content=content)

        return self._portal.call(send)  # type: ignore[no-any-return]


@pytest.fixture
def make_client(stack: DevStack) -> Iterator[Callable[..., ColorClient]]:
    """``make_client(color, **setting_overrides)``: a fresh app of that color on devstack."""
    with ExitStack() as exits:
        def make(color: str, **overrides: Any) -> ColorClient:
            base: dict[str, Any] = {"rate_limit_requests": 1_000_000,
                                    "metrics_namespace": f"Test/{uuid.uuid4().hex}",
                                    "agent_read_timeout_s": 2.0, "agent_max_attempts": 1,
                                    "dynamodb_max_attempts": 1}
            base.update(overrides)
            return open_client(color, stack.settings(**base), exits)
        yield make


@pytest.fixture(params=COLORS)
def color(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(make_client: Callable[..., ColorClient], color: str) -> ColorClient:
    return make_client(color)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"

"""Green: the async FastAPI app, a thin aioboto3 driver around ``shared``."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response as StarletteResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_app import docs_ui
from fastapi_app.aws import AsyncAws
from fastapi_app.telemetry import Flusher
from shared import logs
from shared import web as w
from shared.calls import run_async
from shared.capture import QueuedCaptureWriter
from shared.errors import ApiError
from shared.flows import Context
from shared.handlers import Inputs, handle
from shared.pipeline import Exchange, Response
from shared.routes import ROUTES, Route
from shared.settings import Color, Settings, load_settings
from shared.wire import BodyUnreadable

COLOR: Color = "green"
EXCHANGE = "chatbot.exchange"
log = logging.getLogger("chatbot.app")


@dataclass
class Runtime:
    settings: Settings
    flusher: Flusher
    ctx: Context
    aws: AsyncAws | None = None
    capture: QueuedCaptureWriter | None = None

    async def execute(self, call: Any) -> Any:
        if self.aws is None:
            raise RuntimeError("the lifespan has not started")
        return await self.aws.execute(call)


def _to_starlette(resp: Response) -> StarletteResponse:
    return StarletteResponse(resp.body, status_code=resp.status, headers=resp.headers,
                             media_type=resp.content_type or None)


async def _read_body(request: Request, settings: Settings) -> bytes:
    """Read at most MAX_BODY_BYTES, chunked bodies included; stop at the first byte over.

    What was read (at most MAX_BODY_BYTES + 1 bytes) goes to the exchange, for capture.
    """
    ex: Exchange = request.scope[EXCHANGE]
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            parts.append(chunk)
            if size > settings.max_body_bytes:
                ex.body = b"".join(parts)[:settings.max_body_bytes + 1]
                raise w.too_large(settings)
    except ClientDisconnect as exc:  # cut short, bad framing (uvicorn answered 400), too slow
        raise BodyUnreadable("the body could not be read whole", exc) from None
    body = ex.body = b"".join(parts)
    return body


def _view(route: Route, rt: Runtime) -> Callable[[Request], Awaitable[StarletteResponse]]:
    async def view(request: Request) -> StarletteResponse:
        inputs = Inputs(
            path_params=request.path_params,
            query=request.query_params.multi_items(),
            content_type=request.headers.get("content-type"),
            body=await _read_body(request, rt.settings) if route.body is not None else b"",
        )
        flow = handle(route.name, rt.ctx, inputs, rt.flusher.telemetry)
        return _to_starlette(await run_async(flow, rt.execute))

    view.__name__ = route.name
    return view


class ChatbotMiddleware:
    """Pure ASGI: admits the request, then lets :class:`Exchange` finish the response."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.rt = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rt = self.rt
        client = scope.get("client")
        ex = Exchange(rt.settings, COLOR, scope["method"], scope["path"], Headers(scope=scope),
                      client[0] if client else None, rt.flusher.telemetry, capture=rt.capture,
                      query_string=scope.get("query_string", b""))
        scope[EXCHANGE] = ex
        early: Response | None
        try:
            early = ex.admit()
            if early is None and ex.needs_rate_limit():
                await run_async(ex.rate_limit_flow(rt.ctx), rt.execute)
        except ApiError as err:
            early = ex.error(err)
        except Exception as err:
            log.error("unhandled error", exc_info=err, extra={"request_id": ex.request_id})
            early = ex.internal_error()
        if early is not None:
            await self._send(ex, early, send)
            return

        started: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, receive, capture)
            headers = Headers(raw=started["headers"])
            extra = {k: v for k, v in headers.items()
                     if k not in ("content-type", "content-length")}
            resp = Response(started["status"], b"".join(chunks),
                            content_type=headers.get("content-type", ""), headers=extra)
        except BodyUnreadable:
            return  # never acted on, never counted: the server refused it or the client left
        except Exception as err:
            log.error("unhandled error", exc_info=err, extra={"request_id": ex.request_id})
            resp = ex.internal_error()
        await self._send(ex, resp, send)

    @staticmethod
    async def _send(ex: Exchange, resp: Response, send: Send) -> None:
        headers = ex.finish(resp)
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        raw.append((b"content-length", str(len(resp.body)).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": raw})
        body = b"" if ex.method == "HEAD" else resp.body
        await send({"type": "http.response.body", "body": body})


def freeze_startup_heap() -> None:
    """Move what start-up built (modules, botocore's service models, the clients) out of the
    collector's reach. A full collection stops the event loop, and so every request of the
    worker, while it walks the whole heap: up to ~200 ms per gen-2 pass before, ~45 ms after
    (docs/performance.md). Objects made later are collected as before. Once per process."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    logs.configure(COLOR, settings.log_level)
    runtime = Runtime(settings, Flusher(settings), Context(settings),
                      capture=QueuedCaptureWriter.from_settings(settings, COLOR))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime.aws = await AsyncAws.open(settings, stack)
            runtime.flusher.start(runtime.aws)
            freeze_startup_heap()
            try:
                yield
            finally:
                await runtime.flusher.close()
                if runtime.capture is not None:  # the last lines, off the event loop
                    await asyncio.to_thread(runtime.capture.close)
                runtime.aws = None

    app = FastAPI(title="Chatbot API", version=settings.app_version, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)
    app.state.runtime = runtime
    for route in ROUTES:
        methods = [route.method, "HEAD"] if route.method == "GET" else [route.method]
        app.add_api_route(route.path, _view(route, runtime), methods=methods,
                          name=route.name, include_in_schema=False)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> StarletteResponse:  # green only: the one deliberate difference
        return docs_ui.swagger_page()  # its assets from this package, not a CDN

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> StarletteResponse:
        return docs_ui.redoc_page()

    @app.get(docs_ui.ASSET_PREFIX + "{name}", include_in_schema=False)
    async def docs_asset(name: str) -> StarletteResponse:
        found = docs_ui.asset(name)
        if found is None:
            raise StarletteHTTPException(404)  # the envelope, as for any unknown path
        body, content_type = found
        return StarletteResponse(body, media_type=content_type)

    def exchange(request: Request) -> Exchange:
        return request.scope[EXCHANGE]  # type: ignore[no-any-return]

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> StarletteResponse:
        return _to_starlette(exchange(request).error(err))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> StarletteResponse:
        ex = exchange(request)
        if err.status_code in (404, 405):
            return _to_starlette(ex.unrouted())
        log.warning("unexpected HTTP exception", extra={"status": err.status_code,
                                                        "request_id": ex.request_id})
        return _to_starlette(ex.internal_error())

    app.add_middleware(ChatbotMiddleware, runtime=runtime)
    return app

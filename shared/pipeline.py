"""What happens around every request, in both colors: one :class:`Exchange` per request.

The app adapters (a Flask before/after pair, a pure ASGI middleware) create an Exchange, call
:meth:`Exchange.admit` before routing, run the handler, then let :meth:`Exchange.finish` decide
every response header, compress, record metrics and write the access log line (and, when
``CAPTURE_PATH`` is set, the capture line: the adapters hand over the raw query string and set
:attr:`Exchange.body` when a handler reads the body).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from shared import logs, prom
from shared import web as w
from shared.calls import Flow
from shared.capture import CaptureWriter
from shared.errors import ApiError, ErrorCode, error_body
from shared.flows import Context, rate_limit
from shared.metrics import MetricBuffer
from shared.perfwindow import PerfWindow
from shared.ratelimit import RateDecision, identity
from shared.routes import Route, allow_header, endpoint_label, routes_for_path
from shared.settings import Color, Settings

JSON = "application/json"


class HeaderLookup(Protocol):
    """Case-insensitive header access: werkzeug's and Starlette's ``Headers`` both fit."""

    def get(self, key: str, /) -> str | None: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass
class Telemetry:
    """Per-process sinks for request observations (CloudWatch buffer, perf ring)."""

    buffer: MetricBuffer
    window: PerfWindow


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Exchange:
    settings: Settings
    color: Color
    method: str
    path: str
    headers: HeaderLookup
    remote_addr: str | None
    telemetry: Telemetry | None = None
    capture: CaptureWriter | None = None  # CAPTURE_PATH's writer; None: capture is off
    query_string: bytes = b""  # raw, as received (only capture reads it)
    body: bytes = b""  # the raw body, set by the adapter's _read_body (only capture reads it)
    perf: Callable[[], float] = time.perf_counter
    started: float = 0.0
    request_id: str = ""
    route: Route | None = None
    template: str | None = None
    rate: RateDecision | None = None
    cors: w.Cors = field(default_factory=w.Cors)

    def __post_init__(self) -> None:
        self.started = self.perf()
        self.request_id = w.request_id(self.headers.get(w.REQUEST_ID_HEADER))
        candidates = routes_for_path(self.path)
        self.template = candidates[0].path if candidates else None
        self.route = next((r for r in candidates if r.method == self.method
                           or (self.method == "HEAD" and r.method == "GET")), None)

    # --- before the handler -----------------------------------------------------------------

    def admit(self) -> Response | None:
        """Path length, header sizes, CORS, auth, declared body size. Returns a response to send
        at once (a preflight), else None.

        Raises ApiError for an over-long path, a refused preflight, a missing/bad API key or a
        declared body over the limit. After this, an
        ``/api`` request must pass :meth:`rate_limit_flow` (run by the adapter's driver).
        """
        h = self.headers
        if w.uri_too_long(self.path, self.query_string):
            raise ApiError(ErrorCode.URI_TOO_LONG)
        if w.headers_too_large(h.items()):
            raise ApiError(ErrorCode.HEADERS_TOO_LARGE)
        self.cors = w.cors(self.settings, self.method, h.get("Origin"),
                           h.get("Access-Control-Request-Method"),
                           h.get("Access-Control-Request-Headers"))
        if self.cors.preflight:
            return Response(204, b"", content_type="")
        if w.requires_auth(self.path):
            w.check_api_key(self.settings, h.get("X-API-Key"))
        w.check_metrics_access(self.settings, self.path, h.get("Authorization"))
        length = h.get("Content-Length")
        if length is not None:
            w.check_content_length(int(length) if length.isdigit() else None, self.settings)
        return None

    def needs_rate_limit(self) -> bool:
        return (self.settings.rate_limit_enabled and w.requires_auth(self.path)
                and self.route is not None)

    def rate_limit_flow(self, ctx: Context) -> Flow[None]:
        h = self.headers
        api_key = h.get("X-API-Key") if self.settings.api_keys else None
        ident = identity(api_key, w.client_ip(self.settings, self.remote_addr,
                                              w.forwarded_for(h.items())))
        self.rate = yield from rate_limit(ctx, ident)
        if not self.rate.allowed:
            raise ApiError(ErrorCode.RATE_LIMITED, headers=self.rate.headers())

    # --- errors ---------------------------------------------------------------------------------

    def error(self, err: ApiError) -> Response:
        return Response(err.status, error_body(err, self.request_id), headers=dict(err.headers))

    def not_found(self) -> Response:
        return self.error(ApiError(ErrorCode.NOT_FOUND))

    def method_not_allowed(self) -> Response:
        return self.error(ApiError(ErrorCode.METHOD_NOT_ALLOWED,
                                   headers={"Allow": allow_header(self.path)}))

    def internal_error(self) -> Response:
        return self.error(ApiError(ErrorCode.INTERNAL_ERROR))

    def unrouted(self) -> Response:
        """The answer when no route takes this method and path."""
        return self.not_found() if self.template is None else self.method_not_allowed()

    # --- after the handler --------------------------------------------------------------------

    def finish(self, response: Response) -> list[tuple[str, str]]:
        """Final headers (and body, compressed in place); records the request."""
        headers: dict[str, str] = {}
        if response.content_type:
            headers["Content-Type"] = response.content_type
        headers.update(w.SECURITY_HEADERS)
        if response.content_type == JSON:
            headers["Content-Security-Policy"] = w.API_CSP
        headers.update(response.headers)
        if self.rate is not None:
            headers.update(self.rate.headers())
        vary = [self.cors.headers.get("Vary"), headers.get("Vary")]
        headers.update(self.cors.headers)
        if response.status != 204 and self.method != "HEAD":
            response.body, encoding = w.maybe_gzip(response.body, self.headers.get(
                "Accept-Encoding"), self.settings)
            vary.append(encoding.pop("Vary", None))
            headers.update(encoding)
        merged = w.merge_vary(*vary)
        if merged:
            headers["Vary"] = merged
        headers[w.REQUEST_ID_HEADER] = self.request_id
        headers["X-App-Color"] = self.color
        self.record(response.status, headers)
        return list(headers.items())

    def record(self, status: int, response_headers: dict[str, str] | None = None) -> None:
        elapsed = self.perf() - self.started
        endpoint = endpoint_label(self.template)
        if self.telemetry is not None:
            self.telemetry.window.record(elapsed * 1000, status)
            if self.settings.metrics_enabled and not self.telemetry.buffer.record(
                    endpoint, status, elapsed * 1000):
                prom.DATUMS_DROPPED.labels(self.color).inc()
        prom.observe(self.color, endpoint, self.method, status, elapsed)
        logs.access(request_id=self.request_id, method=self.method, path=self.path,
                    status=status, duration_ms=elapsed * 1000, client=self.remote_addr)
        if self.capture is not None:
            self.capture.capture(request_id=self.request_id, method=self.method, path=self.path,
                                 query_string=self.query_string, headers=self.headers,
                                 body=self.body, status=status,
                                 response_headers=response_headers, duration_ms=elapsed * 1000)

"""Request rules both apps apply before and after a handler runs.

Parsing and validating bodies, path and query parameters; request ids; API keys; client IPs;
CORS; security headers; gzip. Each function takes plain values (strings, bytes, header pairs), so
Flask and Starlette call them the same way.
"""

from __future__ import annotations

import gzip
import hmac
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from shared.contracts import ChatRequest, ErrorDetail, SessionId, UserId
from shared.errors import ApiError, ErrorCode, validation_details
from shared.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_JSON_DEPTH = 32
MAX_PATH_CHARS = 2048
# The request target as sent (percent-encoded path, "?", query): over this, 414 URI_TOO_LONG in
# both colors. gunicorn's own request-line limit (HTML 414, at most 8190 bytes) is switched off
# in legacy_flask/gunicorn.conf.py, so this rule decides; uvicorn refuses targets over 64 KiB.
MAX_TARGET_BYTES = 8000
# Header limits, decided here rather than by each server (gunicorn answers its own HTML 431 past
# 8190 bytes a line or 100 fields; uvicorn has no limit): gunicorn's are raised past these.
MAX_HEADER_LINE_BYTES = 8190
MAX_HEADER_FIELDS = 100
_PATH_SAFE = "/!$&'()*+,;=:@-._~"

SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# /docs and /redoc (green only) load their UI; every other answer is data.
API_CSP = "default-src 'none'; frame-ancestors 'none'"

CORS_ALLOW_METHODS = "GET, POST, DELETE"
CORS_ALLOW_HEADERS = ("content-type", "x-api-key", "x-request-id")
CORS_EXPOSE_HEADERS = "X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, Retry-After"
CORS_MAX_AGE = "600"


def request_id(incoming: str | None) -> str:
    """Echo a well-formed incoming X-Request-ID, otherwise generate one."""
    if incoming and _REQUEST_ID_RE.match(incoming):
        return incoming
    return uuid.uuid4().hex


def target_bytes(path: str, query_string: bytes) -> int:
    """Bytes of the request target a client sends for this decoded path and raw query."""
    encoded = quote(path, safe=_PATH_SAFE)
    return len(encoded) + (1 + len(query_string) if query_string else 0)


def uri_too_long(path: str, query_string: bytes) -> bool:
    return (len(path) > MAX_PATH_CHARS
            or target_bytes(path, query_string) > MAX_TARGET_BYTES)


def headers_too_large(headers: Iterable[tuple[str, str]]) -> bool:
    """More than MAX_HEADER_FIELDS header names, or one ``name: value`` line over
    MAX_HEADER_LINE_BYTES. Repeated names count once, their values joined with "," as a WSGI
    server joins them (blue never sees them apart); values arrive decoded as Latin-1, so a
    character is a byte."""
    lines: dict[str, int] = {}
    for name, value in headers:
        key = name.lower()
        lines[key] = lines[key] + 1 + len(value) if key in lines else len(name) + 2 + len(value)
    return len(lines) > MAX_HEADER_FIELDS or any(n > MAX_HEADER_LINE_BYTES
                                                  for n in lines.values())


# --- bodies -------------------------------------------------------------------------------------

def is_json_content_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


def check_content_length(length: int | None, settings: Settings) -> None:
    """Refuse a declared oversize body before reading any of it."""
    if length is not None and length > settings.max_body_bytes:
        raise ApiError(ErrorCode.PAYLOAD_TOO_LARGE, details=_limit_detail(settings))


def too_large(settings: Settings) -> ApiError:
    return ApiError(ErrorCode.PAYLOAD_TOO_LARGE, details=_limit_detail(settings))


def _limit_detail(settings: Settings) -> list[ErrorDetail]:
    return [ErrorDetail(loc=["body"], msg=f"at most {settings.max_body_bytes} bytes",
                        type="too_large")]


def _malformed(msg: str) -> ApiError:
    return ApiError(ErrorCode.MALFORMED_JSON, f"The request body is not valid JSON: {msg}.")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _malformed(f"duplicate key {key[:64]!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> Any:
    raise _malformed(f"{name} is not JSON")


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json(content_type: str | None, body: bytes) -> Any:
    if not is_json_content_type(content_type):
        raise ApiError(ErrorCode.UNSUPPORTED_MEDIA_TYPE)
    if not body.strip():
        raise _malformed("the body is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("the body is not UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except RecursionError:
        raise _malformed(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise _malformed(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        if isinstance(exc, ApiError):
            raise
        raise _malformed("a number is too large") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise _malformed(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def parse_chat_request(content_type: str | None, body: bytes) -> ChatRequest:
    value = parse_json(content_type, body)
    try:
        return ChatRequest.model_validate(value)
    except ValidationError as exc:
        raise ApiError(ErrorCode.VALIDATION_ERROR,
                       details=validation_details(exc.errors(), ("body",))) from None


# --- path and query parameters ---------------------------------------------------------------

_SESSION_ID = TypeAdapter(SessionId)
_USER_ID = TypeAdapter(UserId)


def _path_param(adapter: TypeAdapter[str], name: str, value: str) -> str:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise ApiError(ErrorCode.VALIDATION_ERROR,
                       details=validation_details(exc.errors(), ("path", name))) from None


def session_id_param(value: str) -> str:
    return _path_param(_SESSION_ID, "session_id", value)


def user_id_param(value: str) -> str:
    return _path_param(_USER_ID, "user_id", value)


class ListQuery(BaseModel):
    limit: int = Field(default=20, ge=1, le=100, description="Page size, 1-100.")
    cursor: str | None = Field(default=None, max_length=1024,
                               description="next_cursor of the previous page.")


def list_query(pairs: Iterable[tuple[str, str]]) -> ListQuery:
    """Validate query parameters. A repeated parameter counts by its first value."""
    first: dict[str, str] = {}
    for key, value in pairs:
        first.setdefault(key, value)
    wanted = {k: v for k, v in first.items() if k in ListQuery.model_fields}
    try:
        return ListQuery.model_validate(wanted)
    except ValidationError as exc:
        raise ApiError(ErrorCode.VALIDATION_ERROR,
                       details=validation_details(exc.errors(), ("query",))) from None


# --- auth and client identity ---------------------------------------------------------------

def check_api_key(settings: Settings, provided: str | None) -> str | None:
    """Refuse a missing or wrong key when API_KEYS is set. Constant time over every key."""
    keys = settings.api_key_values()
    if not keys:
        return None
    candidate = (provided or "").encode()
    matched = False
    for key in keys:  # no early exit: the time does not depend on which key matched
        matched |= hmac.compare_digest(candidate, key)
    if not matched:
        raise ApiError(ErrorCode.UNAUTHORIZED)
    return provided


def forwarded_for(headers: Iterable[tuple[str, str]]) -> str | None:
    """Every ``X-Forwarded-For`` value, in order, joined with "," (a WSGI server joins repeated
    headers so; Starlette keeps them apart): both colors see the same hops."""
    values = [v for k, v in headers if k.lower() == "x-forwarded-for"]
    return ",".join(values) if values else None


def client_ip(settings: Settings, remote_addr: str | None, forwarded_for: str | None) -> str:
    """The client's address, as the rate limiter keys it when there is no API key.

    Without TRUST_FORWARDED_FOR: the peer address. With it: the X-Forwarded-For hop that sits
    TRUSTED_PROXY_HOPS from the right. Each proxy appends the address it was connected from, so
    the last hop is what the ALB saw; hops to the left of the trusted ones are whatever the
    client wrote and are never used. A header with fewer hops than trusted proxies did not come
    through all of them: the peer address then.
    """
    peer = remote_addr or "unknown"
    if not settings.trust_forwarded_for or not forwarded_for:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    n = settings.trusted_proxy_hops
    if len(hops) < n or not hops[-n]:
        return peer
    return hops[-n]


METRICS_PATHS = ("/metrics", "/metrics/performance")


def check_metrics_access(settings: Settings, path: str, authorization: str | None) -> None:
    """METRICS_ACCESS for /metrics and /metrics/performance: ``open`` lets every request in,
    ``off`` answers 404 NOT_FOUND (as if there were no such route), ``key`` needs
    ``Authorization: Bearer <METRICS_API_KEY>`` (a Prometheus scrape job's ``authorization``)
    and answers 401 UNAUTHORIZED without it. Compared in constant time."""
    if path not in METRICS_PATHS or settings.metrics_access == "open":
        return
    if settings.metrics_access == "off":
        raise ApiError(ErrorCode.NOT_FOUND)
    key = settings.metrics_api_key.get_secret_value() if settings.metrics_api_key else ""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if not key or scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), key.encode()):
        raise ApiError(ErrorCode.UNAUTHORIZED,
                       "A valid Authorization: Bearer token is required for the metrics.",
                       headers={"WWW-Authenticate": "Bearer"})


def requires_auth(path: str) -> bool:
    return path.startswith("/api/")


# --- CORS -----------------------------------------------------------------------------------------

@dataclass
class Cors:
    preflight: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def cors(settings: Settings, method: str, origin: str | None,
         request_method: str | None, request_headers: str | None) -> Cors:
    """CORS for one request. A refused preflight raises CORS_ORIGIN_NOT_ALLOWED."""
    preflight = method == "OPTIONS" and origin is not None and request_method is not None
    if origin is None:
        return Cors()
    wildcard = "*" in settings.cors_origins
    allowed = wildcard or origin.rstrip("/") in settings.cors_origins
    if not allowed:
        if preflight:
            raise ApiError(ErrorCode.CORS_ORIGIN_NOT_ALLOWED)
        return Cors(headers={"Vary": "Origin"})
    headers = {
        "Access-Control-Allow-Origin": "*" if wildcard else origin,
        "Vary": "Origin",
    }
    if settings.cors_allow_credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    if not preflight:
        headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        return Cors(headers=headers)
    asked = [h.strip().lower() for h in (request_headers or "").split(",") if h.strip()]
    refused = [h for h in asked if h not in CORS_ALLOW_HEADERS]
    if (request_method or "").upper() not in CORS_ALLOW_METHODS.split(", ") or refused:
        raise ApiError(ErrorCode.CORS_ORIGIN_NOT_ALLOWED,
                       "This method or header is not allowed cross-origin.")
    headers["Access-Control-Allow-Methods"] = CORS_ALLOW_METHODS
    headers["Access-Control-Allow-Headers"] = ", ".join(CORS_ALLOW_HEADERS)
    headers["Access-Control-Max-Age"] = CORS_MAX_AGE
    return Cors(preflight=True, headers=headers)


# --- response encoding ------------------------------------------------------------------------

def accepts_gzip(accept_encoding: str | None) -> bool:
    for part in (accept_encoding or "").lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            q = params.strip()
            if not q.startswith("q="):
                return True
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
    return False


def maybe_gzip(body: bytes, accept_encoding: str | None, settings: Settings
               ) -> tuple[bytes, dict[str, str]]:
    """Compress bodies of at least GZIP_MIN_BYTES when the client accepts gzip."""
    if len(body) < settings.gzip_min_bytes:
        return body, {}
    if not accepts_gzip(accept_encoding):
        return body, {"Vary": "Accept-Encoding"}
    return gzip.compress(body, compresslevel=5, mtime=0), {
        "Content-Encoding": "gzip", "Vary": "Accept-Encoding"}


def merge_vary(*values: str | None) -> str:
    seen: list[str] = []
    for value in values:
        for part in (value or "").split(","):
            token = part.strip()
            if token and token.lower() not in (s.lower() for s in seen):
                seen.append(token)
    return ", ".join(seen)

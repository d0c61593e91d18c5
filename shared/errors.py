"""Error codes, their HTTP status, and the one error envelope both colors send.

Every non-2xx answer of either app is built here, so the status, the ``error_code`` and the
message a client sees are decided once. The README's error table is generated from
:data:`CATALOGUE` (``python -m shared.errors``), and a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.contracts import ErrorDetail, ErrorResponse


class ErrorCode(StrEnum):
    # client errors
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    URI_TOO_LONG = "URI_TOO_LONG"
    HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    MALFORMED_JSON = "MALFORMED_JSON"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNAUTHORIZED = "UNAUTHORIZED"
    RATE_LIMITED = "RATE_LIMITED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_USER_MISMATCH = "SESSION_USER_MISMATCH"
    SESSION_CONFLICT = "SESSION_CONFLICT"
    CORS_ORIGIN_NOT_ALLOWED = "CORS_ORIGIN_NOT_ALLOWED"
    # upstream: the Bedrock agent
    AGENT_THROTTLED = "AGENT_THROTTLED"
    AGENT_UNAVAILABLE = "AGENT_UNAVAILABLE"
    AGENT_TIMEOUT = "AGENT_TIMEOUT"
    AGENT_ERROR = "AGENT_ERROR"
    AGENT_BAD_RESPONSE = "AGENT_BAD_RESPONSE"
    # upstream: DynamoDB
    STORE_THROTTLED = "STORE_THROTTLED"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    SESSION_WRITE_FAILED = "SESSION_WRITE_FAILED"
    # anything else
    INTERNAL_ERROR = "INTERNAL_ERROR"


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    message: str
    when: str
    retry_after_s: int | None = None


CATALOGUE: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.NOT_FOUND: ErrorSpec(404, "No route matches this path.", "unknown route"),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorSpec(
        405, "This method is not allowed on this path; see the Allow header.", "wrong method"
    ),
    ErrorCode.PAYLOAD_TOO_LARGE: ErrorSpec(
        413,
        "The request body is larger than the server accepts.",
        "body over MAX_BODY_BYTES (checked before the body is read whole)",
    ),
    ErrorCode.URI_TOO_LONG: ErrorSpec(
        414,
        "The request path is too long.",
        "path over 2048 characters, or a request target over 8000 bytes",
    ),
    ErrorCode.HEADERS_TOO_LARGE: ErrorSpec(
        431,
        "A request header is too large, or there are too many headers.",
        "a header line over 8190 bytes, or more than 100 headers",
    ),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: ErrorSpec(
        415,
        "The request body must be JSON, sent with Content-Type: application/json.",
        "missing or non-JSON Content-Type on a request with a body",
    ),
    ErrorCode.MALFORMED_JSON: ErrorSpec(
        400,
        "The request body is not valid JSON.",
        "empty, truncated or invalid JSON, invalid UTF-8, duplicate keys, nesting too deep",
    ),
    ErrorCode.VALIDATION_ERROR: ErrorSpec(
        422,
        "The request does not match the contract; see details.",
        "body, path or query parameter breaks the contract (details lists each field)",
    ),
    ErrorCode.UNAUTHORIZED: ErrorSpec(
        401, "A valid X-API-Key header is required.",
        "API_KEYS set and key missing or wrong; on /metrics*, METRICS_ACCESS=key and no valid "
        "Authorization: Bearer token (WWW-Authenticate: Bearer)"
    ),
    ErrorCode.RATE_LIMITED: ErrorSpec(
        429,
        "Too many requests; retry after the number of seconds in Retry-After.",
        "more than RATE_LIMIT_REQUESTS in the current window for this key or client IP "
        "(Retry-After: seconds to the next window)",
    ),
    ErrorCode.SESSION_NOT_FOUND: ErrorSpec(
        404, "No such session (it may have expired).", "session id unknown, deleted or expired"
    ),
    ErrorCode.SESSION_USER_MISMATCH: ErrorSpec(
        409,
        "This session belongs to a different user_id.",
        "chat names an existing session with another user_id",
    ),
    ErrorCode.SESSION_CONFLICT: ErrorSpec(
        409,
        "The session was changed by a concurrent request; retry.",
        "two chats on one session raced; the later write was refused, nothing was overwritten",
    ),
    ErrorCode.CORS_ORIGIN_NOT_ALLOWED: ErrorSpec(
        403,
        "This origin is not allowed to call the API from a browser.",
        "CORS preflight (OPTIONS) from an origin not in CORS_ORIGINS",
    ),
    ErrorCode.AGENT_THROTTLED: ErrorSpec(
        503,
        "The agent is throttling requests; retry later.",
        "agent ThrottlingException / ServiceQuotaExceededException (before or mid-stream)",
        retry_after_s=1,
    ),
    ErrorCode.AGENT_UNAVAILABLE: ErrorSpec(
        503,
        "The agent is unavailable.",
        "agent unreachable (connection refused/reset), 503, dependency failed, model not ready",
        retry_after_s=1,
    ),
    ErrorCode.AGENT_TIMEOUT: ErrorSpec(
        504,
        "The agent did not answer in time.",
        "connect/read timeout or the overall AGENT_DEADLINE_S passed",
    ),
    ErrorCode.AGENT_ERROR: ErrorSpec(
        502,
        "The agent failed to answer.",
        "agent returned an error (4xx/5xx) or raised an exception mid-stream",
    ),
    ErrorCode.AGENT_BAD_RESPONSE: ErrorSpec(
        502,
        "The agent sent a response that could not be used.",
        "malformed event-stream frame, or a completion with no text",
    ),
    ErrorCode.STORE_THROTTLED: ErrorSpec(
        503,
        "The session store is throttling requests; retry later.",
        "DynamoDB throughput/throttling exceptions",
        retry_after_s=1,
    ),
    ErrorCode.STORE_UNAVAILABLE: ErrorSpec(
        503,
        "The session store is unavailable.",
        "DynamoDB unreachable, timed out, table missing, or failed",
        retry_after_s=1,
    ),
    ErrorCode.SESSION_WRITE_FAILED: ErrorSpec(
        503,
        "The answer was not returned because the session could not be saved; retry.",
        "the agent answered but persisting the session failed or could not be confirmed "
        "(no silent loss)",
        retry_after_s=1,
    ),
    ErrorCode.INTERNAL_ERROR: ErrorSpec(
        500, "Internal server error.", "anything unexpected (never exception text)"
    ),
}


@dataclass
class ApiError(Exception):
    """An error with a decided status and code. Raise it anywhere; both apps render it."""

    code: ErrorCode
    message: str | None = None
    details: list[ErrorDetail] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.code.value)
        retry = CATALOGUE[self.code].retry_after_s
        if retry is not None:
            self.headers.setdefault("Retry-After", str(retry))

    @property
    def status(self) -> int:
        return CATALOGUE[self.code].status

    @property
    def text(self) -> str:
        return self.message or CATALOGUE[self.code].message


def utcnow() -> datetime:
    return datetime.now(UTC)


def error_body(err: ApiError, request_id: str, now: datetime | None = None) -> bytes:
    envelope = ErrorResponse(
        error=err.text,
        error_code=err.code.value,
        timestamp=now or utcnow(),
        request_id=request_id,
        details=err.details,
    )
    return envelope.model_dump_json(exclude_none=True).encode()


def validation_details(errors: list[Any], prefix: tuple[str | int, ...]) -> list[ErrorDetail]:
    """Turn pydantic's ``ValidationError.errors()`` into the contract's ``details`` list.

    Only ``loc``, ``msg`` and ``type`` are kept: pydantic's ``input`` and ``ctx`` may echo
    client data or exception objects back, and ``url`` changes with the pydantic version.
    """
    return [
        ErrorDetail(loc=[*prefix, *e["loc"]], msg=str(e["msg"]), type=str(e["type"]))
        for e in errors
    ]


def markdown_table() -> str:
    """The README's error table."""
    rows = ["| status | error_code | when | Retry-After |", "|---|---|---|---|"]
    for code, spec in sorted(CATALOGUE.items(), key=lambda kv: (kv[1].status, kv[0].value)):
        retry = f"{spec.retry_after_s} s" if spec.retry_after_s else ""
        rows.append(f"| {spec.status} | `{code.value}` | {spec.when} | {retry} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())

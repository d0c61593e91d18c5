"""The Pydantic v2 contracts of the API: every request and response body of both colors.

The OpenAPI document both apps serve is generated from these models (``shared.openapi``), and
the parity harness parses every response with them to tell a contract violation apart from a
difference between the colors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

SESSION_ID_PATTERN = r"^[0-9a-zA-Z._:-]{2,100}$"
USER_ID_PATTERN = r"^[0-9a-zA-Z._:@-]{1,128}$"
MESSAGE_MAX_CHARS = 4000
# _not_blank as a JSON-schema pattern (documentation only; the validator below decides): at
# least one character that is neither whitespace nor NUL, and no NUL anywhere
MESSAGE_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"



def _has_alnum(name: str) -> AfterValidator:
    # ".", ".." and the like are dot-segments that URL clients rewrite (GET /users/../sessions
    # is sent as GET /sessions): an id in a path must hold a letter or a digit to be reachable
    def check(value: str) -> str:
        if not any(c.isalnum() for c in value):
            raise ValueError(f"{name} must contain a letter or a digit")
        return value
    return AfterValidator(check)


SessionId = Annotated[
    str, StringConstraints(pattern=SESSION_ID_PATTERN), _has_alnum("session_id")
]
UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN), _has_alnum("user_id")]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("message must contain more than whitespace")
    if "\x00" in value:
        raise ValueError("message must not contain NUL characters")
    return value


Message = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MESSAGE_MAX_CHARS),
    AfterValidator(_not_blank),
]


class _Contract(BaseModel):
    """A response body: closed (an undocumented field is a contract violation, which the parity
    harness reports). Request bodies that tolerate unknown fields say so (``ChatRequest``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ChatRequest(_Contract):
    """Body of ``POST /api/v1/chat``. Unknown fields are ignored (as the legacy app did)."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        json_schema_extra={
            "examples": [
                {"message": "Hello, how can you help me?", "session_id": "sess_123",
                 "user_id": "user_456"}
            ]
        },
    )

    message: Message = Field(description="The user's message: 1-4000 characters, not blank, "
                                         "no NUL.", json_schema_extra={"pattern": MESSAGE_PATTERN})
    session_id: SessionId | None = Field(
        default=None, description="Continue this session; a new id is generated when absent."
    )
    user_id: UserId | None = Field(default=None, description="Owner of the session.")


class ChatResponse(_Contract):
    response: str = Field(description="The agent's answer.")
    session_id: SessionId
    timestamp: datetime
    processing_time_ms: float = Field(ge=0)
    tokens_used: int | None = Field(
        default=None, ge=0, description="Only known when the agent reports usage in a trace."
    )


class ChatMessage(_Contract):
    role: Literal["user", "assistant"]
    content: str
    timestamp: datetime


class SessionRecord(_Contract):
    """A stored session, as ``GET /api/v1/chat/sessions/{session_id}`` returns it."""

    session_id: SessionId
    user_id: UserId | None = None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    message_count: int = Field(ge=0, description="Messages exchanged, user and assistant.")
    messages: list[ChatMessage] = Field(
        description="The most recent messages, oldest first (bounded by SESSION_HISTORY_LIMIT)."
    )


class SessionSummary(_Contract):
    session_id: SessionId
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    message_count: int = Field(ge=0)


class SessionList(_Contract):
    user_id: UserId
    sessions: list[SessionSummary]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next page; null on the last page."
    )


class SessionDeleted(_Contract):
    session_id: SessionId
    deleted: Literal[True] = True


class HealthResponse(_Contract):
    status: Literal["healthy"]
    version: str
    environment: str
    timestamp: datetime


class DependencyCheck(_Contract):
    name: Literal["dynamodb", "agent"]
    status: Literal["up", "down"]
    latency_ms: float = Field(ge=0)
    error: str | None = Field(default=None, description="An error code, never exception text.")


class DetailedHealthResponse(_Contract):
    status: Literal["healthy", "unhealthy"]
    version: str
    environment: str
    timestamp: datetime
    checks: list[DependencyCheck]


class PerformanceSnapshot(_Contract):
    """Request statistics over the last ``window_s`` seconds for the whole instance."""

    qps: float = Field(ge=0)
    p50_ms: float = Field(ge=0)
    p90_ms: float = Field(ge=0)
    p99_ms: float = Field(ge=0)
    error_rate: float = Field(ge=0, le=1, description="Share of requests answered with a 5xx.")
    requests: int = Field(ge=0)
    window_s: int = Field(gt=0)


class ErrorDetail(_Contract):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(_Contract):
    error: str = Field(description="A message a client developer can act on.")
    error_code: str = Field(description="Stable machine-readable code; see the error table.")
    timestamp: datetime
    request_id: str
    details: list[ErrorDetail] | None = None

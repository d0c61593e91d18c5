"""The route table: the one list of paths, methods and documented answers of the API.

Both apps register their handlers from this table by name, the OpenAPI document is generated
from it, and the parity harness reads it for its coverage matrix (route x documented status).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import BaseModel

from shared.contracts import (
    ChatRequest,
    ChatResponse,
    DetailedHealthResponse,
    ErrorResponse,
    HealthResponse,
    PerformanceSnapshot,
    SessionDeleted,
    SessionList,
    SessionRecord,
)


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    summary: str
    tag: str
    ok: int = 200
    ok_model: type[BaseModel] | None = None
    ok_media: str = "application/json"
    body: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    query: tuple[str, ...] = ()
    auth: bool = False
    extra_ok_models: dict[int, type[BaseModel]] = field(default_factory=dict)

    @property
    def statuses(self) -> tuple[int, ...]:
        return tuple(sorted({self.ok, *self.extra_ok_models, *self.errors}))

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(re.findall(r"{(\w+)}", self.path))

    def model_for(self, status: int) -> type[BaseModel] | None:
        if status == self.ok:
            return self.ok_model
        if status in self.extra_ok_models:
            return self.extra_ok_models[status]
        return ErrorResponse if status in self.errors else None


# Statuses any route can answer: headers too large (decided before routing), unexpected failure.
COMMON_ERRORS = (431, 500)
API_ERRORS = (*COMMON_ERRORS, 401, 429, 503)  # auth, rate limit, store down (rate-limit counter)
BODY_ERRORS = (400, 413, 415, 422)
# A route with a path parameter: a value holding "/" (or empty) matches no route (404), one
# that makes the path longer than 2048 characters is 414, any other bad value 422.
PATH_ERRORS = (404, 414, 422)

ROUTES: tuple[Route, ...] = (
    Route("health", "GET", "/health", "Liveness: no dependency is called.", "health",
          ok_model=HealthResponse, errors=COMMON_ERRORS),
    Route("health_detailed", "GET", "/health/detailed",
          "Readiness: checks DynamoDB and the agent endpoint.", "health",
          ok_model=DetailedHealthResponse, errors=COMMON_ERRORS,
          extra_ok_models={503: DetailedHealthResponse}),
    Route("chat", "POST", "/api/v1/chat", "Send a message to the agent.", "chat",
          ok_model=ChatResponse, body=ChatRequest, auth=True,
          errors=tuple(sorted({*API_ERRORS, *BODY_ERRORS, 409, 502, 504}))),
    Route("get_session", "GET", "/api/v1/chat/sessions/{session_id}", "A stored session.",
          "sessions", ok_model=SessionRecord, auth=True,
          errors=tuple(sorted({*API_ERRORS, *PATH_ERRORS}))),
    Route("delete_session", "DELETE", "/api/v1/chat/sessions/{session_id}",
          "Delete a session.", "sessions", ok_model=SessionDeleted, auth=True,
          errors=tuple(sorted({*API_ERRORS, *PATH_ERRORS}))),
    Route("list_user_sessions", "GET", "/api/v1/users/{user_id}/sessions",
          "A user's sessions, newest first, paginated.", "sessions", ok_model=SessionList,
          auth=True, query=("limit", "cursor"), errors=tuple(sorted({*API_ERRORS, *PATH_ERRORS}))),
    Route("metrics_performance", "GET", "/metrics/performance",
          "Request statistics of the whole instance over the last 60 s.", "metrics",
          ok_model=PerformanceSnapshot, errors=COMMON_ERRORS),
    Route("metrics", "GET", "/metrics", "Prometheus text exposition for the whole instance.",
          "metrics", ok_media="text/plain", errors=COMMON_ERRORS),
    Route("openapi", "GET", "/openapi.json", "This document.", "meta",
          ok_media="application/json", errors=COMMON_ERRORS),
)

BY_NAME: dict[str, Route] = {r.name: r for r in ROUTES}
# Statuses every path can answer before any handler runs.
ROUTING_ERRORS = {404: "unknown route", 405: "wrong method", 403: "CORS preflight refused"}


def _regex(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"{\w+}", r"[^/]+", path) + "$")


_MATCHERS = [(_regex(r.path), r) for r in ROUTES]


def routes_for_path(path: str) -> list[Route]:
    return [route for rx, route in _MATCHERS if rx.match(path)]


def allow_header(path: str) -> str:
    """The Allow header for a 405: the route table's methods, with HEAD wherever GET is."""
    methods = {r.method for r in routes_for_path(path)}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def endpoint_label(route_path: str | None) -> str:
    """The metrics' Endpoint dimension: the route template, never the raw path."""
    return route_path or "unmatched"

"""The OpenAPI 3.1 document, generated from the route table and the contracts.

Both apps serve these exact bytes at ``/openapi.json`` (green also feeds them to /docs and
/redoc), so the document cannot differ between colors.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared import __version__
from shared.contracts import ErrorResponse, SessionId, UserId
from shared.errors import CATALOGUE
from shared.routes import ROUTES, Route
from shared.web import ListQuery

REF = "#/components/schemas/{model}"
API_KEY_SCHEME = {
    "type": "apiKey", "in": "header", "name": "X-API-Key",
    "description": "Required on /api routes wherever the server sets API_KEYS (every deployed "
                   "environment): missing or wrong is 401 UNAUTHORIZED. A server without "
                   "API_KEYS (local development) ignores it.",
}
# OpenAPI links: which answer feeds which request. They document how the operations chain and
# let a stateful client (Schemathesis) reach stored sessions instead of guessing ids.
_SESSION_FROM_BODY = {"session_id": "$response.body#/session_id"}
LINKS: dict[tuple[str, int], dict[str, dict[str, Any]]] = {
    ("chat", 200): {
        "GetSession": {"operationId": "get_session", "parameters": _SESSION_FROM_BODY},
        "DeleteSession": {"operationId": "delete_session", "parameters": _SESSION_FROM_BODY},
    },
    ("get_session", 200): {
        "DeleteSession": {"operationId": "delete_session", "parameters": _SESSION_FROM_BODY},
    },
    ("list_user_sessions", 200): {
        "NextPage": {"operationId": "list_user_sessions", "parameters": {
            "user_id": "$request.path.user_id", "cursor": "$response.body#/next_cursor"}},
        "FirstSession": {"operationId": "get_session", "parameters": {
            "session_id": "$response.body#/sessions/0/session_id"}},
    },
}


def _param_schema(name: str) -> dict[str, Any]:
    from pydantic import TypeAdapter

    if name == "session_id":
        return TypeAdapter(SessionId).json_schema()
    if name == "user_id":
        return TypeAdapter(UserId).json_schema()
    props = ListQuery.model_json_schema()["properties"][name]
    props.pop("title", None)
    return dict(props)


def _status_text(status: int) -> str:
    codes = [c.value for c, spec in CATALOGUE.items() if spec.status == status]
    return "Error: " + ", ".join(codes) if codes else "Error"


def _operation(route: Route, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": {},
    }
    params = [
        {"name": p, "in": "path", "required": True, "schema": _param_schema(p)}
        for p in route.path_params
    ] + [
        {"name": q, "in": "query", "required": False, "schema": _param_schema(q)}
        for q in route.query
    ]
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": refs[(route.body, "validation")]}}}
    if route.auth:
        op["security"] = [{"ApiKeyAuth": []}]
    for status in route.statuses:
        model = route.model_for(status)
        if status == route.ok and model is None:
            schema: dict[str, Any] = ({"type": "string"} if route.ok_media == "text/plain"
                                      else {"type": "object"})
            content = {route.ok_media: {"schema": schema}}
            description = "OK"
        else:
            assert model is not None
            content = {"application/json": {"schema": refs[(model, "serialization")]}}
            description = "OK" if model is not ErrorResponse else _status_text(status)
        op["responses"][str(status)] = {"description": description, "content": content}
        if (route.name, status) in LINKS:
            op["responses"][str(status)]["links"] = LINKS[(route.name, status)]
    return op


@cache
def openapi_document() -> dict[str, Any]:
    models: set[tuple[type[BaseModel], str]] = {(ErrorResponse, "serialization")}
    for route in ROUTES:
        if route.body is not None:
            models.add((route.body, "validation"))
        for status in route.statuses:
            model = route.model_for(status)
            if model is not None:
                models.add((model, "serialization"))
    ordered = sorted(models, key=lambda m: (m[0].__name__, m[1]))
    refs, defs = models_json_schema(ordered, ref_template=REF)  # type: ignore[arg-type]
    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Chatbot API",
            "version": __version__,
            "description": "One API served by two colors: blue (Flask) and green (FastAPI).",
        },
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"ApiKeyAuth": API_KEY_SCHEME},
        },
    }


@cache
def openapi_bytes() -> bytes:
    return json.dumps(openapi_document(), separators=(",", ":"), sort_keys=True).encode()

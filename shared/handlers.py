"""What each route does, given its inputs as plain values: one flow per request.

Both apps register every route of :data:`shared.routes.ROUTES` with a generic view that reads
the request, calls :func:`handle`, and drives the returned flow with its own SDK. Nothing about
a route's behaviour is written in an app.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel

from shared import prom
from shared import web as w
from shared.calls import Flow, LocalCall
from shared.flows import (
    Context,
    chat,
    delete_session,
    detailed_health,
    get_session,
    health,
    list_user_sessions,
)
from shared.openapi import openapi_bytes
from shared.pipeline import JSON, Response, Telemetry


@dataclass(frozen=True)
class Inputs:
    path_params: Mapping[str, str]
    query: Iterable[tuple[str, str]] = ()
    content_type: str | None = None
    body: bytes = b""


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(status, model.model_dump_json().encode())


def handle(name: str, ctx: Context, inputs: Inputs, telemetry: Telemetry | None
           ) -> Flow[Response]:
    """The flow for route ``name``. Raises ApiError (before or while running) for a refusal."""
    if name == "chat":
        request = w.parse_chat_request(inputs.content_type, inputs.body)
        return _json((yield from chat(ctx, request)))
    if name == "get_session":
        session_id = w.session_id_param(inputs.path_params["session_id"])
        return _json((yield from get_session(ctx, session_id)))
    if name == "delete_session":
        session_id = w.session_id_param(inputs.path_params["session_id"])
        return _json((yield from delete_session(ctx, session_id)))
    if name == "list_user_sessions":
        user_id = w.user_id_param(inputs.path_params["user_id"])
        query = w.list_query(inputs.query)
        return _json((yield from list_user_sessions(ctx, user_id, query.limit, query.cursor)))
    if name == "health":
        return _json(health(ctx))
    if name == "health_detailed":
        status, body = yield from detailed_health(ctx)
        return _json(body, status)
    if name == "metrics_performance":
        if telemetry is None:
            raise RuntimeError("metrics_performance needs telemetry")
        return _json((yield LocalCall(telemetry.window.snapshot)))
    if name == "metrics":
        text, content_type = yield LocalCall(prom.exposition)
        return Response(200, text, content_type=content_type)
    if name == "openapi":
        return Response(200, openapi_bytes(), content_type=JSON)
    raise LookupError(f"no handler for route {name!r}")

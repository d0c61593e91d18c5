"""Blue: the legacy blocking Flask app, a thin boto3 driver around ``shared``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, g, request
from flask import Response as FlaskResponse
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from legacy_flask.aws import SyncAws
from legacy_flask.telemetry import Flusher
from shared import logs
from shared import web as w
from shared.calls import run_sync
from shared.capture import CaptureWriter
from shared.errors import ApiError
from shared.flows import Context
from shared.handlers import Inputs, handle
from shared.pipeline import Exchange, Response
from shared.routes import ROUTES, Route
from shared.settings import Color, Settings, load_settings
from shared.wire import BodyUnreadable, body_cut_short, has_empty_segment

# the environ key under which a request whose body could not be read whole is handed to the
# server (legacy_flask/wsgi.py): gunicorn refuses it (400) or closes the connection, as uvicorn
UNREADABLE = "chatbot.body_unreadable"

COLOR: Color = "blue"
log = logging.getLogger("chatbot.app")


@dataclass
class Runtime:
    settings: Settings
    aws: SyncAws
    flusher: Flusher
    ctx: Context
    capture: CaptureWriter | None = None


def _flask_path(path: str) -> str:
    return path.replace("{", "<").replace("}", ">")


def _to_flask(resp: Response) -> FlaskResponse:
    out = FlaskResponse(resp.body, status=resp.status)
    if resp.content_type:
        out.headers["Content-Type"] = resp.content_type
    else:
        out.headers.pop("Content-Type", None)
    for name, value in resp.headers.items():
        out.headers[name] = value
    return out


def _read_body(settings: Settings) -> bytes:
    """At most MAX_BODY_BYTES, chunked bodies included; one byte more means 413.

    What was read (at most MAX_BODY_BYTES + 1 bytes) goes to the exchange, for capture.
    """
    try:
        body = request.stream.read(settings.max_body_bytes + 1)
    except Exception as exc:  # gunicorn's: bad chunked framing, the body bound passed, gone
        raise BodyUnreadable("the body could not be read whole", exc) from None
    ex: Exchange = g.exchange
    ex.body = body
    if len(body) > settings.max_body_bytes:
        raise w.too_large(settings)
    if body_cut_short(request.headers.get("Content-Length"), len(body)):
        raise BodyUnreadable("the body ended before its Content-Length")
    return body


def _view(route: Route) -> Any:
    def view(**path_params: str) -> FlaskResponse:
        rt: Runtime = g.runtime
        inputs = Inputs(
            path_params=path_params,
            query=request.args.items(multi=True),
            content_type=request.headers.get("Content-Type"),
            body=_read_body(rt.settings) if route.body is not None else b"",
        )
        flow = handle(route.name, rt.ctx, inputs, rt.flusher.telemetry)
        return _to_flask(run_sync(flow, rt.aws.execute))

    view.__name__ = route.name
    return view


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    logs.configure(COLOR, settings.log_level)
    app = Flask(__name__)
    app.config.update(PROVIDE_AUTOMATIC_OPTIONS=False, MAX_CONTENT_LENGTH=None)
    # a path with an empty segment (//health, /api//v1/...) matches no route: 404 in both colors
    # (shared/wire.py), never Werkzeug's 308 to a merged path built from the client's Host
    app.url_map.merge_slashes = False
    aws = SyncAws(settings)
    flusher = Flusher(settings, aws)
    runtime = Runtime(settings, aws, flusher, Context(settings),
                      CaptureWriter.from_settings(settings, COLOR))
    app.extensions["chatbot"] = runtime

    blueprints: dict[str, Blueprint] = {}
    for route in ROUTES:
        bp = blueprints.setdefault(route.tag, Blueprint(route.tag, __name__))
        bp.add_url_rule(_flask_path(route.path), endpoint=route.name, view_func=_view(route),
                        methods=[route.method])
    for bp in blueprints.values():
        app.register_blueprint(bp)

    def new_exchange() -> Exchange:
        return Exchange(settings, COLOR, request.method, request.path, request.headers,
                        request.remote_addr, flusher.telemetry, capture=runtime.capture,
                        query_string=request.query_string)

    @app.before_request
    def admit() -> FlaskResponse | None:
        g.runtime = runtime
        ex = new_exchange()
        g.exchange = ex
        early = ex.admit()
        if early is not None:
            return _to_flask(early)
        if has_empty_segment(request.environ.get("RAW_URI") or request.path):
            # green's router: no route has an empty segment, so it is counted as unmatched
            # (gunicorn hands Flask the path with the slashes merged: /health)
            ex.route, ex.template = None, None
            return _to_flask(ex.not_found())
        if ex.needs_rate_limit():
            run_sync(ex.rate_limit_flow(runtime.ctx), aws.execute)
        return None

    @app.after_request
    def finish(response: FlaskResponse) -> FlaskResponse:
        if UNREADABLE in request.environ:
            return response  # never acted on, never counted (legacy_flask/wsgi.py)
        ex: Exchange | None = g.get("exchange")
        if ex is None:  # before_request itself failed before the exchange existed
            ex = new_exchange()
        extra = {k: v for k, v in response.headers.items()
                 if k.lower() not in ("content-type", "content-length")}
        resp = Response(response.status_code, response.get_data(),
                        content_type=response.headers.get("Content-Type", ""), headers=extra)
        headers = ex.finish(resp)
        response.set_data(resp.body)
        response.headers.clear()
        for name, value in headers:
            response.headers[name] = value
        response.headers["Content-Length"] = str(len(resp.body))
        return response

    def _exchange() -> Exchange:
        ex = g.get("exchange")
        if ex is None:
            ex = new_exchange()
            g.exchange = ex
        return ex  # type: ignore[no-any-return]

    @app.errorhandler(ApiError)
    def api_error(err: ApiError) -> FlaskResponse:
        return _to_flask(_exchange().error(err))

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> FlaskResponse:
        ex = _exchange()
        if isinstance(err, RequestEntityTooLarge):
            return _to_flask(ex.error(w.too_large(settings)))
        if err.code in (404, 405):
            return _to_flask(ex.unrouted())
        log.warning("unexpected HTTP exception", extra={"status": err.code,
                                                        "request_id": ex.request_id})
        return _to_flask(ex.internal_error())

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> FlaskResponse:
        if isinstance(err, BodyUnreadable):  # legacy_flask/wsgi.py hands it to gunicorn
            request.environ[UNREADABLE] = err
            return FlaskResponse(status=400)
        ex = _exchange()
        log.error("unhandled error", exc_info=err, extra={"request_id": ex.request_id})
        return _to_flask(ex.internal_error())

    flusher.start()
    return app

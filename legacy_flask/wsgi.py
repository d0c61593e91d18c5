"""The WSGI entry point gunicorn loads in each worker, after the fork.

A request whose body the app could not read whole (``legacy_flask.app.UNREADABLE``) is handed
back to gunicorn as gunicorn's own error, so that gunicorn answers it as uvicorn does for green
(shared/wire.py, "Who answers"): malformed chunked framing is gunicorn's 400; a body cut short
or past the body bound closes the connection with no answer. Either way the app's answer is
dropped, and the request was never acted on or counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.http.errors import NoMoreData, ParseException  # type: ignore[import-untyped]

from legacy_flask.app import UNREADABLE, create_app


class App:
    """The Flask app, as gunicorn calls it; ``extensions`` is the Flask app's (worker_exit
    in gunicorn.conf.py flushes the metrics of ``extensions["chatbot"]``)."""

    def __init__(self, flask_app: Any) -> None:
        self.flask_app = flask_app
        self.extensions = flask_app.extensions

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            # no route takes WebSockets: the request is served as plain HTTP, the Upgrade
            # ignored (RFC 9110 7.8), as green's uvicorn does with ws="none" (Werkzeug refused
            # it with a 400 that the app saw as an unexpected error: a 500)
            del environ["HTTP_UPGRADE"]
        result = self.flask_app(environ, start_response)
        problem = environ.get(UNREADABLE)
        if problem is None:
            return result  # type: ignore[no-any-return]
        close = getattr(result, "close", None)
        if close is not None:
            close()
        cause = getattr(problem, "cause", None)
        if isinstance(cause, ParseException) and not isinstance(cause, NoMoreData):
            raise cause  # gunicorn's 400 (bad chunk size, terminator or extension)
        raise NoMoreData(b"")  # gunicorn closes the connection without an answer


app = App(create_app())

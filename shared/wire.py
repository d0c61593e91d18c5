"""Wire rules both servers apply below the app: what the HTTP/1.1 servers themselves refuse,
how long a client may take, and how much of an unwanted body is read and thrown away.

Blue's gunicorn worker (legacy_flask/worker.py) and green's uvicorn protocol
(fastapi_app/protocol.py) enforce these the same way, so a client sees the same status and the
same end of the connection from either color for any bytes (docs/alb.md, "Who answers";
the parity corpus's ``wire_*`` cases check it).

Who answers:

- the *server* refuses, before the app runs, with a plain-text (green) or HTML (blue) 400 and
  closes the connection: a request line or header block the HTTP/1.1 parser cannot read (a
  method outside :data:`METHODS`, bytes that cannot begin a request, a bad version, obsolete
  line folding, bad header syntax), a repeated ``Host`` or ``Content-Type``
  (:data:`SINGLETON_HEADERS`), conflicting or unknown framing (``Content-Length`` with
  ``Transfer-Encoding``, two lengths, a coding other than ``chunked``), and malformed chunked
  framing. An ``Expect`` other than ``100-continue`` is the server's 417. A body cut short of its
  length, or framing that never completes within the body bound, gets no answer: the
  connection is closed (the client has gone, or is too slow).
- the *app* answers everything else, with the JSON error envelope for every non-2xx.
"""

from __future__ import annotations

import re

from shared.settings import Settings

# llhttp's (httptools') HTTP methods: green's parser refuses any other with 400 before the app
# runs, so blue's worker refuses the same set (gunicorn alone would pass any token on, and the
# app would answer 405).
METHODS = frozenset((
    "DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "COPY", "LOCK",
    "MKCOL", "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND",
    "ACL", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE",
    "UNSUBSCRIBE", "PATCH", "PURGE", "MKCALENDAR", "LINK", "UNLINK", "SOURCE", "QUERY",
))
_STARTS = tuple(m.encode() + b" " for m in METHODS)
# RFC 9110 5.3: fields whose grammar admits one member; a second copy makes the message
# ambiguous (gunicorn refuses it; green's protocol refuses it the same way)
SINGLETON_HEADERS = frozenset((b"host", b"content-type"))
# "Who answers" above: the statuses the servers themselves answer, before (and so whatever) the
# route: their parsers' refusals (plain text or HTML, never the envelope), and the interim 100
# that gunicorn and uvicorn send for ``Expect: 100-continue`` before the app reads the body
SERVER_REFUSALS = (400, 417)
SERVER_INTERIM = (100,)
# ALB's idle timeout to targets is 60 s by default; a target that closes an idle connection first
# makes the ALB answer 502 now and then. Keep-alive on the target must outlast it.
ALB_IDLE_TIMEOUT_S = 60


def bad_request_start(data: bytes) -> bool:
    """Whether the first bytes of a request can no longer begin ``METHOD SP`` for a method of
    :data:`METHODS` (refused at once, as llhttp does, rather than waiting for a line end)."""
    head = data.lstrip(b"\r\n")  # RFC 9112 2.2: empty lines before a request are ignored
    if not head:
        return False
    size = min(len(head), max(len(s) for s in _STARTS))
    return not any(s.startswith(head[:size]) or head.startswith(s) for s in _STARTS)


# the transfer codings gunicorn's parser knows (gunicorn/http/message.py); any other is refused
# with 400 before the app runs, in both colors (llhttp alone would read on and hand it over)
TRANSFER_CODINGS = frozenset(("chunked", "identity", "gzip", "deflate", "compress"))


def unknown_transfer_coding(value: str) -> bool:
    """Whether a ``Transfer-Encoding`` value names a coding neither server can decode."""
    return any(v.strip(" \t").lower() not in TRANSFER_CODINGS for v in value.split(","))


def known_method(method: str) -> bool:
    return method in METHODS


def expectation_ok(value: str) -> bool:
    """The only expectation either server meets (RFC 9110 10.1.1); anything else is 417."""
    return value.strip().lower() == "100-continue"


def discard_limit(settings: Settings) -> int:
    """How much of a body the server reads and throws away after it has answered without
    reading it (a 413 before the body, an early error): enough for a client that writes a body
    of up to four times the limit whole before it reads (urllib, many SDKs) to read the answer;
    past it, the connection is closed."""
    return 4 * settings.max_body_bytes


def client_bounds(settings: Settings) -> tuple[float, float]:
    """(first byte and whole header block, whole body) in seconds, from the accept (or the
    end of the headers). Past either the connection is closed without an answer, in both
    colors."""
    return settings.client_header_timeout_s, settings.client_body_timeout_s


class BodyUnreadable(Exception):
    """The server could not read the request body whole (cut short of its Content-Length,
    malformed or unfinished chunked framing, the body bound passed, the client gone). The
    request is never acted on and never counted as an answer: the server refuses it (400) or
    closes the connection. ``cause`` is the server's own exception, when it raised one."""

    def __init__(self, reason: str, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.cause = cause


def body_cut_short(declared: str | None, received: int) -> bool:
    """Whether a body ended before its declared Content-Length (the client half-closed or
    left: WSGI servers hand such a body on as if it were whole)."""
    return declared is not None and declared.isdigit() and received < int(declared)


def has_empty_segment(target: str) -> bool:
    """Whether the path of a request target has an empty segment (``//health``,
    ``/api//v1/chat``): no route has one, so the answer is 404 NOT_FOUND in both colors. Never
    a redirect to the merged path (Werkzeug's 308 built its Location from the client's Host)."""
    path = target.split("?", 1)[0]
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path):  # absolute form: after the authority
        rest = path.split("://", 1)[1]
        path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return "//" in path

"""Green's HTTP/1.1 protocol: uvicorn's httptools protocol with the wire rules of shared/wire.py.

uvicorn alone holds a connection that sends nothing (or half a request) for ever, accepts a
repeated Host or Content-Type, ignores an unknown Expect, and, after answering early (a 413
before the body), reads and throws away whatever body follows with no bound. This protocol
bounds the time to the end of the headers and of the body (past either: the connection is
closed, no answer), refuses what blue's gunicorn refuses with the same status, and discards at
most :func:`shared.wire.discard_limit` bytes of an unread body. Served by fastapi_app/serve.py.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared import wire
from shared.settings import load_settings

LINGER_S = 2.0  # as gunicorn's close: after our FIN, what the client still sends is read
_417 = (b"HTTP/1.1 417 Expectation Failed\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 19\r\nconnection: close\r\n\r\nExpectation Failed.")


@functools.cache
def _bounds() -> tuple[float, float, int]:
    settings = load_settings()
    header_s, body_s = wire.client_bounds(settings)
    return header_s, body_s, wire.discard_limit(settings)


class _Refused(Exception):
    """Raised from a parser callback: the request is refused with ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class WireProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_s, self._body_s, self._discard_limit = _bounds()
        self._timer: asyncio.TimerHandle | None = None
        self._seen: set[bytes] = set()
        self._refusal = 400
        self._discarded = 0
        self._lingering = False

    def _linger_close(self) -> None:
        """Close as gunicorn does (RFC 9112 9.6): send FIN, read and discard what the client
        still sends (bounded in bytes and time), then close; a plain close with unread data
        would reset the connection, and the client could lose the answer."""
        self._disarm()
        if self.transport.is_closing():
            return
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self._lingering = True
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's plain-text 400, closed with :meth:`_linger_close`."""
        self.transport.write(b"".join([
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(msg)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n", msg.encode("ascii")]))
        self._linger_close()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        """The header or body bound passed: close, no answer (the request is not acted on)."""
        self._timer = None
        self._linger_close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._header_s)  # the first byte and the headers, from the accept

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._discarded += len(data)
            if self._discarded > self._discard_limit:
                self.transport.close()
            return
        try:
            self._feed(data)
        except _Refused:  # raised directly by a callback (httptools may not wrap it)
            self._refuse()

    def _feed(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused) or isinstance(exc.__cause__, _Refused):
                self._refuse()
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")

    def _refuse(self) -> None:
        self._disarm()
        if self._refusal == 417:
            self.transport.write(_417)
            self._linger_close()
        else:
            self.send_400_response("Invalid HTTP request received.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._seen = set()
        if self._timer is None:  # a later request on a kept-alive connection: from its start
            self._arm(self._header_s)

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key in wire.SINGLETON_HEADERS:
            if key in self._seen:
                self._refusal = 400
                raise _Refused(400)
            self._seen.add(key)
        if key == b"transfer-encoding" and wire.unknown_transfer_coding(
                value.decode("latin-1")):
            self._refusal = 400
            raise _Refused(400)
        if key == b"expect" and not wire.expectation_ok(value.decode("latin-1")):
            self._refusal = 417
            raise _Refused(417)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._arm(self._body_s)  # the whole body, from the end of the headers
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None and self.cycle.response_complete:
            self._discarded += len(body)  # answered already: read, thrown away, bounded
            if self._discarded > self._discard_limit and not self.transport.is_closing():
                self.transport.close()
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._discarded = 0
        super().on_message_complete()

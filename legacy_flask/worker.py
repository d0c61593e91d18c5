"""Blue's gunicorn worker: the sync worker, plus a drain of the accept queue on SIGTERM, plus
the wire rules of shared/wire.py (the same as green's fastapi_app/protocol.py).

Wire rules: the sync worker alone waits for ever on a client that sends nothing or half a
request (the worker is held until gunicorn's worker timeout kills it: a 500 for nobody and one
worker fewer), answers a method llhttp (green's parser) refuses with the app's 405, waits for a
line end before refusing bytes that cannot begin a request, and after an early answer (a 413
before the body) reads at most 64 KiB of the body left unread before it closes, so a client that
writes its whole body before reading meets a reset. Here: the first byte and the headers within
CLIENT_HEADER_TIMEOUT_S of the accept, the body within CLIENT_BODY_TIMEOUT_S of the headers
(past either the connection is closed without an answer); an unknown method or bytes that
cannot begin a request are gunicorn's 400; up to :func:`shared.wire.discard_limit` bytes of an
unread body are read and thrown away before the close.

On SIGTERM gunicorn's sync worker finishes the request in hand and exits. Connections that the
kernel had already accepted onto the shared listening socket, but that no worker had taken yet
(with 5 sync workers, any request beyond the fifth in flight), are reset when the last worker
closes the socket: the client sent its request and gets no answer. This worker, once SIGTERM
has stopped the normal loop, keeps taking connections off the queue until it is empty, and only
then exits (and ``worker_exit`` flushes its metrics). The drain is bounded by
``graceful_timeout`` less a margin for that flush, so the master never has to SIGKILL it.
"""

from __future__ import annotations

import errno
import functools
import socket
import ssl
import time
from typing import Any

from gunicorn import http, sock, util  # type: ignore[import-untyped]
from gunicorn.http.errors import (  # type: ignore[import-untyped]
    InvalidHeader,
    InvalidRequestLine,
    InvalidRequestMethod,
    NoMoreData,
    UnsupportedTransferCoding,
)
from gunicorn.workers.sync import SyncWorker  # type: ignore[import-untyped]

from shared import wire
from shared.settings import load_settings

FLUSH_MARGIN_S = 5.0  # left of graceful_timeout for worker_exit's final metrics flush


@functools.cache
def _bounds() -> tuple[float, float, int]:
    settings = load_settings()
    header_s, body_s = wire.client_bounds(settings)
    return header_s, body_s, wire.discard_limit(settings)


class BoundedSocket:
    """The client socket as gunicorn's parser reads it: every read within the deadline of the
    phase (headers, then body), and the first bytes checked as llhttp checks them."""

    def __init__(self, client: socket.socket, header_s: float, body_s: float) -> None:
        self._sock = client
        self._body_s = body_s
        self._deadline: float | None = time.monotonic() + header_s
        self._head: bytes | None = b""  # the first bytes, until they can begin a request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def start_body(self) -> None:
        self._head = None
        self._deadline = time.monotonic() + self._body_s

    def unbounded(self) -> None:
        """The answer is written: util.close_graceful bounds what follows."""
        self._deadline = None

    def recv(self, size: int, *flags: int) -> bytes:
        if self._deadline is None:
            return self._sock.recv(size, *flags)
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise NoMoreData(b"")  # too slow: closed without an answer
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(size, *flags)
        except TimeoutError:
            raise NoMoreData(b"") from None
        finally:
            self._sock.settimeout(None)
        if self._head is not None and data:
            self._head += data
            if wire.bad_request_start(self._head):
                raise InvalidRequestLine(self._head[:32].decode("latin-1"))
            if len(self._head.lstrip(b"\r\n")) > 16:
                self._head = None  # a method and its space were seen: the parser decides now
        return data


class DrainingSyncWorker(SyncWorker):  # type: ignore[misc]
    def run(self) -> None:
        super().run()  # returns once SIGTERM cleared self.alive (after the request in hand)
        self.drain()

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        """SyncWorker.handle (gunicorn 27), on a :class:`BoundedSocket`, closing with a drain
        of up to :func:`shared.wire.discard_limit` bytes (gunicorn's own: 64 KiB)."""
        header_s, body_s, discard = _bounds()
        bounded = BoundedSocket(client, header_s, body_s)
        req = None
        try:
            if self.cfg.is_ssl:
                client = sock.ssl_wrap_socket(client, self.cfg)
                bounded = BoundedSocket(client, header_s, body_s)
            parser = http.get_parser(self.cfg, bounded, addr)
            req = next(parser)
            self.handle_request(listener, req, bounded, addr)
        except http.errors.NoMoreData as e:
            self.log.debug("Ignored premature client disconnection. %s", e)
        except StopIteration as e:
            self.log.debug("Closing connection. %s", e)
        except ssl.SSLError as e:
            if e.args[0] == ssl.SSL_ERROR_EOF:
                self.log.debug("ssl connection closed")
                client.close()
            else:
                self.handle_error(req, bounded, addr, e)
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except BaseException as e:
            self.handle_error(req, bounded, addr, e)
        finally:
            bounded.unbounded()
            util.close_graceful(client, max_drain=discard)  # within gunicorn's 2 s

    def handle_request(self, listener: Any, req: Any, client: Any, addr: Any) -> None:
        if not wire.known_method(req.method):
            raise InvalidRequestMethod(req.method)  # gunicorn's 400, as llhttp's for green
        if isinstance(client, BoundedSocket):
            client.start_body()
        super().handle_request(listener, req, client, addr)
        if isinstance(client, BoundedSocket):
            client.unbounded()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, UnsupportedTransferCoding):
            # a coding other than chunked: 400, as llhttp (green) answers it (gunicorn: 501)
            exc = InvalidHeader("Transfer-Encoding")
        super().handle_error(req, client, addr, exc)

    def drain(self) -> int:
        """Answer every connection already queued on the listening sockets; how many."""
        deadline = time.monotonic() + max(1.0, self.cfg.graceful_timeout - FLUSH_MARGIN_S)
        served = 0
        for listener in self.sockets:
            while time.monotonic() < deadline:
                self.notify()
                try:
                    client, addr = listener.accept()
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        break  # the queue is empty
                    if exc.errno == errno.ECONNABORTED:
                        continue
                    raise
                client.setblocking(True)
                util.close_on_exec(client)
                self.handle(listener, client, addr)
                served += 1
        if served:
            self.log.info("drained %d queued connections on shutdown", served)
        return served

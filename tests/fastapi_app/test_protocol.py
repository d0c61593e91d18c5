"""Green's HTTP/1.1 protocol (fastapi_app/protocol.py) on a real uvicorn server and socket:
what it refuses before the app runs, and its bounds on slow clients (shared/wire.py's rules).
The parity corpus (parity_tests/cases/wire_*.yaml) checks the same against blue in `make parity`;
these keep green's side in `make test`."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from fastapi_app import protocol
from fastapi_app.protocol import WireProtocol
from parity_tests.harness.wire import Pause, send_raw

pytestmark = pytest.mark.integration

HEADER_S, BODY_S = 0.6, 0.8


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers 200 with the body's length, after reading it whole."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    mp = pytest.MonkeyPatch()
    mp.setenv("CLIENT_HEADER_TIMEOUT_S", str(HEADER_S))
    mp.setenv("CLIENT_BODY_TIMEOUT_S", str(BODY_S))
    protocol._bounds.cache_clear()
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=WireProtocol, ws="none", lifespan="off",
                            log_level="warning", timeout_keep_alive=65)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        with contextlib.suppress(OSError):
            sock.close()
        protocol._bounds.cache_clear()
        mp.undo()


def send(port: int, *writes: bytes | Pause, read_timeout: float = 3.0) -> Any:
    return send_raw("127.0.0.1", port, list(writes), read_timeout=read_timeout)


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_a_plain_request_is_answered_and_kept_alive(port: int) -> None:
    ex = send(port, head("POST /x HTTP/1.1", "Host: h", "Content-Length: 5") + b"hello")
    assert [a.status for a in ex.answers] == [200]
    assert ex.answers[0].body == b"5"
    assert ex.end == "open"  # kept alive for the next request (an ALB reuses it)


@pytest.mark.parametrize(("lines", "status"), [
    (("GET /x HTTP/1.1", "Host: h", "Host: other"), 400),  # a repeated singleton header
    (("POST /x HTTP/1.1", "Host: h", "Content-Type: a", "Content-Type: b",
      "Content-Length: 0"), 400),
    (("POST /x HTTP/1.1", "Host: h", "Transfer-Encoding: xchunked"), 400),  # unknown coding
    (("GET /x HTTP/1.1", "Host: h", "Expect: bogus"), 417),  # only 100-continue is met
])
def test_what_gunicorn_refuses_is_refused_before_the_app(port: int, lines: tuple[str, ...],
                                                          status: int) -> None:
    ex = send(port, head(*lines))
    assert [a.status for a in ex.answers] == [status]
    assert not ex.answers[0].envelope  # the server's own answer, not the app's
    assert ex.end == "closed"


def test_headers_dripped_past_the_bound_are_closed_without_an_answer(port: int) -> None:
    ex = send(port, b"GET /x HTTP/1.1\r\n", Pause(HEADER_S * 0.6), b"Host: h\r\n",
              Pause(HEADER_S * 0.6), b"X-A: b\r\n\r\n")
    assert ex.answers == []
    assert ex.end == "closed"  # by the server at its bound (the client would wait 3 s)


def test_a_body_that_stalls_is_closed_without_an_answer(port: int) -> None:
    ex = send(port, head("POST /x HTTP/1.1", "Host: h", "Content-Length: 50") + b"short")
    assert ex.answers == []
    assert ex.end == "closed"

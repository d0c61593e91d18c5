"""An emulator of AWS ``bedrock-agent-runtime`` InvokeAgent that speaks the real wire protocol.

It is a bare ASGI app served by uvicorn (httptools + uvloop when installed), answering::

    POST /agents/{agentId}/agentAliases/{agentAliasId}/sessions/{sessionId}/text

the way the service does (rest-json request, ``application/vnd.amazon.eventstream`` response),
so real boto3 and aioboto3 clients pointed at it with ``endpoint_url`` parse its answers with
botocore's own code. Signatures are not checked.

Reply
    :func:`reply_for` (pure and deterministic) in ONE ``chunk`` event, as the service sends by
    default. ``streamingConfigurations.streamFinalResponse=true`` splits it into 3 chunks and the
    marker ``[[chunks:N]]`` into N (at most one chunk per character), each chunk its own ASGI
    body message. ``enableTrace=true`` adds one ``trace`` event first: an orchestration trace
    whose ``modelInvocationOutput.metadata.usage`` holds :func:`usage_for`.

Markers (anywhere in ``inputText``; the first of each name wins)
    ``[[latency:MS]]`` answers after MS milliseconds instead of the default latency.
    ``[[chunks:N]]`` streams the reply in N chunks (1 <= N <= 10000).
    ``[[fault:KIND]]`` injects a fault (table below); an unknown KIND is a 400
    ValidationException.
    ``[[trace:bad-usage]]`` sends, first and whether or not ``enableTrace`` asked for one, a
    ``trace`` event whose ``usage`` token counts are the string ``"many"`` (both SDKs pass it
    through unparsed), then the normal reply: an answer a client that sums tokens cannot use
    (both colors answer 500 ``INTERNAL_ERROR``; ``parity_tests/cases/server_errors.yaml``).
    An unknown trace KIND is a 400 ValidationException.

Faults: what boto3 1.40 and aiobotocore 2.25 raise (measured by ``tests/devstack``)

================== ======================================================================
KIND               wire behaviour -> exception raised (boto3 and aiobotocore alike)
================== ======================================================================
throttle           429 ``x-amzn-ErrorType: ThrottlingException`` -> ``client.exceptions.
                   ThrottlingException`` (a ``ClientError``), code ``ThrottlingException``
validation         400 -> ``ValidationException``
access-denied      403 -> ``AccessDeniedException``
not-found          404 -> ``ResourceNotFoundException``
conflict           409 -> ``ConflictException``
dependency         424 -> ``DependencyFailedException``
model-not-ready    424 -> ``ModelNotReadyException``
quota              400 -> ``ServiceQuotaExceededException``
internal           500 -> ``InternalServerException``
bad-gateway        502 -> ``BadGatewayException``
unavailable        503 ``ServiceUnavailableException`` (not modeled) -> a plain
                   ``botocore.exceptions.ClientError``, code ``ServiceUnavailableException``
timeout            nothing for ``fault_timeout_s`` (then the normal reply) -> a client with a
                   shorter read timeout raises ``botocore.exceptions.ReadTimeoutError`` from
                   ``invoke_agent`` itself (both SDKs)
midstream          200, one chunk, then an ``internalServerException`` event ->
                   ``botocore.exceptions.EventStreamError`` (a ``ClientError``), code
                   ``internalServerException``, while iterating ``completion``
midstream-throttle same with ``throttlingException``
malformed          200, one good chunk, then a frame whose message CRC is wrong ->
                   ``botocore.eventstream.ChecksumMismatch`` (a subclass of
                   ``botocore.eventstream.ParserError``, which derives from ``Exception``,
                   NOT from ``BotoCoreError``/``ClientError``), while iterating
empty              200 and a stream with no event at all -> no exception; iteration yields
                   nothing
stall              200, one chunk, then silence for ``fault_timeout_s`` (then the rest of the
                   reply). A shorter client read timeout raises while iterating, and the two
                   SDKs differ: boto3 raises ``urllib3.exceptions.ReadTimeoutError`` (NOT
                   wrapped by botocore: not a ``BotoCoreError``, not a builtin
                   ``TimeoutError``); aiobotocore raises aiohttp's ``SocketTimeoutError``
                   (a ``aiohttp.ServerTimeoutError``, NOT wrapped either; it is a builtin
                   ``TimeoutError``)
disconnect         the TCP connection is closed before any response byte ->
                   ``botocore.exceptions.ConnectionClosedError`` from ``invoke_agent``
================== ======================================================================

``disconnect`` needs the server's transport, which ASGI does not expose: the app takes it
from uvicorn's send callable (``send.__self__.transport``). Under another ASGI server the
fault raises and the server answers a plain 500. ``timeout`` and ``stall`` end early when the
client disconnects (the app watches ``receive()`` for ``http.disconnect``) or when the
emulator stops (the connection is then closed), so ``stop()`` stays prompt.

Call log and control endpoints (JSON)
    Every InvokeAgent call that reaches the route is logged, including the ones rejected as
    invalid (``input_text`` is None when absent or not a string), as ``{"agent_id",
    "agent_alias_id", "session_id", "input_text", "enable_trace", "fault", "ts"}`` in a deque
    bounded by ``max_calls``.

    ``GET /_emulator/calls[?since=N]`` -> ``{"calls": [...], "total": n}``;
    ``DELETE /_emulator/calls`` -> ``{"cleared": n}``;
    ``GET /_emulator/health`` -> ``{"status": "ok"}``;
    ``GET /_emulator/config`` and ``POST /_emulator/config`` with ``{"latency_ms": int}``
    (optionally ``"fault_timeout_s": number``) -> the config; ``GET /_emulator/stats`` ->
    ``{"in_flight", "requests_total", "calls_logged"}``. Anything else is a 404
    ``UnknownOperationException``.

CLI: ``python -m devstack.agent_emulator --host 127.0.0.1 --port 4567 --latency-ms 0
--fault-timeout-s 30 [--max-calls 100000]`` serves until SIGINT/SIGTERM and prints one JSON line
(``{"url": ..., "pid": ...}``) on stdout when ready; JSON log lines go to stderr at startup and
shutdown only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final
from urllib.parse import unquote

import uvicorn

from devstack.eventstream import corrupt_message_crc, event_message, exception_message

__all__ = [
    "DEFAULT_STREAM_CHUNKS",
    "ERROR_FAULTS",
    "FAULT_KINDS",
    "STREAM_FAULTS",
    "TRACE_KINDS",
    "AgentEmulator",
    "EmulatorApp",
    "Markers",
    "main",
    "parse_markers",
    "reply_for",
    "strip_markers",
    "usage_for",
]

log = logging.getLogger("devstack.agent_emulator")

Scope = Mapping[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: fault kind -> (HTTP status, x-amzn-ErrorType) for faults answered before the stream
ERROR_FAULTS: Final[Mapping[str, tuple[int, str]]] = {
    "throttle": (429, "ThrottlingException"),
    "validation": (400, "ValidationException"),
    "access-denied": (403, "AccessDeniedException"),
    "not-found": (404, "ResourceNotFoundException"),
    "conflict": (409, "ConflictException"),
    "dependency": (424, "DependencyFailedException"),
    "model-not-ready": (424, "ModelNotReadyException"),
    "quota": (400, "ServiceQuotaExceededException"),
    "internal": (500, "InternalServerException"),
    "bad-gateway": (502, "BadGatewayException"),
    "unavailable": (503, "ServiceUnavailableException"),
}
STREAM_FAULTS: Final = frozenset({
    "timeout", "midstream", "midstream-throttle", "malformed", "empty", "stall", "disconnect",
})
FAULT_KINDS: Final = frozenset(ERROR_FAULTS) | STREAM_FAULTS
#: ``[[trace:KIND]]``: a trace event the client's SDK parses but the client cannot use
TRACE_KINDS: Final = frozenset({"bad-usage"})
DEFAULT_STREAM_CHUNKS: Final = 3
MAX_CHUNKS: Final = 10_000
MAX_BODY_BYTES: Final = 32 * 1024 * 1024  # inputText may hold 25M characters

_ID_RE = re.compile(r"[0-9a-zA-Z]{1,10}")
_SESSION_RE = re.compile(r"[0-9a-zA-Z._:-]{2,100}")
_MARKER_RE = re.compile(r"\[\[\s*(fault|latency|chunks|trace)\s*:\s*([^\[\]]*?)\s*\]\]")
_ECHO_CHARS: Final = 200


# --------------------------------------------------------------------------- pure functions


@dataclass(frozen=True, slots=True)
class Markers:
    """The control markers found in an ``inputText``."""

    fault: str | None = None
    latency_ms: int | None = None
    chunks: int | None = None
    trace: str | None = None


_NO_MARKERS: Final = Markers()


def parse_markers(input_text: str) -> Markers:
    """The markers of *input_text*; ValueError for a bad ``latency``/``chunks`` value."""
    if "[[" not in input_text:
        return _NO_MARKERS
    found: dict[str, str] = {}
    for match in _MARKER_RE.finditer(input_text):
        found.setdefault(match.group(1), match.group(2))
    latency = chunks = None
    if "latency" in found:
        latency = _int_marker("latency", found["latency"], 0, 3_600_000)
    if "chunks" in found:
        chunks = _int_marker("chunks", found["chunks"], 1, MAX_CHUNKS)
    fault = found["fault"].lower() if "fault" in found else None
    trace = found["trace"].lower() if "trace" in found else None
    if trace is not None and trace not in TRACE_KINDS:
        raise ValueError(f"marker [[trace:{trace}]]: known kinds: {', '.join(sorted(TRACE_KINDS))}")
    return Markers(fault=fault, latency_ms=latency, chunks=chunks, trace=trace)


def _int_marker(name: str, raw: str, low: int, high: int) -> int:
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise ValueError(f"marker [[{name}:{raw}]] needs an integer from {low} to {high}")
    return int(raw)


def strip_markers(input_text: str) -> str:
    """*input_text* without its ``[[fault:..]]``, ``[[latency:..]]``, ``[[chunks:..]]`` and
    ``[[trace:..]]``."""
    return _MARKER_RE.sub("", input_text) if "[[" in input_text else input_text


def _digest(input_text: str) -> str:
    return hashlib.sha256(input_text.encode("utf-8", "surrogatepass")).hexdigest()


def reply_for(input_text: str) -> str:
    """The emulator's deterministic reply to *input_text* (pure: same input, same reply).

    ``[agent-emulator <first 12 hex of sha256(input)>] You said: <echo>``, where the echo is the
    first 200 characters of the input with markers removed and outer whitespace stripped. Lone
    surrogates in the echo become ``?`` so the reply always encodes to UTF-8.
    """
    echo = strip_markers(input_text).strip()[:_ECHO_CHARS]
    echo = echo.encode("utf-8", "replace").decode("utf-8")
    return f"[agent-emulator {_digest(input_text)[:12]}] You said: {echo or '(nothing)'}"


def usage_for(input_text: str) -> tuple[int, int]:
    """``(inputTokens, outputTokens)`` reported in the trace: whitespace word counts (min 1)
    of the input without markers and of :func:`reply_for`'s reply."""
    return (max(1, len(strip_markers(input_text).split())),
            max(1, len(reply_for(input_text).split())))


def _split(text: str, parts: int) -> list[str]:
    parts = max(1, min(parts, len(text)))
    size = len(text)
    return [text[i * size // parts:(i + 1) * size // parts] for i in range(parts)]


def _chunk_event(text: str) -> bytes:
    data = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return event_message("chunk", {"bytes": data})


# --------------------------------------------------------------------------- the ASGI app

_JSON = b"application/json"
_EVENTSTREAM_HEADERS: Final = [
    (b"content-type", b"application/vnd.amazon.eventstream"),
    (b"x-amzn-bedrock-agent-content-type", _JSON),
]


def _json_bytes(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("ascii")


class _Outcome:
    ELAPSED: Final = "elapsed"
    STOPPING: Final = "stopping"
    DISCONNECTED: Final = "disconnected"


class EmulatorApp:
    """The ASGI application. Serve it with :class:`AgentEmulator` (or any ASGI server; the
    ``disconnect`` fault needs uvicorn). Event-loop state is touched from the loop thread only;
    :meth:`calls`, :meth:`clear_calls` and :attr:`latency_ms` are safe from any thread."""

    def __init__(self, latency_ms: int = 0, fault_timeout_s: float = 30.0,
                 max_calls: int = 100_000) -> None:
        if latency_ms < 0 or fault_timeout_s < 0 or max_calls < 1:
            raise ValueError("latency_ms and fault_timeout_s must be >= 0 and max_calls >= 1")
        self.latency_ms = int(latency_ms)
        self.fault_timeout_s = float(fault_timeout_s)
        self.max_calls = max_calls
        self._calls: deque[dict[str, Any]] = deque(maxlen=max_calls)
        self._calls_lock = threading.Lock()
        self._request_ids = itertools.count(1)
        self._request_id_prefix = str(uuid.uuid4())[:24]
        self.in_flight = 0
        self.requests_total = 0
        # loop-thread state
        self._stopping = False
        self._sleepers: set[asyncio.Future[str]] = set()

    # ---- thread-safe API

    def calls(self) -> list[dict[str, Any]]:
        """A copy of the call log, oldest first."""
        with self._calls_lock:
            return [dict(call) for call in self._calls]

    def clear_calls(self) -> int:
        """Empty the call log; the number of calls it held."""
        with self._calls_lock:
            count = len(self._calls)
            self._calls.clear()
            return count

    def config(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "fault_timeout_s": self.fault_timeout_s,
                "max_calls": self.max_calls}

    # ---- loop-thread API

    def begin_shutdown(self) -> None:
        """Wake every pending latency/fault wait (call it in the server's loop thread)."""
        self._stopping = True
        for waiter in list(self._sleepers):
            if not waiter.done():
                waiter.set_result(_Outcome.STOPPING)

    async def _sleep(self, seconds: float, receive: Receive | None = None) -> str:
        """Sleep *seconds*; end early when stopping or (with *receive*) on client disconnect."""
        if self._stopping:
            return _Outcome.STOPPING
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[str] = loop.create_future()
        timer = loop.call_later(seconds, _resolve, waiter, _Outcome.ELAPSED)
        watcher = (loop.create_task(_watch_disconnect(receive, waiter))
                   if receive is not None else None)
        self._sleepers.add(waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._sleepers.discard(waiter)
            if watcher is not None:
                watcher.cancel()

    # ---- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
            if raw_path.startswith(b"/agents/"):
                parts = raw_path.split(b"/")
                if (len(parts) == 8 and parts[3] == b"agentAliases" and parts[5] == b"sessions"
                        and parts[7] == b"text" and scope["method"] == "POST"):
                    self.in_flight += 1
                    self.requests_total += 1
                    try:
                        await self._invoke_agent(parts, receive, send)
                    finally:
                        self.in_flight -= 1
                    return
            elif raw_path.startswith(b"/_emulator/"):
                await self._control(scope["method"], raw_path, receive, send,
                                    scope.get("query_string", b""))
                return
            elif raw_path.rstrip(b"/") == b"/sessions" and scope["method"] == "POST":
                # ListSessions: the read-only call the apps' /health/detailed makes
                await _drain(receive)
                await self._json_response(send, {"sessionSummaries": []})
                return
            await _drain(receive)
            await self._error(send, 404, "UnknownOperationException",
                              f"Unknown operation {scope['method']} {scope['path']}")
        elif kind == "lifespan":  # only when served with lifespan on
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    def _request_id(self) -> bytes:
        return f"{self._request_id_prefix}{next(self._request_ids):012x}".encode("ascii")

    async def _error(self, send: Send, status: int, error_type: str, message: str,
                     close: bool = False) -> None:
        body = _json_bytes({"message": message})
        headers = [
            (b"content-type", _JSON),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"x-amzn-requestid", self._request_id()),
            (b"x-amzn-errortype", error_type.encode("ascii")),
        ]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _json_response(self, send: Send, payload: object, status: int = 200) -> None:
        body = _json_bytes(payload)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", _JSON),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"x-amzn-requestid", self._request_id()),
        ]})
        await send({"type": "http.response.body", "body": body})

    async def _body(self, receive: Receive, send: Send) -> bytes | None:
        """The request body; None (after answering 400 if it was too large) when there is none
        to act on."""
        try:
            return await _read_body(receive)
        except _BodyTooLarge:
            await self._error(send, 400, "ValidationException", "The request body is too large.",
                              close=True)
            return None

    # ---- InvokeAgent

    async def _invoke_agent(self, parts: list[bytes], receive: Receive, send: Send) -> None:
        agent_id, alias_id, session_id = (_segment(parts[i]) for i in (2, 4, 6))
        body = await self._body(receive, send)
        if body is None:  # the client went away
            return
        error = _validate_ids(agent_id, alias_id, session_id)
        data: object
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = {}
            error = error or "Could not parse the request body as JSON."
        if not isinstance(data, dict):
            data, error = {}, error or "The request body must be a JSON object."
        input_text = data.get("inputText")
        if not isinstance(input_text, str):
            input_text = None
            error = error or "1 validation error detected: Value at 'inputText' must be a string."
        enable_trace = data.get("enableTrace", False)
        if not isinstance(enable_trace, bool):
            enable_trace = False
            error = error or ("1 validation error detected: "
                              "Value at 'enableTrace' must be a boolean.")
        streaming = data.get("streamingConfigurations") or {}
        stream_final = isinstance(streaming, dict) and streaming.get("streamFinalResponse") is True
        markers = _NO_MARKERS
        if input_text is not None:
            try:
                markers = parse_markers(input_text)
            except ValueError as exc:
                error = error or str(exc)
        fault = markers.fault
        if fault is not None and fault not in FAULT_KINDS:
            error = error or (f"Unknown emulator fault kind {fault!r}; known kinds: "
                              f"{', '.join(sorted(FAULT_KINDS))}.")
        call = {"agent_id": agent_id, "agent_alias_id": alias_id, "session_id": session_id,
                "input_text": input_text, "enable_trace": enable_trace, "fault": fault,
                "ts": time.time()}
        with self._calls_lock:
            self._calls.append(call)
        if error is not None or input_text is None:
            await self._error(send, 400, "ValidationException", error or "Invalid request.")
            return

        latency_ms = self.latency_ms if markers.latency_ms is None else markers.latency_ms
        if latency_ms > 0:
            await self._sleep(latency_ms / 1000)

        if fault is None:
            await self._reply(send, agent_id, alias_id, session_id, input_text, enable_trace,
                              markers.chunks or (DEFAULT_STREAM_CHUNKS if stream_final else 1),
                              markers.trace)
        elif fault in ERROR_FAULTS:
            status, error_type = ERROR_FAULTS[fault]
            await self._error(send, status, error_type, f"Emulated fault: {fault}")
        else:
            await self._stream_fault(fault, receive, send, (agent_id, alias_id, session_id),
                                     input_text)

    def _start(self, session_id: str) -> dict[str, Any]:
        return {"type": "http.response.start", "status": 200, "headers": [
            *_EVENTSTREAM_HEADERS,
            (b"x-amz-bedrock-agent-session-id", session_id.encode("ascii")),
            (b"x-amzn-requestid", self._request_id()),
        ]}

    async def _reply(self, send: Send, agent_id: str, alias_id: str, session_id: str,
                     input_text: str, enable_trace: bool, chunks: int,
                     trace: str | None = None) -> None:
        reply = reply_for(input_text)
        head = b""
        if enable_trace or trace is not None:
            usage: tuple[object, object] = usage_for(input_text)
            if trace == "bad-usage":
                usage = ("many", "many")
            input_tokens, output_tokens = usage
            head = event_message("trace", {
                "agentId": agent_id,
                "agentAliasId": alias_id,
                "sessionId": session_id,
                "agentVersion": "DRAFT",
                "trace": {"orchestrationTrace": {"modelInvocationOutput": {
                    "traceId": f"{_digest(input_text)[:14]}-0",
                    "metadata": {"usage": {"inputTokens": input_tokens,
                                           "outputTokens": output_tokens}},
                }}},
            })
        await send(self._start(session_id))
        if chunks <= 1:
            await send({"type": "http.response.body", "body": head + _chunk_event(reply)})
            return
        if head:
            await send({"type": "http.response.body", "body": head, "more_body": True})
        pieces = _split(reply, chunks)
        last = len(pieces) - 1
        for index, piece in enumerate(pieces):
            await send({"type": "http.response.body", "body": _chunk_event(piece),
                        "more_body": index != last})

    async def _stream_fault(self, fault: str, receive: Receive, send: Send,
                            ids: tuple[str, str, str], input_text: str) -> None:
        session_id = ids[2]
        if fault == "disconnect":
            await _drop_connection(send, receive)
            return
        if fault == "timeout":
            outcome = await self._sleep(self.fault_timeout_s, receive)
            if outcome == _Outcome.STOPPING:
                await _drop_connection(send, receive)
            elif outcome == _Outcome.ELAPSED:
                await self._reply(send, *ids, input_text, False, 1)
            return
        await send(self._start(session_id))
        if fault == "empty":
            await send({"type": "http.response.body", "body": b""})
            return
        first, second = _halves(reply_for(input_text))
        await send({"type": "http.response.body", "body": _chunk_event(first), "more_body": True})
        if fault == "midstream":
            tail = exception_message("internalServerException", "Emulated fault: midstream")
        elif fault == "midstream-throttle":
            tail = exception_message("throttlingException", "Emulated fault: midstream-throttle")
        elif fault == "malformed":
            tail = corrupt_message_crc(_chunk_event(second))
        else:  # stall
            outcome = await self._sleep(self.fault_timeout_s, receive)
            if outcome == _Outcome.STOPPING:
                await _drop_connection(send, receive)
                return
            if outcome == _Outcome.DISCONNECTED:
                return
            tail = _chunk_event(second)
        await send({"type": "http.response.body", "body": tail})

    # ---- control endpoints

    async def _control(self, method: str, raw_path: bytes, receive: Receive, send: Send,
                       query: bytes = b"") -> None:
        body = await self._body(receive, send)
        if body is None:
            return
        route = raw_path[len(b"/_emulator/"):].rstrip(b"/")
        if route == b"health" and method == "GET":
            await self._json_response(send, {"status": "ok"})
        elif route == b"calls" and method == "GET":
            # ?since=N: only the calls after the first N (a poller's cheap increment)
            since = 0
            for part in query.split(b"&"):
                name, _, value = part.partition(b"=")
                if name == b"since" and value.isdigit():
                    since = int(value)
            calls = self.calls()
            await self._json_response(send, {"calls": calls[since:], "total": len(calls)})
        elif route == b"calls" and method == "DELETE":
            await self._json_response(send, {"cleared": self.clear_calls()})
        elif route == b"config" and method == "GET":
            await self._json_response(send, self.config())
        elif route == b"config" and method == "POST":
            problem = self._update_config(body)
            if problem is not None:
                await self._error(send, 400, "ValidationException", problem)
            else:
                await self._json_response(send, self.config())
        elif route == b"stats" and method == "GET":
            with self._calls_lock:
                logged = len(self._calls)
            await self._json_response(send, {"in_flight": self.in_flight,
                                             "requests_total": self.requests_total,
                                             "calls_logged": logged})
        else:
            await self._error(send, 404, "UnknownOperationException",
                              f"Unknown emulator operation {method} {raw_path.decode('latin-1')}")

    def _update_config(self, body: bytes) -> str | None:
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or not data:
            return "Expected a JSON object such as {\"latency_ms\": 200}."
        unknown = set(data) - {"latency_ms", "fault_timeout_s"}
        if unknown:
            return f"Unknown config keys: {', '.join(sorted(unknown))}."
        latency = data.get("latency_ms", self.latency_ms)
        timeout = data.get("fault_timeout_s", self.fault_timeout_s)
        if isinstance(latency, bool) or not isinstance(latency, int) or latency < 0:
            return "latency_ms must be an integer >= 0."
        if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                or not 0 <= timeout < float("inf")):
            return "fault_timeout_s must be a number >= 0."
        self.latency_ms = latency
        self.fault_timeout_s = float(timeout)
        return None


class _BodyTooLarge(Exception):
    pass


def _resolve(waiter: asyncio.Future[str], outcome: str) -> None:
    if not waiter.done():
        waiter.set_result(outcome)


async def _watch_disconnect(receive: Receive, waiter: asyncio.Future[str]) -> None:
    while not waiter.done():
        message = await receive()
        if message["type"] == "http.disconnect":
            _resolve(waiter, _Outcome.DISCONNECTED)
            return


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client disconnected."""
    message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    pieces = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        piece: bytes = message.get("body", b"")
        size += len(piece)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        pieces.append(piece)
        if not message.get("more_body", False):
            return b"".join(pieces)


async def _drain(receive: Receive) -> None:
    message = await receive()
    while message["type"] == "http.request" and message.get("more_body", False):
        message = await receive()


async def _drop_connection(send: Send, receive: Receive) -> None:
    """Close the TCP connection without (more of) a response. Needs uvicorn's transport."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    close = getattr(transport, "close", None)
    if not callable(close):
        raise RuntimeError("the disconnect fault needs uvicorn (no transport on send)")
    close()
    # Let uvicorn see connection_lost, so it neither writes a 500 nor logs an error.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            while (await receive())["type"] != "http.disconnect":
                pass


def _segment(raw: bytes) -> str:
    text = raw.decode("latin-1")
    return unquote(text) if "%" in text else text


def _validate_ids(agent_id: str, alias_id: str, session_id: str) -> str | None:
    problems = []
    for name, value, pattern, constraint in (
        ("agentId", agent_id, _ID_RE, "[0-9a-zA-Z]+ and length 1-10"),
        ("agentAliasId", alias_id, _ID_RE, "[0-9a-zA-Z]+ and length 1-10"),
        ("sessionId", session_id, _SESSION_RE, "[0-9a-zA-Z._:-]+ and length 2-100"),
    ):
        if pattern.fullmatch(value) is None:
            problems.append(f"Value '{value}' at '{name}' failed to satisfy constraint: "
                            f"Member must satisfy regular expression pattern {constraint}")
    if not problems:
        return None
    return f"{len(problems)} validation error{'s' if len(problems) > 1 else ''} detected: " + \
        "; ".join(problems)


def _halves(text: str) -> tuple[str, str]:
    middle = max(1, len(text) // 2)
    return text[:middle], text[middle:]


# --------------------------------------------------------------------------- the server


def _http_protocol_class() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (h11 without httptools), access log off for this server
    only: uvicorn decides per connection from the *global* ``uvicorn.access`` logger."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # pragma: no cover - httptools is installed here
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    class QuietProtocol(Base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.access_log = False

    return QuietProtocol


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed here
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _QuietFromThread(logging.Filter):
    """Drops uvicorn's INFO lines (started/shutting down) logged by one emulator thread."""

    def __init__(self, thread_id: int) -> None:
        super().__init__()
        self.thread_id = thread_id

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.thread != self.thread_id


def _log_event(event: str, **fields: object) -> None:
    log.info(json.dumps({"ts": round(time.time(), 3), "logger": log.name, "event": event,
                         **fields}))


class AgentEmulator:
    """The emulator served by uvicorn in a background thread with its own event loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency_ms: int = 0,
                 fault_timeout_s: float = 30.0, max_calls: int = 100_000) -> None:
        self.host = host
        self._requested_port = port
        self.app = EmulatorApp(latency_ms=latency_ms, fault_timeout_s=fault_timeout_s,
                               max_calls=max_calls)
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: BaseException | None = None

    # ---- properties

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def latency_ms(self) -> int:
        return self.app.latency_ms

    @latency_ms.setter
    def latency_ms(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("latency_ms must be an integer >= 0")
        self.app.latency_ms = value

    def calls(self) -> list[dict[str, Any]]:
        return self.app.calls()

    def clear_calls(self) -> int:
        return self.app.clear_calls()

    # ---- lifecycle

    def start(self, timeout: float = 10.0) -> AgentEmulator:
        """Serve in a background thread; returns once the socket is listening."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already started")
        sock = _bind(self.host, self._requested_port)
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, http=_http_protocol_class(), ws="none", lifespan="off",
            interface="asgi3", log_config=None, access_log=True,  # see _http_protocol_class
            proxy_headers=False, server_header=False, date_header=True,
            timeout_keep_alive=75,  # longer than the SDKs' idle timeouts: no close race
            timeout_graceful_shutdown=3, backlog=2048,
        )
        self._server = uvicorn.Server(config)
        self._failure = None
        self.app._stopping = False
        self._thread = threading.Thread(target=self._run, args=(self._server, sock),
                                        name=f"agent-emulator-{self._port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"agent emulator failed to start on {self.host}:"
                                   f"{self._port}: {self._failure!r}")
            time.sleep(0.005)
        _log_event("agent_emulator.started", url=self.url,
                   latency_ms=self.app.latency_ms, fault_timeout_s=self.app.fault_timeout_s)
        return self

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        loop = _new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        quiet = _QuietFromThread(threading.get_ident())
        uvicorn_logger = logging.getLogger("uvicorn.error")
        uvicorn_logger.addFilter(quiet)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException as exc:  # SystemExit from a failed startup, too
            self._failure = exc
        finally:
            try:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                sock.close()
                uvicorn_logger.removeFilter(quiet)

    def _request_exit(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self.app.begin_shutdown()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: pending ``timeout``/``stall`` faults end at once (their connections
        are closed), other in-flight calls finish, then the thread exits."""
        thread, loop, server = self._thread, self._loop, self._server
        if thread is None:
            return
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._request_exit)
        elif server is not None:
            server.should_exit = True
        thread.join(timeout)
        if thread.is_alive() and server is not None:
            server.force_exit = True
            thread.join(timeout)
        self._thread = self._loop = self._server = None
        _log_event("agent_emulator.stopped", url=f"http://{self.host}:{self._port}",
                   requests_total=self.app.requests_total)

    def __enter__(self) -> AgentEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# --------------------------------------------------------------------------- CLI


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == log.name and message.startswith("{"):
            return message
        payload: dict[str, object] = {"ts": round(record.created, 3), "logger": record.name,
                                      "level": record.levelname.lower(), "message": message}
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.agent_emulator",
        description="Serve the bedrock-agent-runtime InvokeAgent emulator in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4567)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--fault-timeout-s", type=float, default=30.0)
    parser.add_argument("--max-calls", type=int, default=100_000)
    args = parser.parse_args(argv)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    emulator = AgentEmulator(host=args.host, port=args.port, latency_ms=args.latency_ms,
                             fault_timeout_s=args.fault_timeout_s, max_calls=args.max_calls)
    emulator.start()
    print(json.dumps({"url": emulator.url, "pid": os.getpid()}), flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Traffic capture: one JSON line per request, appended to ``CAPTURE_PATH``, in both colors.

:class:`shared.pipeline.Exchange` calls :meth:`CaptureWriter.capture` when it records a request;
the parity harness turns the file back into cases (``parity_tests/harness/replay.py``). A line::

    {"ts": "2025-01-01T12:00:00.123Z", "color": "blue", "request_id": "...",
     "method": "POST", "path": "/api/v1/chat", "query": [["limit", "5"]],
     "headers": {"content-type": "application/json", "x-api-key": "[REDACTED]"},
     "body": "{\\"message\\": \\"hi\\"}", "body_size": 17, "body_truncated": false,
     "status": 200, "response_headers": {"content-type": "application/json", ...},
     "duration_ms": 12.345}

- ``query`` is the raw query string parsed into ``[name, value]`` pairs, order and blank values
  kept; ``path`` is the decoded path the app routed on.
- ``headers`` and ``response_headers`` have lower-case names; a repeated request header is
  joined with ``", "``. Secret headers (:data:`REDACTED_HEADERS`, or any name containing
  ``token`` or ``secret``) read ``"[REDACTED]"``. The configured API keys are also replaced by
  ``[REDACTED]`` in every other string of the line (body, path, query, other headers), wherever a
  client put them; a line that would still contain one (a key of digits that a number spells) is
  withheld and counted, never written.
- ``body`` is the raw request body as the handler read it: text when it is UTF-8, otherwise
  ``{"base64": "..."}``; at most :data:`MAX_CAPTURED_BODY` bytes (``body_truncated`` then says
  so, cut on a UTF-8 boundary; ``body_size`` is the size read). Requests answered before a
  handler read the body (no body route, preflight, 401, 429, a declared oversize length) have
  ``""``; a body refused as too large holds its first ``MAX_BODY_BYTES + 1`` bytes.

Writing: one ``os.write`` of a whole line on an ``O_APPEND`` descriptor, so lines from the
threads and worker processes appending to one file never interleave. The file is opened lazily,
once per process (after a fork a worker opens its own descriptor). Sampling keeps a request when
a hash of its request id falls under ``CAPTURE_SAMPLE_RATE``, so a decision is reproducible.
Capture never fails a request: an error is logged once per writer and counted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, Self
from urllib.parse import parse_qsl

from prometheus_client import Counter

from shared.settings import Settings

log = logging.getLogger("chatbot.capture")

REDACTED = "[REDACTED]"
REDACTED_HEADERS = frozenset(
    {"x-api-key", "authorization", "cookie", "set-cookie", "proxy-authorization"})
REDACTED_WORDS = ("token", "secret")
MAX_CAPTURED_BODY = 64 * 1024
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)

CAPTURE_ERRORS = Counter(
    "chatbot_capture_errors_total",
    "Capture lines lost to an error (the request itself is unaffected).", ["color"],
)


class HeaderItems(Protocol):
    """Anything with ``items()`` of name/value pairs: werkzeug's and Starlette's ``Headers``."""

    def items(self) -> Iterable[tuple[str, str]]: ...


def is_secret_header(name: str) -> bool:
    """``name`` must be lower case. (REDACTED_WORDS spelled out: this runs per header.)"""
    return name in REDACTED_HEADERS or "token" in name or "secret" in name


def redact_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case names, repeated names joined with ``", "``, secret values replaced."""
    out: dict[str, str] = {}
    for raw_name, value in pairs:
        name = raw_name.lower()
        if is_secret_header(name):
            out[name] = REDACTED
        elif name in out:
            out[name] = f"{out[name]}, {value}"
        else:
            out[name] = value
    return out


def parse_query(query_string: bytes | str) -> list[list[str]]:
    """The raw query string as ``[name, value]`` pairs, order and blank values kept."""
    text = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    return [[k, v] for k, v in parse_qsl(text, keep_blank_values=True)]


def encode_body(body: bytes, limit: int = MAX_CAPTURED_BODY) -> tuple[str | dict[str, str], bool]:
    """``(text or {"base64": ...}, truncated)`` for at most ``limit`` bytes of ``body``."""
    truncated = len(body) > limit
    if truncated:
        body = body[:limit]
    try:
        return body.decode("utf-8"), truncated
    except UnicodeDecodeError as exc:
        # a cut through the last character only: keep the text up to it
        if truncated and exc.reason == "unexpected end of data" and exc.start >= len(body) - 3:
            try:
                return body[:exc.start].decode("utf-8"), truncated
            except UnicodeDecodeError:
                pass
    return {"base64": base64.b64encode(body).decode("ascii")}, truncated


def sampled(request_id: str, rate: float) -> bool:
    """Deterministic: the same request id and rate always give the same answer."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * (1 << 64)


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """Every string (and dict key) inside ``value`` with each secret replaced by REDACTED."""
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {scrub(k, secrets): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    return value


def _dumps(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def build_record(*, color: str, request_id: str, method: str, path: str,
                 query_string: bytes | str, headers: HeaderItems, body: bytes,
                 status: int, response_headers: Mapping[str, str] | None, duration_ms: float,
                 started_at: float, max_body: int = MAX_CAPTURED_BODY,
                 secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """One capture line as a dict; ``secrets`` are replaced in the body here (before base64 or
    truncation could hide or split one), in the other strings by :meth:`CaptureWriter.write`."""
    size = len(body)
    for secret in secrets:  # before truncation or base64 can hide or split one
        raw = secret.encode("utf-8", "surrogatepass")
        if raw in body:
            body = body.replace(raw, REDACTED.encode())
    text, truncated = encode_body(body, max_body)
    record: dict[str, Any] = {
        "ts": _iso(started_at),
        "color": color,
        "request_id": request_id,
        "method": method,
        "path": path,
        "query": parse_query(query_string),
        "headers": redact_headers(headers.items()),
        "body": text,
        "body_size": size,
        "body_truncated": truncated,
        "status": status,
    }
    if response_headers is not None:
        record["response_headers"] = redact_headers(response_headers.items())
    record["duration_ms"] = round(duration_ms, 3)
    return record


class CaptureWriter:
    """Appends capture lines to one file; thread-safe, fork-safe, never raises from a request."""

    def __init__(self, path: str | os.PathLike[str], *, color: str, sample_rate: float = 1.0,
                 secrets: Iterable[str] = (), max_body: int = MAX_CAPTURED_BODY) -> None:
        self.path = os.fspath(path)
        self.color = color
        self.sample_rate = sample_rate
        self.max_body = max_body
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        # how a secret could appear in the text of a line (raw and JSON-escaped): the last guard
        self._forms = tuple({f for s in self.secrets
                             for f in (s, json.dumps(s, ensure_ascii=False)[1:-1])})
        self._lock = threading.Lock()
        _WRITERS.add(self)
        self._pid = -1
        self._fd = -1
        self._closer: weakref.finalize[[int], CaptureWriter] | None = None  # closes _fd
        self._warned = False
        self.lines = 0  # written by this process
        self.errors = 0  # lost by this process

    @classmethod
    def from_settings(cls, settings: Settings, color: str) -> Self | None:
        """The writer for ``CAPTURE_PATH``, or None when capture is off."""
        if not settings.capture_path:
            return None
        return cls(settings.capture_path, color=color,
                   sample_rate=settings.capture_sample_rate,
                   secrets=[k.get_secret_value() for k in settings.api_keys])

    def wants(self, request_id: str) -> bool:
        return sampled(request_id, self.sample_rate)

    def capture(self, *, request_id: str, method: str, path: str, query_string: bytes | str,
                headers: HeaderItems, body: bytes, status: int,
                response_headers: Mapping[str, str] | None, duration_ms: float,
                started_at: float | None = None) -> None:
        """Record one request if it is sampled. Never raises."""
        try:
            if not self.wants(request_id):
                return
            if started_at is None:
                started_at = time.time() - duration_ms / 1000
            self.write(build_record(
                color=self.color, request_id=request_id, method=method, path=path,
                query_string=query_string, headers=headers, body=body, status=status,
                response_headers=response_headers, duration_ms=duration_ms,
                started_at=started_at, max_body=self.max_body, secrets=self.secrets))
        except Exception as exc:
            self._failed(exc)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one line, secrets scrubbed; withheld if one would remain. Never raises."""
        try:
            line = _dumps(record)
            if any(form in line for form in self._forms):  # rare: scrub, then check again
                line = _dumps(scrub(record, self.secrets))
                if any(form in line for form in self._forms):
                    raise ValueError("a line would contain an API key: withheld")
            data = (line + "\n").encode("utf-8", "surrogatepass")
            with self._lock:
                written = os.write(self._descriptor(), data)
                if written == len(data):
                    self.lines += 1
            if written != len(data):
                raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        except Exception as exc:
            self._failed(exc)

    def _descriptor(self) -> int:
        """This process's descriptor, opened on first use (and again after a fork)."""
        pid = os.getpid()
        if self._pid != pid:
            if self._closer is not None:  # inherited from the parent, which still owns it
                self._closer.detach()
            self._fd = os.open(self.path, _OPEN_FLAGS, 0o600)
            self._pid = pid
            self._closer = weakref.finalize(self, _close_quietly, self._fd)
        return self._fd

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self.errors += 1
        try:
            CAPTURE_ERRORS.labels(self.color).inc()
            if not self._warned:
                self._warned = True
                log.warning("capture failed; further failures are only counted",
                            extra={"path": self.path, "error": repr(exc)})
        except Exception:  # noqa: S110 - capture must never fail a request
            pass

    def _after_fork(self) -> None:
        # a thread of the parent may have held the lock at the fork: the child starts afresh
        self._lock = threading.Lock()
        self.lines = self.errors = 0

    def close(self) -> None:
        """Close this process's descriptor (the next line opens it again)."""
        with self._lock:
            if self._closer is not None:
                if self._pid == os.getpid():
                    self._closer()
                self._closer.detach()
            self._closer = None
            self._fd, self._pid = -1, -1


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


_WRITERS: weakref.WeakSet[CaptureWriter] = weakref.WeakSet()


def _reset_in_child() -> None:
    for writer in list(_WRITERS):
        writer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)


_STOP = object()


class QueuedCaptureWriter(CaptureWriter):
    """For an event loop: a request only enqueues its line; one thread does the file writes,
    so no file I/O ever blocks the loop. :meth:`close` drains the queue (at shutdown)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_pid = -1

    def write(self, record: Mapping[str, Any]) -> None:
        if self._thread is None or self._thread_pid != os.getpid():
            self._thread = threading.Thread(target=self._drain, name="capture-writer",
                                            daemon=True)
            self._thread_pid = os.getpid()
            self._thread.start()
        self._queue.put(record)

    def _drain(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if isinstance(item, threading.Event):
                item.set()
            else:
                super().write(item)  # type: ignore[arg-type]

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every line enqueued so far is written."""
        if self._thread is None or self._thread_pid != os.getpid():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        if self._thread is not None and self._thread_pid == os.getpid():
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
            self._thread = None

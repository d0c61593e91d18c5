"""Raw bytes on a socket: the parity corpus's ``raw:`` step kind, below any HTTP client.

A raw step sends exact bytes (several writes, pauses between them, optionally a half-close),
then reads whatever comes back until the server closes the connection, resets it, or stays
silent for ``read_timeout`` seconds. What comes back is parsed into :class:`Answer` objects
(status, error code, whether the body is the shared error envelope) in the order they came, and
the connection's end is one of :data:`ENDS`:

- ``closed``: the server closed the connection (EOF) after its answers;
- ``reset``: the connection was reset (by the peer), while writing or reading;
- ``open``: the server kept the connection open, silent, for ``read_timeout`` after its last
  complete answer (keep-alive);
- ``timeout``: nothing at all, or a partial answer, by ``read_timeout`` (a hang).

The client never interprets the bytes it sends: what the server's parser does with them is the
point. Parsing the answers follows RFC 9112 (status line, headers, Content-Length or chunked
body, or a body to the close); a 1xx answer is an answer of its own (``100`` before ``400``).
"""

from __future__ import annotations

import errno
import json
import re
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any

ENDS = ("closed", "reset", "open", "timeout")
MAX_READ_BYTES = 4 * 1024 * 1024  # more than any answer of the API; the rest is not read


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Repeat:
    """``times`` copies of ``data`` in one write (a body too big to spell out in a file)."""

    data: bytes
    times: int


Write = bytes | Pause | Repeat


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool = True  # False: the connection ended inside this answer
    version: str = "1.1"

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def envelope(self) -> bool:
        """Whether the body is the shared error envelope (``error``, ``error_code``, ...)."""
        return error_code(self.body) is not None

    @property
    def error_code(self) -> str | None:
        return error_code(self.body)

    def summary(self) -> str:
        """``status error_code`` for the envelope, ``status non-envelope`` for anything else
        with a body, ``status`` for an empty one (1xx, 204): what both colors must agree on."""
        code = self.error_code
        if code:
            return f"{self.status} {code}"
        return f"{self.status} non-envelope" if self.body.strip() else str(self.status)


def error_code(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    code = doc.get("error_code") if isinstance(doc, dict) else None
    if isinstance(code, str) and "error" in doc and "request_id" in doc:
        return code
    return None


@dataclass
class Exchange:
    """What one raw step saw on one connection."""

    answers: list[Answer] = field(default_factory=list)
    end: str = "timeout"
    sent: int = 0  # bytes the server accepted before the end
    error: str | None = None  # the client could not connect at all
    elapsed_ms: float = 0.0
    raw: bytes = b""

    def summaries(self) -> list[str]:
        return [a.summary() + ("" if a.complete else " (cut short)") for a in self.answers]


def _eof_or_reset(sock: socket.socket) -> str | None:
    """Without waiting: whether the server has closed (or reset) the connection already."""
    if not select.select([sock], [], [], 0)[0]:
        return None
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except OSError:
        return "reset"
    return "closed" if data == b"" else None


# after a whole final answer, how long to wait for more (a pipelined answer, a close) before
# calling the connection kept open: servers send those at once; the read timeout is for the
# first answer, which a busy server (blue's sync workers all taken) may only start late
KEEPALIVE_GRACE_S = 1.0
READ_TIMEOUT_S = 5.0  # a raw step's default read timeout (``read_timeout:``)


def send_raw(host: str, port: int, writes: list[Write], *, half_close: bool = False,
             read_timeout: float = READ_TIMEOUT_S, connect_timeout: float = 5.0) -> Exchange:
    """Send ``writes`` (pauses in between) on one connection and read what comes back."""
    out = Exchange()
    started = time.perf_counter()
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except OSError as exc:
        out.error = f"connect: {exc}"
        return out
    buffer = bytearray()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ended: str | None = None
        for item in writes:
            if isinstance(item, Pause):
                time.sleep(item.seconds)
                ended = _eof_or_reset(sock)
                if ended == "reset":
                    break
                continue
            data = item if isinstance(item, bytes) else item.data * item.times
            try:
                sock.sendall(data)
                out.sent += len(data)
            except (BrokenPipeError, ConnectionResetError):
                ended = "reset"
                break
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    ended = "reset"
                    break
                raise
        if half_close and ended is None:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                ended = "reset"
        out.end = _read(sock, buffer, read_timeout)
        if ended == "reset" and out.end != "reset":
            # a reset while writing: what the server sent first may still be readable, but the
            # client met a reset (urllib and most SDKs raise before they read the answer)
            out.end = "reset"
    finally:
        sock.close()
        out.elapsed_ms = (time.perf_counter() - started) * 1000
    out.raw = bytes(buffer)
    out.answers = parse_answers(out.raw)
    if out.end == "open" and (not out.answers or not out.answers[-1].complete):
        out.end = "timeout"  # silent with nothing (or half an answer) to show: a hang
    return out


def _read(sock: socket.socket, buffer: bytearray, read_timeout: float) -> str:
    deadline = time.monotonic() + read_timeout
    while len(buffer) < MAX_READ_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "open"
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return "open"
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                return "reset"
            raise
        if not data:
            return "closed"
        buffer += data
        if _final(buffer):
            # answers so far are whole and the last is final: the silence that follows is
            # keep-alive, not a hang; a close (announced or not) follows an answer at once
            deadline = min(deadline, time.monotonic() + KEEPALIVE_GRACE_S)
    return "closed"


def _complete(buffer: bytearray) -> bool:
    answers = parse_answers(bytes(buffer))
    return bool(answers) and answers[-1].complete


def _final(buffer: bytearray) -> bool:
    """Whether the answers so far are whole and the last is not an interim 1xx."""
    answers = parse_answers(bytes(buffer))
    return bool(answers) and answers[-1].complete and answers[-1].status >= 200


_STATUS = re.compile(rb"^HTTP/(\d(?:\.\d)?) (\d{3})")


def parse_answers(data: bytes) -> list[Answer]:
    """Every HTTP/1.x answer in ``data``, in order; the last may be cut short."""
    answers: list[Answer] = []
    pos = 0
    while pos < len(data):
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            if data[pos:].strip():
                answers.append(Answer(_status(data[pos:]), [], data[pos:], complete=False))
            break
        lines = data[pos:head_end].split(b"\r\n")
        status, version = _status(lines[0]), _version(lines[0])
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1").strip(), value.decode("latin-1").strip()))
        pos = head_end + 4
        if 100 <= status < 200 or status in (204, 304):
            answers.append(Answer(status, headers, b"", version=version))
            continue
        names = {k.lower(): v for k, v in headers}
        if "chunked" in names.get("transfer-encoding", "").lower():
            body, pos, complete = _chunked(data, pos)
        elif names.get("content-length", "").isdigit():
            length = int(names["content-length"])
            body, complete = data[pos:pos + length], len(data) - pos >= length
            pos += length
        else:  # the body runs to the close
            body, complete, pos = data[pos:], True, len(data)
        answers.append(Answer(status, headers, body, complete, version))
        if not complete:
            break
    return answers


def _status(line: bytes) -> int:
    match = _STATUS.match(line)
    return int(match.group(2)) if match else 0


def _version(line: bytes) -> str:
    match = _STATUS.match(line)
    return match.group(1).decode() if match else "1.1"


def _chunked(data: bytes, pos: int) -> tuple[bytes, int, bool]:
    body = bytearray()
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return bytes(body), len(data), False
        size_text = data[pos:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return bytes(body), len(data), False
        pos = line_end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n", pos)
            while trailer_end >= 0 and trailer_end != pos:  # skip trailer fields
                pos = trailer_end + 2
                trailer_end = data.find(b"\r\n", pos)
            if trailer_end < 0:
                return bytes(body), len(data), False
            return bytes(body), trailer_end + 2, True
        if len(data) < pos + size + 2:
            body += data[pos:pos + size]
            return bytes(body), len(data), False
        body += data[pos:pos + size]
        pos += size + 2


# --- the corpus's spelling of writes -----------------------------------------------------------

def escape(data: bytes, limit: int = 2000) -> str:
    """Bytes as printable text (``\\r\\n`` and non-ASCII escaped), cut at ``limit``."""
    text = data[:limit].decode("latin-1").encode("unicode_escape").decode("ascii")
    return text + (f"... ({len(data)} bytes)" if len(data) > limit else "")


def describe(writes: list[Write]) -> list[str]:
    out = []
    for item in writes:
        if isinstance(item, Pause):
            out.append(f"(pause {item.seconds:g} s)")
        elif isinstance(item, Repeat):
            out.append(f"{escape(item.data, 40)} x {item.times}")
        else:
            out.append(escape(item))
    return out


def document(exchange: Exchange) -> dict[str, Any]:
    """What the parity runner compares for a raw step, per lane."""
    first = exchange.answers[0] if exchange.answers else None
    return {
        "status": first.status if first else 0,
        "answers": exchange.summaries(),
        "end": exchange.end,
    }


# --- what the runner compares -------------------------------------------------------------------

# ids a raw step may name (session and user ids in its bytes or its answers' bodies)
TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{2,}")
# non-envelope error answers a server's own parser may give before the app runs (docs/alb.md,
# "Who answers"); any other non-envelope error is a violation: the app answers with the envelope
SERVER_STATUSES = (400, 417)


def announced_close(answer: Answer) -> bool:
    """Whether the answer told the client the connection ends after it (RFC 9112 9.6)."""
    connection = (answer.header("Connection") or "").lower()
    return "close" in connection or (answer.version == "1.0" and "keep-alive" not in connection)


def compared_end(exchange: Exchange) -> str:
    """The connection's end as a client sees it: ``answered`` when the server kept it open
    after whole answers, or closed it right after an answer that announced the close (a client
    must not reuse it either way: blue's sync worker closes after every answer, green keeps it
    alive); ``closed`` when it closed without announcing it (no answer, or half a one);
    ``reset``; ``timeout`` (a hang)."""
    if exchange.end == "open":
        return "answered"
    if exchange.end == "closed" and exchange.answers and exchange.answers[-1].complete \
            and announced_close(exchange.answers[-1]):
        return "answered"
    return exchange.end


def documents(exchanges: dict[str, Exchange]) -> dict[str, dict[str, Any]]:
    """Per lane: the first answer's status, every answer (``status error_code``, or
    ``status non-envelope``) in order, and :func:`compared_end`. Answers after one that
    announced the close of a connection the server then closed are compared only as far as
    the lane that closed soonest: pipelined requests past that point were never answered there,
    and a client sends them again on a new connection (RFC 9112 9.3.2)."""
    cut: int | None = None
    for ex in exchanges.values():
        if ex.end == "closed" and ex.answers and announced_close(ex.answers[-1]):
            cut = len(ex.answers) if cut is None else min(cut, len(ex.answers))
    out: dict[str, dict[str, Any]] = {}
    for name, ex in exchanges.items():
        doc = document(ex)
        doc["end"] = compared_end(ex)
        if cut is not None and len(doc["answers"]) > cut:
            doc["answers"] = doc["answers"][:cut]
            doc["end"] = "answered"
        out[name] = doc
    return out


def violations(exchange: Exchange) -> list[str]:
    """What no lane may do, whatever the others do: a 5xx, a hang, a non-envelope error that
    is not a server's own refusal."""
    out = []
    for answer in exchange.answers:
        if answer.status >= 500:
            out.append(f"answered {answer.summary()} (no 5xx for any bytes)")
        elif answer.status >= 400 and not answer.envelope and \
                answer.status not in SERVER_STATUSES:
            out.append(f"answered {answer.summary()}: an error without the envelope that is not "
                       f"a server's own refusal ({', '.join(map(str, SERVER_STATUSES))})")
    if exchange.end == "timeout":
        out.append("the connection hung: no whole answer and no close within the read timeout")
    return out

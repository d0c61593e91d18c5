"""Run-level parity checks: what a YAML case cannot express, compared between the colors.

- ``rate_limit_burst``: limit+K chats with one API key, all written before any answer is read,
  against each color with all its shipped workers (blue: gunicorn, 2 x cores + 1 sync workers;
  green: uvicorn, one worker per core). Exactly ``limit`` are accepted (and their
  ``X-RateLimit-Remaining`` values are exactly limit-1 .. 0, once each), the K others are 429
  ``RATE_LIMITED``, and both colors give the same multiset of answers, accepted and refused
  alike: status, every compared header and the whole body (ids aliased, declared noise reduced
  to its format, as the corpus compares them; :func:`canonical_answer`).
- ``dependency_down``: a dependency really stopped, not simulated: each color's agent endpoint and
  CloudWatch endpoint are closed ports (DynamoDB is up). A chat is 503 ``AGENT_UNAVAILABLE`` and
  stores nothing, ``/health/detailed`` is 503 with the agent down and DynamoDB up, ``/health``
  is 200 (metrics that cannot be sent never fail a request); both colors answer the same.
- ``graceful_shutdown``: SIGTERM once while N chats are in flight (the agent takes
  ``latency_ms`` on each) and while a PutMetricData of that color is in flight (the fault
  injector holds each one ``FLUSH_HOLD_S``; the check waits until it holds one, every time, not
  by chance); every chat must be answered 200, and CloudWatch (read from moto after the server
  exited) must hold one observation per metric for every request the server answered: the batch
  in flight finished, and the chats answered after SIGTERM went out with the final flush.

Each check boots its own servers (one per color, fresh tables, its own CloudWatch namespace), so
it sees nothing of the lanes. :class:`CheckRun` boots them once the lanes are up (they boot
while the corpus runs) and runs the checks after it; the e2e tests call the same functions
against a :class:`devstack.stack.DevStack`.

Requests are plain HTTP/1.1 over asyncio streams, one connection each: every connection is opened
and every request written before the first answer is read, so "all at once" holds by
construction, and the time each answer's first byte arrived shows what was in flight when.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3

from devstack.procs import EmulatorProcess, MotoProcess, free_port
from devstack.run import Server
from devstack.stack import FAKE_CREDENTIALS, create_tables
from shared.metrics import outcome_metric

CHECKS = ("rate_limit_burst", "dependency_down", "graceful_shutdown")
FLUSH_HOLD_S = 3.0  # graceful_shutdown: how long the fault injector holds each PutMetricData
COLORS = ("blue", "green")
WINDOW_S = 3600  # as the lanes: no window edge inside a run (see _avoid_window_edge)
BURST_KEY = "check-burst-key"
DRAIN_KEY = "check-drain-key-{}"
CHAT = "/api/v1/chat"
# headers compared between the colors on every burst answer (values, or presence for *)
COMPARED_HEADERS = ("content-type", "x-ratelimit-limit", "x-ratelimit-remaining",
                    "x-content-type-options", "cache-control", "*retry-after", "*x-request-id")


# --- raw HTTP ----------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None
    first_byte_at: float | None = None  # time.monotonic()

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def color_differences(per_color: dict[str, dict[str, Any]], keys: tuple[str, ...]) -> list[str]:
    """Each key on which a color differs from the first one, as a failure line."""
    colors = list(per_color)
    return [f"{colors[0]} and {other} differ in {key}: "
            f"{per_color[colors[0]][key]} vs {per_color[other][key]}"
            for other in colors[1:] for key in keys
            if per_color[other][key] != per_color[colors[0]][key]]


def chat_request(port: int, api_key: str, message: str, user_id: str) -> bytes:
    body = json.dumps({"message": message, "user_id": user_id}).encode()
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {api_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"incomplete answer ({len(raw)} bytes)")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    elif "content-length" in headers and len(body) != int(headers["content-length"]):
        raise ValueError(f"body cut at {len(body)} of {headers['content-length']} bytes")
    return status, headers, body


async def send_all(port: int, requests: list[bytes], timeout_s: float = 60.0
                   ) -> tuple[list[asyncio.Task[Reply]], float]:
    """Open one connection per request, write every request, then start reading them all.
    Returns the reading tasks and the time the last request was written."""
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | BaseException] = list(
        await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in requests),
                             return_exceptions=True))
    for conn, raw in zip(conns, requests, strict=True):
        if not isinstance(conn, BaseException):
            conn[1].write(raw)
    await asyncio.gather(*(c[1].drain() for c in conns if not isinstance(c, BaseException)),
                         return_exceptions=True)
    written = time.monotonic()

    async def read(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | BaseException
                   ) -> Reply:
        if isinstance(conn, BaseException):
            return Reply(error=f"connect: {conn!r}")
        reader, writer = conn
        reply = Reply()
        try:
            async with asyncio.timeout(timeout_s):
                first = await reader.read(65536)
                reply.first_byte_at = time.monotonic()
                raw = first + await reader.read()
            reply.status, reply.headers, reply.body = _parse(raw)
        except (OSError, ValueError, TimeoutError, IndexError) as exc:
            reply.error = f"{type(exc).__name__}: {exc}"
        finally:
            writer.close()
        return reply

    return [asyncio.create_task(read(c)) for c in conns], written


# --- servers -----------------------------------------------------------------------------------

@dataclass
class CheckServer:
    """One color booted as shipped (all its workers), on fresh tables and its own namespace,
    with a ledger of every answer it gave, for the CloudWatch accounting."""

    color: str
    server: Server
    namespace: str
    tables: tuple[str, str]
    moto_url: str
    answered: Counter[str] = field(default_factory=Counter)  # "METHOD endpoint status"

    async def wait_healthy(self, timeout_s: float = 90.0) -> None:
        """Probe /health until it answers; every probe answered is recorded (it is counted
        in CloudWatch too), a refused connection was never served."""
        deadline = time.monotonic() + timeout_s
        raw = (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while time.monotonic() < deadline:
            proc = self.server.proc
            if proc is None or proc.poll() is not None:
                raise RuntimeError(f"{self.color} exited; see {self.server.log_path}")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            try:
                writer.write(raw)
                data = await asyncio.wait_for(reader.read(), 30)
                status, _, _ = _parse(data)
            except (OSError, ValueError, IndexError):  # reset while booting: never served
                await asyncio.sleep(0.1)
                continue
            finally:
                writer.close()
            self.answered[f"GET /health {status}"] += 1
            if status == 200:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.color} not healthy after {timeout_s}s")

    def record(self, replies: list[Reply]) -> None:
        for r in replies:
            if r.status is not None:
                self.answered[f"POST {CHAT} {r.status}"] += 1

    def expected_cloudwatch(self) -> dict[str, float]:
        out: Counter[str] = Counter()
        for series, count in self.answered.items():
            _, endpoint, status = series.split(" ")
            for name in ("RequestCount", "RequestLatency", outcome_metric(int(status))):
                out[f"{name}|{endpoint}"] += count
        return dict(out)

    def cloudwatch(self) -> dict[str, float]:
        """SampleCount per ``metric|endpoint`` that reached CloudWatch in this namespace."""
        cw = boto3.client("cloudwatch", endpoint_url=self.moto_url, region_name="us-east-1")
        now = dt.datetime.now(dt.UTC)
        out: dict[str, float] = {}
        for metric in cw.list_metrics(Namespace=self.namespace)["Metrics"]:
            stats = cw.get_metric_statistics(
                Namespace=self.namespace, MetricName=metric["MetricName"],
                Dimensions=metric["Dimensions"], StartTime=now - dt.timedelta(hours=1),
                EndTime=now + dt.timedelta(minutes=1), Period=60, Statistics=["SampleCount"])
            key = f"{metric['MetricName']}|{metric['Dimensions'][0]['Value']}"
            out[key] = out.get(key, 0.0) + sum(p["SampleCount"] for p in stats["Datapoints"])
        return out


def boot(color: str, moto_url: str, agent_url: str, log_dir: Path, limit: int,
         workers: int | None = None, tag: str = "", overrides: dict[str, str] | None = None,
         ) -> CheckServer:
    """Start one color (not yet healthy: see :meth:`CheckServer.wait_healthy`). Its tables are
    created by :func:`prepare_tables` once moto is up."""
    run = tag or uuid.uuid4().hex[:8]
    prefix = f"check_{run}_{color}"
    tables = (f"{prefix}_sessions", f"{prefix}_rate_limits")
    namespace = f"Check/{run}/{color}"
    keys = [BURST_KEY] + [DRAIN_KEY.format(i) for i in range(8)]
    env = {**FAKE_CREDENTIALS, "ENVIRONMENT": "test", "API_KEYS": ",".join(keys),
           "DYNAMODB_ENDPOINT_URL": moto_url, "CLOUDWATCH_ENDPOINT_URL": moto_url,
           "BEDROCK_ENDPOINT_URL": agent_url,
           "SESSIONS_TABLE": tables[0], "RATE_LIMIT_TABLE": tables[1],
           "RATE_LIMIT_REQUESTS": str(limit), "RATE_LIMIT_WINDOW_S": str(WINDOW_S),
           "METRICS_NAMESPACE": namespace,
           # a flush every second, so that graceful_shutdown can catch one in flight; the chats
           # answered after SIGTERM can only reach CloudWatch with the final flush
           "METRICS_FLUSH_INTERVAL_S": "1",
           # a held PutMetricData (FLUSH_HOLD_S) must not time out and be sent again: moto
           # stores a held call once it is let go, so a retry would count it twice
           "DYNAMODB_READ_TIMEOUT_S": "10",
           # the flush in flight and the final flush, each held FLUSH_HOLD_S
           "METRICS_SHUTDOWN_TIMEOUT_S": "20",
           "METRICS_DIR": tempfile.mkdtemp(prefix=f"check-{color}-"), **(overrides or {})}
    log_dir.mkdir(parents=True, exist_ok=True)
    server = Server(color, free_port(), env, workers=workers,
                    log_path=log_dir / f"check-{tag + '-' if tag else ''}{color}.log").start()
    return CheckServer(color, server, namespace, tables, moto_url)


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    return free_port()  # bound and closed again at once


def boot_with_dependencies_down(color: str, moto_url: str, log_dir: Path) -> CheckServer:
    """A color whose agent and CloudWatch endpoints refuse connections (DynamoDB up)."""
    down = f"http://127.0.0.1:{closed_port()}"
    return boot(color, moto_url, down, log_dir, 1000, tag="down",
                overrides={"CLOUDWATCH_ENDPOINT_URL": down, "AGENT_MAX_ATTEMPTS": "1"})


def prepare_tables(servers: list[CheckServer]) -> None:
    for s in servers:
        create_tables(s.moto_url, *s.tables)




# --- results -----------------------------------------------------------------------------------

@dataclass
class CheckResult:
    name: str
    passed: bool
    colors: dict[str, dict[str, Any]]
    failures: list[str]
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _avoid_window_edge(now: float | None = None, margin_s: float = 20.0) -> float:
    """Sleep past the next rate-limit window edge if it is near: a burst split over two fixed
    windows would be counted in two buckets. Returns the time slept."""
    now = time.time() if now is None else now
    left = WINDOW_S - now % WINDOW_S
    if left >= margin_s:
        return 0.0
    await asyncio.sleep(left + 1)
    return left + 1


def burst_verdict(limit: int, extra: int, replies: dict[str, list[Reply]]) -> tuple[
        dict[str, dict[str, Any]], list[str]]:
    """Figures and failures of a burst, per color and between colors (pure)."""
    figures: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    shapes: dict[str, Any] = {}
    canon: dict[str, Counter[str]] = {}
    for color, answers in replies.items():
        statuses = Counter(str(r.status) if r.status is not None else "no answer"
                           for r in answers)
        accepted = [r for r in answers if r.status is not None and 200 <= r.status < 300]
        refused = [r for r in answers if r.status == 429]
        remaining = sorted(int(r.headers.get("x-ratelimit-remaining", -1)) for r in accepted)
        figures[color] = {"limit": limit, "sent": len(answers), "accepted": len(accepted),
                          "refused": len(refused), "statuses": dict(sorted(statuses.items()))}
        if len(accepted) != limit:
            failures.append(f"{color}: {len(accepted)} accepted, expected exactly {limit}")
        if len(refused) != extra:
            failures.append(f"{color}: {len(refused)} refused with 429, expected {extra}")
        if remaining != list(range(limit)):
            failures.append(f"{color}: X-RateLimit-Remaining of the accepted answers is "
                            f"{remaining}, expected each of 0..{limit - 1} once")
        for r in refused:
            body = r.json or {}
            retry = r.headers.get("retry-after", "")
            if body.get("error_code") != "RATE_LIMITED":
                failures.append(f"{color}: a 429 without error_code RATE_LIMITED: {r.body[:200]!r}")
                break
            if not retry.isdigit() or not 1 <= int(retry) <= WINDOW_S:
                failures.append(f"{color}: a 429 with Retry-After {retry!r}")
                break
        shapes[color] = {
            "statuses": figures[color]["statuses"],
            "headers": sorted({_header_shape(r) for r in answers}),
            "envelope": sorted({(tuple(sorted((r.json or {}).keys())),
                                 (r.json or {}).get("error_code"), (r.json or {}).get("error"))
                                for r in refused}),
        }
        canon[color] = Counter(json.dumps(canonical_answer(r), sort_keys=True) for r in answers)
    failures += color_differences(shapes, ("statuses", "headers", "envelope"))
    failures += answer_differences(canon)
    return figures, failures


def _noise() -> list[Any]:
    from parity_tests.harness.rules import load_noise

    return load_noise(Path(__file__).resolve().parent.parent / "noise.yaml")


def canonical_answer(r: Reply, route: str = CHAT) -> dict[str, Any]:
    """One answer as the corpus compares it (status, every compared header, the whole body),
    flattened, with generated ids aliased and declared noise reduced to its format: what two
    answers of a burst may be compared on when they are not paired one to one."""
    from parity_tests.harness.compare import Aliases, alias_ids, flatten, neutralised

    rules = _noise()
    headers = {}
    for name in COMPARED_HEADERS:
        if name.startswith("*"):
            headers[name[1:]] = "present" if name[1:] in r.headers else "absent"
        elif name in r.headers:
            headers[name] = r.headers[name]
    body = r.json if r.json is not None else r.body.decode("utf-8", "replace")
    raw = alias_ids({"status": r.status if r.status is not None else f"no answer: {r.error}",
                     "headers": headers, "body": body}, rules, Aliases())
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        flat.update(flatten(value, key))
    return neutralised(flat, rules, route)


def answer_differences(canon: dict[str, Counter[str]]) -> list[str]:
    """Every answer (status, headers, body; see :func:`canonical_answer`) one color gave more
    often than the first color, naming the paths where it differs from the first color's
    closest answer of the same status."""
    colors = list(canon)
    if not colors:
        return []
    base = canon[colors[0]]
    out: list[str] = []
    for other in colors[1:]:
        mine = canon[other]
        for left, right, lonely in ((colors[0], other, base - mine),
                                    (other, colors[0], mine - base)):
            pool = [json.loads(a) for a in (canon[right] - canon[left])] or [
                json.loads(a) for a in canon[right]]
            for text, n in sorted(lonely.items()):
                answer = json.loads(text)
                same = [a for a in pool if a.get("status") == answer.get("status")] or pool
                closest = min(same, key=lambda a: _distance(a, answer)) if same else {}
                paths = sorted(k for k in set(answer) | set(closest)
                               if answer.get(k, "<missing>") != closest.get(k, "<missing>"))
                detail = ", ".join(f"{p}: {answer.get(p, '<missing>')!r} vs "
                                   f"{closest.get(p, '<missing>')!r}" for p in paths[:6])
                out.append(f"{left} and {right} differ in answers: {n} answer(s) of {left} "
                           f"with status {answer.get('status')} that {right} did not give "
                           f"({detail or 'no answer of that kind'})")
            if out:
                return out  # one direction says it; the other would repeat it
    return out


def _distance(a: dict[str, Any], b: dict[str, Any]) -> int:
    return sum(a.get(k, "<missing>") != b.get(k, "<missing>") for k in set(a) | set(b))


def _header_shape(r: Reply) -> tuple[tuple[str, str], ...]:
    out = []
    for name in COMPARED_HEADERS:
        if name.startswith("*"):
            out.append((name[1:], "present" if name[1:] in r.headers else "absent"))
        elif name != "x-ratelimit-remaining" or r.status == 429:  # accepted: checked above
            out.append((name, r.headers.get(name, "absent")))
    return (("status", str(r.status)), *out)


async def rate_limit_burst(servers: list[CheckServer], limit: int, extra: int) -> CheckResult:
    """Fire limit+extra chats with one API key at each color at once (colors in parallel)."""
    started = time.perf_counter()
    await _avoid_window_edge()

    async def one(s: CheckServer) -> list[Reply]:
        # one request, limit + extra times: which of them win the race does not change what
        # the answers are, so the colors' multisets of answers compare
        requests = [chat_request(s.server.port, BURST_KEY, "burst", "burst-user")
                    for _ in range(limit + extra)]
        tasks, _ = await send_all(s.server.port, requests)
        replies = list(await asyncio.gather(*tasks))
        s.record(replies)
        return replies

    answers = await asyncio.gather(*(one(s) for s in servers))
    figures, failures = burst_verdict(limit, extra, {s.color: a for s, a in
                                                     zip(servers, answers, strict=True)})
    return CheckResult("rate_limit_burst", not failures, figures, failures,
                       round(time.perf_counter() - started, 2))


def _request(method: str, path: str, port: int, api_key: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {api_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


DOWN_EXPECTED = (("chat", 503, "AGENT_UNAVAILABLE"), ("get-session", 404, "SESSION_NOT_FOUND"),
                 ("health-detailed", 503, None), ("health", 200, None))


def down_verdict(replies: dict[str, list[Reply]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Figures and failures of ``dependency_down`` from each color's answers, in the order of
    :data:`DOWN_EXPECTED`."""
    figures: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for color, answers in replies.items():
        bodies = [a.json if isinstance(a.json, dict) else {} for a in answers]
        checks_seen = {c.get("name"): c.get("status") for c in bodies[2].get("checks", [])
                       } if len(bodies) > 2 else {}
        figures[color] = {
            "statuses": [a.status for a in answers],
            "error_codes": [b.get("error_code") for b in bodies],
            "detailed_checks": checks_seen,
            "envelope_keys": sorted(bodies[0]) if bodies else [],
            "retry_after": answers[0].headers.get("retry-after") if answers else None,
        }
        for (step, status, code), answer, body in zip(DOWN_EXPECTED, answers, bodies,
                                                      strict=False):
            if answer.status != status or (code and body.get("error_code") != code):
                failures.append(f"{color} {step}: expected {status} {code or ''}, got "
                                f"{answer.status} {body.get('error_code') or answer.error or ''}")
        if checks_seen != {"dynamodb": "up", "agent": "down"}:
            failures.append(f"{color} health-detailed: checks {checks_seen}")
    failures += color_differences(figures, ("statuses", "error_codes", "detailed_checks",
                                            "envelope_keys", "retry_after"))
    return figures, failures


async def dependency_down(servers: list[CheckServer]) -> CheckResult:
    started = time.perf_counter()
    replies: dict[str, list[Reply]] = {}
    sid = f"down-{uuid.uuid4().hex[:12]}"  # the same id in each color (each has its own tables)
    for s in servers:
        port = s.server.port
        steps = [_request("POST", CHAT, port, BURST_KEY, json.dumps(
                     {"message": "is anyone there?", "session_id": sid}).encode()),
                 _request("GET", f"{CHAT}/sessions/{sid}", port, BURST_KEY),
                 _request("GET", "/health/detailed", port, BURST_KEY),
                 _request("GET", "/health", port, BURST_KEY)]
        answers = []
        for raw in steps:  # one after the other: the read must follow the chat
            tasks, _ = await send_all(port, [raw], timeout_s=30)
            answers.append(await tasks[0])
        replies[s.color] = answers
    figures, failures = down_verdict(replies)
    return CheckResult("dependency_down", not failures, figures, failures,
                       round(time.perf_counter() - started, 2))


def datum_accounting(expected: dict[str, float], got: dict[str, float]) -> dict[str, Any]:
    """Observations per ``metric|endpoint`` that should have reached CloudWatch vs did (pure)."""
    lost = {k: v - got.get(k, 0.0) for k, v in expected.items() if v > got.get(k, 0.0)}
    extra = {k: v - expected.get(k, 0.0) for k, v in got.items() if v > expected.get(k, 0.0)}
    return {"datums_expected": sum(expected.values()), "datums_received": sum(got.values()),
            "datums_lost": sum(lost.values()), "datums_extra": sum(extra.values()),
            "lost_by_metric": lost, "extra_by_metric": extra}


def _faults(moto_url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fault injector's switches (``body``: set them first)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(moto_url + "/_faults/config", data=data,  # noqa: S310
                                 method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - devstack's own
        return dict(json.loads(resp.read()))


def _held(s: CheckServer) -> int:
    """This color's PutMetricData calls being held by the fault injector now."""
    return int(_faults(s.moto_url)["held"].get(s.namespace, 0))


async def _flush_in_flight(s: CheckServer, timeout_s: float = 30.0) -> float:
    """Give the color a datum to flush (a /health, counted), then wait until the injector holds
    its PutMetricData. Returns the seconds waited."""
    started = time.monotonic()
    await s.wait_healthy()
    while not await asyncio.to_thread(_held, s):
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{s.color}: no PutMetricData in flight after {timeout_s}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _drain_one(s: CheckServer, in_flight: int, latency_ms: int, limit: int,
                     signal_after_s: float) -> dict[str, Any]:
    await _flush_in_flight(s)
    port = s.server.port
    message = f"drain [[latency:{latency_ms}]]"
    requests = [chat_request(port, DRAIN_KEY.format(i // limit), message, f"drain-{i}")
                for i in range(in_flight)]
    tasks, written = await send_all(port, requests, timeout_s=120)
    await asyncio.sleep(max(0.0, written + signal_after_s - time.monotonic()))
    proc = s.server.proc
    assert proc is not None
    signalled = time.monotonic()
    s.server.terminate()  # SIGTERM, once
    flush_held = await asyncio.to_thread(_held, s)  # held before SIGTERM and still after it
    replies = list(await asyncio.gather(*tasks))
    code = await asyncio.to_thread(proc.wait, 120)
    exit_s = time.monotonic() - signalled
    s.server.stop()  # already exited: closes the log
    s.record(replies)
    pending = sum(1 for r in replies if r.first_byte_at is None or r.first_byte_at > signalled)
    lost = [r for r in replies if r.status != 200]
    got = await asyncio.to_thread(s.cloudwatch)
    accounting = datum_accounting(s.expected_cloudwatch(), got)
    return {"sent": in_flight, "in_flight_at_sigterm": pending,
            "flush_in_flight_at_sigterm": flush_held > 0,
            "answered_200": in_flight - len(lost), "lost_responses": len(lost),
            "lost_examples": [r.error or f"{r.status} {r.body[:120]!r}" for r in lost[:5]],
            "exit_code": code, "exit_s": round(exit_s, 2),
            "statuses": dict(Counter(str(r.status) for r in replies)), **accounting}


async def graceful_shutdown(servers: list[CheckServer], in_flight: int = 30,
                            latency_ms: int = 1000, limit: int = 20,
                            signal_after_s: float = 0.5) -> CheckResult:
    """SIGTERM each color (in parallel) while ``in_flight`` chats are waiting on the agent and
    one of its PutMetricData is held by the fault injector."""
    started = time.perf_counter()
    moto_urls = sorted({s.moto_url for s in servers})
    for url in moto_urls:
        await asyncio.to_thread(_faults, url, {"cloudwatch_delay_s": FLUSH_HOLD_S})
    try:
        results = await asyncio.gather(*(_drain_one(s, in_flight, latency_ms, limit,
                                                     signal_after_s) for s in servers))
    finally:
        for url in moto_urls:
            await asyncio.to_thread(_faults, url, {"cloudwatch_delay_s": 0})
    figures = {s.color: r for s, r in zip(servers, results, strict=True)}
    failures: list[str] = []
    for color, r in figures.items():
        if r["in_flight_at_sigterm"] != in_flight:
            failures.append(f"{color}: only {r['in_flight_at_sigterm']} of {in_flight} requests "
                            "were still unanswered at SIGTERM (the check proved less)")
        if not r["flush_in_flight_at_sigterm"]:
            failures.append(f"{color}: no PutMetricData was in flight at SIGTERM (the check "
                            "proved less)")
        if r["lost_responses"]:
            failures.append(f"{color}: {r['lost_responses']} responses lost "
                            f"(e.g. {r['lost_examples'][0]})")
        if r["datums_lost"] or r["datums_extra"]:
            failures.append(f"{color}: {r['datums_lost']:g} metric observations lost, "
                            f"{r['datums_extra']:g} extra ({r['lost_by_metric']})")
        if r["exit_code"] != 0:
            failures.append(f"{color}: exited with {r['exit_code']}")
    failures += color_differences(figures, ("statuses", "lost_responses", "datums_lost"))
    return CheckResult("graceful_shutdown", not failures, figures, failures,
                       round(time.perf_counter() - started, 2))


async def run_checks(servers: list[CheckServer], names: list[str], limit: int = 20,
                     extra: int = 15, in_flight: int = 30, latency_ms: int = 1000,
                     down: list[CheckServer] | None = None) -> list[CheckResult]:
    """Wait for the servers, then the burst (if named), the dependencies down (on ``down``, the
    servers booted with :func:`boot_with_dependencies_down`), then the shutdown (which stops
    the first servers)."""
    await asyncio.gather(*(s.wait_healthy() for s in [*servers, *(down or [])]))
    out = []
    if "rate_limit_burst" in names:
        out.append(await rate_limit_burst(servers, limit, extra))
    if "dependency_down" in names and down:
        out.append(await dependency_down(down))
    if "graceful_shutdown" in names:
        out.append(await graceful_shutdown(servers, in_flight, latency_ms, limit))
    return out


class CheckRun:
    """The checks inside ``make parity``: :meth:`start` boots moto, an agent emulator and one
    server per color (while the corpus runs), :meth:`run` runs the checks afterwards."""

    def __init__(self, names: list[str], log_dir: Path, limit: int = 20) -> None:
        self.names = names
        self.log_dir = log_dir
        self.limit = limit
        self.servers: list[CheckServer] = []
        self.down: list[CheckServer] = []
        self._helpers: list[Any] = []
        self._thread: threading.Thread | None = None
        self._results: list[CheckResult] = []

    def start(self) -> CheckRun:
        for name, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        moto = MotoProcess(self.log_dir / "check-moto.log")
        emulator = EmulatorProcess(self.log_dir / "check-agent.log", 3.0)
        self._helpers = [emulator, moto]
        self.moto, self.emulator = moto, emulator
        self.servers = [boot(color, moto.url, emulator.url, self.log_dir, self.limit)
                        for color in COLORS]
        if "dependency_down" in self.names:
            self.down = [boot_with_dependencies_down(color, moto.url, self.log_dir)
                         for color in COLORS]
        # start_running() overlaps the checks with the corpus (their servers are their own).
        # On 2 cores their bursts slow the lanes' moto; a rate-limit increment retried after a
        # read timeout used to count twice (a false difference), no longer: shared/flows.py
        # rate_limit refuses its own retry.
        return self

    def start_running(self) -> CheckRun:
        """Run the checks in a background thread now (they have their own stack and servers, so
        they may overlap the corpus); :meth:`run` then waits for their results."""
        def work() -> None:
            self._results = self._run()

        self._thread = threading.Thread(target=work, name="parity-checks", daemon=True)
        self._thread.start()
        return self

    def run(self) -> list[CheckResult]:
        if self._thread is None:
            return self._run()
        self._thread.join()
        return list(self._results)

    def _run(self) -> list[CheckResult]:
        started = time.perf_counter()
        try:
            self.moto.wait()
            self.emulator.wait()
            prepare_tables([*self.servers, *self.down])
            results = asyncio.run(run_checks(self.servers, self.names, self.limit,
                                             down=self.down))
        except Exception as exc:  # a check that cannot run fails, it does not vanish
            results = [CheckResult(n, False, {}, [f"could not run: {exc!r}"],
                                   round(time.perf_counter() - started, 2)) for n in self.names]
        finally:
            self.close()
        return results

    def close(self) -> None:
        for s in [*self.servers, *self.down]:
            s.server.stop()
        for helper in self._helpers:
            helper.stop()
        self._helpers = []


def selected(filter_text: str | None, enabled: bool = True) -> list[str]:
    """Checks to run: all of them, none with ``--no-checks``; with ``-k`` only those named."""
    if not enabled:
        return []
    if filter_text:
        return [n for n in CHECKS if filter_text in f"checks/{n}"]
    return list(CHECKS)

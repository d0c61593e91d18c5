"""The rehearsal's load: virtual users holding multi-turn conversations, paced to a rate.

Each of ``users`` threads is one virtual user with its own ``httpx.Client``. A user runs
conversations of ``turns`` chat turns (``POST /api/v1/chat``, the session id from the first
answer on every later turn), then starts a new session. Sending is paced open-loop: send times
are slots on one clock, ``1 / rate_per_s`` apart, shared by all users, so the rate does not
follow the server's latency; concurrency is bounded by ``users`` (a slot that finds every user
busy is not made up later: the achieved rate then falls short, visibly, instead of bursting).
A conversation whose turn is not answered 200 ends there (it is reported by :meth:`verify`) and
the user starts a new one.

Every request becomes a :class:`RequestRecord`; :func:`summarize` turns them into per-span,
per-color figures. Load is bounded in time: ``max_duration_s`` stops it by itself.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

SLOT_HORIZON_S = 0.005  # a slot this close is taken; a later one is waited for
WAIT_STEP_S = 0.1  # longest sleep between looks at the rate and the stop flag


@dataclass(frozen=True)
class RequestRecord:
    t: float  # time.time() when the request was sent
    latency_ms: float
    status: int  # 0 when no HTTP answer (connection error, timeout)
    color: str | None  # the answer's X-App-Color header
    conversation: str  # the client's conversation id
    turn: int
    error_code: str | None  # the envelope's error_code, or the exception class name when status 0


@dataclass
class Conversation:
    """What the client knows of one conversation: the turns answered 200 and every failure."""

    id: str
    user_id: str
    session_id: str | None = None
    answered: list[tuple[str, str]] = field(default_factory=list)  # (message, reply), 200 only
    failures: list[str] = field(default_factory=list)
    turns_sent: int = 0


class LoadGenerator:
    def __init__(self, url: str, api_key: str, *, rate_per_s: float = 20.0, users: int = 8,
                 turns: int = 4, max_duration_s: float = 300.0, timeout_s: float = 10.0,
                 seed: int = 1) -> None:
        if users < 1 or turns < 1:
            raise ValueError("users and turns must be at least 1")
        if rate_per_s < 0 or max_duration_s <= 0 or timeout_s <= 0:
            raise ValueError("rate_per_s must be >= 0, max_duration_s and timeout_s > 0")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.users = users
        self.turns = turns
        self.max_duration_s = max_duration_s
        self.timeout_s = timeout_s
        self.run_id = f"lg{seed}-{uuid.uuid4().hex[:8]}"
        self._rate = float(rate_per_s)
        self._cond = threading.Condition()
        self._next_slot = 0.0
        self._deadline = math.inf
        self._missed = 0
        self._ready = 0
        self._started = False
        self._stopping = False
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._conversations: list[Conversation] = []
        self._threads: list[threading.Thread] = []

    # --- control ----------------------------------------------------------------------------

    def start(self) -> LoadGenerator:
        if self._threads:
            raise RuntimeError("already started")
        for user in range(self.users):
            thread = threading.Thread(target=self._user, args=(user,), daemon=True,
                                      name=f"loadgen-user-{user}")
            self._threads.append(thread)
            thread.start()
        with self._cond:  # the clock starts once every user is ready (bounded wait)
            self._cond.wait_for(lambda: self._ready == self.users, timeout=10)
            now = time.monotonic()
            self._next_slot = now
            self._deadline = now + self.max_duration_s
            self._started = True
            self._cond.notify_all()
        return self

    def set_rate(self, rate_per_s: float) -> None:
        """0 pauses sending; a new rate takes effect within ~0.2 s."""
        if rate_per_s < 0:
            raise ValueError("rate_per_s must be >= 0")
        with self._cond:
            now = time.monotonic()
            if rate_per_s > 0:  # a pending slot of a slower (or paused) rate is brought in
                self._next_slot = min(max(self._next_slot, now), now + 1.0 / rate_per_s)
            self._rate = float(rate_per_s)
            self._cond.notify_all()

    @property
    def rate_per_s(self) -> float:
        with self._cond:
            return self._rate

    def stop(self) -> None:
        """Stop sending; wait for requests in flight (at most the request timeout, plus 2 s)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + self.timeout_s + 2.0
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def missed_slots(self) -> int:
        """Send slots that found every user busy (the server was slower than users / rate):
        the achieved rate fell short of the asked one by this many requests."""
        with self._cond:
            return self._missed

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    @property
    def records(self) -> list[RequestRecord]:
        """A snapshot, safe to read while the load runs."""
        with self._lock:
            return list(self._records)

    @property
    def conversations(self) -> list[Conversation]:
        with self._lock:
            return list(self._conversations)

    # --- the users ---------------------------------------------------------------------------

    def _claim_slot(self) -> float | None:
        """Wait for the next send slot and return the wall-clock time it was taken (the
        record's ``t``: taken under the lock, so no send is stamped after a pause began);
        None once stopped or past ``max_duration_s``."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._stopping or now >= self._deadline:
                    return None
                if self._rate <= 0 or not self._started:
                    self._cond.wait(WAIT_STEP_S)
                    continue
                interval = 1.0 / self._rate
                if self._next_slot < now - interval:  # every user was busy: not made up
                    self._missed += int((now - self._next_slot) / interval) - 1
                slot = max(self._next_slot, now - interval)
                if slot <= now + SLOT_HORIZON_S:
                    self._next_slot = slot + interval
                    return time.time()
                self._cond.wait(min(slot - now, WAIT_STEP_S))

    def _user(self, user: int) -> None:
        headers = {"X-API-Key": self.api_key}
        with httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout_s) as http:
            with self._cond:
                self._ready += 1
                self._cond.notify_all()
            number = 0
            while True:
                conv = Conversation(id=f"{self.run_id}-u{user}-c{number}",
                                    user_id=f"{self.run_id}-u{user}")
                number += 1
                with self._lock:
                    self._conversations.append(conv)
                for turn in range(self.turns):
                    sent = self._claim_slot()
                    if sent is None:
                        return
                    if not self._send(http, conv, turn, sent):
                        break  # a broken conversation ends; the user starts a new one

    def _send(self, http: httpx.Client, conv: Conversation, turn: int, sent: float) -> bool:
        message = f"{conv.id} turn {turn}: how is my order doing?"
        body: dict[str, Any] = {"message": message, "user_id": conv.user_id}
        if conv.session_id is not None:
            body["session_id"] = conv.session_id
        started = time.perf_counter()
        status, color, code, reply, session_id = 0, None, None, None, None
        try:
            resp = http.post("/api/v1/chat", json=body)
            status, color = resp.status_code, resp.headers.get("x-app-color")
            payload = _json_object(resp.content)
            if status == 200:
                reply = payload.get("response")
                session_id = payload.get("session_id")
            else:
                found = payload.get("error_code")
                code = str(found) if found is not None else None
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        latency_ms = (time.perf_counter() - started) * 1000
        record = RequestRecord(t=sent, latency_ms=round(latency_ms, 3), status=status,
                               color=color, conversation=conv.id, turn=turn, error_code=code)
        ok = status == 200 and isinstance(reply, str) and isinstance(session_id, str)
        with self._lock:
            self._records.append(record)
            conv.turns_sent += 1
            if ok:
                assert isinstance(reply, str)
                assert isinstance(session_id, str)
                if conv.session_id is None:
                    conv.session_id = session_id
                elif session_id != conv.session_id:
                    conv.failures.append(f"turn {turn} answered for session {session_id}, "
                                         f"not {conv.session_id}")
                conv.answered.append((message, reply))
            else:
                what = code or ("no body" if status == 200 else "no error_code")
                conv.failures.append(f"turn {turn} answered {status} {what} by "
                                     f"{color or 'no color'}")
        return ok and not conv.failures

    # --- after the run --------------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Read every conversation back through ``url`` and list what is broken: a turn not
        answered 200, a stored message count or history that does not match the turns answered
        200 (a lost or doubled turn), a wrong owner, a session that is gone. Empty: none broken.
        Call it after :meth:`stop`."""
        headers = {"X-API-Key": self.api_key}
        conversations = self.conversations

        def check(conv: Conversation, http: httpx.Client) -> list[str]:
            found = [f"{conv.id}: {f}" for f in conv.failures]
            if conv.session_id is not None:  # else never answered 200: nothing promised
                found += [f"{conv.id} ({conv.session_id}): {p}"
                          for p in self._check_stored(http, conv)]
            return found

        # read back with as many connections as there were users (hundreds of sessions)
        limits = httpx.Limits(max_connections=self.users)
        with httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout_s,
                          limits=limits) as http, \
                ThreadPoolExecutor(max_workers=self.users) as pool:
            found = pool.map(lambda conv: check(conv, http), conversations)
            return [problem for per in found for problem in per]

    @staticmethod
    def _check_stored(http: httpx.Client, conv: Conversation) -> list[str]:
        try:
            resp = http.get(f"/api/v1/chat/sessions/{conv.session_id}")
        except httpx.HTTPError as exc:
            return [f"read back failed: {type(exc).__name__}"]
        if resp.status_code != 200:
            code = _json_object(resp.content).get("error_code")
            return [f"read back answered {resp.status_code} {code}: "
                    f"{len(conv.answered)} answered turn(s) lost"]
        stored = _json_object(resp.content)
        problems = []
        expected = [m for message, reply in conv.answered
                    for m in (("user", message), ("assistant", reply))]
        count = stored.get("message_count")
        if count != len(expected):
            problems.append(f"message_count {count}, expected {len(expected)} "
                            f"({len(conv.answered)} turn(s) answered 200)")
        messages = stored.get("messages")
        got = ([(m.get("role"), m.get("content")) for m in messages if isinstance(m, dict)]
               if isinstance(messages, list) else None)
        # the server keeps the most recent messages (SESSION_HISTORY_LIMIT): a suffix of ours
        if got is None or len(got) > len(expected) or got != expected[len(expected) - len(got):]:
            problems.append("stored history is not the answered turns in order")
        elif not got and expected:
            problems.append("stored history is empty")
        if stored.get("user_id") != conv.user_id:
            problems.append(f"owner {stored.get('user_id')!r}, expected {conv.user_id!r}")
        return problems


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        value = json.loads(content)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- figures ----------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def color_of(record: RequestRecord) -> str:
    """"blue", "green", or "none" for no answer (or an answer without a known color)."""
    if record.status == 0 or record.color not in ("blue", "green"):
        return "none"
    return record.color


def is_error(record: RequestRecord) -> bool:
    return record.status == 0 or record.status >= 500


def summarize(records: list[RequestRecord], spans: list[tuple[str, float, float]]
              ) -> dict[str, dict[str, dict[str, float]]]:
    """Per span label (records sent in ``[start, end)``), per color: requests, errors_5xx
    (status >= 500 or no answer), error_rate, p50_ms, p90_ms, p99_ms. A color with no request
    in a span is absent from it."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, start, end in spans:
        groups: dict[str, list[RequestRecord]] = {}
        for record in records:
            if start <= record.t < end:
                groups.setdefault(color_of(record), []).append(record)
        per_color: dict[str, dict[str, float]] = {}
        for color in sorted(groups):
            group = groups[color]
            latencies = [r.latency_ms for r in group]
            errors = sum(1 for r in group if is_error(r))
            per_color[color] = {
                "requests": float(len(group)),
                "errors_5xx": float(errors),
                "error_rate": errors / len(group),
                "p50_ms": percentile(latencies, 50),
                "p90_ms": percentile(latencies, 90),
                "p99_ms": percentile(latencies, 99),
            }
        out[label] = per_color
    return out

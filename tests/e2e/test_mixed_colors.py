"""Mixed-color conversations: blue (gunicorn) and green (uvicorn) on ONE sessions table and ONE
rate-limit table, as in production behind a weighted ALB rule without stickiness, where each
turn of a conversation may land on either color. Every turn, read, list and delete is checked
across the colors: the history, counts, owner and expiry come out as if one color had served
them all, and the colors' answers are byte-identical where they must be."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.agent_emulator import reply_for
from devstack.procs import free_port
from devstack.run import Server
from devstack.stack import DevStack
from shared.contracts import ChatResponse, SessionList, SessionRecord
from shared.ratelimit import identity

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

HISTORY_LIMIT = 8  # messages: 4 turns are kept whole, more are trimmed
TTL_S = 3600
COLORS = ("blue", "green")
# headers that differ per request or per server by nature; everything else must be equal.
# "connection" is hop-by-hop (gunicorn's sync workers close each connection; the ALB terminates
# client connections itself), so it never reaches a client through the load balancer.
VOLATILE_HEADERS = {"x-request-id", "date", "server", "x-app-color", "x-ratelimit-remaining",
                    "connection"}
VOLATILE_FIELDS = {"request_id", "timestamp", "processing_time_ms"}


@dataclass
class Colors:
    http: dict[str, httpx.Client]
    servers: dict[str, Server]
    api_key: str


@contextlib.contextmanager
def both_colors(env: dict[str, str], logs: Path, api_key: str, workers: int
                ) -> Iterator[Colors]:
    """Blue and green as shipped on the same environment (one shared table), with clients."""
    servers = {c: Server(c, free_port(), env, workers=workers, log_path=logs / f"{c}.log")
               for c in COLORS}
    try:
        for srv in servers.values():
            srv.start()
        for srv in servers.values():
            srv.wait_healthy(30)
        clients = {c: httpx.Client(base_url=s.url, headers={"X-API-Key": api_key}, timeout=15)
                   for c, s in servers.items()}
        try:
            yield Colors(clients, servers, api_key)
        finally:
            for client in clients.values():
                client.close()
    finally:
        for srv in servers.values():
            srv.stop()


@pytest.fixture(scope="module")
def colors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Colors]:
    logs = tmp_path_factory.mktemp("mixed")
    api_key = f"mixed-{uuid.uuid4().hex}"  # our own rate-limit bucket
    with DevStack() as stack:
        env = {**stack.env(), "API_KEYS": api_key, "METRICS_FLUSH_INTERVAL_S": "60",
               "SESSION_HISTORY_LIMIT": str(HISTORY_LIMIT), "SESSION_TTL_S": str(TTL_S),
               "RATE_LIMIT_REQUESTS": "100000"}
        with both_colors(env, logs, api_key, workers=2) as colors:
            yield colors


def other(color: str) -> str:
    return "green" if color == "blue" else "blue"


def chat(colors: Colors, color: str, message: str, user_id: str,
         session_id: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"message": message, "user_id": user_id}
    if session_id is not None:
        body["session_id"] = session_id
    resp = colors.http[color].post("/api/v1/chat", json=body)
    assert resp.headers["x-app-color"] == color
    return resp


def raw(colors: Colors, color: str, method: str, path: str) -> httpx.Response:
    """The answer with its body exactly as sent (not decompressed)."""
    client = colors.http[color]
    resp = client.send(client.build_request(method, path), stream=True)
    try:
        resp._content = b"".join(resp.iter_raw())
    finally:
        resp.close()
    assert resp.headers["x-app-color"] == color
    return resp


def comparable_headers(resp: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k not in VOLATILE_HEADERS}


def normalized(body: bytes) -> Any:
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ("<volatile>" if k in VOLATILE_FIELDS else walk(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value
    return walk(json.loads(body))


def expected_messages(texts: list[str]) -> list[tuple[str, str]]:
    full = [m for t in texts for m in (("user", t), ("assistant", reply_for(t)))]
    return full[-HISTORY_LIMIT:]


def check_record(record: SessionRecord, texts: list[str], user_id: str,
                 turn_times: list[datetime]) -> None:
    assert [(m.role, m.content) for m in record.messages] == expected_messages(texts)
    assert record.message_count == 2 * len(texts)
    assert record.user_id == user_id
    assert record.updated_at == turn_times[-1]
    # the TTL runs from the last turn (stored in whole seconds, shared/sessions.py)
    assert record.expires_at == (record.updated_at + timedelta(seconds=TTL_S)).replace(
        microsecond=0)
    stamps = [m.timestamp for m in record.messages]
    assert stamps == sorted(stamps)
    assert stamps[-1] == turn_times[-1]


def converse(colors: Colors, first: str, turns: int, tag: str) -> tuple[str, str, list[str]]:
    """One conversation whose turns alternate colors, starting with ``first``; each turn is
    checked by reading the session back through the color that did NOT serve it."""
    user_id = f"u-{tag}-{uuid.uuid4().hex[:8]}"
    texts: list[str] = []
    times: list[datetime] = []
    expiries: list[datetime] = []
    session_id: str | None = None
    color = first
    for turn in range(turns):
        text = f"{tag} turn {turn} via {color}"
        resp = chat(colors, color, text, user_id, session_id)
        assert resp.status_code == 200, (color, turn, resp.text)
        answer = ChatResponse.model_validate_json(resp.content)
        assert answer.response == reply_for(text)
        if session_id is None:
            session_id = answer.session_id
        assert answer.session_id == session_id
        texts.append(text)
        times.append(answer.timestamp)
        got = colors.http[other(color)].get(f"/api/v1/chat/sessions/{session_id}")
        assert got.status_code == 200, got.text
        record = SessionRecord.model_validate_json(got.content)
        check_record(record, texts, user_id, times)
        expiries.append(record.expires_at)
        color = other(color)
    assert session_id is not None
    assert times == sorted(times)
    assert len(set(times)) == len(times)
    assert expiries == sorted(expiries)
    return session_id, user_id, texts


@pytest.mark.parametrize("first", COLORS)
@pytest.mark.parametrize("turns", [4, 7], ids=["within-limit", "trimmed"])
def test_alternating_turns_keep_one_history(colors: Colors, first: str, turns: int) -> None:
    session_id, user_id, texts = converse(colors, first, turns, f"alt{turns}{first[0]}")
    # both colors now read exactly the same bytes
    answers = [raw(colors, c, "GET", f"/api/v1/chat/sessions/{session_id}") for c in COLORS]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].content == answers[1].content
    assert comparable_headers(answers[0]) == comparable_headers(answers[1])
    record = SessionRecord.model_validate_json(colors.http["blue"].get(
        f"/api/v1/chat/sessions/{session_id}").content)
    assert record.message_count == 2 * turns
    assert len(record.messages) == min(2 * turns, HISTORY_LIMIT)
    assert [m.content for m in record.messages] == [c for _, c in expected_messages(texts)]
    assert record.user_id == user_id


def test_expiry_moves_forward_across_colors(colors: Colors) -> None:
    """A turn on the other color a second later pushes expires_at forward by that second."""
    user_id = f"u-exp-{uuid.uuid4().hex[:8]}"
    first = chat(colors, "green", "expiry one", user_id)
    assert first.status_code == 200, first.text
    sid = ChatResponse.model_validate_json(first.content).session_id
    before = SessionRecord.model_validate_json(
        colors.http["blue"].get(f"/api/v1/chat/sessions/{sid}").content)
    time.sleep(1.1)  # past the next whole second: expiries are stored in whole seconds
    second = chat(colors, "blue", "expiry two", user_id, sid)
    assert second.status_code == 200, second.text
    after = SessionRecord.model_validate_json(
        colors.http["green"].get(f"/api/v1/chat/sessions/{sid}").content)
    assert after.expires_at > before.expires_at
    assert after.created_at == before.created_at
    assert after.updated_at > before.updated_at


def test_the_rate_limit_is_one_counter_for_both_colors(colors: Colors) -> None:
    remaining = []
    for i in range(6):
        resp = colors.http[COLORS[i % 2]].get("/api/v1/users/nobody-rl/sessions")
        assert resp.status_code == 200, resp.text
        remaining.append(int(resp.headers["x-ratelimit-remaining"]))
    if len(set(remaining)) == len(remaining):  # no window boundary crossed
        assert remaining == sorted(remaining, reverse=True)
        assert remaining[0] - remaining[-1] == len(remaining) - 1  # one counter, not two


@pytest.mark.parametrize("creator", COLORS)
def test_read_list_delete_by_the_other_color(colors: Colors, creator: str) -> None:
    reader = other(creator)
    user_id = f"u-rld-{uuid.uuid4().hex[:8]}"
    sids = []
    for n in range(2):
        resp = chat(colors, creator, f"made by {creator} #{n}", user_id)
        assert resp.status_code == 200, resp.text
        sids.append(ChatResponse.model_validate_json(resp.content).session_id)
    # a chat answer from each color on the same (new) turn shape: same fields, same reply
    replies = [chat(colors, c, "same text", f"{user_id}-{c}") for c in COLORS]
    assert normalized(replies[0].content).keys() == normalized(replies[1].content).keys()
    assert [json.loads(r.content)["response"] for r in replies] == [reply_for("same text")] * 2

    for sid in sids:  # read: byte-for-byte, headers too
        answers = {c: raw(colors, c, "GET", f"/api/v1/chat/sessions/{sid}") for c in COLORS}
        assert answers[reader].status_code == answers[creator].status_code == 200
        assert answers[reader].content == answers[creator].content
        assert comparable_headers(answers[reader]) == comparable_headers(answers[creator])

    path = f"/api/v1/users/{user_id}/sessions"  # list: byte-for-byte
    listed = {c: raw(colors, c, "GET", path) for c in COLORS}
    assert listed[reader].status_code == 200
    assert listed[reader].content == listed[creator].content
    assert comparable_headers(listed[reader]) == comparable_headers(listed[creator])
    page = SessionList.model_validate(json.loads(listed[reader].content))
    assert [s.session_id for s in page.sessions] == sids[::-1]  # newest first
    assert all(s.message_count == 2 for s in page.sessions)
    paged = {c: raw(colors, c, "GET", path + "?limit=1") for c in COLORS}
    assert paged[reader].content == paged[creator].content
    cursor = json.loads(paged[creator].content)["next_cursor"]
    assert cursor
    second = {c: raw(colors, c, "GET", f"{path}?limit=1&cursor={cursor}") for c in COLORS}
    assert second[reader].content == second[creator].content  # one color's cursor, the other's page
    assert [s["session_id"] for s in json.loads(second[reader].content)["sessions"]] == [sids[0]]

    deleted = raw(colors, reader, "DELETE", f"/api/v1/chat/sessions/{sids[0]}")
    assert deleted.status_code == 200, deleted.content
    assert json.loads(deleted.content) == {"session_id": sids[0], "deleted": True}
    again = raw(colors, creator, "DELETE", f"/api/v1/chat/sessions/{sids[1]}")
    assert again.status_code == 200
    assert comparable_headers(deleted) == comparable_headers(again)
    # gone for both colors, with the same envelope
    for sid in sids:
        gone = {c: raw(colors, c, "GET", f"/api/v1/chat/sessions/{sid}") for c in COLORS}
        assert [gone[c].status_code for c in COLORS] == [404, 404]
        assert normalized(gone["blue"].content) == normalized(gone["green"].content)
        assert json.loads(gone["blue"].content)["error_code"] == "SESSION_NOT_FOUND"
        assert comparable_headers(gone["blue"]) == comparable_headers(gone["green"])
        twice = {c: raw(colors, c, "DELETE", f"/api/v1/chat/sessions/{sid}") for c in COLORS}
        assert [twice[c].status_code for c in COLORS] == [404, 404]
        assert normalized(twice["blue"].content) == normalized(twice["green"].content)
    empty = {c: raw(colors, c, "GET", path) for c in COLORS}
    assert empty["blue"].content == empty["green"].content
    assert json.loads(empty["blue"].content)["sessions"] == []
    # a deleted session's id starts afresh on either color, owned by whoever comes next
    fresh = chat(colors, reader, "after delete", "someone-else", sids[0])
    assert fresh.status_code == 200, fresh.text
    record = SessionRecord.model_validate_json(
        colors.http[creator].get(f"/api/v1/chat/sessions/{sids[0]}").content)
    assert record.user_id == "someone-else"
    assert record.message_count == 2


def test_owner_holds_across_colors(colors: Colors) -> None:
    first = chat(colors, "blue", "mine", "owner-a")
    assert first.status_code == 200
    sid = ChatResponse.model_validate_json(first.content).session_id
    refused = {c: chat(colors, c, "not yours", "intruder", sid) for c in COLORS}
    assert [refused[c].status_code for c in COLORS] == [409, 409]
    assert normalized(refused["blue"].content) == normalized(refused["green"].content)
    assert refused["blue"].json()["error_code"] == "SESSION_USER_MISMATCH"
    record = SessionRecord.model_validate_json(
        colors.http["green"].get(f"/api/v1/chat/sessions/{sid}").content)
    assert record.user_id == "owner-a"
    assert record.message_count == 2


def test_interleaved_conversations_on_both_colors(colors: Colors) -> None:
    """Several conversations at once, each turn on the color a coin (seeded) picks, each turn
    sent only after its previous one answered: all 200, every history whole and in order."""
    conversations, turns = 6, 6
    results: dict[int, tuple[str, str, list[str]]] = {}
    failures: list[str] = []
    start = threading.Barrier(conversations)

    def run(n: int) -> None:
        rng = random.Random(n)
        pattern = [COLORS[n % 2], COLORS[(n + 1) % 2]]  # both colors in every conversation
        pattern += [rng.choice(COLORS) for _ in range(turns - 2)]
        user_id = f"u-mix{n}-{uuid.uuid4().hex[:6]}"
        session_id: str | None = None
        texts: list[str] = []
        try:
            start.wait(10)
            for t, color in enumerate(pattern):
                text = f"conv {n} turn {t}"
                resp = chat(colors, color, text, user_id, session_id)
                if resp.status_code != 200:
                    failures.append(f"conv {n} turn {t} on {color}: {resp.status_code} "
                                    f"{resp.text}")
                    return
                answer = ChatResponse.model_validate_json(resp.content)
                if answer.response != reply_for(text):
                    failures.append(f"conv {n} turn {t}: reply {answer.response!r}")
                session_id = session_id or answer.session_id
                texts.append(text)
            assert session_id is not None
            results[n] = (session_id, user_id, texts)
        except Exception as exc:  # reported below, with the others
            failures.append(f"conv {n}: {exc!r}")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(conversations)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures
    assert len(results) == conversations
    for n, (sid, user_id, texts) in results.items():
        bodies = []
        for c in COLORS:
            got = colors.http[c].get(f"/api/v1/chat/sessions/{sid}")
            assert got.status_code == 200, (n, c, got.text)
            bodies.append(got.content)
        assert bodies[0] == bodies[1]
        record = SessionRecord.model_validate_json(bodies[0])
        assert [(m.role, m.content) for m in record.messages] == expected_messages(texts), n
        assert record.message_count == 2 * turns
        assert record.user_id == user_id


# --- a write that landed but was answered too late: the SDK's retry must not be a 409 --------

READ_TIMEOUT_S = 0.8
LATE_MARKER = "landed-late"


def late_key(color: str) -> str:
    """An API key whose first rate-limit increment is answered late (one per color)."""
    return f"late-counter-{color}"


class _LateAnswerProxy(ThreadingHTTPServer):
    """Forwards every DynamoDB call to moto; the first PutItem of a session that holds
    LATE_MARKER (in a message), and the first UpdateItem of the rate-limit counter of each
    :func:`late_key`, is forwarded (it lands) and its answer held past the client's read
    timeout, as when a network answer is lost: the SDK retries the very same call."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = httpx.Client(base_url=upstream, timeout=10)
        self.delayed: set[str] = set()
        self.late_counters = {identity(late_key(c), "").encode(): c for c in COLORS}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _LateAnswerProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        skip = {"host", "content-length", "connection", "accept-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        upstream = self.server.upstream.post(self.path, content=body, headers=headers)
        target = self.headers.get("X-Amz-Target", "")
        if target.endswith(".PutItem") and LATE_MARKER.encode() in body:
            sid = json.loads(body)["Item"]["session_id"]["S"]
            with self.server.lock:
                first = sid not in self.server.delayed
                self.server.delayed.add(sid)
            if first:
                time.sleep(READ_TIMEOUT_S + 0.7)  # the write has landed; its answer is late
        if target.endswith(".UpdateItem"):
            counter = next((c for m, c in self.server.late_counters.items() if m in body), None)
            with self.server.lock:
                first = counter is not None and f"counter:{counter}" not in self.server.delayed
                self.server.delayed.add(f"counter:{counter}")
            if first:
                time.sleep(READ_TIMEOUT_S + 0.7)  # the increment has landed; answer is late
        self.send_response(upstream.status_code)
        for name, value in upstream.headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding",
                                    "content-encoding", "date", "server"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client may have given up on this answer
            self.wfile.write(upstream.content)


@pytest.fixture(scope="module")
def late_colors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Colors]:
    """Both colors with DynamoDB behind the late-answer proxy and a short read timeout."""
    logs = tmp_path_factory.mktemp("late")
    api_key = f"late-{uuid.uuid4().hex}"
    with DevStack() as stack:
        proxy = _LateAnswerProxy(stack.moto_url)
        thread = threading.Thread(target=proxy.serve_forever, daemon=True)
        thread.start()
        keys = ",".join([api_key, *(late_key(c) for c in COLORS)])
        env = {**stack.env(), "DYNAMODB_ENDPOINT_URL": proxy.url, "API_KEYS": keys,
               "METRICS_FLUSH_INTERVAL_S": "60", "RATE_LIMIT_REQUESTS": "50",
               "DYNAMODB_READ_TIMEOUT_S": str(READ_TIMEOUT_S), "DYNAMODB_MAX_ATTEMPTS": "3"}
        try:
            with both_colors(env, logs, api_key, workers=1) as colors:
                yield colors
        finally:
            proxy.shutdown()
            proxy.server_close()
            proxy.upstream.close()


@pytest.mark.parametrize("turn", ["first", "later"])
@pytest.mark.parametrize("color", COLORS)
def test_a_write_that_landed_but_was_answered_late_is_a_success(
        late_colors: Colors, color: str, turn: str) -> None:
    """The refused retry is read back; the stored item is this request's own write, so the
    chat is a 200 with the turn stored once, on either color, on a new or an existing session."""
    sid = f"s-late-{color}-{turn}-{uuid.uuid4().hex[:8]}"
    user_id = f"u-late-{uuid.uuid4().hex[:6]}"
    texts = []
    if turn == "later":  # an earlier turn, on the other color, answered on time
        first = chat(late_colors, other(color), "on time", user_id, sid)
        assert first.status_code == 200, first.text
        texts.append("on time")
    text = f"answered late {LATE_MARKER}"  # the PutItem that holds it is answered late
    resp = chat(late_colors, color, text, user_id, sid)
    assert resp.status_code == 200, resp.text
    texts.append(text)
    record = SessionRecord.model_validate_json(
        late_colors.http[other(color)].get(f"/api/v1/chat/sessions/{sid}").content)
    assert record.message_count == 2 * len(texts)  # stored once
    assert [m.content for m in record.messages] == [c for _, c in expected_messages(texts)]


@pytest.mark.parametrize("color", COLORS)
def test_a_rate_limit_increment_answered_late_counts_once(late_colors: Colors,
                                                          color: str) -> None:
    """The first increment of this key lands but is answered past the read timeout; the SDK
    retries it and the retry is refused as the same increment: the request counts once
    (``ADD`` alone made it twice). Then the next request counts as the second."""
    headers = {"X-API-Key": late_key(color)}
    url = "/api/v1/users/u-late-counter/sessions"
    first = late_colors.http[color].get(url, headers=headers)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-remaining"] == "49"  # 50 - 1: counted once
    second = late_colors.http[color].get(url, headers=headers)
    assert second.headers["x-ratelimit-remaining"] == "48"

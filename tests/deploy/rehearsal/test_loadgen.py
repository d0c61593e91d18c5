"""The rehearsal's load generator against a real green server (uvicorn) on devstack, its
verification of every conversation, and the per-span summary."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.rehearsal.loadgen import LoadGenerator, RequestRecord, percentile, summarize
from devstack.procs import free_port
from devstack.run import Server
from devstack.stack import DevStack

API_KEY = "rehearsal-loadgen-key"


@pytest.fixture(scope="module")
def green(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    logs = tmp_path_factory.mktemp("loadgen")
    with DevStack(agent_latency_ms=20) as stack:
        env = {**stack.env(), "API_KEYS": API_KEY, "METRICS_FLUSH_INTERVAL_S": "60",
               "RATE_LIMIT_REQUESTS": "100000"}
        srv = Server("green", free_port(), env, workers=1, log_path=logs / "green.log")
        srv.start()
        try:
            srv.wait_healthy(30)
            yield srv
        finally:
            srv.stop()


def achieved_rate(records: list[RequestRecord]) -> float:
    times = sorted(r.t for r in records)
    return (len(times) - 1) / (times[-1] - times[0])


@pytest.mark.e2e
@pytest.mark.xdist_group("e2e")
def test_paced_conversations_on_green_verify_clean(green: Server) -> None:
    # users bound the concurrency: 16 keep 20 req/s up to 0.8 s of latency (a busy machine)
    gen = LoadGenerator(green.url, API_KEY, rate_per_s=20, users=16, turns=3,
                        max_duration_s=30).start()
    try:
        time.sleep(3.0)
    finally:
        gen.stop()
    records = gen.records
    assert not gen.running
    # the pacing, whatever the server's speed: slots come at 20/s, each is sent or missed (a
    # busy machine misses some), and sending never bursts past the rate
    offered = len(records) + gen.missed_slots
    assert 45 <= offered <= 76, (len(records), gen.missed_slots)
    times = sorted(r.t for r in records)
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 26, busiest
    assert achieved_rate(records) <= 25.0
    assert len(records) >= 20
    assert {r.status for r in records} == {200}
    assert {r.color for r in records} == {"green"}
    assert all(r.error_code is None for r in records)
    # conversations of 3 turns, then a new session: turns 0, 1, 2 in order per conversation
    by_conv: dict[str, list[int]] = {}
    for r in sorted(records, key=lambda r: r.t):
        by_conv.setdefault(r.conversation, []).append(r.turn)
    assert all(turns == list(range(len(turns))) for turns in by_conv.values())
    assert sum(1 for turns in by_conv.values() if len(turns) == 3) >= 4
    assert gen.verify() == []


@pytest.mark.e2e
@pytest.mark.xdist_group("e2e")
def test_pause_and_resume(green: Server) -> None:
    gen = LoadGenerator(green.url, API_KEY, rate_per_s=20, users=2, turns=2,
                        max_duration_s=30).start()
    try:
        time.sleep(1.0)
        paused_at = time.time()
        gen.set_rate(0)
        time.sleep(1.2)
        resumed_at = time.time()
        gen.set_rate(20)
        time.sleep(1.0)
    finally:
        gen.stop()
    records = gen.records
    during = [r for r in records if paused_at + 0.25 < r.t < resumed_at]
    assert during == []
    assert any(r.t >= resumed_at for r in records)  # it picked up again within the second
    assert gen.verify() == []


@pytest.mark.e2e
@pytest.mark.xdist_group("e2e")
def test_verify_reports_lost_and_doubled_turns(green: Server) -> None:
    gen = LoadGenerator(green.url, API_KEY, rate_per_s=20, users=2, turns=100,
                        max_duration_s=30).start()
    try:
        time.sleep(1.0)
    finally:
        gen.stop()
    convs = [c for c in gen.conversations if c.session_id and len(c.answered) >= 2]
    assert len(convs) == 2  # two users, one long conversation each
    lost, doubled = convs
    with httpx.Client(base_url=green.url, headers={"X-API-Key": API_KEY}, timeout=10) as http:
        # behind its back: one session is deleted, the other gets a turn nobody answered it
        assert http.delete(f"/api/v1/chat/sessions/{lost.session_id}").status_code == 200
        extra = http.post("/api/v1/chat", json={"message": "an extra turn",
                                                "session_id": doubled.session_id,
                                                "user_id": doubled.user_id})
        assert extra.status_code == 200
    problems = gen.verify()
    assert len(problems) == 3, problems
    assert problems[0].startswith(f"{lost.id} ({lost.session_id}): read back answered 404 "
                                  "SESSION_NOT_FOUND")
    count = 2 * len(doubled.answered)
    assert problems[1] == (f"{doubled.id} ({doubled.session_id}): message_count {count + 2}, "
                           f"expected {count} ({len(doubled.answered)} turn(s) answered 200)")
    assert problems[2] == (f"{doubled.id} ({doubled.session_id}): stored history is not the "
                           "answered turns in order")


@pytest.mark.integration
def test_no_answer_is_status_0_and_broken(tmp_path: Path) -> None:
    """Nothing listens on the port: every request is status 0 with the exception's name, each
    conversation is broken at its first turn, and the run ends by itself at max_duration_s."""
    url = f"http://127.0.0.1:{free_port()}"
    gen = LoadGenerator(url, API_KEY, rate_per_s=20, users=2, turns=3, max_duration_s=0.6,
                        timeout_s=1.0).start()
    deadline = time.monotonic() + 5
    while gen.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not gen.running, "the load did not stop by itself"
    records = gen.records
    assert records
    assert {(r.status, r.color, r.error_code, r.turn) for r in records} == {
        (0, None, "ConnectError", 0)}
    problems = gen.verify()
    assert len(problems) == len(records)
    assert all("turn 0 answered 0 ConnectError by no color" in p for p in problems)


@pytest.mark.unit
def test_summarize_per_span_and_color() -> None:
    def rec(t: float, ms: float, status: int = 200, color: str | None = "blue") -> RequestRecord:
        return RequestRecord(t=t, latency_ms=ms, status=status, color=color,
                             conversation="c", turn=0, error_code=None)

    records = [rec(0.5 + i / 10, float(i + 1)) for i in range(10)]  # blue: 1..10 ms
    records += [rec(1.0, 50.0, 200, "green"), rec(1.5, 70.0, 503, "green"),
                rec(2.0, 3000.0, 0, None), rec(2.5, 9.0, 502, None),  # no color header
                rec(12.0, 1.0, 200, "green")]
    out = summarize(records, [("before", 0.0, 10.0), ("after", 10.0, 20.0), ("empty", 30, 40)])
    assert set(out) == {"before", "after", "empty"}
    assert out["empty"] == {}
    assert set(out["before"]) == {"blue", "green", "none"}
    blue = out["before"]["blue"]
    assert blue == {"requests": 10.0, "errors_5xx": 0.0, "error_rate": 0.0,
                    "p50_ms": 5.0, "p90_ms": 9.0, "p99_ms": 10.0}
    assert out["before"]["green"]["errors_5xx"] == 1.0
    assert out["before"]["green"]["error_rate"] == 0.5
    assert out["before"]["none"]["requests"] == 2.0
    assert out["before"]["none"]["errors_5xx"] == 2.0  # status 0 counts, 502 too
    assert out["after"] == {"green": {"requests": 1.0, "errors_5xx": 0.0, "error_rate": 0.0,
                                      "p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0}}
    assert percentile([], 90) == 0.0
    assert percentile([3.0], 99) == 3.0

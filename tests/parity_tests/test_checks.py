"""The run-level checks' verdicts can fail: an extra accepted request, a color that differs, a
lost answer or a lost metric observation is each reported."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from parity_tests.harness import report
from parity_tests.harness.checks import (
    CheckResult,
    Reply,
    burst_verdict,
    datum_accounting,
    down_verdict,
    selected,
)

pytestmark = pytest.mark.unit
HEADERS = {"content-type": "application/json", "x-ratelimit-limit": "3",
           "x-content-type-options": "nosniff", "cache-control": "no-store",
           "x-request-id": "r"}


def ok(remaining: int) -> Reply:
    return Reply(200, {**HEADERS, "x-ratelimit-remaining": str(remaining)}, b"{}")


def refused(code: str = "RATE_LIMITED") -> Reply:
    body = {"error": "Too many requests", "error_code": code, "timestamp": "t",
            "request_id": "r"}
    return Reply(429, {**HEADERS, "x-ratelimit-remaining": "0", "retry-after": "42"},
                 json.dumps(body).encode())


def good() -> list[Reply]:
    return [ok(2), ok(1), ok(0), refused(), refused()]


def test_an_exact_burst_passes() -> None:
    figures, failures = burst_verdict(3, 2, {"blue": good(), "green": good()})
    assert failures == []
    assert figures["blue"]["accepted"] == 3
    assert figures["green"]["refused"] == 2


def test_one_request_over_the_limit_fails_and_the_colors_differ() -> None:
    leaky = [ok(2), ok(1), ok(0), ok(0), refused()]
    _, failures = burst_verdict(3, 2, {"blue": leaky, "green": good()})
    text = "\n".join(failures)
    assert "blue: 4 accepted" in text
    assert "X-RateLimit-Remaining" in text
    assert "differ in statuses" in text


def test_a_different_429_envelope_fails() -> None:
    other = [ok(2), ok(1), ok(0), refused("THROTTLED"), refused("THROTTLED")]
    _, failures = burst_verdict(3, 2, {"blue": good(), "green": other})
    assert any("RATE_LIMITED" in f for f in failures)
    assert any("differ in envelope" in f for f in failures)


def test_datum_accounting_counts_lost_and_extra_observations() -> None:
    expected = {"RequestCount|/api/v1/chat": 30.0, "SuccessCount|/api/v1/chat": 30.0}
    got = {"RequestCount|/api/v1/chat": 25.0, "SuccessCount|/api/v1/chat": 31.0}
    acc = datum_accounting(expected, got)
    assert acc["datums_lost"] == 5
    assert acc["datums_extra"] == 1
    assert datum_accounting(expected, dict(expected))["datums_lost"] == 0


def down_answers(chat_code: str = "AGENT_UNAVAILABLE", agent: str = "down") -> list[Reply]:
    def error(status: int, code: str) -> Reply:
        return Reply(status, {"retry-after": "1"} if status == 503 else {}, json.dumps(
            {"error": "e", "error_code": code, "timestamp": "t", "request_id": "r"}).encode())

    detailed = {"status": "unhealthy", "checks": [
        {"name": "dynamodb", "status": "up"}, {"name": "agent", "status": agent}]}
    return [error(503, chat_code), error(404, "SESSION_NOT_FOUND"),
            Reply(503, {}, json.dumps(detailed).encode()), Reply(200, {}, b'{"status": "ok"}')]


def test_dependencies_down_pass_when_both_colors_answer_as_decided() -> None:
    figures, failures = down_verdict({"blue": down_answers(), "green": down_answers()})
    assert failures == []
    assert figures["green"]["statuses"] == [503, 404, 503, 200]


def test_dependencies_down_fail_on_another_code_or_a_stored_chat() -> None:
    _, failures = down_verdict({"blue": down_answers(),
                                "green": down_answers(chat_code="AGENT_ERROR", agent="up")})
    text = "\n".join(failures)
    assert "green chat: expected 503 AGENT_UNAVAILABLE" in text
    assert "green health-detailed: checks" in text
    assert "differ in error_codes" in text
    stored = down_answers()
    stored[1] = Reply(200, {}, b'{"session_id": "s"}')
    _, failures = down_verdict({"blue": stored, "green": down_answers()})
    assert any("blue get-session: expected 404" in f for f in failures)


def test_k_filter_runs_checks_only_when_named() -> None:
    every = ["rate_limit_burst", "dependency_down", "graceful_shutdown"]
    assert selected(None) == every
    assert selected("sessions") == []
    assert selected("checks/") == every
    assert selected("graceful") == ["graceful_shutdown"]
    assert selected(None, enabled=False) == []


def test_a_failed_check_fails_the_run_and_reaches_every_report(tmp_path: Path) -> None:
    failed = CheckResult("rate_limit_burst", False, {"blue": {"sent": 35, "accepted": 21}},
                         ["blue: 21 accepted, expected exactly 20"], 1.0)
    passed = CheckResult("graceful_shutdown", True, {"green": {"lost_responses": 0}}, [], 2.0)
    summary = report.summarize([], {"lanes": ["blue", "green"], "mode": "local",
                                     "duration_s": 3.0,
                                     "checks": [failed.to_dict(), passed.to_dict()]})
    assert summary["failed_checks"] == 1
    assert not summary["passed"]
    report.write_junit([], summary, tmp_path)
    junit = (tmp_path / "junit.xml").read_text()
    assert 'name="rate_limit_burst"' in junit
    assert 'name="graceful_shutdown"' in junit
    assert junit.count("<failure") == 1
    report.write_html(summary, [], {}, tmp_path)
    assert "blue: 21 accepted, expected exactly 20" in (tmp_path / "report.html").read_text()
    out = io.StringIO()
    report.print_summary(summary, Console(file=out, width=400))
    assert "1/2 checks failed" in out.getvalue()


def chat_ok(remaining: int, **extra: object) -> Reply:
    body = {"response": "hi", "session_id": "sess_" + "ab" * 16,
            "timestamp": "2026-01-01T00:00:00.123456Z", "processing_time_ms": 3.5, **extra}
    return Reply(200, {**HEADERS, "x-ratelimit-remaining": str(remaining)},
                 json.dumps(body).encode())


def chats() -> list[Reply]:
    return [chat_ok(2), chat_ok(1), chat_ok(0), refused(), refused()]


def test_burst_compares_the_accepted_answers_too() -> None:
    """Blind spot: a burst whose accepted answers differ between the colors (a header, a body
    field, a timestamp's format) while the refused ones agree is a failure naming the path."""
    assert burst_verdict(3, 2, {"blue": chats(), "green": chats()})[1] == []
    header = chats()
    header[0] = Reply(200, {**header[0].headers, "cache-control": "private"}, header[0].body)
    failures = burst_verdict(3, 2, {"blue": chats(), "green": header})[1]
    assert any("differ in answers" in f and "headers.cache-control" in f for f in failures)
    extra = [chat_ok(2, model="x"), chat_ok(1, model="x"), chat_ok(0, model="x"),
             refused(), refused()]
    failures = burst_verdict(3, 2, {"blue": chats(), "green": extra})[1]
    assert any("body.model" in f for f in failures)
    zone = [Reply(200, r.headers, r.body.replace(b".123456Z", b"+00:00")) if r.status == 200
            else r for r in chats()]
    failures = burst_verdict(3, 2, {"blue": chats(), "green": zone})[1]
    assert any("body.timestamp" in f for f in failures)

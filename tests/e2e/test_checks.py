"""The run-level parity checks (``make parity`` runs them after the corpus) through the same code:
a burst of limit+K chats with one key is cut at exactly the limit in both colors, an agent and a
CloudWatch that refuse connections give the same answers in both colors, and SIGTERM with
chats in flight loses no answer and no metric observation, in gunicorn and in uvicorn."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devstack.stack import DevStack
from parity_tests.harness import checks

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def run(tmp_path: Path, names: list[str], **kw: int) -> checks.CheckResult:
    with DevStack() as stack:
        servers = [checks.boot(color, stack.moto_url, stack.agent_url, tmp_path,
                               kw.get("limit", 20)) for color in checks.COLORS]
        down = ([checks.boot_with_dependencies_down(color, stack.moto_url, tmp_path)
                 for color in checks.COLORS] if "dependency_down" in names else [])
        try:
            checks.prepare_tables([*servers, *down])
            (result,) = asyncio.run(checks.run_checks(servers, names, down=down, **kw))
        finally:
            for s in [*servers, *down]:
                s.server.stop()
    return result


def test_rate_limit_burst_accepts_exactly_the_limit(tmp_path: Path) -> None:
    result = run(tmp_path, ["rate_limit_burst"], limit=12, extra=9)
    assert result.passed, result.failures
    for color in checks.COLORS:
        figures = result.colors[color]
        assert (figures["sent"], figures["accepted"], figures["refused"]) == (21, 12, 9), color


def test_agent_and_cloudwatch_really_down_answer_alike(tmp_path: Path) -> None:
    result = run(tmp_path, ["dependency_down"])
    assert result.passed, result.failures
    for color in checks.COLORS:
        figures = result.colors[color]
        assert figures["statuses"] == [503, 404, 503, 200], color
        assert figures["error_codes"][0] == "AGENT_UNAVAILABLE", color
        assert figures["detailed_checks"] == {"dynamodb": "up", "agent": "down"}, color


def test_sigterm_with_requests_in_flight_loses_nothing(tmp_path: Path) -> None:
    result = run(tmp_path, ["graceful_shutdown"], limit=20, in_flight=20, latency_ms=1000)
    assert result.passed, result.failures
    for color in checks.COLORS:
        figures = result.colors[color]
        assert figures["in_flight_at_sigterm"] == 20, color
        assert figures["flush_in_flight_at_sigterm"], color  # a PutMetricData held at SIGTERM
        assert figures["lost_responses"] == 0, color
        assert figures["datums_lost"] == 0, color
        assert figures["datums_expected"] > 0, color
        assert figures["exit_code"] == 0, color

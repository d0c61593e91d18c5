"""The gate arithmetic on synthetic windows: comparative and absolute, inconclusive, alarms."""

from __future__ import annotations

import pytest

from deploy.analysis import SERVICE, ColorFigures, WindowFigures, judge
from deploy.plan import Gates

pytestmark = pytest.mark.unit
GATES = Gates()


def window(blue: ColorFigures, green: ColorFigures, **endpoints: tuple[ColorFigures, ColorFigures]
           ) -> WindowFigures:
    w = WindowFigures(0, 60, {SERVICE: {"blue": blue, "green": green}})
    for name, (b, g) in endpoints.items():
        w.scopes["/" + name] = {"blue": b, "green": g}
    return w


def healthy(n: float, p90: float = 120, p99: float = 300, errors: float = 0) -> ColorFigures:
    return ColorFigures(requests=n, errors_5xx=errors, p90_ms=p90, p99_ms=p99,
                        unhealthy_hosts=0)


def gate(result: object, name: str, scope: str = SERVICE) -> str:
    return next(g.verdict for g in result.gates  # type: ignore[attr-defined]
                if g.gate == name and g.scope == scope)


def test_green_like_blue_passes() -> None:
    result = judge(GATES, window(healthy(9000, errors=9), healthy(1000, errors=1)))
    assert result.verdict == "pass", result.reasons


def test_rates_not_counts_blue_at_90_percent_has_more_errors_but_the_same_rate() -> None:
    # 45 errors against 5 is 9x the count, and the same 0.5 % rate
    result = judge(GATES, window(healthy(9000, errors=45), healthy(1000, errors=5)))
    assert gate(result, "error_rate") == "pass"


def test_green_worse_than_blue_fails_under_the_absolute_cap() -> None:
    # 0.9 % is under the 1 % cap, but 0.8 points over blue's 0.1 % (margin 0.5)
    result = judge(GATES, window(healthy(9000, errors=9), healthy(1000, errors=9)))
    assert result.verdict == "fail"
    assert "blue" in result.reasons[0]


def test_both_bad_fails_on_the_absolute_cap() -> None:
    result = judge(GATES, window(healthy(9000, errors=450), healthy(1000, errors=50)))
    assert gate(result, "error_rate") == "fail"
    assert any("cap" in r for r in result.reasons)


def test_latency_ratio_and_cap() -> None:
    slower = judge(GATES, window(healthy(9000, p90=100), healthy(1000, p90=200)))
    assert gate(slower, "p90") == "fail"  # 2x blue, 100 ms over the slack
    within_slack = judge(GATES, window(healthy(9000, p90=10), healthy(1000, p90=20)))
    assert gate(within_slack, "p90") == "pass"  # 2x, but 10 ms is noise
    capped = judge(GATES, window(healthy(9000, p90=480), healthy(1000, p90=520)))
    assert gate(capped, "p90") == "fail"  # within the ratio, over 500 ms


def test_too_few_green_samples_is_inconclusive_never_pass() -> None:
    result = judge(GATES, window(healthy(900), healthy(100)))
    assert gate(result, "error_rate") == "inconclusive"  # 200 needed
    assert gate(result, "p99") == "inconclusive"  # 1000 needed
    assert result.verdict == "inconclusive"
    empty = judge(GATES, window(ColorFigures(), ColorFigures()))
    assert empty.verdict == "inconclusive"
    nothing = judge(GATES, WindowFigures(0, 60))
    assert nothing.verdict == "inconclusive"


def test_overwhelming_errors_fail_before_the_sample_is_full() -> None:
    # 10 requests, 5 of them 5xx: at the 200-request minimum that is already over 1 %
    result = judge(GATES, window(healthy(9000), healthy(10, errors=5)))
    assert gate(result, "error_rate") == "fail"
    assert result.verdict == "fail"


def test_the_load_balancer_sees_a_dead_green() -> None:
    dead = ColorFigures(requests=1000, errors_5xx=1000, unhealthy_hosts=2)
    result = judge(GATES, window(healthy(9000), dead))
    assert gate(result, "unhealthy_hosts") == "fail"
    assert gate(result, "error_rate") == "fail"


def test_an_alarm_rolls_back_whatever_the_figures() -> None:
    w = window(healthy(9000), healthy(1000))
    w.alarms = {"chatbot-green-5xx": "ALARM", "chatbot-blue-5xx": "OK"}
    result = judge(GATES, w)
    assert result.verdict == "alarm"
    assert any("chatbot-green-5xx" in r for r in result.reasons)


def test_endpoints_are_judged_where_traffic_allows() -> None:
    w = window(healthy(9000), healthy(1000),
               **{"api/v1/chat": (healthy(900, p90=100), healthy(500, p90=300)),
                  "health": (healthy(90), healthy(3))})
    result = judge(GATES, w)
    assert gate(result, "p90", "/api/v1/chat") == "fail"
    assert gate(result, "endpoint", "/health") == "skip"
    assert result.verdict == "fail"


def test_an_endpoint_short_of_samples_does_not_hold_the_window() -> None:
    w = window(healthy(9000), healthy(1000),
               **{"api/v1/chat": (healthy(900), healthy(150))})  # p99 needs 1000
    result = judge(GATES, w)
    assert gate(result, "p99", "/api/v1/chat") == "skip"
    assert result.verdict == "pass"


def test_no_baseline_at_100_percent_uses_the_caps_alone() -> None:
    result = judge(GATES, window(ColorFigures(), healthy(10000, p90=300)))
    assert result.verdict == "pass"
    assert any("no baseline" in g.detail for g in result.gates)

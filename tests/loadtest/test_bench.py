"""The pure parts of `make bench`: wrk output, bounds, summary rows, targets, the table.

No timing here: the bench is its own command (`make bench`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.bench import order_for
from loadtest.bench_report import (
    RunResult,
    Targets,
    build_summary,
    check_targets,
    cpu_bound_rps,
    level_row,
    little_bound_rps,
    markdown_table,
    write_outputs,
)
from loadtest.bench_wrk import LUA_SCRIPT, MARKER, parse_wrk_output, wrk_command

pytestmark = pytest.mark.unit

WRK_STDOUT = """Running 5s test @ http://127.0.0.1:8002/api/v1/chat
  2 threads and 200 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   210.00ms   10.00ms 400.00ms   90.00%
  4000 requests in 5.00s, 1.00MB read
  Non-2xx or 3xx responses: 12
Requests/sec:    800.00
BENCH_JSON {"requests": 4000, "duration_us": 5000000, "bytes": 1000000, "errors": {"connect": 0, \
"read": 1, "write": 0, "status": 12, "timeout": 3}, "latency_us": {"min": 200100.000, \
"max": 400000.000, "mean": 210000.000, "stdev": 10000.000, "percentiles": {"50": 205000.000, \
"75": 210000.000, "90": 230000.000, "99": 300000.000, "99.9": 390000.000}}}
"""


def run(config: str, concurrency: int, rps: float, **kw: object) -> RunResult:
    base: dict[str, object] = {
        "duration_s": 10.0, "requests": int(rps * 10), "ok": int(rps * 10),
        "p50_ms": 210.0, "p90_ms": 250.0, "p99_ms": 300.0, "max_ms": 400.0, "errors": 0,
        "error_kinds": {}, "app_cpu_s": rps * 10 * 0.004,
        "peak_rss_mb": 100.0, "helper_cpu_s": {"generator": 0.1, "agent_emulator": 0.5,
                                         "dynamodb": 2.0, "moto": 0.1}}
    base.update(kw)
    return RunResult(config=config, concurrency=concurrency, rps=rps, **base)  # type: ignore[arg-type]


def test_parse_wrk_output_counts_non_2xx_as_errors() -> None:
    r = parse_wrk_output(WRK_STDOUT)
    assert r.requests == 4000
    assert r.errors == 16  # read 1 + status 12 + timeout 3
    assert r.error_kinds["status"] == 12
    assert r.ok == 4000 - 12
    assert r.rps == pytest.approx((4000 - 12) / 5.0)
    assert (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) == (205.0, 230.0, 300.0, 400.0)


def test_parse_wrk_output_without_requests_has_no_latency() -> None:
    line = MARKER + json.dumps({
        "requests": 0, "duration_us": 1_000_000, "bytes": 0,
        "errors": {"connect": 200, "read": 0, "write": 0, "status": 0, "timeout": 0},
        "latency_us": {"min": 0, "max": 0, "mean": 0, "stdev": 0,
                       "percentiles": {"50": 0, "90": 0, "99": 0}}})
    r = parse_wrk_output(line)
    assert r.errors == 200
    assert r.rps == 0.0
    assert r.p90_ms is None


def test_parse_wrk_output_without_the_script_line_fails() -> None:
    with pytest.raises(ValueError, match="BENCH_JSON"):
        parse_wrk_output("Requests/sec: 10\n")


def test_script_counts_status_errors_and_prints_the_marker() -> None:
    assert "e.status" in LUA_SCRIPT
    assert MARKER.strip() in LUA_SCRIPT
    assert "/api/v1/chat" not in LUA_SCRIPT  # the path is wrk's URL, see wrk_command


def test_wrk_command() -> None:
    cmd = wrk_command("wrk", "http://127.0.0.1:1/", Path("s.lua"), "k", 1, 5, threads=2)
    assert cmd[:5] == ["wrk", "-t1", "-c1", "-d5s", "--timeout=10s"]  # a thread per connection
    assert cmd[-3:] == ["http://127.0.0.1:1/api/v1/chat", "--", "k"]


def test_bounds() -> None:
    assert little_bound_rps(200, 200) == 1000.0
    assert little_bound_rps(10, 0) == float("inf")
    assert cpu_bound_rps(2, 8.0) == 250.0
    assert cpu_bound_rps(2, None) is None


def test_level_row_picks_the_lower_bound_and_ratios() -> None:
    runs = {"blue": run("blue", 200, 25.0), "blue-gthread": run("blue-gthread", 200, 100.0),
            "blue-gevent": run("blue-gevent", 200, 150.0), "green": run("green", 200, 300.0)}
    row = level_row(200, 200, 2, runs)
    green = runs["green"]
    assert green.total_cpu_ms_per_req == pytest.approx(4.0 + 2.7 * 1000 / 3000, abs=1e-3)
    cpu = 2000 / green.total_cpu_ms_per_req  # type: ignore[operator]
    assert row["little_bound_rps"] == 1000.0
    assert row["green_cpu_bound_rps"] == pytest.approx(cpu, abs=0.1)
    assert row["green_bound_is"] == "cpu"
    assert row["green_of_bound"] == pytest.approx(300 / cpu, abs=0.01)
    assert row["green_over_blue"] == 12.0
    assert row["green_over_blue_gthread"] == 3.0
    assert row["green_over_blue_gevent"] == 2.0
    assert (row["blue_rps"], row["blue_gthread_rps"], row["blue_gevent_rps"]) == (25, 100, 150)
    assert row["green_cpu_ms_per_req"] == 4.0
    assert row["blue_errors"] == 0


def test_targets() -> None:
    rows = [level_row(c, 200, 2, {"blue": run("blue", c, 25.0),
                                  "blue-gthread": run("blue-gthread", c, 100.0),
                                  "blue-gevent": run("blue-gevent", c, 250.0),
                                  "green": run("green", c, 300.0, errors=1 if c == 500 else 0)})
            for c in (200, 500)]
    t = check_targets(rows, Targets())
    assert t["green_over_blue"]["holds"] is True
    assert t["green_over_blue_gthread"]["holds"] is True  # 3.0 >= 2.5
    assert t["green_over_blue_gevent"] == {"value": 1.2, "limit": 1.5, "holds": False}
    assert t["green_p90_ms"]["holds"] is True
    assert t["green_p99_ms"]["holds"] is True  # 300 <= 800
    assert t["green_cpu_ms_per_req"] == {"value": 4.0, "limit": 2.0, "holds": False}
    assert t["green_errors_all_levels"] == {"value": 1, "limit": 0, "holds": False}
    assert check_targets(rows, Targets(level=50)) == {"level": 50}


def test_order_alternates() -> None:
    cs = ["blue", "blue-gthread", "green", "blue-gevent"]
    assert order_for(0, cs) == cs
    assert order_for(1, cs) == ["blue-gevent", "green", "blue-gthread", "blue"]


def test_summary_table_and_plot(tmp_path: Path) -> None:
    runs = [run(c, lvl, rps) for lvl in (10, 200)
            for c, rps in (("blue", 20.0), ("green", 40.0), ("blue-gthread", 30.0),
                           ("blue-gevent", 35.0))]
    meta = {"agent_latency_ms": 200, "duration_s": 10, "cores": 2,
            "dynamodb_engine": "dynalite", "generator": "wrk"}
    summary = build_summary(meta, runs, Targets())
    assert [r["concurrency"] for r in summary["levels"]] == [10, 200]
    for key in ("blue_rps", "blue_p90_ms", "blue_errors", "green_rps", "green_p50_ms",
                "green_p90_ms", "green_p99_ms", "green_errors", "green_cpu_ms_per_req",
                "blue_gthread_rps", "blue_gevent_rps", "blue_gevent_p99_ms"):
        assert key in summary["levels"][0]
    table = markdown_table(summary)
    assert "| 200 | blue (sync) | 20.0 |" in table
    assert "| 200 | blue (gthread) | 30.0 |" in table
    assert "| 200 | blue (gevent) | 35.0 |" in table
    assert table.count("| 200 | ") == 5  # four configurations and the bounds' row
    assert "| 2.00 | 1.33 | 1.14 |" in table  # green over blue, blue-gthread, blue-gevent
    assert "green_over_blue: 2.00 (limit 10.0): MISSED" in table
    assert "green_over_blue_gevent: 1.14 (limit 1.5): MISSED" in table
    paths = write_outputs(tmp_path, summary)
    assert json.loads(paths[0].read_text())["agent_latency_ms"] == 200
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""The pure parts of `make bench BENCH_ARGS=--scaling`: setups, the objective, the rows, the
sizing figures and the table. No timing here: the bench is its own command."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from loadtest.bench_report import RunResult
from loadtest.scaling import (
    at_objective,
    markdown,
    pin,
    pin_tree,
    setup_row,
    setups,
    sizing,
    write,
)

pytestmark = pytest.mark.unit


def run(users: int, rps: float, p90: float, app_cpu_s: float, errors: int = 0) -> RunResult:
    p90 = float(p90)
    return RunResult(config="green-1w", concurrency=users, duration_s=10.0,
                     requests=int(rps * 10), ok=int(rps * 10), rps=float(rps), p50_ms=p90 * 0.8,
                     p90_ms=p90, p99_ms=p90 * 1.3, max_ms=p90 * 2, errors=errors,
                     error_kinds={}, app_cpu_s=app_cpu_s, peak_rss_mb=100.0,
                     helper_cpu_s={"generator": 0.5, "dynamodb": 2.0},
                     app_runq_wait_s=0.1 * rps)


def test_setups_keep_the_helpers_off_the_single_core() -> None:
    one, every = setups(2)
    assert (one.workers, sorted(one.app_cores), sorted(one.helper_cores)) == (1, [0], [1])
    assert not one.shared
    assert (every.workers, sorted(every.app_cores)) == (2, [0, 1])
    assert every.shared
    assert one.name == "1 worker on 1 core"
    assert every.name == "2 workers on 2 cores"
    assert [s.workers for s in setups(1)] == [1]  # one core: no second setup
    assert setups(1)[0].shared
    assert [s.workers for s in setups(4)] == [1, 4]


def test_the_objective_is_the_last_level_before_the_knee() -> None:
    runs = [run(25, 120, 230, 3.0), run(50, 230, 300, 6.0), run(75, 260, 420, 7.5),
            run(100, 265, 340, 7.6)]  # p90 back under at 100: past the knee, not counted
    best = at_objective(runs, 350)
    assert best is not None
    assert best.concurrency == 50
    assert at_objective([run(25, 100, 200, 2.0, errors=1)], 350) is None  # errors fail it
    assert at_objective(list(reversed(runs)), 350) is best  # order of the runs does not matter


def test_rows_and_sizing() -> None:
    one, every = setups(2)
    rows = [setup_row(one, [run(25, 120, 230, 3.0), run(50, 230, 300, 6.0),
                            run(75, 260, 420, 7.5)], 350),
            setup_row(every, [run(50, 240, 250, 6.0), run(100, 420, 330, 12.0),
                              run(150, 450, 600, 13.0)], 350)]
    a = rows[0]["at_objective"]
    assert (a["users"], a["rps"], a["rps_per_given_core"]) == (50, 230.0, 230.0)
    assert a["app_cores_busy"] == 0.6  # 6 CPU-s over 10 s
    assert a["rps_per_busy_core"] == pytest.approx(230 / 0.6, abs=0.1)
    assert a["app_cpu_ms_per_req"] == pytest.approx(6000 / 2300, abs=1e-3)
    b = rows[1]["at_objective"]
    assert (b["users"], b["rps_per_given_core"]) == (100, 210.0)
    assert [lv["users"] for lv in rows[1]["levels"]] == [50, 100, 150]
    s = sizing(rows)
    assert s is not None
    assert s["rps_per_vcpu_at_objective"] == 230.0
    assert s["core_busy_at_objective"] == 0.6
    # work per CPU-second: 420 / 1.2 = 350 with both cores against 383.3 on one
    assert s["cpu_efficiency_n_cores"] == pytest.approx(350 / 383.3, abs=0.01)
    assert sizing([setup_row(one, [run(25, 50, 900, 1.0)], 350)]) is None


def test_table_and_files(tmp_path: Path) -> None:
    one, every = setups(2)
    rows = [setup_row(one, [run(50, 230, 300, 6.0)], 350),
            setup_row(every, [run(50, 90, 900, 6.0)], 350)]
    summary = {"agent_latency_ms": 200, "duration_s": 10, "cores": 2, "objective_p90_ms": 350.0,
               "setups": rows, "sizing": sizing(rows)}
    table = markdown(summary)
    assert "| 1 worker on 1 core | 50 | 230.0 | 300.0 | 390.0 | 0 | 2.61 |" in table
    assert "| 2 workers on 2 cores | yes | - | - |" in table  # missed the objective
    assert "serves 230.0 chats/s per vCPU at the objective (50 users" in table
    paths = write(tmp_path, summary)
    assert json.loads(paths[0].read_text())["sizing"]["rps_per_vcpu_at_objective"] == 230.0
    assert paths[1].read_text() == table


def test_pin_sets_and_restores_affinity() -> None:
    before = os.sched_getaffinity(0)
    try:
        pin([os.getpid()], {min(before)})
        assert os.sched_getaffinity(0) == {min(before)}
        pin([2**22 + 12345], {0})  # a pid that is gone: ignored
    finally:
        pin([os.getpid()], set(before))
    assert os.sched_getaffinity(0) == before


def test_pin_tree_moves_every_thread() -> None:
    before = os.sched_getaffinity(0)
    started, stop = threading.Event(), threading.Event()
    seen: list[set[int]] = []

    def idle() -> None:
        started.set()
        stop.wait(5)
        seen.append(os.sched_getaffinity(0))  # this thread's own mask

    t = threading.Thread(target=idle)
    t.start()
    started.wait(5)
    try:
        pin_tree(os.getpid(), {min(before)})
    finally:
        stop.set()
        t.join()
        pin_tree(os.getpid(), set(before))
    assert seen == [{min(before)}]  # a thread that existed before was moved too
    assert os.sched_getaffinity(0) == before

"""`make bench BENCH_ARGS=--scaling`: green's chats per second per core, for sizing ECS tasks.

Green runs twice, against the same helpers as the bench (moto, dynalite, the agent emulator, wrk):

- **1 worker on 1 core**: the uvicorn supervisor and its worker pinned to core 0
  (``os.sched_setaffinity``; children inherit it), and every helper and wrk pinned to the other
  cores, so the app has one core to itself (but for other users of the machine, reported);
- **N workers on N cores** (N = every core, 2 here): the app on all of them. The helpers cannot
  be moved off the app's cores on this box: they share them, and their CPU is reported.

Each setup is swept over ``--scaling-levels`` users. The objective is the bench's p90 target
(:class:`loadtest.bench_report.Targets`, 350 ms at 200 ms agent latency) with no error: the
figure kept per setup is the highest level that meets it. Per core it reports chats/s divided by
the cores the app was given (the clean figure in the 1-core setup, where the helpers run on the
other core, as on AWS where DynamoDB, Bedrock and the clients are not on the task), and chats/s
divided by the cores the app actually used (its CPU seconds / run seconds): work per CPU-second,
comparable across setups whether or not the helpers shared the app's cores.

Writes ``scaling.json`` and ``scaling.md`` beside the bench's reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devstack.procs import free_port, process_tree
from devstack.run import Server
from loadtest.bench_report import RunResult, Targets
from loadtest.bench_report import _fmt as fmt


def pin(pids: Iterable[int], cores: set[int]) -> None:
    """Pin every process (and so every child it forks later) to ``cores``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(pid, cores)


def pin_tree(root: int, cores: set[int]) -> None:
    """Pin a process tree, every thread of it (a thread keeps the mask it was created with:
    setting a pid's affinity moves its main thread only)."""
    tids = []
    for proc in process_tree(root):
        tids.append(proc.pid)
        with contextlib.suppress(OSError):
            tids += [int(t.name) for t in Path(f"/proc/{proc.pid}/task").iterdir()]
    pin(tids, cores)


@dataclass(frozen=True)
class Setup:
    workers: int
    app_cores: frozenset[int]
    helper_cores: frozenset[int]  # where the helpers and wrk run (the app's own when shared)

    @property
    def name(self) -> str:
        return f"{self.workers} worker{'s' if self.workers > 1 else ''} on " \
               f"{len(self.app_cores)} core{'s' if len(self.app_cores) > 1 else ''}"

    @property
    def shared(self) -> bool:
        return bool(self.app_cores & self.helper_cores)


def setups(cores: int) -> list[Setup]:
    """1 worker alone on core 0 (helpers on the rest), then one worker per core on all."""
    every = frozenset(range(cores))
    out = []
    if cores >= 2:
        out.append(Setup(1, frozenset({0}), every - {0}))
    else:
        out.append(Setup(1, frozenset({0}), frozenset({0})))
    if cores >= 2:
        out.append(Setup(cores, every, every))
    return out


def at_objective(runs: list[RunResult], p90_ms: float) -> RunResult | None:
    """The highest level whose p90 is within the objective with no error (levels below a
    failing one only count up to it: a setup past its knee does not come back)."""
    best = None
    for r in sorted(runs, key=lambda r: r.concurrency):
        if r.errors or r.p90_ms is None or r.p90_ms > p90_ms:
            break
        best = r
    return best


def setup_row(setup: Setup, runs: list[RunResult], p90_ms: float) -> dict[str, Any]:
    r = at_objective(runs, p90_ms)
    row: dict[str, Any] = {"setup": setup.name, "workers": setup.workers,
                           "app_cores": sorted(setup.app_cores),
                           "helper_cores": sorted(setup.helper_cores),
                           "helpers_share_app_cores": setup.shared,
                           "objective_p90_ms": p90_ms, "at_objective": None}
    if r is not None:
        busy = r.app_cpu_s / r.duration_s if r.duration_s else None
        helpers = sum(r.helper_cpu_s.values())
        row["at_objective"] = {
            "users": r.concurrency, "rps": round(r.rps, 1), "p90_ms": r.p90_ms,
            "p99_ms": r.p99_ms, "app_cpu_ms_per_req": r.app_cpu_ms_per_req,
            "helpers_cpu_ms_per_req": r.cpu_ms_per_req(helpers),
            "rps_per_given_core": round(r.rps / len(setup.app_cores), 1),
            "app_cores_busy": round(busy, 2) if busy is not None else None,
            "rps_per_busy_core": round(r.rps / busy, 1) if busy else None,
            "app_runq_wait_ms_per_req": r.cpu_ms_per_req(r.app_runq_wait_s),
            "other_cpu_s": r.other_cpu_s,
        }
    row["levels"] = [{"users": x.concurrency, "rps": round(x.rps, 1), "p90_ms": x.p90_ms,
                      "p99_ms": x.p99_ms, "errors": x.errors,
                      "app_cpu_ms_per_req": x.app_cpu_ms_per_req,
                      "app_cores_busy": round(x.app_cpu_s / x.duration_s, 2)
                      if x.duration_s else None,
                      "app_runq_wait_ms_per_req": x.cpu_ms_per_req(x.app_runq_wait_s),
                      "other_cpu_s": x.other_cpu_s}
                     for x in sorted(runs, key=lambda x: x.concurrency)]
    return row


def sizing(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The rule's figures: what one worker alone on one core served at the objective (chats/s
    per vCPU, one worker per vCPU), how busy that core was then, and how the work per
    CPU-second held up with one worker per core on every core (1.0: linear)."""
    one = next((r for r in rows if r["workers"] == 1 and r["at_objective"]), None)
    if one is None:
        return None
    a = one["at_objective"]
    out: dict[str, Any] = {"rps_per_vcpu_at_objective": a["rps_per_given_core"],
                           "core_busy_at_objective": a["app_cores_busy"],
                           "users_per_vcpu_at_objective": a["users"]}
    many = next((r for r in rows if r["workers"] > 1 and r["at_objective"]), None)
    if many is not None and a["rps_per_busy_core"]:
        per = many["at_objective"]["rps_per_busy_core"]
        out["cpu_efficiency_n_cores"] = round(per / a["rps_per_busy_core"], 2) if per else None
    return out


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"green, agent latency {summary['agent_latency_ms']} ms, {summary['duration_s']} s "
             f"per run, objective p90 <= {summary['objective_p90_ms']:g} ms with no error.", "",
             "| setup | users | req/s | p90 ms | p99 ms | errors | app CPU ms/req "
             "| app CPU-wait ms/req | app cores busy | other CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in summary["setups"]:
        for lv in row["levels"]:
            lines.append(f"| {row['setup']} | {lv['users']} | " + " | ".join(fmt(lv[k]) for k in (
                "rps", "p90_ms", "p99_ms", "errors", "app_cpu_ms_per_req",
                "app_runq_wait_ms_per_req", "app_cores_busy", "other_cpu_s")) + " |")
    lines += ["", "| setup | helpers on the app's cores | users at objective | req/s "
              "| req/s per given core | app cores busy | req/s per busy core |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for row in summary["setups"]:
        a = row["at_objective"] or {}
        lines.append(f"| {row['setup']} | {'yes' if row['helpers_share_app_cores'] else 'no'} "
                     f"| {fmt(a.get('users'))} | " + " | ".join(fmt(a.get(k)) for k in (
                         "rps", "rps_per_given_core", "app_cores_busy", "rps_per_busy_core"))
                     + " |")
    s = summary.get("sizing")
    if s:
        lines += ["", f"Sizing: one worker per vCPU serves {s['rps_per_vcpu_at_objective']} "
                  f"chats/s per vCPU at the objective ({s['users_per_vcpu_at_objective']} users,"
                  f" core {s['core_busy_at_objective']} busy)"
                  + (f"; work per CPU-second on every core / on one: "
                     f"{s['cpu_efficiency_n_cores']}"
                     if s.get("cpu_efficiency_n_cores") is not None else "") + "."]
    return "\n".join(lines) + "\n"


def run_scaling(args: argparse.Namespace, helpers: Any, env: dict[str, str], script: Path,
                log_dir: Path, measure: Any, quiesce: Any, warm: Any) -> dict[str, Any]:
    """Sweep each setup; ``measure``/``quiesce``/``warm`` are the bench's own (loadtest.bench)."""
    cores = os.cpu_count() or 1
    every = set(range(cores))
    levels = [int(x) for x in args.scaling_levels.split(",") if x.strip()]
    p90 = Targets().p90_ms if args.scaling_p90_ms is None else args.scaling_p90_ms
    rows = []
    for setup in setups(cores):
        for pid in helpers.pids().values():
            pin_tree(pid, set(setup.helper_cores))
        pin([os.getpid()], set(setup.app_cores))  # the server starts with the app's cores
        server = Server("green", free_port(), env, workers=setup.workers,
                        log_path=log_dir / f"scaling-green-{setup.workers}w.log").start()
        pin([os.getpid()], set(setup.helper_cores))  # wrk is our child: it inherits this
        runs: list[RunResult] = []
        misses = 0
        try:
            assert server.proc is not None
            server.wait_healthy(timeout_s=90)
            pin_tree(server.proc.pid, set(setup.app_cores))
            warm(server)
            for level in levels:
                r = measure(f"green-{setup.workers}w", server, level)
                waited = quiesce(server.proc.pid)
                runs.append(r)
                print(f"scaling {setup.name}: {level:4d} users {r.rps:8.1f} req/s  p90 "
                      f"{r.p90_ms} p99 {r.p99_ms} ms  errors {r.errors}  app "
                      f"{r.app_cpu_ms_per_req} CPU-ms/req, "
                      f"{r.app_cpu_s / max(r.duration_s, 1e-9):.2f} cores  other CPU "
                      f"{r.other_cpu_s}s (drained {waited:.1f}s)", flush=True)
                missed = r.errors or r.p90_ms is None or r.p90_ms > p90
                misses = misses + 1 if missed else 0
                if misses >= 2:
                    break  # two levels in a row past the objective: the knee is behind
        finally:
            server.stop()
            pin([os.getpid()], every)
        rows.append(setup_row(setup, runs, p90))
    for pid in helpers.pids().values():
        pin_tree(pid, every)
    return {"agent_latency_ms": args.agent_latency_ms, "duration_s": args.duration,
            "cores": cores, "objective_p90_ms": p90, "time": time.strftime("%Y-%m-%d %H:%M"),
            "setups": rows, "sizing": sizing(rows)}


def write(out_dir: Path, summary: dict[str, Any]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "scaling.json", out_dir / "scaling.md"]
    paths[0].write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
    paths[1].write_text(markdown(summary))
    return paths


def _plain(x: object) -> object:
    if isinstance(x, frozenset | set):
        return sorted(x)
    if isinstance(x, RunResult):
        return asdict(x)
    raise TypeError(type(x).__name__)

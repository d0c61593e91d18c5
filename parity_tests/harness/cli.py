"""``python -m parity_tests`` (what ``make parity`` runs)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from parity_tests.harness import checks, report, reproduce
from parity_tests.harness.compare import diff, flatten
from parity_tests.harness.lanes import (
    API_KEYS,
    Lane,
    LocalLanes,
    case_keys,
    cloudwatch_lost,
    fault_note,
    remote_lanes,
)
from parity_tests.harness.model import Case, load_corpus
from parity_tests.harness.rules import load_known, load_noise
from parity_tests.harness.runner import CONCURRENCY, CaseResult, Runner
from shared.openapi import openapi_document

HERE = Path(__file__).resolve().parent.parent
OFF_TERMINAL_WIDTH = 20_000  # columns off a terminal (CI logs): tables never wrap a cell


def make_console() -> Console:
    """The terminal: rich when stdout is one; otherwise plain lines that are never wrapped or
    cut (soft wrap for text; a width no table reaches, so a table's cells keep one line)."""
    probe = Console()
    if probe.is_terminal:
        return Console(highlight=False)
    return Console(highlight=False, soft_wrap=True, width=OFF_TERMINAL_WIDTH, no_color=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m parity_tests", description=(
        "Replay the same requests against blue and green and compare answers and side effects."))
    p.add_argument("--cases", type=Path, default=HERE / "cases", help="case corpus directory")
    p.add_argument("--generated", type=int, default=int(os.environ.get("GENERATED", 100)),
                   help="property-based cases generated from /openapi.json (0: none)")
    p.add_argument("--seed", type=int, default=int(os.environ.get("SEED", 20261122)))
    p.add_argument("--replay", type=Path, default=os.environ.get("REPLAY") or None,
                   help="a capture (JSONL) to replay instead of the corpus")
    p.add_argument("--blue-url", default=os.environ.get("BLUE_URL") or None)
    p.add_argument("--green-url", default=os.environ.get("GREEN_URL") or None)
    p.add_argument("-k", "--filter", default=None, help="only cases whose id contains this")
    p.add_argument("--report-dir", type=Path, default=None,
                   help="reports/parity (local) or reports/parity-staging (with URLs)")
    p.add_argument("--metrics-per-step", action="store_true",
                   help="compare request counters after every step (slower) instead of once "
                   "over the run")
    p.add_argument("--no-checks", action="store_true",
                   help="skip the run-level checks (rate-limit burst, graceful shutdown); "
                   "with -k they run only when the filter names them (-k checks/)")
    p.add_argument("--profile", default=os.environ.get("PROFILE") or os.environ.get(
        "PARITY_PROFILE") or None, help="staging profile (a path, or a name under "
        "parity_tests/profiles/, e.g. make-run) describing what --blue-url/--green-url honour")
    p.add_argument("--keep-lanes", action="store_true",
                   help="after a failed local run, keep its servers (and devstack) up on the "
                   "same URLs until Ctrl-C, and print the URLs and key for the reproducers")
    p.add_argument("--concurrency", type=int, default=int(os.environ.get(
        "PARITY_CONCURRENCY", CONCURRENCY)), help="cases in flight at once in a local run "
        f"(default {CONCURRENCY}; 1: one by one); always 1 with --metrics-per-step or --replay")
    p.add_argument("--noise", type=Path, default=HERE / "noise.yaml")
    p.add_argument("--known", type=Path, default=HERE / "known_differences.yaml")
    p.add_argument("--today", type=dt.date.fromisoformat, default=dt.date.today(),
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


def collect_cases(args: argparse.Namespace) -> tuple[list[Case], dict[str, int]]:
    sources: dict[str, int] = {}
    if args.replay:
        from parity_tests.harness.replay import load_capture
        cases = load_capture(args.replay)
        sources["replay"] = len(cases)
    else:
        cases = load_corpus(args.cases)
        sources["corpus"] = len(cases)
        if args.generated:
            from parity_tests.harness.generate import generate_cases
            generated = generate_cases(openapi_document(), args.generated, args.seed)
            cases += generated
            sources["generated"] = len(generated)
    if args.filter:
        cases = [c for c in cases if args.filter in c.id]
    if args.blue_url or args.green_url:  # fault switches exist in the local stack only
        sources["skipped_controlled"] = sum(c.controlled for c in cases)
        cases = [c for c in cases if not c.controlled]
    return cases, sources


def cloudwatch_deltas(totals: dict[str, dict[str, float]], prefix: str = "cloudwatch"
                      ) -> list[dict[str, Any]]:
    """Differences of per-lane totals, each lane against the first (blue)."""
    names = list(totals)
    if len(names) < 2:
        return []
    base = flatten(totals[names[0]], prefix)
    out: list[dict[str, Any]] = []
    for other in names[1:]:
        out += [{**d.to_dict(), "lane": other}
                for d in diff(base, flatten(totals[other], prefix), [], None)]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = make_console()
    started = time.perf_counter()
    remote = bool(args.blue_url or args.green_url)
    if args.report_dir is None:
        args.report_dir = Path("reports/parity-staging" if remote else "reports/parity")
    if remote and not args.replay:
        return staging_main(args, console)
    mode: Literal["local", "remote"] = "remote" if remote else "local"
    booting: Future[LocalLanes] | None = None
    if not remote and not args.replay:  # the lanes boot while the cases are read and
        # generated (about 2 s); each case's keys are known by then: corpus + generated
        booting = ThreadPoolExecutor(1, thread_name_prefix="boot").submit(
            LocalLanes(args.report_dir / "logs", metrics_per_step=args.metrics_per_step,
                       cases=len(load_corpus(args.cases)) + args.generated).__enter__)
    taken: list[LocalLanes] = []  # the booted lanes, once the run has them (it stops them)
    try:
        return _main(args, console, started, remote, mode, booting, taken)
    finally:
        if booting is not None and not taken:  # the run ended before it took the lanes
            with contextlib.suppress(Exception):
                booting.result().__exit__(None, None, None)


def _main(args: argparse.Namespace, console: Console, started: float, remote: bool,
          mode: Literal["local", "remote"], booting: Future[LocalLanes] | None,
          taken: list[LocalLanes]) -> int:
    noise = load_noise(args.noise, mode)
    known_all = load_known(args.known)
    expired = [f"{k.case} {k.path} (owner {k.owner}, expired {k.expires}): {k.reason}"
               for k in known_all if k.expired(args.today)]
    cases, sources = collect_cases(args)
    total_steps = sum(len(c.steps) for c in cases)
    args.report_dir.mkdir(parents=True, exist_ok=True)
    if remote and not (args.blue_url and args.green_url):
        console.print("[red]give both --blue-url and --green-url (or BLUE_URL and GREEN_URL)")
        return 2
    notes: list[str] = []
    info: dict[str, Any] = {"sources": sources, "expired": expired, "filter": args.filter,
                            "seed": args.seed if sources.get("generated") else None,
                            "cases_dir": None if args.replay else args.cases}

    def run(lanes: list[Lane], effects: Any) -> list[CaseResult]:
        with Progress(TextColumn("[bold]parity"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("steps · {task.fields[failed]} failing cases"),
                      TimeElapsedColumn(), console=console, transient=not console.is_terminal
                      ) as bar:
            task = bar.add_task("steps", total=total_steps, failed=0)
            failed = 0

            def progress(result: CaseResult) -> None:
                nonlocal failed
                failed += result.failed
                bar.update(task, advance=len(result.case.steps), failed=failed)

            # at once only where each change can be told apart: the local lanes, no
            # per-step counters (global), no capture (its cases may share sessions)
            concurrency = (args.concurrency if effects is not None and not args.metrics_per_step
                           and not args.replay else 1)
            runner = Runner(lanes, noise, known_all, effects, today=args.today,
                            progress=progress, concurrency=concurrency,
                            case_keys=case_keys if effects is not None else None)
            info["concurrency"] = runner.concurrency
            results = runner.run(cases)
        info["unused_noise_rules"] = [f"{r.path} ({r.kind})" for i, r in enumerate(noise)
                                      if i not in runner.used_rules]
        return results

    if remote:
        lanes = remote_lanes(args.blue_url, args.green_url)
        notes.append("Remote targets: side effects (DynamoDB, CloudWatch, agent calls) and the "
                     "A/A baseline are NOT checked; only answers are compared.")
        try:
            results = run(lanes, None)
        finally:
            for lane in lanes:
                lane.http.close()
        info.update(mode="remote", lanes=[lane.name for lane in lanes])
        urls = {lane.name: lane.url for lane in lanes}
    else:
        names = checks.selected(args.filter, not args.no_checks)
        check_run: checks.CheckRun | None = None
        with console.status("booting devstack, blue (gunicorn), blue-aa and green (uvicorn)"):
            stack = booting.result() if booting is not None else LocalLanes(
                args.report_dir / "logs", metrics_per_step=args.metrics_per_step,
                cases=len(cases)).__enter__()
            taken.append(stack)
        try:
            if names:  # the checks have their own stack and servers: they run while the
                # corpus does (PARITY_CHECKS_AFTER=1 runs them after it, one thing at a time)
                check_run = checks.CheckRun(names, args.report_dir / "logs").start()
                if os.environ.get("PARITY_CHECKS_AFTER") != "1":
                    check_run.start_running()
            console.print(f"booted {len(stack.lanes)} lanes in {stack.boot_s:.1f} s: " +
                          ", ".join(f"{lane.name} {lane.url}" for lane in stack.lanes))
            phases: dict[str, float] = {"boot": stack.boot_s}
            mark = time.perf_counter()
            results = run(stack.lanes, stack.effects)
            phases["corpus"] = time.perf_counter() - mark
            mark = time.perf_counter()
            urls = {lane.name: lane.url for lane in stack.lanes}
            assert stack.effects is not None
            counters = {lane.name: stack.effects.run_counters(lane) for lane in stack.lanes}
            tables = {lane.name: stack.effects.final_state(lane) for lane in stack.lanes}
            stack.stop_servers()  # SIGTERM: each server flushes its CloudWatch buffer
            totals = stack.cloudwatch_totals()
            info["cloudwatch"] = (cloudwatch_deltas(counters, "prometheus")
                                  + cloudwatch_deltas(tables, "dynamodb")
                                  + cloudwatch_deltas(totals)
                                  + cloudwatch_lost(counters, totals))
            notes.append(fault_note(stack.lanes))
            info.update(mode="local", lanes=[lane.name for lane in stack.lanes],
                        boot_s=stack.boot_s)
            phases["final_state"] = time.perf_counter() - mark
            mark = time.perf_counter()
            if check_run is not None:
                with console.status("checks: " + ", ".join(names)):
                    info["checks"] = [r.to_dict() for r in check_run.run()]
                check_run.close()
                check_run = None
            phases["checks"] = time.perf_counter() - mark
            info["phases_s"] = {k: round(v, 2) for k, v in phases.items()}
            info["notes"] = notes
            info["duration_s"] = time.perf_counter() - started
            faults_url = stack.lanes[0].aws_url if stack.lanes else None
            summary = finish(args, console, results, info, urls, faults_url)
            if args.keep_lanes:
                keep_lanes(stack, console, summary, args.report_dir)
            return 0 if summary["passed"] else 1
        finally:
            stack.__exit__(None, None, None)
            if check_run is not None:
                check_run.close()
    info["notes"] = notes
    info["duration_s"] = time.perf_counter() - started
    summary = finish(args, console, results, info, urls, None)
    return 0 if summary["passed"] else 1


def finish(args: argparse.Namespace, console: Console, results: list[CaseResult],
           info: dict[str, Any], urls: dict[str, str], faults_url: str | None
           ) -> dict[str, Any]:
    """Write summary.json, junit.xml, the reproducers and report.html; print the summary."""
    summary = report.summarize(results, info)
    keys = API_KEYS if info.get("mode") == "local" else (
        os.environ.get("PARITY_API_KEY", API_KEYS[0]),)
    noise = load_noise(args.noise, "local" if info.get("mode") == "local" else "remote")
    reproducers = reproduce.write_reproducers(results, args.report_dir, urls, keys, faults_url,
                                              noise)
    report.write_json(summary, results, args.report_dir)
    report.write_junit(results, summary, args.report_dir)
    report.write_html(summary, results, urls, args.report_dir, reproducers)
    report.print_summary(summary, console)
    console.print(f"reports: {args.report_dir}/summary.json, junit.xml, report.html"
                  + (f", {len(reproducers)} reproducers in {args.report_dir}/"
                     f"{reproduce.DIRECTORY}/" if reproducers else ""), markup=False)
    return summary


def keep_lanes(stack: LocalLanes, console: Console, summary: dict[str, Any], report_dir: Path,
               wait: Any = None) -> None:
    """After a failed run: restart every lane's server on its URL (same tables, same emulator,
    same devstack; they were stopped so that CloudWatch got their last metrics), print what a
    reproducer needs, and wait for Ctrl-C (``wait``: called instead, for tests)."""
    if summary["passed"]:
        console.print("--keep-lanes: the run passed; nothing to keep", markup=False)
        return
    for lane in stack.lanes:
        assert lane.server is not None
        lane.server.log_path = report_dir / "logs" / f"{lane.name}-kept.log"
        lane.server.start()
    for lane in stack.lanes:
        assert lane.server is not None
        lane.server.wait_healthy(90)
    env = {"blue": "BLUE_URL", "blue-aa": "BLUE_AA_URL", "green": "GREEN_URL"}
    console.print("lanes kept up (the state the run left; Ctrl-C stops them):", markup=False)
    for lane in stack.lanes:
        console.print(f"  {env.get(lane.name, lane.name)}={lane.url}", markup=False)
    console.print(f"  PARITY_API_KEY={API_KEYS[0]} PARITY_API_KEY_2={API_KEYS[1]}",
                  markup=False)
    if stack.lanes and stack.lanes[0].aws_url:
        console.print(f"  PARITY_FAULTS_URL={stack.lanes[0].aws_url}", markup=False)
    exports = " ".join(f"{env[lane.name]}={lane.url}" for lane in stack.lanes
                       if lane.name in env)
    console.print(f"e.g. {exports} PARITY_API_KEY={API_KEYS[0]} python3 "
                  f"{report_dir}/{reproduce.DIRECTORY}/001-*.py", markup=False)
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)  # a CI job's kill stops them as Ctrl-C does
    try:
        if wait is not None:
            wait()
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping the kept lanes", markup=False)
    finally:
        signal.signal(signal.SIGTERM, previous)


def staging_main(args: argparse.Namespace, console: Console) -> int:
    """With --blue-url/--green-url: :func:`parity_tests.harness.staging.run_staging`."""
    from parity_tests.harness.staging import StagingProfile, profile_named, run_staging

    if not (args.blue_url and args.green_url):
        console.print("[red]give both --blue-url and --green-url (or BLUE_URL and GREEN_URL)")
        return 2
    try:
        profile = profile_named(args.profile) if args.profile else StagingProfile()
        result = run_staging(args.blue_url, args.green_url, profile=profile,
                             report_dir=args.report_dir, case_filter=args.filter,
                             generated=args.generated, seed=args.seed, console=console,
                             cases_dir=args.cases, noise_path=args.noise,
                             known_path=args.known, today=args.today)
    except ValueError as exc:
        console.print(str(exc), markup=False, highlight=False, style="red")
        return 2
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())

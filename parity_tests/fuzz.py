"""`make fuzz`: Schemathesis, with every check, against each color's ``/openapi.json``.

Starts devstack (moto + the agent emulator) and both colors as real servers (gunicorn and
uvicorn, the shipped commands, with an API key set and a rate limit too high to trip), then runs
the Schemathesis CLI against each color in turn: all phases (examples, coverage, fuzzing and
stateful, which follows the document's links), ``--checks all`` minus :data:`EXCLUDED_CHECKS`,
a bounded number of examples per operation and a fixed seed. Schemathesis sends the key itself:
the document declares the ``X-API-Key`` scheme and the run passes the header.

Writes ``reports/fuzz/<color>/`` (``junit.xml``, Schemathesis' ``run.json``, its terminal
output, the server log) and ``reports/fuzz/summary.json`` (per color: operations tested, test
cases, requests the server answered, failures by check, server-side findings), prints a summary,
and exits non-zero on any failure in either color. Besides Schemathesis' own checks, a server log
holding a traceback or the API key counts as a failure.

    python -m parity_tests.fuzz [--max-examples 60] [--seed 1] [--colors blue,green]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devstack.procs import free_port
from devstack.run import ROOT, Server
from devstack.stack import DevStack

COLORS = ("blue", "green")
API_KEY = "fuzz-key-7d1c0e"  # a throwaway key for local servers
DEFAULT_MAX_EXAMPLES = 60
DEFAULT_SEED = 20240404
# Checks that contradict a documented product decision, each with the reason. Empty: every
# check Schemathesis has runs, and the app or the document was fixed wherever one failed.
EXCLUDED_CHECKS: dict[str, str] = {}
SERVER_ENV = {
    "API_KEYS": API_KEY,
    "RATE_LIMIT_REQUESTS": "100000000",  # the fuzzer's requests never meet a 429
    "ENVIRONMENT": "test",
    "AGENT_READ_TIMEOUT_S": "2",
    "METRICS_FLUSH_INTERVAL_S": "60",
}
# Schemathesis' negative_data_rejection expects 400, 401, 403, 404, 405, 406, 409, 415, 422,
# 428, 429 or a 5xx for invalid data; 413 and 414 (a body or a URI over our limits) are refusals
# of invalid data too, with the documented envelope, so they count as rejections.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422",
              "428", "429", "5xx"]
CONFIG = f"""[checks.negative_data_rejection]
expected-statuses = {json.dumps(REJECTIONS)}
"""


def served(log: str) -> int:
    """Requests the server answered: one access line each."""
    return sum(1 for line in log.splitlines() if '"chatbot.access"' in line)


def schemathesis_cmd(url: str, out: Path, max_examples: int, seed: int,
                     extra: list[str]) -> list[str]:
    (out / "schemathesis.toml").write_text(CONFIG)
    cmd = [str(Path(sys.executable).parent / "schemathesis"),
           "--config-file", str(out / "schemathesis.toml"), "run", f"{url}/openapi.json",
           "--checks", "all", "-H", f"X-API-Key: {API_KEY}",
           "--max-examples", str(max_examples), "--seed", str(seed),
           "--workers", "1", "--no-color", "--generation-database", "none",
           "--request-timeout", "15", "--suppress-health-check", "too_slow",
           "--report", "junit,json", "--report-junit-path", str(out / "junit.xml"),
           "--report-json-path", str(out / "run.json")]
    if EXCLUDED_CHECKS:
        cmd += ["--exclude-checks", ",".join(sorted(EXCLUDED_CHECKS))]
    return cmd + extra


def log_findings(log: str) -> list[str]:
    """What a server log must never hold: a traceback, or the API key."""
    found = []
    if "Traceback" in log:
        found.append("server log holds a traceback")
    if API_KEY in log:
        found.append("server log holds the API key")
    return found


def summarize(color: str, run: dict[str, Any], requests: float, findings: list[str],
              seconds: float, exit_code: int) -> dict[str, Any]:
    failures = {f["title"] + f" ({f['code']})": {"count": f["count"],
                                                 "operations": f["operations"]}
                for f in run.get("failures", [])}
    return {
        "color": color,
        "ok": exit_code == 0 and not findings and not run.get("errors"),
        "schemathesis_exit_code": exit_code,
        "duration_s": round(seconds, 1),
        "seed": run.get("seed"),
        "operations": run.get("operations", {}),
        "phases": {k: v.get("status") for k, v in run.get("phases", {}).items()},
        "test_cases": run.get("test_cases", {}),
        "requests_served": int(requests),
        "failures_by_check": failures,
        "errors": run.get("errors", []),
        "server_log_findings": findings,
        "warnings": {k: v for k, v in run.get("warnings", {}).items() if v},
        "excluded_checks": EXCLUDED_CHECKS,
    }


def fuzz_color(server: Server, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "parity_tests.fuzz_hooks",
           "PYTHONPATH": str(ROOT)}
    cmd = schemathesis_cmd(server.url, out, args.max_examples, args.seed, args.st_args)
    with open(out / "schemathesis.txt", "wb") as text:
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=text,  # noqa: S603
                              stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.monotonic() - started
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    if not run:
        run = {"errors": [f"Schemathesis wrote no report (exit {code}); see schemathesis.txt"]}
    return summarize(server.color, run, 0, [], seconds, code)


def print_summary(results: list[dict[str, Any]], report: Path) -> None:
    print(f"\nSchemathesis, --checks all, reports in {report}")
    for r in results:
        ops, cases = r["operations"], r["test_cases"]
        print(f"  {r['color']:<5} {'ok' if r['ok'] else 'FAILED':<6} "
              f"operations {ops.get('tested', 0)}/{ops.get('total', 0)}  "
              f"test cases {cases.get('generated', 0)}  requests {r['requests_served']}  "
              f"failures {sum(f['count'] for f in r['failures_by_check'].values())}  "
              f"{r['duration_s']} s")
        for title, failure in r["failures_by_check"].items():
            print(f"        {title}: {failure['count']} in {', '.join(failure['operations'])}")
        for line in [*r["errors"], *r["server_log_findings"]]:
            print(f"        {line}")
    for check, reason in EXCLUDED_CHECKS.items():
        print(f"  excluded check {check}: {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity_tests.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=DEFAULT_MAX_EXAMPLES,
                        help=f"test cases per operation and phase ({DEFAULT_MAX_EXAMPLES})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--colors", default=",".join(COLORS))
    parser.add_argument("--workers", type=int, default=1, help="server workers per color")
    parser.add_argument("--report-dir", type=Path, default=ROOT / "reports" / "fuzz")
    parser.add_argument("st_args", nargs="*",
                        help="more Schemathesis options, after --, e.g. -- --phases fuzzing")
    args = parser.parse_args(argv)
    colors = [c for c in args.colors.split(",") if c]
    report: Path = args.report_dir
    started = time.monotonic()
    stack = DevStack(tables=[(f"fuzz_{c}_sessions", f"fuzz_{c}_rate_limits") for c in colors])
    servers: list[Server] = []
    results: list[dict[str, Any]] = []
    try:
        stack.start()
        for color in colors:
            out = report / color
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            env = {**stack.env(f"fuzz_{color}_sessions", f"fuzz_{color}_rate_limits"),
                   **SERVER_ENV, "METRICS_NAMESPACE": f"Fuzz/{color}"}
            servers.append(Server(color, free_port(), env, workers=args.workers,
                                  log_path=out / "server.log").start())
        for server in servers:
            server.wait_healthy(60)
        for server in servers:
            results.append(fuzz_color(server, report / server.color, args))
    finally:
        for server in servers:
            server.stop()
        stack.stop()
    for result in results:  # the logs are whole once the servers have stopped
        log = (report / result["color"] / "server.log").read_text(errors="replace")
        result["server_log_findings"] = log_findings(log)
        result["requests_served"] = served(log) - 1  # less wait_healthy's probe
        result["ok"] = result["ok"] and not result["server_log_findings"]
    summary = {"ok": all(r["ok"] for r in results), "max_examples": args.max_examples,
               "seed": args.seed, "duration_s": round(time.monotonic() - started, 1),
               "colors": {r["color"]: r for r in results}}
    (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for result in results:
        (report / result["color"] / "summary.json").write_text(json.dumps(result, indent=2)
                                                               + "\n")
    print_summary(results, report)
    print(f"  total {summary['duration_s']} s: {'ok' if summary['ok'] else 'FAILED'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

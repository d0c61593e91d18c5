"""``make soak``: a bounded soak of each color as shipped, at N concurrent users.

For each color in turn (blue: gunicorn with its shipped workers; green: uvicorn, one worker per
core), against devstack (moto with atomic writes and the agent emulator, each in its own process,
the agent taking ``--agent-latency-ms`` per call), ``--users`` users loop for ``--duration``
seconds (per color), each: a chat (every ``NEW_SESSION_EVERY``-th turn starts a new session,
the others continue the user's session), a read of that session, now and then a list of the
user's sessions (10 %) or a delete of the session (5 %). Every ``--sample-s`` seconds it samples
the server's resident memory and open file descriptors (master and every worker, summed) and
the requests and 5xx so far, and prints a progress line.

Verdict per color (see :func:`verdict`):

- zero 5xx answers and zero transport errors (a reset or a timeout is a lost answer);
- RSS growth from minute 1 to the end under 10 % (each end is the median of 3 samples, so one
  sample taken during a GC or a burst does not decide; minute 1 is the first sample at or after
  60 s, or at 20 % of the run when it is shorter than 2 minutes);
- no growth in open file descriptors: the end's median at most the minute-1 median plus
  :func:`fd_tolerance` (8, or 5 % of it when more: connection pools open sockets on demand and
  keep-alive closes them, so green's ~360 fds move by ~20 between samples; a leak grows without
  bound).

The rate limit is raised out of the way (a soak is not a rate-limit test) and moto serves about
160 DynamoDB calls/s on this machine, so the achieved request rate is bounded by moto and, for
blue, by its sync workers (workers / agent latency); the report says so.

Writes ``reports/soak/summary.json`` and ``reports/soak/soak.png``; exits 1 when a verdict fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from devstack.procs import EmulatorProcess, MotoProcess, free_port, process_tree
from devstack.run import Server
from devstack.stack import FAKE_CREDENTIALS, create_tables

API_KEY = "soak-key"
RSS_GROWTH_MAX_PCT = 10.0
FD_TOLERANCE = 8
FD_TOLERANCE_PCT = 5.0
NEW_SESSION_EVERY = 5
MINUTE_1_S = 60.0


# --- pure parts (unit-tested) ------------------------------------------------------------------

@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_mb: float
    fds: int
    processes: int
    requests: int
    errors_5xx: int


def reference_index(samples: list[Sample], duration_s: float) -> int:
    """The 'minute 1' sample: the first at or after 60 s (20 % of a run shorter than 2 min)."""
    at = MINUTE_1_S if duration_s >= 2 * MINUTE_1_S else 0.2 * duration_s
    for i, s in enumerate(samples):
        if s.t >= at:
            return i
    return max(0, len(samples) - 1)


def _median_at(values: list[float], start: int) -> float:
    return float(statistics.median(values[start:start + 3]))


def growth(samples: list[Sample], duration_s: float) -> dict[str, float]:
    """RSS and fds at minute 1 and at the end (medians of 3 samples) and the RSS growth in %."""
    if not samples:
        raise ValueError("no samples")
    ref = reference_index(samples, duration_s)
    end = max(ref, len(samples) - 3)
    rss = [s.rss_mb for s in samples]
    fds = [float(s.fds) for s in samples]
    rss_1, rss_end = _median_at(rss, ref), _median_at(rss, end)
    return {"reference_t_s": samples[ref].t, "rss_mb_minute_1": round(rss_1, 1),
            "rss_mb_end": round(rss_end, 1),
            "rss_growth_pct": round((rss_end - rss_1) / rss_1 * 100, 2) if rss_1 else 0.0,
            "fds_minute_1": _median_at(fds, ref), "fds_end": _median_at(fds, end)}


def fd_tolerance(fds_minute_1: float) -> float:
    return max(FD_TOLERANCE, fds_minute_1 * FD_TOLERANCE_PCT / 100)


def verdict(figures: dict[str, Any]) -> list[str]:
    """What failed (empty: the color passed)."""
    failures = []
    if figures["errors_5xx"]:
        failures.append(f"{figures['errors_5xx']} answers were 5xx")
    if figures["transport_errors"]:
        failures.append(f"{figures['transport_errors']} requests got no answer")
    if figures["rss_growth_pct"] >= RSS_GROWTH_MAX_PCT:
        failures.append(f"RSS grew {figures['rss_growth_pct']} % from minute 1 to the end "
                        f"(limit {RSS_GROWTH_MAX_PCT} %)")
    tolerance = fd_tolerance(figures["fds_minute_1"])
    if figures["fds_end"] > figures["fds_minute_1"] + tolerance:
        failures.append(f"open fds grew from {figures['fds_minute_1']:g} to "
                        f"{figures['fds_end']:g} (tolerance {tolerance:g})")
    if not figures["requests"]:
        failures.append("no request was answered")
    return failures


# --- the stack ---------------------------------------------------------------------------------

def measure(pid: int) -> tuple[float, int, int]:
    """(RSS in MB, open fds, processes) of a server's master and workers, summed."""
    rss = fds = n = 0
    for proc in process_tree(pid):
        try:
            rss += proc.memory_info().rss
            fds += proc.num_fds()
            n += 1
        except psutil.NoSuchProcess:
            continue
    return rss / 2**20, fds, n


# --- load --------------------------------------------------------------------------------------

@dataclass
class Load:
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    error_examples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors_5xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)


async def user(n: int, http: aiohttp.ClientSession, base: str, stop_at: float, load: Load,
               rng: random.Random) -> None:
    uid = f"soak-{n}"
    session_id: str | None = None
    turn = 0

    async def call(method: str, path: str, **kw: Any) -> dict[str, Any] | None:
        try:
            async with http.request(method, base + path, **kw) as resp:
                body = await resp.read()
                load.statuses[resp.status] += 1
                if resp.status >= 400 and len(load.error_examples) < 5:
                    load.error_examples.append(f"{method} {path}: {resp.status} {body[:200]!r}")
                if resp.status == 200 and body.startswith(b"{"):
                    return dict(json.loads(body))
        except (aiohttp.ClientError, TimeoutError) as exc:
            load.transport_errors += 1
            if len(load.error_examples) < 5:
                load.error_examples.append(f"{method} {path}: {exc!r}")
        return None

    while time.monotonic() < stop_at:
        turn += 1
        payload: dict[str, Any] = {"message": f"soak turn {turn}", "user_id": uid}
        if session_id and turn % NEW_SESSION_EVERY:
            payload["session_id"] = session_id
        answer = await call("POST", "/api/v1/chat", json=payload)
        if answer:
            session_id = str(answer["session_id"])
        if session_id:
            await call("GET", f"/api/v1/chat/sessions/{session_id}")
            roll = rng.random()
            if roll < 0.10:
                await call("GET", f"/api/v1/users/{uid}/sessions", params={"limit": "10"})
            elif roll < 0.15:
                await call("DELETE", f"/api/v1/chat/sessions/{session_id}")
                session_id = None


async def soak_color(server: Server, users: int, duration_s: float, sample_s: float,
                     seed: int) -> tuple[Load, list[Sample], float]:
    load = Load()
    samples: list[Sample] = []
    assert server.proc is not None
    pid = server.proc.pid
    started = time.monotonic()
    stop_at = started + duration_s
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=users)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector,
                                     headers={"X-API-Key": API_KEY}) as http:
        rng = random.Random(seed)  # noqa: S311 - load shape, not security
        tasks = [asyncio.create_task(user(i, http, server.url, stop_at, load,
                                          random.Random(rng.random())))  # noqa: S311
                 for i in range(users)]
        last = 0.0
        while not all(t.done() for t in tasks):
            await asyncio.sleep(min(sample_s, max(0.05, stop_at - time.monotonic())))
            t = time.monotonic() - started
            if time.monotonic() < stop_at and t - last < sample_s * 0.9:
                continue
            rss, fds, nproc = await asyncio.to_thread(measure, pid)
            samples.append(Sample(round(t, 1), round(rss, 1), fds, nproc, load.requests,
                                  load.errors_5xx))
            last = t
            print(f"[{server.color} {t:5.0f}s] rss {rss:7.1f} MB  fds {fds:4d}  procs {nproc}  "
                  f"requests {load.requests:6d} ({load.requests / max(t, 0.001):6.1f}/s)  "
                  f"5xx {load.errors_5xx}  no answer {load.transport_errors}", flush=True)
            if time.monotonic() >= stop_at:
                break
        await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    return load, samples, elapsed


def plot(results: dict[str, dict[str, Any]], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rss, ax_fd) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for color, r in results.items():
        t = [s["t"] for s in r["samples"]]
        ax_rss.plot(t, [s["rss_mb"] for s in r["samples"]], label=color, color=color)
        ax_fd.plot(t, [s["fds"] for s in r["samples"]], label=color, color=color)
        ax_rss.axvline(r["reference_t_s"], color="grey", linestyle=":", linewidth=1)
    ax_rss.set_ylabel("RSS, master + workers (MB)")
    ax_fd.set_ylabel("open file descriptors")
    ax_fd.set_xlabel("seconds under load")
    ax_rss.legend()
    ax_rss.set_title("soak: memory and file descriptors (dotted: minute 1)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=300.0,
                   help="seconds of load per color (default 300)")
    p.add_argument("--users", type=int, default=100, help="concurrent users (default 100)")
    p.add_argument("--colors", default="blue,green")
    p.add_argument("--agent-latency-ms", type=int, default=200)
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("reports/soak"))
    args = p.parse_args(argv)
    if args.duration <= 0 or args.duration > 3600 or args.users < 1 or args.users > 2000:
        p.error("--duration must be in (0, 3600] and --users in [1, 2000]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    colors = [c.strip() for c in args.colors.split(",") if c.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    for name, value in FAKE_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    moto = MotoProcess(logs / "moto.log")
    agent = EmulatorProcess(logs / "agent.log", 3.0, "--latency-ms", str(args.agent_latency_ms),
                            "--max-calls", "1000")
    results: dict[str, dict[str, Any]] = {}
    started = time.time()
    try:
        moto.wait()
        agent.wait()
        for color in colors:
            tables = (f"soak_{color}_sessions", f"soak_{color}_rate_limits")
            create_tables(moto.url, *tables)
            env = {**FAKE_CREDENTIALS, "API_KEYS": API_KEY, "ENVIRONMENT": "test",
                   "DYNAMODB_ENDPOINT_URL": moto.url, "CLOUDWATCH_ENDPOINT_URL": moto.url,
                   "BEDROCK_ENDPOINT_URL": agent.url, "SESSIONS_TABLE": tables[0],
                   "RATE_LIMIT_TABLE": tables[1], "RATE_LIMIT_REQUESTS": "100000000",
                   "METRICS_NAMESPACE": f"Soak/{color}", "LOG_LEVEL": "WARNING",
                   "METRICS_DIR": tempfile.mkdtemp(prefix=f"soak-{color}-")}
            server = Server(color, free_port(), env, log_path=logs / f"{color}.log").start()
            try:
                server.wait_healthy(90)
                print(f"soak {color}: {args.users} users for {args.duration:g} s against "
                      f"{server.url} (agent latency {args.agent_latency_ms} ms)", flush=True)
                load, samples, elapsed = asyncio.run(soak_color(
                    server, args.users, args.duration, args.sample_s, args.seed))
            finally:
                code = server.stop()
            figures: dict[str, Any] = {
                "users": args.users, "duration_s": round(elapsed, 1),
                "requests": load.requests, "rps": round(load.requests / elapsed, 1),
                "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
                "errors_5xx": load.errors_5xx, "transport_errors": load.transport_errors,
                "error_examples": load.error_examples, "exit_code": code,
                **growth(samples, elapsed),
                "samples": [vars(s) for s in samples],
            }
            figures["failures"] = verdict(figures)
            figures["passed"] = not figures["failures"]
            results[color] = figures
            print(f"soak {color}: {'PASS' if figures['passed'] else 'FAIL'} "
                  f"{figures['requests']} requests ({figures['rps']}/s), "
                  f"5xx {figures['errors_5xx']}, no answer {figures['transport_errors']}, "
                  f"RSS {figures['rss_mb_minute_1']} -> {figures['rss_mb_end']} MB "
                  f"({figures['rss_growth_pct']:+.2f} %), fds {figures['fds_minute_1']:g} -> "
                  f"{figures['fds_end']:g}" + "".join(f"\n  - {f}" for f in figures["failures"]),
                  flush=True)
    finally:
        agent.stop()
        moto.stop()
    passed = bool(results) and all(r["passed"] for r in results.values())
    summary = {
        "passed": passed, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "users": args.users, "duration_s_per_color": args.duration,
        "agent_latency_ms": args.agent_latency_ms, "sample_s": args.sample_s,
        "criteria": {"errors_5xx": 0, "transport_errors": 0,
                     "rss_growth_pct_max": RSS_GROWTH_MAX_PCT,
                     "fd_tolerance": f"max({FD_TOLERANCE}, {FD_TOLERANCE_PCT:g} % of minute 1)",
                     "ends": "median of 3 samples at minute 1 and at the end"},
        "notes": ["The request rate is bounded by moto (about 160 DynamoDB calls/s here; a chat "
                  "makes 3-4) and, for blue, by its sync workers (workers / agent latency); "
                  "this is a soak for errors and leaks, not a benchmark (see make bench).",
                  "The rate limit is raised out of the way; RSS and fds are the server's master "
                  "plus every worker, summed."],
        "colors": results,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    if results:
        plot(results, args.out / "soak.png")
    print(f"soak {'PASS' if passed else 'FAIL'}: {args.out}/summary.json, {args.out}/soak.png",
          flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""`make bench`: blue against green under the same load, the way they ship, in one run.

Each helper runs in its own process so its CPU can be read from /proc next to the app's:

- moto server (CloudWatch; DynamoDB too with ``--dynamodb moto``);
- dynalite (DynamoDB, the default engine: moto caps at ~160 calls/s on this kind of machine),
  installed by the Makefile with ``npm ci`` from ``devstack/dynalite/package-lock.json``;
- the agent-runtime emulator (``python -m devstack.agent_emulator``), agent latency set there;
- wrk, the compiled load generator (``apt-get install wrk``), with :mod:`loadtest.bench_wrk`'s
  script.

The servers are booted with the shipped commands (:class:`devstack.run.Server`): blue is
gunicorn with sync workers (2 x cores + 1), the ``blue-gthread`` variant the same file with
``GUNICORN_WORKER_CLASS=gthread``, the ``blue-gevent`` variant the same app under gunicorn's gevent
workers (legacy_flask/gunicorn_gevent.conf.py: boto3 made cooperative by monkey patching, as a
team would run it), green is uvicorn (uvloop, httptools, one worker per core).
All four run at once (idle servers cost nothing); for each concurrency level each of them is
loaded in turn, in alternating order, then the next run waits until the agent emulator has been
quiet (a refused queue of blue requests must not leak into green's figures).

Rate limiting is off for the bench (the default 600 requests a minute would answer 429);
everything else is the shipped configuration: auth on, one JSON log line per request, buffered
CloudWatch metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from devstack.commands import BLUE_GEVENT_CMD
from devstack.procs import HelperProcess, free_port, process_tree
from devstack.run import Server
from devstack.stack import FAKE_CREDENTIALS, create_tables
from loadtest.bench_report import RunResult, Targets, build_summary, write_outputs
from loadtest.bench_wrk import LUA_SCRIPT, parse_wrk_output, wrk_command
from loadtest.scaling import run_scaling
from loadtest.scaling import write as write_scaling
from shared.sessions import rate_limit_table_spec, sessions_table_spec
from shared.settings import DEV_API_KEY

ROOT = Path(__file__).resolve().parent.parent
DYNALITE_DIR = ROOT / "devstack" / "dynalite"
DYNALITE_CLI = DYNALITE_DIR / "node_modules" / "dynalite" / "cli.js"
CONFIGS = ("blue", "blue-gthread", "green", "blue-gevent")


def _http(url: str, data: bytes | None = None, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",  # noqa: S310
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback only)
        return json.loads(r.read())


class CpuMeter:
    """CPU seconds (user + system) and peak RSS of process trees, read from /proc via psutil.
    A tree is a root pid and its descendants (gunicorn's master and workers, uvicorn's
    supervisor and workers)."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.peak_rss: dict[str, int] = dict.fromkeys(roots, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for name, pid in self.roots.items():
            cpu: dict[int, float] = {}
            for p in process_tree(pid):
                try:
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
                except psutil.NoSuchProcess:
                    pass
            out[name] = cpu
        return out

    def runq_snapshot(self, name: str) -> dict[tuple[int, int], float]:
        """Seconds each thread of a tree spent runnable but waiting for a CPU
        (/proc/<pid>/task/<tid>/schedstat, 2nd field): how starved of CPU the tree was."""
        out: dict[tuple[int, int], float] = {}
        for p in process_tree(self.roots[name]):
            tasks = Path(f"/proc/{p.pid}/task")
            with contextlib.suppress(OSError):
                for task in tasks.iterdir():
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        wait_ns = int((task / "schedstat").read_text().split()[1])
                        out[(p.pid, int(task.name))] = wait_ns / 1e9
        return out

    @staticmethod
    def delta(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]],
              ) -> dict[str, float]:
        return {name: sum(v - before.get(name, {}).get(pid, 0.0) for pid, v in procs.items())
                for name, procs in after.items()}

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            for name, pid in self.roots.items():
                rss = 0
                for p in process_tree(pid):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        rss += p.memory_info().rss
                self.peak_rss[name] = max(self.peak_rss[name], rss)

    def __enter__(self) -> CpuMeter:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@dataclass
class Helpers:
    """moto, the DynamoDB engine and the agent emulator, each its own process."""

    engine: str
    latency_ms: int
    log_dir: Path
    procs: dict[str, HelperProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def _spawn(self, name: str, cmd: list[str]) -> None:
        self.procs[name] = HelperProcess(name, cmd, self.log_dir / f"{name}.log",
                                         self.ports[name], env={**os.environ, **FAKE_CREDENTIALS})
        self.procs[name].wait_listening(30)

    def start(self) -> Helpers:
        bindir = Path(sys.executable).parent
        self.ports = {"moto": free_port(), "agent_emulator": free_port()}
        self._spawn("moto", [str(bindir / "moto_server"), "-H", "127.0.0.1",
                             "-p", str(self.ports["moto"])])
        self._spawn("agent_emulator", [sys.executable, "-m", "devstack.agent_emulator",
                                       "--port", str(self.ports["agent_emulator"]),
                                       "--latency-ms", str(self.latency_ms)])
        if self.engine == "dynalite":
            node = shutil.which("node")
            if node is None or not DYNALITE_CLI.exists():
                raise SystemExit("dynalite is not installed: run `make bench` (it runs "
                                 "`npm ci --prefix devstack/dynalite`), or pass --dynamodb moto")
            self.ports["dynamodb"] = free_port()
            self._spawn("dynamodb", [node, str(DYNALITE_CLI), "--host", "127.0.0.1",
                                     "--port", str(self.ports["dynamodb"]),
                                     "--createTableMs", "0", "--deleteTableMs", "0",
                                     "--updateTableMs", "0"])
            _create_tables_no_ttl(self.url("dynamodb"))
        else:
            create_tables(self.url("moto"), "chat_sessions", "chat_rate_limits")
        # the latency is also set at run time, the documented way
        _http(self.url("agent_emulator") + "/_emulator/config",
              json.dumps({"latency_ms": self.latency_ms}).encode())
        return self

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def dynamodb_url(self) -> str:
        return self.url("dynamodb" if self.engine == "dynalite" else "moto")

    def pids(self) -> dict[str, int]:
        out = {"agent_emulator": self.procs["agent_emulator"].pid, "moto": self.procs["moto"].pid}
        if "dynamodb" in self.procs:
            out["dynamodb"] = self.procs["dynamodb"].pid
        return out

    def agent_requests(self) -> tuple[int, int] | None:
        try:
            stats = _http(self.url("agent_emulator") + "/_emulator/stats", timeout=2)
            return int(stats["requests_total"]), int(stats["in_flight"])
        except (OSError, ValueError, KeyError):
            return None

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        self.procs.clear()


def _create_tables_no_ttl(endpoint: str) -> None:
    """dynalite has no UpdateTimeToLive; the bench does not need expiry."""
    import boto3

    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106
    for spec in (sessions_table_spec("chat_sessions"), rate_limit_table_spec("chat_rate_limits")):
        ddb.create_table(**spec)
        ddb.get_waiter("table_exists").wait(TableName=spec["TableName"],
                                            WaiterConfig={"Delay": 1})


def quiesce(helpers: Helpers, app_pid: int, max_s: float) -> float:
    """Wait until the last run's leftovers are done: the agent emulator saw no new call and
    the app used under 4% of a core, for 0.5 s in a row (a blue queue of requests that wrk
    gave up on must not be served during the next run); returns the seconds waited."""
    start = time.monotonic()
    meter = CpuMeter({"app": app_pid})
    last, cpu = helpers.agent_requests(), meter.snapshot()
    while time.monotonic() - start < max_s:
        time.sleep(0.5)
        now, cpu_now = helpers.agent_requests(), meter.snapshot()
        app_cpu = CpuMeter.delta(cpu, cpu_now)["app"]
        if now == last and (now is None or now[1] == 0) and app_cpu < 0.02:
            break
        last, cpu = now, cpu_now
    return time.monotonic() - start


def run_wrk(cmd: list[str]) -> tuple[str, float]:
    """Run wrk to the end; return its stdout and its own CPU seconds (rusage of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.stdout, cpu


def _busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def measure(config: str, server: Server, helpers: Helpers, script: Path, args: argparse.Namespace,
            concurrency: int, duration_s: int) -> RunResult:
    assert server.proc is not None
    roots = {"app": server.proc.pid, **helpers.pids()}
    meter = CpuMeter(roots)
    cmd = wrk_command(args.wrk, server.url, script, DEV_API_KEY, concurrency, duration_s,
                      threads=args.wrk_threads, timeout_s=args.wrk_timeout)
    before, busy0, wait0 = meter.snapshot(), _busy_cpu_s(), meter.runq_snapshot("app")
    with meter:
        out, gen_cpu = run_wrk(cmd)
    after, busy1, wait1 = meter.snapshot(), _busy_cpu_s(), meter.runq_snapshot("app")
    runq_wait = sum(v - wait0.get(k, 0.0) for k, v in wait1.items())
    cpu = CpuMeter.delta(before, after)
    res = parse_wrk_output(out)
    helper_cpu = {"generator": gen_cpu, **{k: v for k, v in cpu.items() if k != "app"}}
    ours = cpu["app"] + sum(helper_cpu.values())
    load = os.getloadavg()
    return RunResult(
        config=config, concurrency=concurrency, duration_s=round(res.duration_s, 2),
        requests=res.requests, ok=res.ok, rps=res.rps, p50_ms=res.p50_ms, p90_ms=res.p90_ms,
        p99_ms=res.p99_ms, max_ms=res.max_ms, errors=res.errors, error_kinds=res.error_kinds,
        app_cpu_s=round(cpu["app"], 3), peak_rss_mb=round(meter.peak_rss["app"] / 2**20, 1),
        helper_cpu_s={k: round(v, 3) for k, v in helper_cpu.items()},
        other_cpu_s=round(max(busy1 - busy0 - ours, 0.0), 3),
        app_runq_wait_s=round(runq_wait, 3),
        loadavg=(round(load[0], 2), round(load[1], 2), round(load[2], 2)))


def server_for(config: str, env: dict[str, str], args: argparse.Namespace, log: Path,
               ) -> Server:
    """The server of one configuration, not started: blue and green with their shipped
    commands, the blue variants with gunicorn.conf.py's worker class switched to gthread, or
    with gunicorn_gevent.conf.py (the same settings under gevent workers)."""
    if config == "green":
        return Server("green", free_port(), env, log_path=log)
    if config == "blue-gthread":
        extra = {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": str(args.gthread_threads)}
        return Server("blue", free_port(), {**env, **extra}, log_path=log)
    if config == "blue-gevent":
        extra = {"GUNICORN_WORKER_CONNECTIONS": str(args.gevent_connections)}
        return Server("blue", free_port(), {**env, **extra}, workers=args.gevent_workers,
                      log_path=log, command=BLUE_GEVENT_CMD)
    return Server("blue", free_port(), env, log_path=log)


def order_for(level_index: int, configs: Iterable[str]) -> list[str]:
    """Alternate the order each level (the first run of a level goes last at the next)."""
    cs = list(configs)
    return cs if level_index % 2 == 0 else cs[::-1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n")[0])
    p.add_argument("--levels", default="10,50,200,500",
                   help="concurrent users, comma-separated (default 10,50,200,500)")
    p.add_argument("--duration", type=int, default=12, help="seconds of load per run (12)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server (2)")
    p.add_argument("--agent-latency-ms", type=int, default=200)
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help="which of " + ", ".join(CONFIGS) + " (all)")
    p.add_argument("--dynamodb", choices=("dynalite", "moto"), default="dynalite",
                   help="DynamoDB engine (dynalite: moto caps at ~160 calls/s)")
    p.add_argument("--gthread-threads", type=int, default=16,
                   help="threads per gunicorn worker in the blue-gthread variant (16)")
    p.add_argument("--gevent-workers", type=int, default=None,
                   help="gunicorn gevent workers in blue-gevent (default: blue's 2 x cores + 1)")
    p.add_argument("--gevent-connections", type=int, default=1000,
                   help="worker_connections per gevent worker in blue-gevent (1000)")
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--wrk-timeout", type=int, default=10, help="seconds before wrk gives up")
    p.add_argument("--quiesce-max", type=float, default=20.0,
                   help="longest wait for the previous run's queue to drain (20 s)")
    p.add_argument("--target-level", type=int, default=200)
    p.add_argument("--scaling", action="store_true",
                   help="instead of the sweep: green with 1 worker pinned to 1 core, then 1 "
                        "worker per core on every core (loadtest/scaling.py)")
    p.add_argument("--scaling-levels", default="25,50,75,100,150,200,300",
                   help="users per run in --scaling (25,50,75,100,150,200,300)")
    p.add_argument("--scaling-p90-ms", type=float, default=None,
                   help="the objective in --scaling (default: the bench's p90 target)")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if unknown := set(configs) - set(CONFIGS):
        raise SystemExit(f"unknown configs: {sorted(unknown)}")
    if shutil.which(args.wrk) is None:
        raise SystemExit("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    cores = os.cpu_count() or 1
    log_dir = args.out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    script = args.out / "chat.lua"
    script.write_text(LUA_SCRIPT)
    if args.scaling:
        return scaling_main(args, log_dir, script)
    runs_total = len(levels) * len(configs)
    print(f"bench: {runs_total} runs of {args.duration}s (about "
          f"{(runs_total * (args.duration + 2) + 60) / 60:.0f} min) ({', '.join(configs)} at "
          f"{levels} users), agent latency {args.agent_latency_ms} ms, DynamoDB "
          f"{args.dynamodb}, {cores} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    t0 = time.monotonic()
    helpers = Helpers(args.dynamodb, args.agent_latency_ms, log_dir)
    servers: dict[str, Server] = {}
    runs: list[RunResult] = []
    try:
        helpers.start()
        env = bench_env(helpers)
        for config in configs:
            servers[config] = server_for(config, env, args, log_dir / f"{config}.log").start()
        for server in servers.values():
            server.wait_healthy(timeout_s=90)
            warm_up(server, helpers, script, args)
        print(f"bench: helpers and servers up in {time.monotonic() - t0:.0f}s", flush=True)
        n = 0
        for i, level in enumerate(levels):
            for config in order_for(i, configs):
                n += 1
                r = measure(config, servers[config], helpers, script, args, level,
                            args.duration)
                proc = servers[config].proc
                assert proc is not None
                waited = quiesce(helpers, proc.pid, args.quiesce_max)
                runs.append(r)
                print(f"[{n:2d}/{runs_total}] {level:4d} users {config:12s} "
                      f"{r.rps:8.1f} req/s  p50 {r.p50_ms} p90 {r.p90_ms} p99 {r.p99_ms} ms  "
                      f"errors {r.errors}  app {r.app_cpu_ms_per_req} CPU-ms/req  "
                      f"rss {r.peak_rss_mb} MB  load {r.loadavg[0]}  "
                      f"(drained {waited:.1f}s, t={time.monotonic() - t0:.0f}s)", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        helpers.stop()
    meta: dict[str, Any] = {
        "agent_latency_ms": args.agent_latency_ms, "duration_s": args.duration,
        "cores": cores, "dynamodb_engine": _engine_name(args.dynamodb),
        "generator": f"wrk ({args.wrk_threads} threads, --timeout {args.wrk_timeout}s)",
        "configs": {"blue": f"gunicorn sync, {2 * cores + 1} workers (2 x cores + 1)",
                    "blue-gthread": f"gunicorn gthread, {2 * cores + 1} workers x "
                                    f"{args.gthread_threads} threads",
                    "blue-gevent": f"gunicorn gevent, {args.gevent_workers or 2 * cores + 1} "
                                   f"workers x {args.gevent_connections} worker_connections",
                    "green": f"uvicorn uvloop+httptools, {cores} workers (1 per core)"},
        "rate_limit": "disabled for the bench",
        "workload": "POST /api/v1/chat, new session per request: session read, agent "
                    "InvokeAgent (event stream), session write, CloudWatch metrics",
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    summary = build_summary(meta, runs, Targets(level=args.target_level))
    paths = write_outputs(args.out, summary)
    print((args.out / "table.md").read_text(), flush=True)
    print("bench: wrote " + ", ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT)
                                      else str(p) for p in paths), flush=True)
    return 0


def bench_env(helpers: Helpers) -> dict[str, str]:
    return {**FAKE_CREDENTIALS, "DYNAMODB_ENDPOINT_URL": helpers.dynamodb_url,
            "CLOUDWATCH_ENDPOINT_URL": helpers.url("moto"),
            "BEDROCK_ENDPOINT_URL": helpers.url("agent_emulator"),
            "API_KEYS": DEV_API_KEY, "RATE_LIMIT_ENABLED": "false"}


def warm_up(server: Server, helpers: Helpers, script: Path, args: argparse.Namespace) -> None:
    if args.warmup > 0:
        run_wrk(wrk_command(args.wrk, server.url, script, DEV_API_KEY, 10, args.warmup,
                            threads=1, timeout_s=args.wrk_timeout))
        assert server.proc is not None
        quiesce(helpers, server.proc.pid, args.quiesce_max)


def scaling_main(args: argparse.Namespace, log_dir: Path, script: Path) -> int:
    t0 = time.monotonic()
    print(f"bench --scaling: green, 1 worker on 1 core then 1 per core, at "
          f"{args.scaling_levels} users, {args.duration}s each, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    helpers = Helpers(args.dynamodb, args.agent_latency_ms, log_dir)
    try:
        helpers.start()
        summary = run_scaling(
            args, helpers, bench_env(helpers), script, log_dir,
            measure=lambda config, server, level: measure(config, server, helpers, script, args,
                                                          level, args.duration),
            quiesce=lambda pid: quiesce(helpers, pid, args.quiesce_max),
            warm=lambda server: warm_up(server, helpers, script, args))
    finally:
        helpers.stop()
    summary["dynamodb_engine"] = _engine_name(args.dynamodb)
    summary["elapsed_s"] = round(time.monotonic() - t0, 1)
    paths = write_scaling(args.out, summary)
    print(paths[1].read_text(), flush=True)
    print("bench: wrote " + ", ".join(str(p) for p in paths), flush=True)
    return 0


def _engine_name(engine: str) -> str:
    if engine == "moto":
        return "moto server"
    try:
        pkg = json.loads((DYNALITE_DIR / "node_modules" / "dynalite" / "package.json")
                         .read_text())
        return f"dynalite {pkg['version']} (in memory)"
    except (OSError, ValueError, KeyError):
        return "dynalite"


if __name__ == "__main__":
    raise SystemExit(main())

"""The pure half of `make bench`: bounds, summary rows, targets, the markdown table, the plot.

Nothing here measures anything; :mod:`loadtest.bench` hands it :class:`RunResult` objects.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# the helper processes whose CPU is reported next to each app's
HELPERS = ("generator", "agent_emulator", "dynamodb", "moto")
# every configuration: its key prefix in summary.json's level rows and its label (table, plot)
CONFIG_PREFIX = {"blue": "blue", "blue-gthread": "blue_gthread", "blue-gevent": "blue_gevent",
                 "green": "green"}
CONFIG_LABEL = {"blue": "blue (sync)", "blue-gthread": "blue (gthread)",
                "blue-gevent": "blue (gevent)", "green": "green"}


@dataclass
class RunResult:
    """One configuration at one concurrency level."""

    config: str  # blue | blue-gthread | blue-gevent | green
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    errors: int
    error_kinds: dict[str, int]
    app_cpu_s: float
    peak_rss_mb: float
    helper_cpu_s: dict[str, float] = field(default_factory=dict)
    other_cpu_s: float = 0.0  # the rest of the machine (other users of the box) meanwhile
    app_runq_wait_s: float = 0.0  # the app's threads runnable but waiting for a CPU
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def cpu_ms_per_req(self, seconds: float) -> float | None:
        done = self.requests
        return round(seconds * 1000.0 / done, 3) if done else None

    @property
    def app_cpu_ms_per_req(self) -> float | None:
        return self.cpu_ms_per_req(self.app_cpu_s)

    @property
    def total_cpu_ms_per_req(self) -> float | None:
        return self.cpu_ms_per_req(self.app_cpu_s + sum(self.helper_cpu_s.values()))


def little_bound_rps(concurrency: int, latency_ms: float) -> float:
    """Little's law: at most ``concurrency`` requests in flight, each taking ``latency_ms``."""
    if latency_ms <= 0:
        return float("inf")
    return concurrency * 1000.0 / latency_ms


def cpu_bound_rps(cores: int, cpu_ms_per_req: float | None) -> float | None:
    """What the machine could serve if CPU were the only limit: every core busy, each request
    costing ``cpu_ms_per_req`` of CPU summed over the app, the emulators and the generator."""
    if not cpu_ms_per_req:
        return None
    return cores * 1000.0 / cpu_ms_per_req


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 2)


def _figures(prefix: str, run: RunResult | None) -> dict[str, Any]:
    if run is None:
        return {}
    out: dict[str, Any] = {
        f"{prefix}_rps": _r(run.rps),
        f"{prefix}_p50_ms": _r(run.p50_ms),
        f"{prefix}_p90_ms": _r(run.p90_ms),
        f"{prefix}_p99_ms": _r(run.p99_ms),
        f"{prefix}_errors": run.errors,
        f"{prefix}_error_kinds": {k: v for k, v in run.error_kinds.items() if v},
        f"{prefix}_cpu_ms_per_req": _r(run.app_cpu_ms_per_req, 3),
        f"{prefix}_peak_rss_mb": _r(run.peak_rss_mb),
        f"{prefix}_helpers_cpu_ms_per_req": {
            k: _r(run.cpu_ms_per_req(v), 3) for k, v in run.helper_cpu_s.items()},
        f"{prefix}_total_cpu_ms_per_req": _r(run.total_cpu_ms_per_req, 3),
        f"{prefix}_loadavg": list(run.loadavg),
        f"{prefix}_other_cpu_s": run.other_cpu_s,
        f"{prefix}_runq_wait_ms_per_req": _r(run.cpu_ms_per_req(run.app_runq_wait_s), 2),
    }
    return out


_EMPTY = RunResult("", 0, 0.0, 0, 0, 0.0, None, None, None, None, 0, {}, 0.0, 0.0)


def level_row(concurrency: int, latency_ms: float, cores: int,
              runs: dict[str, RunResult]) -> dict[str, Any]:
    """One row of ``summary.json``'s ``levels``: every configuration side by side (keys
    prefixed by :data:`CONFIG_PREFIX`), the bounds for green's run, and the ratios."""
    blue, green = runs.get("blue"), runs.get("green")
    gth, gev = runs.get("blue-gthread"), runs.get("blue-gevent")
    row: dict[str, Any] = {"concurrency": concurrency}
    for config, prefix in CONFIG_PREFIX.items():
        row.update(_figures(prefix, runs.get(config)))
    little = little_bound_rps(concurrency, latency_ms)
    row["little_bound_rps"] = _r(little)
    if green is not None:
        cpu = cpu_bound_rps(cores, green.total_cpu_ms_per_req)
        bound = min(little, cpu) if cpu is not None else little
        row["green_cpu_bound_rps"] = _r(cpu)
        row["green_bound_rps"] = _r(bound)
        row["green_bound_is"] = "little" if cpu is None or little <= cpu else "cpu"
        row["green_of_bound"] = _ratio(green.rps, bound)
        # the same bound on the CPU the rest of the machine left free during green's run
        free_cores = max(cores - green.other_cpu_s / green.duration_s, 0.0) if green.duration_s \
            else float(cores)
        avail = cpu_bound_rps(1, green.total_cpu_ms_per_req)
        row["green_cpu_bound_free_rps"] = _r(avail * free_cores) if avail is not None else None
        row["green_of_free_cpu_bound"] = _ratio(
            green.rps, avail * free_cores if avail is not None else None)
        row["green_over_blue"] = _ratio(green.rps, blue.rps if blue else None)
        row["green_over_blue_gthread"] = _ratio(green.rps, gth.rps if gth else None)
        row["green_over_blue_gevent"] = _ratio(green.rps, gev.rps if gev else None)
    return row


@dataclass(frozen=True)
class Targets:
    """The targets, checked at one level (200 users by default): issue 13's (over blue-gthread
    and blue-gevent, p99, share of the CPU bound, app CPU per chat) and issue 5's p90 and ratio
    over blue-sync. Errors: none at any level."""

    level: int = 200
    over_blue: float = 10.0
    over_gthread: float = 2.5
    over_gevent: float = 1.5
    p90_ms: float = 350.0
    p99_ms: float = 800.0
    of_bound: float = 0.80
    cpu_ms_per_req: float = 2.0


def check_targets(rows: list[dict[str, Any]], targets: Targets) -> dict[str, Any]:
    """Each target: the figure, the limit and whether it holds (None when not measured)."""
    at = next((r for r in rows if r["concurrency"] == targets.level), None)
    out: dict[str, Any] = {"level": targets.level}

    def check(name: str, value: Any, limit: float, higher_is_better: bool) -> None:
        held = None if value is None else (value >= limit if higher_is_better
                                          else value <= limit)
        out[name] = {"value": value, "limit": limit, "holds": held}

    if at is None or "green_rps" not in at:
        return out
    check("green_over_blue", at.get("green_over_blue"), targets.over_blue, True)
    check("green_over_blue_gthread", at.get("green_over_blue_gthread"), targets.over_gthread,
          True)
    check("green_over_blue_gevent", at.get("green_over_blue_gevent"), targets.over_gevent, True)
    check("green_p90_ms", at.get("green_p90_ms"), targets.p90_ms, False)
    check("green_p99_ms", at.get("green_p99_ms"), targets.p99_ms, False)
    check("green_of_bound", at.get("green_of_bound"), targets.of_bound, True)
    check("green_cpu_ms_per_req", at.get("green_cpu_ms_per_req"), targets.cpu_ms_per_req, False)
    errors = [r.get("green_errors") for r in rows]
    total = None if any(e is None for e in errors) else sum(e for e in errors if e is not None)
    out["green_errors_all_levels"] = {"value": total, "limit": 0,
                                      "holds": None if total is None else total == 0}
    return out


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.1f}" if abs(x) >= 10 else f"{x:.2f}"
    return str(x)


def markdown_table(summary: dict[str, Any]) -> str:
    """The table of ``reports/bench/table.md``: one line per configuration and level."""
    lines = [
        f"Agent latency {summary['agent_latency_ms']} ms, {summary['duration_s']} s per run, "
        f"{summary['cores']} cores, DynamoDB: {summary['dynamodb_engine']}, "
        f"generator: {summary['generator']}.",
        "req/s counts successful answers; errors = non-2xx + connect/read/write errors + "
        "timeouts. CPU from /proc (user+system) of the app's processes (master + workers) and of "
        "each helper, per request; CPU-wait = time the app's threads were runnable but had no "
        "CPU (schedstat); other CPU = CPU used by everything else on the machine meanwhile.",
        "",
        "| users | config | req/s | p50 ms | p90 ms | p99 ms | errors | app CPU ms/req "
        "| app CPU-wait ms/req | peak RSS MB | gen / agent / ddb / moto CPU ms/req "
        "| other CPU s | load avg |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in summary["levels"]:
        c = row["concurrency"]
        for config, prefix in CONFIG_PREFIX.items():
            name, fig = CONFIG_LABEL[config], _prefixed(row, prefix)
            if not fig or "rps" not in fig:
                continue
            helpers = fig.get("helpers_cpu_ms_per_req", {})
            lines.append(
                f"| {c} | {name} | {_fmt(fig['rps'])} | {_fmt(fig['p50_ms'])} | "
                f"{_fmt(fig['p90_ms'])} | {_fmt(fig['p99_ms'])} | {fig['errors']} | "
                f"{_fmt(fig['cpu_ms_per_req'])} | {_fmt(fig.get('runq_wait_ms_per_req'))} | "
                f"{_fmt(fig['peak_rss_mb'])} | "
                + " / ".join(_fmt(helpers.get(h)) for h in HELPERS)
                + f" | {_fmt(fig.get('other_cpu_s'))} | {fig['loadavg'][0]:.2f} |")
    lines += ["", "Little bound = users / agent latency. CPU bound = cores x 1000 / (CPU ms per "
              "request of app + generator + agent emulator + DynamoDB + moto), measured in "
              "green's run: what the machine could serve if CPU were the only limit; "
              "'on free CPU': the same on the CPU other processes left free meanwhile.",
              "", "| users | Little bound req/s | CPU bound req/s (green run) | green / bound "
              "| CPU bound on free CPU | green / that | green / blue | green / blue-gthread "
              "| green / blue-gevent |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in summary["levels"]:
        lines.append(
            f"| {row['concurrency']} | {_fmt(row.get('little_bound_rps'))} | "
            f"{_fmt(row.get('green_cpu_bound_rps'))} | {_fmt(row.get('green_of_bound'))} | "
            f"{_fmt(row.get('green_cpu_bound_free_rps'))} | "
            f"{_fmt(row.get('green_of_free_cpu_bound'))} | "
            f"{_fmt(row.get('green_over_blue'))} | {_fmt(row.get('green_over_blue_gthread'))} | "
            f"{_fmt(row.get('green_over_blue_gevent'))} |")
    targets = summary.get("targets", {})
    if len(targets) > 1:
        lines += ["", f"Targets at {targets['level']} users:", ""]
        for name, t in targets.items():
            if name == "level":
                continue
            mark = {True: "holds", False: "MISSED", None: "not measured"}[t["holds"]]
            lines.append(f"- {name}: {_fmt(t['value'])} (limit {t['limit']}): {mark}")
    return "\n".join(lines) + "\n"


def _prefixed(row: dict[str, Any], prefix: str) -> dict[str, Any]:
    """One configuration's figures out of a level row (``blue_`` does not take
    ``blue_gthread_``'s: the keys after the prefix are the figure names of :func:`_figures`)."""
    p = prefix + "_"
    names = {k.removeprefix("x_") for k in _figures("x", _EMPTY)}
    return {k[len(p):]: v for k, v in row.items() if k.startswith(p) and k[len(p):] in names}


def build_summary(meta: dict[str, Any], runs: list[RunResult], targets: Targets,
                  ) -> dict[str, Any]:
    levels = sorted({r.concurrency for r in runs})
    latency = float(meta["agent_latency_ms"])
    rows = [level_row(c, latency, int(meta["cores"]),
                      {r.config: r for r in runs if r.concurrency == c}) for c in levels]
    summary: dict[str, Any] = {**meta, "levels": rows}
    summary["targets"] = check_targets(rows, targets)
    summary["runs"] = [asdict(r) for r in runs]
    return summary


def write_outputs(out_dir: Path, summary: dict[str, Any]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "summary.json", out_dir / "table.md", out_dir / "bench.png"]
    paths[0].write_text(json.dumps(summary, indent=2) + "\n")
    paths[1].write_text(markdown_table(summary))
    plot(summary, paths[2])
    return paths


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["levels"]
    xs = [r["concurrency"] for r in rows]
    style = {"blue": ("tab:blue", "o"), "blue-gthread": ("tab:cyan", "s"),
             "blue-gevent": ("tab:purple", "D"), "green": ("tab:green", "^")}
    series = [(CONFIG_LABEL[c], *style[c], [_prefixed(r, CONFIG_PREFIX[c]) for r in rows])
              for c in CONFIG_PREFIX]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, color, marker, figs in series:
        pts = [(x, f.get("rps"), f.get("p90_ms")) for x, f in zip(xs, figs, strict=True)
               if "rps" in f]
        if not pts:
            continue
        ax1.plot([p[0] for p in pts], [p[1] or 0 for p in pts], marker=marker, color=color,
                 label=label)
        lat = [(p[0], p[2]) for p in pts if p[2] is not None]
        ax2.plot([p[0] for p in lat], [p[1] for p in lat], marker=marker, color=color,
                 label=label)
    ax1.plot(xs, [r["little_bound_rps"] for r in rows], ls="--", color="grey",
             label="Little's-law bound")
    cpu = [(r["concurrency"], r["green_cpu_bound_rps"]) for r in rows
           if r.get("green_cpu_bound_rps")]
    if cpu:
        ax1.plot([c[0] for c in cpu], [c[1] for c in cpu], ls=":", color="black",
                 label="CPU bound (green run)")
    ax1.set(xscale="log", yscale="log", xlabel="concurrent users", ylabel="req/s",
            title="Throughput")
    p90_target = summary.get("targets", {}).get("green_p90_ms", {}).get("limit", 350)
    ax2.axhline(p90_target, ls=":", color="red", label=f"target p90 {p90_target:g} ms")
    ax2.set(xscale="log", yscale="log", xlabel="concurrent users", ylabel="p90 latency (ms)",
            title="p90 latency")
    for ax in (ax1, ax2):
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"make bench: agent latency {summary['agent_latency_ms']} ms, "
                 f"{summary['cores']} cores, DynamoDB {summary['dynamodb_engine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

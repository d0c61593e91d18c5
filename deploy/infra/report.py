"""The migration report: both colors over a span, from CloudWatch and the cutover audit log.

``report.html``, ``report.md`` and a four-panel ``report.png`` (requests per second, p90/p99,
5xx rate, green's share of the traffic; the cutover's steps marked), and a verdict against the
guide's success criteria.

How the figures are made (the guide's monitor got each of these wrong):

- a rate is a count divided by its period: ``Sum(RequestCount) / period`` is requests per
  second; five-minute sums are never called "QPS";
- percentiles come from CloudWatch over the samples (``Stat: p90``), per period for the plot and
  over the whole span in one query for the verdict: never an average of averages, never a
  mean of per-period percentiles;
- error rates are total 5xx over total requests of the same scope and span.

The load balancer's metrics (``AWS/ApplicationELB`` per target group) are the primary source:
they count what an app that crashed could not. Without a load balancer the apps' namespaces
are read (counts summed over the ``Endpoint`` dimension, which is a sum of counts, and
percentiles of the chat endpoint).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.analysis import CloudWatchSource, _dim_suffix
from deploy.state import read_audit
from shared.routes import BY_NAME

COLORS = ("blue", "green")
ELB = "AWS/ApplicationELB"
CHAT = BY_NAME["chat"].path
PERIODS = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600)
MAX_POINTS = 240
# the guide's success criteria (000 "Success Criteria Validation", 003 "Technical Success
# Metrics") that a machine can judge from this data
P90_MAX_MS, P99_MAX_MS, ERROR_RATE_MAX, ROLLBACK_MAX_S = 500.0, 800.0, 0.01, 300.0
DOWN_SUCCESS_BELOW = 0.5  # a period whose requests mostly failed counts as downtime


def choose_period(span_s: float) -> int:
    """The smallest CloudWatch period that keeps the plot under MAX_POINTS points."""
    for period in PERIODS:
        if span_s / period <= MAX_POINTS:
            return period
    return 86_400


@dataclass
class Series:
    times: list[float] = field(default_factory=list)  # period starts, epoch seconds
    values: dict[str, list[float | None]] = field(default_factory=dict)


def _query(qid: str, namespace: str, metric: str, dims: list[dict[str, str]], stat: str,
           period: int) -> dict[str, Any]:
    return {"Id": qid, "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": dims},
        "Period": period, "Stat": stat}}


def _fetch(cw: Any, queries: list[dict[str, Any]], since: dt.datetime, until: dt.datetime
           ) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, float]] = {}
    for i in range(0, len(queries), 500):
        kwargs: dict[str, Any] = {"MetricDataQueries": queries[i:i + 500], "StartTime": since,
                                  "EndTime": until, "ScanBy": "TimestampAscending"}
        while True:
            page = cw.get_metric_data(**kwargs)
            for result in page["MetricDataResults"]:
                slot = out.setdefault(result["Id"], {})
                for ts, value in zip(result.get("Timestamps", []), result.get("Values", []),
                                     strict=False):
                    if not math.isnan(float(value)):
                        key = ts.timestamp()
                        slot[key] = slot.get(key, 0.0) + float(value)
            token = page.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
    return out


class Reader:
    """The queries of one report: counts per period, percentiles per period and overall."""

    def __init__(self, cw: Any, namespaces: dict[str, str], load_balancer_arn: str | None,
                 target_groups: dict[str, str] | None) -> None:
        self.cw = cw
        self.namespaces = namespaces
        self.elb: tuple[str, dict[str, str]] | None = None
        if load_balancer_arn and target_groups:
            self.elb = (_dim_suffix(load_balancer_arn, "lb"),
                        {c: _dim_suffix(a, "tg") for c, a in target_groups.items()})
        self.endpoints = CloudWatchSource(cw, namespaces)._endpoints() if cw else []

    @property
    def source(self) -> str:
        return "load balancer (AWS/ApplicationELB per target group)" if self.elb else \
            "the apps' namespaces (" + ", ".join(self.namespaces.values()) + ")"

    def queries(self, period: int) -> list[dict[str, Any]]:
        q: list[dict[str, Any]] = []
        for color in COLORS:
            if self.elb:
                lb, tgs = self.elb
                dims = [{"Name": "TargetGroup", "Value": tgs[color]},
                        {"Name": "LoadBalancer", "Value": lb}]
                q += [_query(f"{color}_requests", ELB, "RequestCount", dims, "Sum", period),
                      _query(f"{color}_errors", ELB, "HTTPCode_Target_5XX_Count", dims, "Sum",
                             period),
                      _query(f"{color}_elb5xx", ELB, "HTTPCode_ELB_5XX_Count", dims, "Sum",
                             period),
                      _query(f"{color}_p90", ELB, "TargetResponseTime", dims, "p90", period),
                      _query(f"{color}_p99", ELB, "TargetResponseTime", dims, "p99", period)]
            else:
                ns = self.namespaces[color]
                for i, endpoint in enumerate(self.endpoints):
                    dims = [{"Name": "Endpoint", "Value": endpoint}]
                    q += [_query(f"{color}_requests_{i}", ns, "RequestCount", dims, "Sum",
                                 period),
                          _query(f"{color}_errors_{i}", ns, "ErrorCount", dims, "Sum", period)]
                dims = [{"Name": "Endpoint", "Value": CHAT}]
                q += [_query(f"{color}_p90", ns, "RequestLatency", dims, "p90", period),
                      _query(f"{color}_p99", ns, "RequestLatency", dims, "p99", period)]
        return q

    def read(self, since: dt.datetime, until: dt.datetime, period: int
             ) -> dict[str, dict[float, float]]:
        raw = _fetch(self.cw, self.queries(period), since, until)
        merged: dict[str, dict[float, float]] = {}
        scale = 1000.0 if self.elb else 1.0  # TargetResponseTime is in seconds
        for qid, points in raw.items():
            parts = qid.split("_")
            key = f"{parts[0]}_{'errors' if parts[1] == 'elb5xx' else parts[1]}"
            slot = merged.setdefault(key, {})
            for ts, value in points.items():
                if parts[1] in ("p90", "p99"):
                    slot[ts] = value * scale
                else:
                    slot[ts] = slot.get(ts, 0.0) + value
        return merged


def _audit(paths: Iterable[Path]) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in paths:
        lines.extend(read_audit(path))
    return sorted(lines, key=lambda e: float(e.get("t", 0)))


def steps_from_audit(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The traffic changes and outcomes: (t, label, green weight)."""
    marks: list[dict[str, Any]] = []
    for e in events:
        green = (e.get("weights") or {}).get("green")
        if e["event"] == "weights":
            marks.append({"t": float(e["t"]), "label": f"green {green}%", "green": green,
                          "kind": "step"})
        elif e["event"] in ("rollback", "rolled_back", "rollback_failed", "completed",
                            "promoted", "blocked", "paused", "started"):
            marks.append({"t": float(e["t"]), "label": e["event"].replace("_", " "),
                          "green": green, "kind": e["event"],
                          "reason": e.get("reason", ""), "rollback_s": e.get("rollback_s")})
    return marks


@dataclass
class Criterion:
    name: str
    target: str
    measured: str
    verdict: str  # pass, fail, no data, not judged

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "target": self.target, "measured": self.measured,
                "verdict": self.verdict}


def _ms(value: float | None) -> str:
    return "no data" if value is None else f"{value:.0f} ms"


def judge(overall: dict[str, dict[str, float | None]], per_period: dict[str, list[Any]],
          marks: list[dict[str, Any]]) -> list[Criterion]:
    green = overall["green"]
    out: list[Criterion] = []
    for name, limit in (("p90", P90_MAX_MS), ("p99", P99_MAX_MS)):
        value = green[name]
        out.append(Criterion(f"Latency {name.upper()} (green)", f"< {limit:.0f} ms", _ms(value),
                             "no data" if value is None else
                             ("pass" if value < limit else "fail")))
    rate = green["error_rate"]
    out.append(Criterion("Error rate (green, 5xx)", f"< {ERROR_RATE_MAX:.0%}",
                         "no data" if rate is None else
                         f"{rate:.3%} of {green['requests']:.0f}",
                         "no data" if rate is None else
                         ("pass" if rate < ERROR_RATE_MAX else "fail")))
    down = per_period["down_periods"]
    out.append(Criterion("Zero unplanned downtime", "no period with most requests failing",
                         f"{len(down)} such periods" if per_period["times"] else "no data",
                         "no data" if not per_period["times"] else
                         ("pass" if not down else "fail")))
    rollbacks = [m for m in marks if m["kind"] == "rolled_back"]
    if rollbacks:
        worst = max(float(m.get("rollback_s") or 0) for m in rollbacks)
        out.append(Criterion("Rollback time", f"< {ROLLBACK_MAX_S / 60:.0f} min",
                             f"{worst:.1f} s ({len(rollbacks)} rollbacks)",
                             "pass" if worst < ROLLBACK_MAX_S else "fail"))
    else:
        out.append(Criterion("Rollback time", f"< {ROLLBACK_MAX_S / 60:.0f} min",
                             "no rollback in the span", "not judged"))
    final = [m for m in marks if m.get("green") is not None]
    share = final[-1]["green"] if final else None
    out.append(Criterion("Traffic migrated", "green carries 100 %",
                         "no cutover in the audit" if share is None else f"green {share} %",
                         "no data" if share is None else ("pass" if share == 100 else "fail")))
    for name, target in (("Concurrent users", "2,000+ (3x Flask's 700)"),
                         ("Throughput per instance", "1,000+ RPS (4x Flask's 250)"),
                         ("Infrastructure cost", "50 % lower"),
                         ("Feature parity", "100 % (make parity)")):
        out.append(Criterion(name, target, "not in this data (a load test, the bill, the "
                             "parity report)", "not judged"))
    return out


def overall_verdict(criteria: list[Criterion]) -> str:
    verdicts = {c.verdict for c in criteria}
    if "fail" in verdicts:
        return "FAIL"
    if any(c.verdict == "no data" for c in criteria[:4]):
        return "INCOMPLETE"
    return "PASS"


def _plot(path: Path, series: dict[str, Any], marks: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    times = [dt.datetime.fromtimestamp(t, dt.UTC) for t in series["times"]]
    colors = {"blue": "#1f5fbf", "green": "#2a9d3a"}
    fig, axes = plt.subplots(4, 1, figsize=(12, 13), sharex=True)
    ax_rps, ax_lat, ax_err, ax_share = axes
    for color in COLORS:
        c = colors[color]
        ax_rps.plot(times, series[f"{color}_rps"], color=c, label=f"{color}", lw=1.6)
        ax_lat.plot(times, series[f"{color}_p90"], color=c, lw=1.6, label=f"{color} p90")
        ax_lat.plot(times, series[f"{color}_p99"], color=c, lw=1.2, ls="--",
                    label=f"{color} p99")
        ax_err.plot(times, [None if v is None else 100 * v for v in series[f"{color}_err"]],
                    color=c, lw=1.6, label=color)
    ax_share.fill_between(times, [v if v is not None else 0 for v in series["green_share"]],
                          step="post", color=colors["green"], alpha=0.3)
    ax_share.plot(times, series["green_share"], color=colors["green"], lw=1.6,
                  drawstyle="steps-post", label="observed (requests)")
    steps = [m for m in marks if m.get("green") is not None]
    if steps:
        st = [dt.datetime.fromtimestamp(m["t"], dt.UTC) for m in steps]
        ax_share.step(st + ([times[-1]] if times else []),
                      [m["green"] for m in steps] + ([steps[-1]["green"]] if times else []),
                      where="post", color="black", lw=1, ls=":", label="rule weight")
    ax_lat.axhline(P90_MAX_MS, color="#999", lw=0.8, ls=":")
    ax_lat.axhline(P99_MAX_MS, color="#999", lw=0.8, ls="-.")
    ax_err.axhline(100 * ERROR_RATE_MAX, color="#c0392b", lw=0.8, ls=":", label="1 % target")
    ax_rps.set_ylabel("requests / s")
    ax_rps.set_title("Requests per second (count / period)")
    ax_lat.set_ylabel("ms")
    ax_lat.set_title("Latency p90 (solid) and p99 (dashed), per period; targets dotted")
    ax_err.set_ylabel("%")
    ax_err.set_title("5xx rate (5xx / requests, per period)")
    ax_share.set_ylabel("% of requests")
    ax_share.set_ylim(0, 105)
    ax_share.set_title("Green's share of the traffic")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        for m in marks:
            when = dt.datetime.fromtimestamp(m["t"], dt.UTC)
            bad = m["kind"] in ("rollback", "rolled_back", "rollback_failed", "blocked")
            ax.axvline(when, color="#c0392b" if bad else "#666", lw=0.8,
                       ls="-" if bad else "--", alpha=0.8)
        ax.legend(loc="best", fontsize=8, ncol=4)
    ymax = ax_rps.get_ylim()[1]
    for m in marks:
        ax_rps.annotate(m["label"], (dt.datetime.fromtimestamp(m["t"], dt.UTC), ymax),
                        rotation=90, va="top", ha="right", fontsize=7, color="#333")
    ax_share.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
    ax_share.set_xlabel("UTC")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _minute_data(data: dict[str, dict[float, float]]) -> bool:
    stamps = {t for key, points in data.items() if key.endswith("_requests") for t in points}
    return len(stamps) >= 2 and all(t % 60 == 0 for t in stamps)


def _rate(num: float | None, den: float | None) -> float | None:
    return None if not den or num is None else num / den


def write_report(cloudwatch_client: Any, *, namespaces: dict[str, str],
                 load_balancer_arn: str | None, target_groups: dict[str, str] | None,
                 audit_paths: list[Path], since: dt.datetime, until: dt.datetime,
                 out_dir: Path) -> dict[str, Any]:
    """Write report.html, report.md and report.png under ``out_dir``; the verdict summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    span = max(1.0, (until - since).total_seconds())
    period = choose_period(span)
    reader = Reader(cloudwatch_client, namespaces, load_balancer_arn, target_groups)
    data = reader.read(since, until, period)
    if period < 60 and _minute_data(data):  # standard-resolution datums: a 1 s "rate" of a
        period = 60                         # minute's count would be 60 times too high
        data = reader.read(since, until, period)
    # the verdict's figures: one period over the whole span, so each percentile is CloudWatch's
    # over all its samples. CloudWatch rounds StartTime down to the minute for a period of 60 s
    # or more, so the one period runs from that minute and is long enough to reach ``until``.
    first = since.timestamp() // 60 * 60
    whole = max(60, math.ceil((until.timestamp() - first) / 60) * 60)
    overall_raw = reader.read(since, until, whole)
    start = since.timestamp() // period * period
    times = [start + i * period for i in range(math.ceil((until.timestamp() - start)
                                                             / period))]
    series: dict[str, Any] = {"times": times, "period_s": period}
    down: list[float] = []
    for t in times:
        total = sum(data.get(f"{c}_requests", {}).get(t, 0.0) for c in COLORS)
        errors = sum(data.get(f"{c}_errors", {}).get(t, 0.0) for c in COLORS)
        if total and (total - errors) / total < DOWN_SUCCESS_BELOW:
            down.append(t)
    for color in COLORS:
        req = data.get(f"{color}_requests", {})
        err = data.get(f"{color}_errors", {})
        series[f"{color}_rps"] = [req.get(t, 0.0) / period for t in times]
        series[f"{color}_err"] = [_rate(err.get(t, 0.0), req.get(t)) for t in times]
        for p in ("p90", "p99"):
            series[f"{color}_{p}"] = [data.get(f"{color}_{p}", {}).get(t) for t in times]
    series["green_share"] = [
        _rate(100 * data.get("green_requests", {}).get(t, 0.0),
              sum(data.get(f"{c}_requests", {}).get(t, 0.0) for c in COLORS)) for t in times]
    series["down_periods"] = down
    overall: dict[str, dict[str, float | None]] = {}
    for color in COLORS:
        requests = sum(overall_raw.get(f"{color}_requests", {}).values())
        errors = sum(overall_raw.get(f"{color}_errors", {}).values())
        p90s = list(overall_raw.get(f"{color}_p90", {}).values())
        p99s = list(overall_raw.get(f"{color}_p99", {}).values())
        overall[color] = {"requests": requests, "errors_5xx": errors,
                          "rps": requests / span, "error_rate": _rate(errors, requests),
                          "p90": max(p90s) if p90s else None, "p99": max(p99s) if p99s else None}
    events = _audit(audit_paths)
    marks = [m for m in steps_from_audit(events)
             if since.timestamp() <= m["t"] <= until.timestamp()]
    criteria = judge(overall, series, marks)
    verdict = overall_verdict(criteria)
    title = (f"Migration report {since:%Y-%m-%d %H:%M:%S} to {until:%H:%M:%S} UTC: {verdict}")
    _plot(out_dir / "report.png", series, marks, title)
    summary = {"verdict": verdict, "since": since.isoformat(), "until": until.isoformat(),
               "period_s": period, "source": reader.source, "overall": overall,
               "criteria": [c.to_dict() for c in criteria], "marks": marks,
               "files": {k: str(out_dir / f"report.{k}") for k in ("html", "md", "png")}}
    (out_dir / "report.md").write_text(_markdown(summary), encoding="utf-8")
    (out_dir / "report.html").write_text(_html(summary), encoding="utf-8")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str),
                                          encoding="utf-8")
    return summary


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    return {"ms": f"{value:.0f} ms", "pct": f"{value:.3%}", "rps": f"{value:.2f}",
            "n": f"{value:.0f}"}[kind]


def _rows(summary: dict[str, Any]) -> list[list[str]]:
    o = summary["overall"]
    return [[c, _fmt(o[c]["requests"], "n"), _fmt(o[c]["rps"], "rps"),
             _fmt(o[c]["error_rate"], "pct"), _fmt(o[c]["p90"], "ms"), _fmt(o[c]["p99"], "ms")]
            for c in COLORS]


HEAD = ["color", "requests", "mean req/s", "5xx rate", "p90", "p99"]


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%H:%M:%S")


def _markdown(summary: dict[str, Any]) -> str:
    lines = [f"# Migration report: {summary['verdict']}", "",
             f"{summary['since']} to {summary['until']}; period {summary['period_s']} s; "
             f"source: {summary['source']}.", "",
             "Rates are counts over their period; p90/p99 are CloudWatch percentiles over the "
             "whole span's samples (not averages).", "", "![four panels](report.png)", "",
             "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(summary)]
    lines += ["", "## Success criteria", "", "| criterion | target | measured | verdict |",
              "|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['target']} | {c['measured']} | **{c['verdict']}** |"
              for c in summary["criteria"]]
    lines += ["", "## Cutover steps", ""]
    lines += [f"- {_when(m['t'])} {m['label']}" + (f": {m['reason']}" if m.get("reason") else "")
              for m in summary["marks"]] or ["- none in the span"]
    return "\n".join(lines) + "\n"


def _html(summary: dict[str, Any]) -> str:
    e = html.escape
    badge = {"PASS": "#2a9d3a", "FAIL": "#c0392b"}.get(summary["verdict"], "#b7791f")
    table = "".join(f"<tr>{''.join(f'<td>{e(v)}</td>' for v in r)}</tr>" for r in _rows(summary))
    crit = "".join(
        f"<tr class='{e(c['verdict'].replace(' ', '-'))}'><td>{e(c['name'])}</td>"
        f"<td>{e(c['target'])}</td><td>{e(c['measured'])}</td><td><b>{e(c['verdict'])}</b>"
        "</td></tr>" for c in summary["criteria"])
    steps = "".join(f"<li><code>{_when(m['t'])}</code> {e(m['label'])}"
                    + (f": {e(str(m['reason']))}" if m.get("reason") else "") + "</li>"
                    for m in summary["marks"]) or "<li>none in the span</li>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Migration report</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }}
h1 span {{ background: {badge}; color: #fff; padding: .1rem .6rem; border-radius: .3rem; }}
table {{ border-collapse: collapse; margin: .5rem 0 1.5rem; }}
td, th {{ border: 1px solid #ccc; padding: .3rem .7rem; text-align: left; }}
th {{ background: #f3f3f3; }}
tr.pass td:last-child {{ color: #2a9d3a; }} tr.fail td:last-child {{ color: #c0392b; }}
tr.no-data td:last-child, tr.not-judged td:last-child {{ color: #888; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
.note {{ color: #555; }}
</style></head><body>
<h1>Migration report <span>{e(summary['verdict'])}</span></h1>
<p class="note">{e(summary['since'])} to {e(summary['until'])}; period {summary['period_s']} s;
source: {e(summary['source'])}. Rates are counts over their period; p90/p99 are CloudWatch
percentiles over the whole span's samples, never averages of averages.</p>
<table><tr>{''.join(f'<th>{h}</th>' for h in HEAD)}</tr>{table}</table>
<h2>Success criteria</h2>
<table><tr><th>criterion</th><th>target</th><th>measured</th><th>verdict</th></tr>{crit}</table>
<h2>Over time</h2>
<img src="report.png" alt="requests per second, p90/p99, 5xx rate, green's share">
<h2>Cutover steps</h2><ul>{steps}</ul>
</body></html>
"""

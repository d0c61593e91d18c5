"""The rehearsal's timeline: one PNG, four panels on one time axis (seconds from the start).

1. the ALB weights (green %, and blue % = 100 - green), from the audit's ``weights`` events;
2. requests/s per color (1-s buckets), from the load generator's records;
3. the 5xx rate per color (2-s buckets); answers with no color (the load balancer's own 502/503/
   504 when a target is down, or no answer at all: status 0) are color "none", shown as their
   share of all requests in the bucket;
4. p90 latency per color (2-s buckets), and the controller's per-window p90 (audit ``window``
   events) as markers shaped by the window's verdict.

The controller's decisions (rollback, step_passed, promoted, ...) and the caller's ``marks`` are
labelled vertical lines across every panel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from deploy.rehearsal.loadgen import RequestRecord, color_of, is_error, percentile

DECISIONS = ("rollback", "rolled_back", "step_passed", "promoted", "paused", "held", "aborted",
             "completed")
COLORS = {"blue": "#1f5fbf", "green": "#2e9e44", "none": "#7f7f7f"}
DECISION_STYLE = {  # line colour per decision; the caller's marks are purple, dashed
    "rollback": "#d62728", "rolled_back": "#d62728", "aborted": "#d62728",
    "paused": "#ff7f0e", "held": "#ff7f0e",
    "step_passed": "#555555", "promoted": "#111111", "completed": "#111111",
}
MARK_COLOR = "#8e44ad"
VERDICT_MARKERS = {"pass": "o", "fail": "X", "inconclusive": "s", "alarm": "^"}


def plot_timeline(audit: list[dict[str, Any]], records: list[RequestRecord], out: Path, *,
                  title: str, marks: Sequence[tuple[float, str]] = ()) -> None:
    """Render the timeline PNG to ``out`` (its folder is created). Empty inputs still render."""
    times = [r.t for r in records] + [float(e["t"]) for e in audit if _has_time(e)]
    times += [float(t) for t, _ in marks]
    t0 = min(times) if times else 0.0
    end = max(times) - t0 if times else 1.0
    end = max(end, 1.0)

    fig, axes = plt.subplots(4, 1, figsize=(13, 11), sharex=True,
                             gridspec_kw={"height_ratios": [1, 1.2, 1, 1.2]})
    try:
        ax_w, ax_rps, ax_err, ax_lat = axes
        _weights(ax_w, audit, t0, end)
        _rate(ax_rps, records, t0)
        _errors(ax_err, records, t0)
        _latency(ax_lat, records, audit, t0)
        events = _decision_lines(audit, marks, t0)
        for ax in axes:
            for x, _, colour, dashed in events:
                ax.axvline(x, color=colour, linestyle="--" if dashed else "-", linewidth=1.1,
                           alpha=0.8, zorder=1)
            ax.grid(True, alpha=0.3)
            ax.set_xlim(0, end * 1.01)
        _label_decisions(ax_w, events, end)
        ax_lat.set_xlabel("seconds since the start of the run")
        n = len(records)
        unanswered = sum(1 for r in records if r.status == 0)
        subtitle = (f"{n} requests, {sum(1 for r in records if is_error(r))} errors "
                    f"({unanswered} unanswered), {len(events)} decisions/marks")
        fig.suptitle(f"{title}\n{subtitle}", fontsize=12)
        fig.tight_layout(rect=(0, 0, 0.86, 1))
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)


def _has_time(event: dict[str, Any]) -> bool:
    value = event.get("t")
    return isinstance(value, int | float) and math.isfinite(value)


def _legend(ax: Axes, handles: Iterable[Any] | None = None) -> None:
    kwargs: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0),
                              "fontsize": 8, "frameon": False}
    if handles is not None:
        kwargs["handles"] = list(handles)
    if handles is not None or ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#888888")


def _weights(ax: Axes, audit: list[dict[str, Any]], t0: float, end: float) -> None:
    points = sorted((float(e["t"]) - t0, int(e["weights"].get("green", 0)))
                    for e in audit if e.get("event") == "weights" and _has_time(e)
                    and isinstance(e.get("weights"), dict))
    ax.set_ylabel("ALB weight %")
    ax.set_ylim(-5, 105)
    ax.set_title("weights", loc="left", fontsize=10)
    if not points:
        _empty(ax, "no weight events")
        return
    xs = [x for x, _ in points] + [end * 1.01]
    green = [g for _, g in points] + [points[-1][1]]
    ax.step(xs, green, where="post", color=COLORS["green"], linewidth=2, label="green %")
    ax.step(xs, [100 - g for g in green], where="post", color=COLORS["blue"], linewidth=2,
            label="blue %")
    _legend(ax)


def _buckets(records: list[RequestRecord], t0: float, width: float
             ) -> dict[str, dict[int, list[RequestRecord]]]:
    out: dict[str, dict[int, list[RequestRecord]]] = {}
    for r in records:
        out.setdefault(color_of(r), {}).setdefault(int((r.t - t0) // width), []).append(r)
    return out


def _series(groups: dict[int, list[RequestRecord]], width: float, value: Any
            ) -> tuple[list[float], list[float]]:
    """Bucket centres and values, with every empty bucket in between (a gap reads as 0)."""
    if not groups:
        return [], []
    xs, ys = [], []
    for b in range(min(groups), max(groups) + 1):
        xs.append((b + 0.5) * width)
        ys.append(value(groups.get(b, []), b))
    return xs, ys


def _rate(ax: Axes, records: list[RequestRecord], t0: float) -> None:
    ax.set_ylabel("requests/s")
    ax.set_title("requests per second, by the color that answered (1-s buckets)", loc="left",
                 fontsize=10)
    per = _buckets(records, t0, 1.0)
    if not per:
        _empty(ax, "no requests")
        return
    for color in ("blue", "green", "none"):
        if color in per:
            xs, ys = _series(per[color], 1.0, lambda g, _: float(len(g)))
            ax.plot(xs, ys, color=COLORS[color], linewidth=1.6, drawstyle="steps-mid",
                    label=color if color != "none" else "no color (ALB error or none)")
    ax.set_ylim(bottom=0)
    _legend(ax)


def _errors(ax: Axes, records: list[RequestRecord], t0: float) -> None:
    ax.set_ylabel("5xx rate %")
    ax.set_title("errors: 5xx share of each color's requests; answers with no color (the load "
                 "balancer's 5xx, or none) as a share of all (2-s buckets)", loc="left",
                 fontsize=10)
    width = 2.0
    per = _buckets(records, t0, width)
    if not per:
        _empty(ax, "no requests")
        return
    totals: dict[int, int] = {}
    for groups in per.values():
        for b, group in groups.items():
            totals[b] = totals.get(b, 0) + len(group)
    for color in ("blue", "green"):
        if color in per:
            xs, ys = _series(per[color], width, lambda g, _: (
                100.0 * sum(1 for r in g if is_error(r)) / len(g) if g else 0.0))
            ax.plot(xs, ys, color=COLORS[color], linewidth=1.6, marker=".", label=color)
    if "none" in per:
        xs, ys = _series(per["none"], width,
                         lambda g, b: 100.0 * len(g) / totals[b] if totals.get(b) else 0.0)
        ax.plot(xs, ys, color=COLORS["none"], linewidth=1.6, marker="x", linestyle=":",
                label="no color (ALB 5xx or no answer)")
    ax.set_ylim(-3, 103)
    _legend(ax)


def _latency(ax: Axes, records: list[RequestRecord], audit: list[dict[str, Any]],
             t0: float) -> None:
    ax.set_ylabel("p90 latency ms")
    ax.set_title("p90 latency (2-s buckets, answered requests); markers: the controller's "
                 "windows", loc="left", fontsize=10)
    width = 2.0
    answered = [r for r in records if r.status != 0]
    per = _buckets(answered, t0, width)
    drew = False
    for color in ("blue", "green"):
        if color in per:
            groups = per[color]
            xs = [(b + 0.5) * width for b in sorted(groups)]
            ys = [percentile([r.latency_ms for r in groups[b]], 90) for b in sorted(groups)]
            ax.plot(xs, ys, color=COLORS[color], linewidth=1.4, label=f"{color} p90")
            drew = True
    verdicts_seen: set[str] = set()
    for event in audit:
        if event.get("event") != "window" or not _has_time(event):
            continue
        verdict = str(event.get("verdict", "inconclusive"))
        service = (event.get("figures") or {}).get("service") or {}
        for color in ("blue", "green"):
            p90 = (service.get(color) or {}).get("p90_ms")
            if isinstance(p90, int | float) and math.isfinite(p90):
                ax.scatter([float(event["t"]) - t0], [p90], s=60, zorder=4,
                           marker=VERDICT_MARKERS.get(verdict, "D"), color=COLORS[color],
                           edgecolors="black", linewidths=0.8)
                verdicts_seen.add(verdict)
                drew = True
    if not drew:
        _empty(ax, "no latency data")
        return
    ax.set_ylim(bottom=0)
    handles: list[Any] = list(ax.get_legend_handles_labels()[0])
    for verdict in ("pass", "fail", "inconclusive", "alarm"):
        if verdict in verdicts_seen:
            handles.append(Line2D([], [], linestyle="", marker=VERDICT_MARKERS[verdict],
                                  markerfacecolor="white", markeredgecolor="black",
                                  markersize=8, label=f"window: {verdict}"))
    _legend(ax, handles)


def _decision_lines(audit: list[dict[str, Any]], marks: Sequence[tuple[float, str]],
                    t0: float) -> list[tuple[float, str, str, bool]]:
    """(x, label, colour, dashed) for every decision and mark, in time order."""
    lines: list[tuple[float, str, str, bool]] = []
    for event in audit:
        name = event.get("event")
        if name in DECISIONS and _has_time(event):
            label = str(name)
            weights = event.get("weights")
            if isinstance(weights, dict) and "green" in weights:
                label += f" (green {weights['green']}%)"
            lines.append((float(event["t"]) - t0, label, DECISION_STYLE[str(name)], False))
    lines += [(float(t) - t0, str(label), MARK_COLOR, True) for t, label in marks]
    return sorted(lines, key=lambda line: line[0])


def _label_decisions(ax: Axes, lines: list[tuple[float, str, str, bool]], end: float) -> None:
    """Rotated labels at the top of the weights panel; lines closer than 2 % of the axis share
    one label, so texts do not overlap."""
    gap = 0.02 * end
    groups: list[list[tuple[float, str, str, bool]]] = []
    for line in lines:
        if groups and line[0] - groups[-1][-1][0] < gap:
            groups[-1].append(line)
        else:
            groups.append([line])
    for group in groups:
        x = group[0][0]
        text = " / ".join(dict.fromkeys(label for _, label, _, _ in group))
        ax.text(x, 1.02, text, transform=ax.get_xaxis_transform(), rotation=45,
                ha="left", va="bottom", fontsize=7.5, color=group[0][2], clip_on=False)

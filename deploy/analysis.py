"""The analysis: every window, green is judged against blue over the same window and against
absolute ceilings, so "both bad" never passes.

:func:`judge` is pure arithmetic on :class:`WindowFigures` (tested on synthetic series);
:class:`CloudWatchSource` reads those figures for a window through ``GetMetricData``, and the
alarms through ``DescribeAlarms``. Rates and percentiles are compared, never counts: blue carries
90 % of the load when green carries 10 %.

A gate is ``pass``, ``fail``, ``inconclusive`` (too few green samples for the statistic: hold,
never pass) or ``skip`` (not applicable: an endpoint green barely served). A window's verdict is
``alarm`` when a listed alarm is in ALARM, else ``fail`` when a gate failed, else
``inconclusive`` when a service-level gate was, else ``pass``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from deploy.plan import ErrorRateGate, Gates, LatencyGate

Verdict = Literal["pass", "fail", "inconclusive", "alarm"]
GateVerdict = Literal["pass", "fail", "inconclusive", "skip"]
COLORS = ("blue", "green")
SERVICE = "service"  # the load balancer's view of each target group (every request)


@dataclass
class ColorFigures:
    """One color over one window, in one scope (the service, or one endpoint)."""

    requests: float = 0.0
    errors_5xx: float = 0.0
    p90_ms: float | None = None
    p99_ms: float | None = None
    unhealthy_hosts: float | None = None  # the window's maximum (service scope only)

    @property
    def error_rate(self) -> float | None:
        return self.errors_5xx / self.requests if self.requests else None

    def to_dict(self, window_s: float) -> dict[str, Any]:
        out = asdict(self)
        out["error_rate"] = self.error_rate
        out["rps"] = round(self.requests / window_s, 3) if window_s else None
        return out


@dataclass
class WindowFigures:
    start: float  # epoch seconds
    end: float
    scopes: dict[str, dict[str, ColorFigures]] = field(default_factory=dict)
    alarms: dict[str, str] = field(default_factory=dict)  # name -> state

    def color(self, scope: str, color: str) -> ColorFigures:
        return self.scopes.setdefault(scope, {}).setdefault(color, ColorFigures())

    def to_dict(self) -> dict[str, Any]:
        span = self.end - self.start
        return {scope: {c: f.to_dict(span) for c, f in colors.items()}
                for scope, colors in self.scopes.items()}


@dataclass(frozen=True)
class GateResult:
    gate: str
    scope: str
    verdict: GateVerdict
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class WindowResult:
    verdict: Verdict
    gates: tuple[GateResult, ...]
    figures: WindowFigures

    @property
    def reasons(self) -> list[str]:
        bad = "fail" if self.verdict in ("fail", "alarm") else "inconclusive"
        return [f"{g.gate}[{g.scope}]: {g.detail}" for g in self.gates if g.verdict == bad]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "start": self.figures.start, "end": self.figures.end,
                "figures": self.figures.to_dict(), "alarms": dict(self.figures.alarms),
                "gates": [g.to_dict() for g in self.gates]}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def judge_error_rate(gate: ErrorRateGate, blue: ColorFigures, green: ColorFigures, scope: str,
                     min_requests: int | None = None) -> GateResult:
    need = min_requests or gate.min_requests
    name = "error_rate"
    g_rate = green.error_rate
    # overwhelming evidence needs no full sample: errors alone already over the cap at `need`
    if green.requests < need and green.errors_5xx > gate.max * need:
        return GateResult(name, scope, "fail", f"green {green.errors_5xx:.0f} 5xx in "
                          f"{green.requests:.0f} requests, over {_pct(gate.max)} of {need}")
    if green.requests < need or g_rate is None:
        return GateResult(name, scope, "inconclusive",
                          f"green {green.requests:.0f} requests < {need}")
    if g_rate > gate.max:
        return GateResult(name, scope, "fail", f"green {_pct(g_rate)} > cap {_pct(gate.max)}")
    b_rate = blue.error_rate
    if b_rate is not None and blue.requests >= need and g_rate > b_rate + gate.max_increase:
        return GateResult(name, scope, "fail", f"green {_pct(g_rate)} > blue {_pct(b_rate)} + "
                          f"{_pct(gate.max_increase)}")
    base = "no baseline" if b_rate is None or blue.requests < need else f"blue {_pct(b_rate)}"
    return GateResult(name, scope, "pass", f"green {_pct(g_rate)}, {base}")


def judge_latency(name: Literal["p90", "p99"], gate: LatencyGate, blue: ColorFigures,
                  green: ColorFigures, scope: str, min_requests: int | None = None
                  ) -> GateResult:
    need = max(gate.min_requests, min_requests or 0)
    g = getattr(green, f"{name}_ms")
    b = getattr(blue, f"{name}_ms")
    if green.requests < need or g is None:
        return GateResult(name, scope, "inconclusive",
                          f"green {green.requests:.0f} samples < {need}")
    if g > gate.max_ms:
        return GateResult(name, scope, "fail", f"green {_ms(g)} > cap {_ms(gate.max_ms)}")
    if b is not None and blue.requests >= need and g > b * gate.max_ratio \
            and g - b > gate.slack_ms:
        return GateResult(name, scope, "fail", f"green {_ms(g)} > blue {_ms(b)} x "
                          f"{gate.max_ratio:g} (+{gate.slack_ms:g} ms slack)")
    base = "no baseline" if b is None or blue.requests < need else f"blue {_ms(b)}"
    return GateResult(name, scope, "pass", f"green {_ms(g)}, {base}")


def judge(gates: Gates, figures: WindowFigures) -> WindowResult:
    """One window's verdict from its figures."""
    results: list[GateResult] = []
    service = figures.scopes.get(SERVICE)
    if service is not None and gates.load_balancer.enabled:
        blue, green = service.get("blue", ColorFigures()), service.get("green", ColorFigures())
        results.append(judge_error_rate(gates.error_rate, blue, green, SERVICE))
        results.append(judge_latency("p90", gates.p90, blue, green, SERVICE))
        results.append(judge_latency("p99", gates.p99, blue, green, SERVICE))
        unhealthy = green.unhealthy_hosts
        if unhealthy is not None and unhealthy > gates.load_balancer.max_unhealthy_hosts:
            results.append(GateResult("unhealthy_hosts", SERVICE, "fail",
                                      f"green {unhealthy:.0f} unhealthy"))
        else:
            results.append(GateResult("unhealthy_hosts", SERVICE, "pass",
                                      f"green {unhealthy or 0:.0f} unhealthy"))
    for scope, colors in sorted(figures.scopes.items()):
        if scope == SERVICE:
            continue
        blue, green = colors.get("blue", ColorFigures()), colors.get("green", ColorFigures())
        if green.requests < gates.per_endpoint_min_requests and \
                green.errors_5xx <= gates.error_rate.max * gates.per_endpoint_min_requests:
            results.append(GateResult("endpoint", scope, "skip",
                                      f"green {green.requests:.0f} requests"))
            continue
        need = gates.per_endpoint_min_requests
        for result in (judge_error_rate(gates.error_rate, blue, green, scope, need),
                       judge_latency("p90", gates.p90, blue, green, scope, need),
                       judge_latency("p99", gates.p99, blue, green, scope, need)):
            # an endpoint is judged where traffic allows: too few samples there is a skip,
            # the service-level gates decide whether the window is conclusive
            results.append(result if result.verdict != "inconclusive" else GateResult(
                result.gate, scope, "skip", result.detail))
    verdict: Verdict
    if any(state == "ALARM" for state in figures.alarms.values()):
        verdict = "alarm"
        results += [GateResult("alarm", name, "fail", "in ALARM")
                    for name, state in figures.alarms.items() if state == "ALARM"]
    elif any(r.verdict == "fail" for r in results):
        verdict = "fail"
    elif any(r.verdict == "inconclusive" for r in results) or not results:
        verdict = "inconclusive"
    else:
        verdict = "pass"
    return WindowResult(verdict, tuple(results), figures)


# --- reading the figures from CloudWatch ------------------------------------------------------

def _dim_suffix(arn: str, kind: str) -> str:
    """``arn:...:loadbalancer/app/n/id`` -> ``app/n/id``; ``arn:...:targetgroup/n/id`` ->
    ``targetgroup/n/id``."""
    tail = arn.split(":", 5)[-1]
    if kind == "lb":
        return tail.split("loadbalancer/", 1)[-1]
    return tail


class CloudWatchSource:
    """Window figures through GetMetricData, one call per window (up to 500 queries).

    App metrics (each color's namespace, per ``Endpoint``): ``RequestCount`` and ``ErrorCount``
    sums, ``RequestLatency`` p90/p99. Load balancer metrics (``AWS/ApplicationELB``, per
    ``TargetGroup`` and ``LoadBalancer``): ``RequestCount``, ``HTTPCode_Target_5XX_Count``,
    ``HTTPCode_ELB_5XX_Count``, ``TargetConnectionErrorCount``, ``TargetResponseTime``
    p90/p99 and ``UnHealthyHostCount`` maximum. A window's service 5xx are the targets' 5xx
    plus the larger of the ELB's 5xx and the connection errors for that target group (real AWS
    reports ELB 5xx per load balancer only; devstack's load balancer reports both).
    """

    ELB_NAMESPACE = "AWS/ApplicationELB"

    def __init__(self, cloudwatch: Any, namespaces: dict[str, str],
                 load_balancer: tuple[str, dict[str, str]] | None = None,
                 endpoints: Iterable[str] | None = None) -> None:
        self.cw = cloudwatch
        self.namespaces = namespaces
        self.elb: tuple[str, dict[str, str]] | None = None
        if load_balancer is not None:
            lb_arn, tgs = load_balancer
            self.elb = (_dim_suffix(lb_arn, "lb"),
                        {c: _dim_suffix(a, "tg") for c, a in tgs.items()})
        self.endpoints = list(endpoints) if endpoints is not None else None

    def _endpoints(self) -> list[str]:
        if self.endpoints is not None:
            return self.endpoints
        found: set[str] = set()
        for namespace in self.namespaces.values():
            pages = self.cw.get_paginator("list_metrics").paginate(
                Namespace=namespace, MetricName="RequestCount")
            for page in pages:
                for metric in page["Metrics"]:
                    for dim in metric["Dimensions"]:
                        if dim["Name"] == "Endpoint":
                            found.add(dim["Value"])
        return sorted(found)

    def queries(self, period: int) -> tuple[list[dict[str, Any]], dict[str, tuple[str, str, str]]]:
        """The GetMetricData queries, and what each id means: (scope, color, figure)."""
        queries: list[dict[str, Any]] = []
        meaning: dict[str, tuple[str, str, str]] = {}

        def add(scope: str, color: str, figure: str, namespace: str, metric: str,
                dims: list[dict[str, str]], stat: str) -> None:
            qid = f"q{len(queries)}"
            meaning[qid] = (scope, color, figure)
            queries.append({"Id": qid, "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": dims},
                "Period": period, "Stat": stat}})

        for color, namespace in self.namespaces.items():
            for endpoint in self._endpoints():
                dims = [{"Name": "Endpoint", "Value": endpoint}]
                add(endpoint, color, "requests", namespace, "RequestCount", dims, "Sum")
                add(endpoint, color, "errors_5xx", namespace, "ErrorCount", dims, "Sum")
                add(endpoint, color, "p90_ms", namespace, "RequestLatency", dims, "p90")
                add(endpoint, color, "p99_ms", namespace, "RequestLatency", dims, "p99")
        if self.elb is not None:
            lb, tgs = self.elb
            for color, tg in tgs.items():
                dims = [{"Name": "TargetGroup", "Value": tg}, {"Name": "LoadBalancer", "Value": lb}]
                ns = self.ELB_NAMESPACE
                add(SERVICE, color, "requests", ns, "RequestCount", dims, "Sum")
                add(SERVICE, color, "target_5xx", ns, "HTTPCode_Target_5XX_Count", dims, "Sum")
                add(SERVICE, color, "elb_5xx", ns, "HTTPCode_ELB_5XX_Count", dims, "Sum")
                add(SERVICE, color, "conn_errors", ns, "TargetConnectionErrorCount", dims, "Sum")
                add(SERVICE, color, "p90_s", ns, "TargetResponseTime", dims, "p90")
                add(SERVICE, color, "p99_s", ns, "TargetResponseTime", dims, "p99")
                add(SERVICE, color, "unhealthy", ns, "UnHealthyHostCount", dims, "Maximum")
        return queries, meaning

    def read(self, start: float, end: float, alarm_names: Iterable[str] = ()) -> WindowFigures:
        """The figures of [start, end). Raises what the SDK raises: the caller decides."""
        period = max(1, round(end - start))
        queries, meaning = self.queries(period)
        values: dict[str, list[float]] = {}
        begin = dt.datetime.fromtimestamp(start, dt.UTC)
        finish = dt.datetime.fromtimestamp(end, dt.UTC)
        for i in range(0, len(queries), 500):
            kwargs: dict[str, Any] = {"MetricDataQueries": queries[i:i + 500],
                                      "StartTime": begin, "EndTime": finish}
            while True:
                page = self.cw.get_metric_data(**kwargs)
                for result in page["MetricDataResults"]:
                    values.setdefault(result["Id"], []).extend(
                        float(v) for v in result.get("Values", []))
                token = page.get("NextToken")
                if not token:
                    break
                kwargs["NextToken"] = token
        figures = WindowFigures(start, end)
        raw: dict[tuple[str, str], dict[str, float | None]] = {}
        for qid, (scope, color, figure) in meaning.items():
            got = [v for v in values.get(qid, []) if not math.isnan(v)]
            slot = raw.setdefault((scope, color), {})
            if figure in ("p90_ms", "p99_ms", "p90_s", "p99_s", "unhealthy"):
                slot[figure] = max(got) if got else None  # one period: at most one value
            else:
                slot[figure] = sum(got)
        for (scope, color), slot in raw.items():
            f = figures.color(scope, color)
            f.requests = float(slot.get("requests") or 0.0)
            if scope == SERVICE:
                elb = max(slot.get("elb_5xx") or 0.0, slot.get("conn_errors") or 0.0)
                f.errors_5xx = float(slot.get("target_5xx") or 0.0) + elb
                for name in ("p90", "p99"):
                    secs = slot.get(f"{name}_s")
                    setattr(f, f"{name}_ms", None if secs is None else secs * 1000.0)
                f.unhealthy_hosts = slot.get("unhealthy")
            else:
                f.errors_5xx = float(slot.get("errors_5xx") or 0.0)
                f.p90_ms, f.p99_ms = slot.get("p90_ms"), slot.get("p99_ms")
        names = list(alarm_names)
        if names:
            figures.alarms = self.alarm_states(names)
        return figures

    def alarm_states(self, names: list[str]) -> dict[str, str]:
        """Each listed alarm's state; one that does not exist is an error (fail closed)."""
        found: dict[str, str] = {}
        for i in range(0, len(names), 100):
            page = self.cw.describe_alarms(AlarmNames=names[i:i + 100])
            for alarm in page.get("MetricAlarms", []) + page.get("CompositeAlarms", []):
                found[alarm["AlarmName"]] = alarm["StateValue"]
        missing = [n for n in names if n not in found]
        if missing:
            raise LookupError(f"alarms not found: {', '.join(missing)}")
        return found

"""The migration report on devstack's CloudWatch: known datums in, known rates, percentiles
and verdicts out, and the three files written."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from deploy.infra.report import choose_period, write_report
from devstack.stack import DevStack
from shared.settings import DEFAULT_NAMESPACES

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("infra-moto")]
LB = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/rep{n}/50dc6c495c0c9188"
TG = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/rep{n}-{c}/{i}"


def _put(cw: Any, namespace: str, name: str, dims: list[dict[str, str]], t: dt.datetime,
         values: list[float]) -> None:
    distinct = sorted(set(values))
    cw.put_metric_data(Namespace=namespace, MetricData=[{
        "MetricName": name, "Dimensions": dims, "Timestamp": t, "StorageResolution": 1,
        "Values": distinct, "Counts": [float(values.count(v)) for v in distinct]}])


def seed(cw: Any, n: str, start: dt.datetime, seconds: int) -> dict[str, str]:
    """Blue 20 req/s, then green takes 50 % from the middle; green's latency 100..199 ms (its
    p90 is ~190 ms), 2 % of green's requests are 5xx."""
    lb = LB.format(n=n)
    tgs = {c: TG.format(n=n, c=c, i=f"{i:016x}") for i, c in enumerate(("blue", "green"), 1)}
    lb_dim = lb.split("loadbalancer/")[1]
    for s in range(seconds):
        t = start + dt.timedelta(seconds=s)
        green = 10 if s >= seconds // 2 else 0
        for color, count in (("blue", 20 - green), ("green", green)):
            if not count:
                continue
            dims = [{"Name": "TargetGroup", "Value": tgs[color].split(":")[5]},
                    {"Name": "LoadBalancer", "Value": lb_dim}]
            _put(cw, "AWS/ApplicationELB", "RequestCount", dims, t, [1.0] * count)
            latencies = [(100 + (s * count + k) % 100) / 1000 for k in range(count)]
            _put(cw, "AWS/ApplicationELB", "TargetResponseTime", dims, t, latencies)
            if color == "green" and s % 5 == 0:
                _put(cw, "AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", dims, t, [1.0])
    return {"lb": lb, **tgs}


def test_period_keeps_the_plot_readable() -> None:
    assert choose_period(240) == 1
    assert choose_period(7200) == 30
    assert choose_period(86_400) == 600


def test_report_on_known_data(stack: DevStack, tmp_path: Path) -> None:
    cw = boto3.client("cloudwatch", endpoint_url=stack.moto_url, region_name="us-east-1")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = now - dt.timedelta(seconds=200)
    arns = seed(cw, tmp_path.name[-6:].replace("_", "x").lower(), start, 120)
    audit = tmp_path / "audit.jsonl"
    audit.write_text("\n".join(json.dumps(line) for line in [
        {"t": start.timestamp() + 1, "event": "started", "weights": {"blue": 100, "green": 0}},
        {"t": start.timestamp() + 60, "event": "weights", "weights": {"blue": 50, "green": 50}},
        {"t": start.timestamp() + 119, "event": "rollback", "reason": "5xx gate",
         "weights": {"blue": 50, "green": 50}},
        {"t": start.timestamp() + 119.5, "event": "rolled_back", "rollback_s": 0.4,
         "weights": {"blue": 100, "green": 0}}]) + "\n")
    summary = write_report(cw, namespaces=dict(DEFAULT_NAMESPACES), load_balancer_arn=arns["lb"],
                           target_groups={"blue": arns["blue"], "green": arns["green"]},
                           audit_paths=[audit], since=start, until=start + dt.timedelta(
                               seconds=120), out_dir=tmp_path / "out")
    for name in ("report.html", "report.md", "report.png"):
        assert (tmp_path / "out" / name).stat().st_size > 500
    assert summary["period_s"] == 1
    blue, green = summary["overall"]["blue"], summary["overall"]["green"]
    assert blue["requests"] == 60 * 20 + 60 * 10
    assert green["requests"] == 600
    # a rate is requests over the span: 1800 over 120 s, not a sum of counts
    assert blue["rps"] == pytest.approx(15.0)
    assert green["error_rate"] == pytest.approx(12 / 600)
    assert green["p90"] == pytest.approx(190, abs=2)  # a percentile of the samples, in ms
    verdicts = {c["name"]: c["verdict"] for c in summary["criteria"]}
    assert verdicts["Error rate (green, 5xx)"] == "fail"
    assert verdicts["Latency P90 (green)"] == "pass"
    assert verdicts["Rollback time"] == "pass"
    assert verdicts["Traffic migrated"] == "fail"
    assert summary["verdict"] == "FAIL"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "green 50%" in md
    assert "rolled back" in md
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<img src=\"report.png\"" in html
    assert "FAIL" in html


def test_report_with_no_data_is_incomplete_not_pass(stack: DevStack, tmp_path: Path) -> None:
    cw = boto3.client("cloudwatch", endpoint_url=stack.moto_url, region_name="us-east-1")
    until = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    summary = write_report(cw, namespaces={"blue": "Nobody/Blue", "green": "Nobody/Green"},
                           load_balancer_arn=None, target_groups=None, audit_paths=[],
                           since=until - dt.timedelta(hours=2), until=until,
                           out_dir=tmp_path)
    assert summary["verdict"] == "INCOMPLETE"
    assert (tmp_path / "report.png").exists()

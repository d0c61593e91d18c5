"""The template, statically: generated from the single sources, cfn-lint clean, and what moto's
CloudFormation skips (alarms, TTL, the services' load balancer link) checked here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.analysis import CloudWatchSource
from deploy.infra import template as t
from deploy.plan import DEFAULT_PLAN, load_plan
from devstack.commands import BLUE_CMD, GREEN_CMD
from shared.sessions import TTL_ATTRIBUTE, rate_limit_table_spec, sessions_table_spec
from shared.settings import DEFAULT_NAMESPACES, load_settings

pytestmark = pytest.mark.unit
CFN_LINT = Path(sys.executable).with_name("cfn-lint")
# metrics AWS itself publishes (per the services' CloudWatch docs); anything else must be one
# the apps publish
AWS_METRICS = {
    "AWS/ApplicationELB": {"RequestCount", "HTTPCode_Target_5XX_Count", "UnHealthyHostCount",
                           "HealthyHostCount", "TargetResponseTime", "HTTPCode_ELB_5XX_Count"},
    "AWS/ECS": {"CPUUtilization", "MemoryUtilization"},
    "AWS/DynamoDB": {"ReadThrottleEvents", "WriteThrottleEvents"},
    "AWS/Bedrock/Agents": {"InvocationThrottles"},
}


@pytest.fixture(scope="module")
def tpl() -> dict[str, Any]:
    return t.load()


def resources(tpl: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in tpl["Resources"].items() if v["Type"] == kind}


def test_the_committed_template_is_the_generated_one() -> None:
    assert t.TEMPLATE_PATH.read_text(encoding="utf-8") == t.render(), (
        "deploy/infra/template.yaml is stale: python -m deploy stack template --write")


def test_cfn_lint_passes() -> None:
    run = subprocess.run([str(CFN_LINT), str(t.TEMPLATE_PATH)], capture_output=True, text=True,
                         check=False, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_cfn_lint_catches_a_bad_alarm(tmp_path: Path, tpl: dict[str, Any]) -> None:
    """The lint step can fail: a TreatMissingData CloudWatch does not know is an error."""
    tpl = yaml.safe_load(yaml.safe_dump(tpl))
    tpl["Resources"]["GreenErrorRateAlarm"]["Properties"]["TreatMissingData"] = "bogus"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tpl), encoding="utf-8")
    run = subprocess.run([str(CFN_LINT), str(bad)], capture_output=True, text=True, check=False,
                         timeout=120)
    assert run.returncode != 0
    assert "E3030" in run.stdout


def test_tables_are_the_shared_specs_with_ttl_and_recovery(tpl: dict[str, Any]) -> None:
    tables = resources(tpl, "AWS::DynamoDB::Table")
    for logical, spec in (("SessionsTable", sessions_table_spec("x")),
                          ("RateLimitTable", rate_limit_table_spec("x"))):
        props = tables[logical]["Properties"]
        for key in ("KeySchema", "AttributeDefinitions", "BillingMode"):
            assert props[key] == spec[key]
        assert props.get("GlobalSecondaryIndexes") == spec.get("GlobalSecondaryIndexes")
        # moto ignores TimeToLiveSpecification: checked here
        assert props["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE,
                                                    "Enabled": True}
        assert tables[logical]["DeletionPolicy"] == "Retain"
    assert tables["SessionsTable"]["Properties"]["PointInTimeRecoverySpecification"] == {
        "PointInTimeRecoveryEnabled": True}


def test_alarm_thresholds_are_the_plan_gates(tpl: dict[str, Any]) -> None:
    plan = load_plan(DEFAULT_PLAN)
    alarms = {k: v["Properties"] for k, v in resources(tpl, "AWS::CloudWatch::Alarm").items()}
    for color in ("Blue", "Green"):
        assert alarms[f"{color}ErrorRateAlarm"]["Threshold"] == plan.gates.error_rate.max
        expr = alarms[f"{color}ErrorRateAlarm"]["Metrics"][-1]["Expression"]
        assert f">= {plan.gates.error_rate.min_requests}" in expr
        assert alarms[f"{color}LatencyP99Alarm"]["Threshold"] == plan.gates.p99.max_ms
        assert alarms[f"{color}LatencyP99Alarm"]["ExtendedStatistic"] == "p99"
        assert alarms[f"{color}LatencyP90Alarm"]["Threshold"] == plan.gates.p90.max_ms
        assert alarms[f"{color}UnhealthyHostsAlarm"]["Threshold"] == \
            plan.gates.load_balancer.max_unhealthy_hosts
        for name in ("ErrorRate", "LatencyP99", "LatencyP90", "UnhealthyHosts"):
            a = alarms[f"{color}{name}Alarm"]
            period = a.get("Period") or a["Metrics"][0]["MetricStat"]["Period"]
            assert period == plan.analysis.interval_s
    assert t.alarm_specs(plan.model_copy(update={"gates": plan.gates.model_copy(update={
        "p99": plan.gates.p99.model_copy(update={"max_ms": 1234.0})})}))[
        "GreenLatencyP99Alarm"]["Threshold"] == 1234.0


def _alarm_metrics(props: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    if "Metrics" in props:
        stats = [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]
    else:
        stats = [props]
    return [(m["Namespace"], m["MetricName"], tuple(d["Name"] for d in m.get("Dimensions", [])))
            for m in stats]


def test_every_alarm_watches_a_metric_someone_emits(tpl: dict[str, Any]) -> None:
    emitted = t.app_metrics()
    for logical, alarm in resources(tpl, "AWS::CloudWatch::Alarm").items():
        props = alarm["Properties"]
        assert props["TreatMissingData"] in ("notBreaching", "missing")
        assert props["AlarmActions"]
        assert props["OKActions"]
        for namespace, metric, dims in _alarm_metrics(props):
            if namespace in DEFAULT_NAMESPACES.values():
                assert emitted.get(metric) == dims, (logical, metric, dims)
            else:
                assert metric in AWS_METRICS[namespace], (logical, namespace, metric)


def test_load_balancer_alarms_use_the_dimensions_the_controller_reads(
        tpl: dict[str, Any]) -> None:
    source = CloudWatchSource(None, dict(DEFAULT_NAMESPACES), endpoints=["/x"],
                              load_balancer=("arn:aws:elasticloadbalancing:r:1:loadbalancer/"
                                             "app/n/1", {"blue": "arn:x:targetgroup/b/1",
                                                         "green": "arn:x:targetgroup/g/1"}))
    read = {(q["MetricStat"]["Metric"]["Namespace"], q["MetricStat"]["Metric"]["MetricName"],
             tuple(d["Name"] for d in q["MetricStat"]["Metric"]["Dimensions"]))
            for q in source.queries(60)[0]}
    for logical in ("GreenErrorRateAlarm", "GreenUnhealthyHostsAlarm"):
        for key in _alarm_metrics(tpl["Resources"][logical]["Properties"]):
            assert key in read, (logical, key)


def test_services_link_their_target_groups_with_the_circuit_breaker(tpl: dict[str, Any]) -> None:
    # moto drops LoadBalancers, LaunchType and DeploymentConfiguration: checked here
    tasks = resources(tpl, "AWS::ECS::TaskDefinition")
    for color in ("blue", "green"):
        c = color.capitalize()
        svc = tpl["Resources"][f"{c}Service"]["Properties"]
        container = tasks[f"{c}TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
        assert svc["LoadBalancers"] == [{"ContainerName": container["Name"],
                                         "ContainerPort": t.dockerfile(color)["port"],
                                         "TargetGroupArn": {"Ref": f"{c}TargetGroup"}}]
        assert svc["LaunchType"] == "FARGATE"
        assert svc["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
            "Enable": True, "Rollback": True}
        assert svc["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"


def test_containers_run_what_the_images_declare(tpl: dict[str, Any]) -> None:
    for color, cmd in (("blue", BLUE_CMD), ("green", GREEN_CMD)):
        props = tpl["Resources"][f"{color.capitalize()}TaskDefinition"]["Properties"]
        assert (props["Cpu"], props["Memory"]) == ("1024", "2048")
        container = props["ContainerDefinitions"][0]
        assert t.dockerfile(color)["command"] == cmd  # the image's CMD, not overridden
        assert "Command" not in container
        assert container["HealthCheck"]["Command"][0] == "CMD"
        assert "/health" in container["HealthCheck"]["Command"][-1]
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        assert env["METRICS_NAMESPACE"] == DEFAULT_NAMESPACES[color]
        # behind the ALB: the hop it appended, never one the client wrote (shared/web.py)
        assert (env["TRUST_FORWARDED_FOR"], env["TRUSTED_PROXY_HOPS"]) == ("true", "1")
        load_settings(**{k.lower(): v for k, v in env.items()
                         if k in ("TRUST_FORWARDED_FOR", "TRUSTED_PROXY_HOPS")})
        assert not any("KEY" in name or "SECRET" in name for name in env)
        assert [s["Name"] for s in container["Secrets"]] == ["API_KEYS"]
        assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    groups = resources(tpl, "AWS::Logs::LogGroup")
    assert all(g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
               for g in groups.values())


def test_tasks_accept_traffic_from_the_load_balancer_only(tpl: dict[str, Any]) -> None:
    rules = tpl["Resources"]["TaskSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert rules
    assert all(r["SourceSecurityGroupId"] == {"Fn::GetAtt": ["AlbSecurityGroup",
                                                                       "GroupId"]}
                         and "CidrIp" not in r for r in rules)


def test_no_account_ids_or_regions_pasted_in(tpl: dict[str, Any]) -> None:
    text = t.TEMPLATE_PATH.read_text(encoding="utf-8")
    assert "123456789012" not in text
    assert "us-east-1" not in text
    assert "ACCOUNT" not in text

"""The CloudFormation template, generated from the single sources.

Nothing here repeats a fact that lives elsewhere:

- tables: ``shared.sessions.*_table_spec`` (keys, attributes, the GSI), ``TTL_ATTRIBUTE``, the
  table names' defaults from :class:`shared.settings.Settings` and ``CUTOVER_TABLE``;
- metrics: the names and dimensions the apps' :class:`shared.metrics.MetricBuffer` really
  publishes (:func:`app_metrics` runs it), the namespaces ``DEFAULT_NAMESPACES``, the chat
  endpoint's label from ``shared.routes``;
- thresholds: the cutover plan's gates (``deploy/plans/default.yaml``): the alarms and the gates
  judge the same 5xx rate, p90 and p99 ceilings and unhealthy-host count over the same period;
- the containers: port, health check and command from ``docker/<color>.Dockerfile``;
- the load balancer: the ports, rule priority and role tag of ``devstack.loadbalancer`` (the
  rehearsal's ALB), so the cutover controller finds the same shape locally and on AWS;
- permissions: :mod:`deploy.infra.policy` (from the apps' AWS calls);
- the task size and the worker counts: :mod:`deploy.infra.sizing` (from ``make bench
  BENCH_ARGS=--scaling``).

``template.yaml`` next to this file is the rendered result; a test fails when it differs from
:func:`render` (regenerate with ``python -m deploy stack template --write``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from deploy.infra import sizing
from deploy.infra.policy import task_role_statements
from deploy.plan import DEFAULT_PLAN, Plan, load_plan
from devstack.loadbalancer import PRODUCTION_PORT, ROLE_TAG, RULE_PRIORITY, TEST_PORT
from shared.metrics import MetricBuffer
from shared.routes import BY_NAME
from shared.sessions import (
    CUTOVER_TABLE,
    TTL_ATTRIBUTE,
    cutover_table_spec,
    rate_limit_table_spec,
    sessions_table_spec,
)
from shared.settings import AGENT_ID_PATTERN, DEFAULT_NAMESPACES, Settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = Path(__file__).resolve().parent / "template.yaml"
COLORS = ("blue", "green")
ELB_NAMESPACE = "AWS/ApplicationELB"
CHAT_ENDPOINT = BY_NAME["chat"].path
# the task size (deploy/infra/sizing.py) and the guide's ECS alarms (CPU > 80 %, memory > 85 %)
TASK_CPU, TASK_MEMORY = sizing.task_cpu_units(), sizing.task_memory()
ECS_ALARMS = {"CPUUtilization": 80.0, "MemoryUtilization": 85.0}
# alarms page on 2 of 3 windows (a gate acts on one: the controller is watching)
EVALUATION_PERIODS, DATAPOINTS_TO_ALARM = 3, 2
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365)
SETTING_DEFAULTS = Settings.model_fields


def _default(field: str) -> Any:
    return SETTING_DEFAULTS[field].default


# --- single sources, read ---------------------------------------------------------------------

@cache
def app_metrics() -> dict[str, tuple[str, ...]]:
    """MetricName -> dimension names, as the apps' buffer publishes them (one request of each
    outcome recorded and taken: what is emitted, not what is hoped for)."""
    buffer = MetricBuffer(namespace="probe")
    when = datetime(2024, 1, 1, tzinfo=UTC)
    for status in (200, 404, 503):
        buffer.record(CHAT_ENDPOINT, status, 12.0, when=when)
    out: dict[str, tuple[str, ...]] = {}
    for batch in buffer.take():
        for datum in batch.datums:
            out[datum["MetricName"]] = tuple(d["Name"] for d in datum["Dimensions"])
    return out


def _metric(name: str) -> str:
    if name not in app_metrics():
        raise LookupError(f"the apps publish no metric {name}")
    return name


@cache
def dockerfile(color: str) -> dict[str, Any]:
    """Port, health check and command of ``docker/<color>.Dockerfile``."""
    text = (ROOT / "docker" / f"{color}.Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s*", " ", text)
    port = int(re.search(r"^EXPOSE\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    hc = re.search(r"^HEALTHCHECK\s+(.*?)\s+CMD\s+(\[.*\])\s*$", text, re.M)
    if hc is None:
        raise LookupError(f"docker/{color}.Dockerfile has no exec-form HEALTHCHECK")
    flags = dict(re.findall(r"--([\w-]+)=(\S+)", hc.group(1)))
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.M)
    return {
        "port": port,
        "health": {
            "Command": ["CMD", *json.loads(hc.group(2))],
            "Interval": int(flags["interval"].rstrip("s")),
            "Timeout": int(flags["timeout"].rstrip("s")),
            "StartPeriod": int(flags["start-period"].rstrip("s")),
            "Retries": int(flags["retries"]),
        },
        "command": json.loads(cmd.group(1)) if cmd else None,
    }


def _cap(color: str) -> str:
    return color.capitalize()


def _sub(text: str) -> dict[str, Any]:
    return {"Fn::Sub": text}


def _ref(name: str) -> dict[str, Any]:
    return {"Ref": name}


def _att(resource: str, attr: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [resource, attr]}


# CloudWatch dimension values from ARNs (moto has no LoadBalancerFullName attribute):
# ...:loadbalancer/app/<name>/<id> -> app/<name>/<id>; ...:targetgroup/<name>/<id> -> the last part
LB_DIM = {"Fn::Select": [1, {"Fn::Split": ["loadbalancer/", _ref("LoadBalancer")]}]}


def tg_dim(color: str) -> dict[str, Any]:
    return {"Fn::Select": [5, {"Fn::Split": [":", _ref(f"{_cap(color)}TargetGroup")]}]}


def elb_dims(color: str) -> list[dict[str, Any]]:
    return [{"Name": "TargetGroup", "Value": tg_dim(color)},
            {"Name": "LoadBalancer", "Value": LB_DIM}]


# --- pieces ---------------------------------------------------------------------------------------

def parameters() -> dict[str, Any]:
    return {
        "Name": {"Type": "String", "Default": "chatbot", "AllowedPattern": "^[a-z][a-z0-9-]{1,19}$",
                 "Description": "prefix of every name (target groups: <Name>-blue, <Name>-green)"},
        "VpcId": {"Type": "AWS::EC2::VPC::Id"},
        "PublicSubnetIds": {"Type": "List<AWS::EC2::Subnet::Id>",
                            "Description": "the load balancer's subnets (two zones or more)"},
        "PrivateSubnetIds": {"Type": "List<AWS::EC2::Subnet::Id>",
                             "Description": "the tasks' subnets (a NAT or VPC endpoints for "
                             "DynamoDB, CloudWatch, Bedrock, ECR, Logs, Secrets Manager)"},
        "BlueImage": {"Type": "String", "Description": "blue's image URI (Flask)"},
        "GreenImage": {"Type": "String", "Description": "green's image URI (FastAPI)"},
        "AgentId": {"Type": "String", "AllowedPattern": AGENT_ID_PATTERN.strip("^$")
                    .join("^$")},
        "AgentAliasId": {"Type": "String", "AllowedPattern": AGENT_ID_PATTERN.strip("^$")
                         .join("^$")},
        "ApiKeysSecretArn": {"Type": "String", "AllowedPattern": "^arn:[a-z-]+:secretsmanager:.+",
                             "Description": "Secrets Manager secret holding API_KEYS "
                             "(comma-separated)"},
        "CertificateArn": {"Type": "String", "Default": "",
                           "Description": "ACM certificate: HTTPS on 443 (empty: HTTP on 80)"},
        "BlueDesiredCount": {"Type": "Number", "Default": 2, "MinValue": 0},
        "GreenDesiredCount": {"Type": "Number", "Default": 2, "MinValue": 0},
        "AlarmEmail": {"Type": "String", "Default": "",
                       "Description": "subscribed to both topics (empty: none)"},
        "AlarmTopicArn": {"Type": "String", "Default": "",
                          "Description": "an existing topic the critical alarms also notify"},
        "TestListenerCidr": {"Type": "String", "Default": "10.0.0.0/8",
                             "AllowedPattern": r"^\d+\.\d+\.\d+\.\d+/\d+$",
                             "Description": "who may reach the test listener (ops, CI)"},
        "LogRetentionDays": {"Type": "Number", "Default": 30,
                             "AllowedValues": list(LOG_RETENTION_DAYS)},
        "SessionsTableName": {"Type": "String", "Default": _default("sessions_table")},
        "RateLimitTableName": {"Type": "String", "Default": _default("rate_limit_table")},
        "CutoverTableName": {"Type": "String", "Default": CUTOVER_TABLE},
    }


def conditions() -> dict[str, Any]:
    def given(param: str) -> dict[str, Any]:
        return {"Fn::Not": [{"Fn::Equals": [_ref(param), ""]}]}
    return {"HasCertificate": given("CertificateArn"), "HasAlarmEmail": given("AlarmEmail"),
            "HasAlarmTopic": given("AlarmTopicArn")}


def _table(spec: dict[str, Any], name_param: str, *, ttl: bool, pitr: bool) -> dict[str, Any]:
    props = {k: v for k, v in spec.items() if k != "TableName"}
    props["TableName"] = _ref(name_param)
    if ttl:
        props["TimeToLiveSpecification"] = {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    if pitr:
        props["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": True}
    props["SSESpecification"] = {"SSEEnabled": True}
    return {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain", "Properties": props}


def tables() -> dict[str, Any]:
    return {
        "SessionsTable": _table(sessions_table_spec("x"), "SessionsTableName", ttl=True,
                                pitr=True),
        "RateLimitTable": _table(rate_limit_table_spec("x"), "RateLimitTableName", ttl=True,
                                 pitr=False),
        "CutoverTable": _table(cutover_table_spec("x"), "CutoverTableName", ttl=False,
                               pitr=True),
    }


def network(plan: Plan) -> dict[str, Any]:
    ports = {c: dockerfile(c)["port"] for c in COLORS}
    # in-flight chats finish before a target leaves: the agent's deadline, plus a margin
    drain_s = int(_default("agent_deadline_s")) + 15
    out: dict[str, Any] = {
        "AlbSecurityGroup": {"Type": "AWS::EC2::SecurityGroup", "Properties": {
            "GroupDescription": "the load balancer: the internet on 80/443, ops on the test "
                                "listener",
            "VpcId": _ref("VpcId"),
            "SecurityGroupIngress": [
                {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "CidrIp": "0.0.0.0/0"},
                {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0"},
                {"IpProtocol": "tcp", "FromPort": TEST_PORT, "ToPort": TEST_PORT,
                 "CidrIp": _ref("TestListenerCidr")}]}},
        "TaskSecurityGroup": {"Type": "AWS::EC2::SecurityGroup", "Properties": {
            "GroupDescription": "the tasks: from the load balancer only",
            "VpcId": _ref("VpcId"),
            "SecurityGroupIngress": [
                {"IpProtocol": "tcp", "FromPort": ports[c], "ToPort": ports[c],
                 "SourceSecurityGroupId": _att("AlbSecurityGroup", "GroupId"),
                 "Description": f"{c} from the load balancer"} for c in COLORS]}},
        "LoadBalancer": {"Type": "AWS::ElasticLoadBalancingV2::LoadBalancer", "Properties": {
            "Name": _ref("Name"), "Type": "application", "Scheme": "internet-facing",
            "Subnets": _ref("PublicSubnetIds"),
            "SecurityGroups": [_att("AlbSecurityGroup", "GroupId")],
            "LoadBalancerAttributes": [
                {"Key": "idle_timeout.timeout_seconds", "Value": str(drain_s)},
                {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"}],
            "Tags": [{"Key": "chatbot:stack", "Value": _ref("Name")}]}},
    }
    for color in COLORS:
        out[f"{_cap(color)}TargetGroup"] = {
            "Type": "AWS::ElasticLoadBalancingV2::TargetGroup", "Properties": {
                "Name": _sub(f"${{Name}}-{color}"), "Protocol": "HTTP", "Port": ports[color],
                "VpcId": _ref("VpcId"), "TargetType": "ip",
                "HealthCheckProtocol": "HTTP", "HealthCheckPath": BY_NAME["health"].path,
                "HealthCheckPort": "traffic-port", "HealthCheckIntervalSeconds": 10,
                "HealthCheckTimeoutSeconds": 5, "HealthyThresholdCount": 2,
                "UnhealthyThresholdCount": 3, "Matcher": {"HttpCode": "200"},
                "TargetGroupAttributes": [
                    {"Key": "deregistration_delay.timeout_seconds", "Value": str(drain_s)}],
                "Tags": [{"Key": "chatbot:color", "Value": color}]}}

    def forward(color: str) -> list[dict[str, Any]]:
        return [{"Type": "forward", "TargetGroupArn": _ref(f"{_cap(color)}TargetGroup")}]

    out["ProductionListener"] = {"Type": "AWS::ElasticLoadBalancingV2::Listener", "Properties": {
        "LoadBalancerArn": _ref("LoadBalancer"),
        "Port": {"Fn::If": ["HasCertificate", 443, PRODUCTION_PORT]},
        "Protocol": {"Fn::If": ["HasCertificate", "HTTPS", "HTTP"]},
        "Certificates": {"Fn::If": ["HasCertificate",
                                    [{"CertificateArn": _ref("CertificateArn")}],
                                    _ref("AWS::NoValue")]},
        "SslPolicy": {"Fn::If": ["HasCertificate", "ELBSecurityPolicy-TLS13-1-2-2021-06",
                                 _ref("AWS::NoValue")]},
        "DefaultActions": forward("blue")}}
    out["HttpRedirectListener"] = {
        "Type": "AWS::ElasticLoadBalancingV2::Listener", "Condition": "HasCertificate",
        "Properties": {"LoadBalancerArn": _ref("LoadBalancer"), "Port": PRODUCTION_PORT,
                       "Protocol": "HTTP", "DefaultActions": [{"Type": "redirect",
                       "RedirectConfig": {"Protocol": "HTTPS", "Port": "443",
                                          "StatusCode": "HTTP_301"}}]}}
    out["TestListener"] = {"Type": "AWS::ElasticLoadBalancingV2::Listener", "Properties": {
        "LoadBalancerArn": _ref("LoadBalancer"), "Port": TEST_PORT, "Protocol": "HTTP",
        "DefaultActions": forward("green")}}
    out["CutoverRule"] = {"Type": "AWS::ElasticLoadBalancingV2::ListenerRule", "Properties": {
        "ListenerArn": _ref("ProductionListener"), "Priority": RULE_PRIORITY,
        "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/*"]}}],
        "Actions": [{"Type": "forward", "ForwardConfig": {
            "TargetGroups": [
                {"TargetGroupArn": _ref("BlueTargetGroup"), "Weight": 100},
                {"TargetGroupArn": _ref("GreenTargetGroup"), "Weight": 0}],
            "TargetGroupStickinessConfig": {"Enabled": plan.stickiness_s > 0, **(
                {"DurationSeconds": plan.stickiness_s} if plan.stickiness_s else {})}}}]}}
    return out


def _assume(service: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": _ref("AWS::AccountId")}}}]}


def ecs() -> dict[str, Any]:
    out: dict[str, Any] = {
        "Cluster": {"Type": "AWS::ECS::Cluster", "Properties": {
            "ClusterName": _ref("Name"),
            "ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]}},
        "ExecutionRole": {"Type": "AWS::IAM::Role", "Properties": {
            "Description": "pull the images, write the logs, read the API keys' secret",
            "AssumeRolePolicyDocument": _assume("ecs-tasks.amazonaws.com"),
            "ManagedPolicyArns": [_sub("arn:${AWS::Partition}:iam::aws:policy/service-role/"
                                       "AmazonECSTaskExecutionRolePolicy")],
            "Policies": [{"PolicyName": "api-keys", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                    "Resource": _ref("ApiKeysSecretArn")}]}}]}},
    }
    for color in COLORS:
        c = _cap(color)
        image = dockerfile(color)
        namespace = DEFAULT_NAMESPACES[color]
        out[f"{c}LogGroup"] = {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Delete",
                               "UpdateReplacePolicy": "Delete", "Properties": {
            "LogGroupName": _sub(f"/ecs/${{Name}}-{color}"),
            "RetentionInDays": _ref("LogRetentionDays")}}
        out[f"{c}TaskRole"] = {"Type": "AWS::IAM::Role", "Properties": {
            "Description": f"{color}'s AWS calls, exactly (deploy/infra/policy.py)",
            "AssumeRolePolicyDocument": _assume("ecs-tasks.amazonaws.com"),
            "Policies": [{"PolicyName": f"{color}-app", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": task_role_statements(namespace)}}]}}
        env = {
            "ENVIRONMENT": "prod", "AWS_REGION": _ref("AWS::Region"),
            "HOST": "0.0.0.0", "PORT": str(image["port"]),  # noqa: S104 (inside the task)
            "SESSIONS_TABLE": _ref("SessionsTableName"),
            "RATE_LIMIT_TABLE": _ref("RateLimitTableName"),
            "BEDROCK_AGENT_ID": _ref("AgentId"), "BEDROCK_AGENT_ALIAS_ID": _ref("AgentAliasId"),
            "METRICS_NAMESPACE": namespace,
            "APP_VERSION": _ref(f"{c}Image"),
            "WEB_CONCURRENCY": str(sizing.workers(color)),
            # behind the ALB (X-Forwarded-For in its default append mode): the client is the
            # hop the ALB appended, one from the right (docs/alb.md)
            "TRUST_FORWARDED_FOR": "true", "TRUSTED_PROXY_HOPS": "1",
        }
        out[f"{c}TaskDefinition"] = {"Type": "AWS::ECS::TaskDefinition", "Properties": {
            "Family": _sub(f"${{Name}}-{color}"), "Cpu": TASK_CPU, "Memory": TASK_MEMORY,
            "NetworkMode": "awsvpc", "RequiresCompatibilities": ["FARGATE"],
            "RuntimePlatform": {"OperatingSystemFamily": "LINUX",
                                "CpuArchitecture": "X86_64"},
            "ExecutionRoleArn": _att("ExecutionRole", "Arn"),
            "TaskRoleArn": _att(f"{c}TaskRole", "Arn"),
            "ContainerDefinitions": [{
                "Name": color, "Image": _ref(f"{c}Image"), "Essential": True,
                "PortMappings": [{"ContainerPort": image["port"], "Protocol": "tcp"}],
                "Environment": [{"Name": k, "Value": v} for k, v in env.items()],
                "Secrets": [{"Name": "API_KEYS", "ValueFrom": _ref("ApiKeysSecretArn")}],
                "HealthCheck": image["health"],
                "StopTimeout": 60,
                "LogConfiguration": {"LogDriver": "awslogs", "Options": {
                    "awslogs-group": _ref(f"{c}LogGroup"),
                    "awslogs-region": _ref("AWS::Region"),
                    "awslogs-stream-prefix": color}}}]}}
        out[f"{c}Service"] = {
            "Type": "AWS::ECS::Service",
            "DependsOn": ["ProductionListener", "TestListener", "CutoverRule"],
            "Properties": {
                "ServiceName": _sub(f"${{Name}}-{color}"), "Cluster": _ref("Cluster"),
                "TaskDefinition": _ref(f"{c}TaskDefinition"),
                "DesiredCount": _ref(f"{c}DesiredCount"), "LaunchType": "FARGATE",
                "DeploymentConfiguration": {
                    "MaximumPercent": 200, "MinimumHealthyPercent": 100,
                    "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}},
                "HealthCheckGracePeriodSeconds": 3 * image["health"]["StartPeriod"],
                "NetworkConfiguration": {"AwsvpcConfiguration": {
                    "Subnets": _ref("PrivateSubnetIds"),
                    "SecurityGroups": [_att("TaskSecurityGroup", "GroupId")],
                    "AssignPublicIp": "DISABLED"}},
                "LoadBalancers": [{"ContainerName": color, "ContainerPort": image["port"],
                                   "TargetGroupArn": _ref(f"{c}TargetGroup")}],
                "PropagateTags": "SERVICE", "EnableECSManagedTags": True,
                "Tags": [{"Key": "chatbot:color", "Value": color}]}}
    return out


def topics() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for level in ("Critical", "Warning"):
        out[f"{level}Topic"] = {"Type": "AWS::SNS::Topic", "Properties": {
            "TopicName": _sub(f"${{Name}}-{level.lower()}")}}
        out[f"{level}EmailSubscription"] = {
            "Type": "AWS::SNS::Subscription", "Condition": "HasAlarmEmail", "Properties": {
                "TopicArn": _ref(f"{level}Topic"), "Protocol": "email",
                "Endpoint": _ref("AlarmEmail")}}
    return out


def _actions(level: str) -> dict[str, Any]:
    actions: list[Any] = [_ref(f"{level}Topic")]
    if level == "Critical":
        actions.append({"Fn::If": ["HasAlarmTopic", _ref("AlarmTopicArn"), _ref("AWS::NoValue")]})
    return {"AlarmActions": actions, "OKActions": [_ref(f"{level}Topic")]}


def _stat(metric_id: str, namespace: str, name: str, dims: list[dict[str, Any]], stat: str,
          period: int) -> dict[str, Any]:
    return {"Id": metric_id, "ReturnData": False, "MetricStat": {
        "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dims},
        "Period": period, "Stat": stat}}


def alarm_specs(plan: Plan) -> dict[str, dict[str, Any]]:
    """Logical id -> alarm properties (without the actions' topics resolved)."""
    g, period = plan.gates, plan.analysis.interval_s
    common = {"EvaluationPeriods": EVALUATION_PERIODS, "DatapointsToAlarm": DATAPOINTS_TO_ALARM,
              "TreatMissingData": "notBreaching"}
    out: dict[str, dict[str, Any]] = {}
    for color in COLORS:
        c, ns = _cap(color), DEFAULT_NAMESPACES[color]
        out[f"{c}ErrorRateAlarm"] = {
            "AlarmName": _sub(f"${{Name}}-{color}-5xx-rate"), "level": "Critical",
            "AlarmDescription": f"{color}: 5xx / requests at the load balancer above the plan's "
            f"gates.error_rate.max ({g.error_rate.max:.2%}), judged from "
            f"{g.error_rate.min_requests} requests a period",
            "ComparisonOperator": "GreaterThanThreshold", "Threshold": g.error_rate.max,
            "Metrics": [
                _stat("errors", ELB_NAMESPACE, "HTTPCode_Target_5XX_Count", elb_dims(color),
                      "Sum", period),
                _stat("requests", ELB_NAMESPACE, "RequestCount", elb_dims(color), "Sum", period),
                {"Id": "rate", "ReturnData": True, "Label": f"{color} 5xx rate",
                 "Expression": f"IF(requests >= {g.error_rate.min_requests}, "
                               "errors / requests, 0)"}],
            **common}
        for name, gate in (("p99", g.p99), ("p90", g.p90)):
            out[f"{c}Latency{name.upper()}Alarm"] = {
                "AlarmName": _sub(f"${{Name}}-{color}-{name}-latency"),
                "level": "Critical" if name == "p99" else "Warning",
                "AlarmDescription": f"{color}: {name} of {CHAT_ENDPOINT} (the app's "
                f"RequestLatency, published as values and counts) above the plan's "
                f"gates.{name}.max_ms ({gate.max_ms:g} ms); fewer than {gate.min_requests} "
                "samples never alarm",
                "Namespace": ns, "MetricName": _metric("RequestLatency"),
                "Dimensions": [{"Name": app_metrics()["RequestLatency"][0],
                                "Value": CHAT_ENDPOINT}],
                "ExtendedStatistic": name, "Period": period, "Unit": "Milliseconds",
                "ComparisonOperator": "GreaterThanThreshold", "Threshold": gate.max_ms,
                "EvaluateLowSampleCountPercentile": "ignore", **common}
        out[f"{c}UnhealthyHostsAlarm"] = {
            "AlarmName": _sub(f"${{Name}}-{color}-unhealthy-hosts"), "level": "Critical",
            "AlarmDescription": f"{color}: unhealthy targets above the plan's "
            f"gates.load_balancer.max_unhealthy_hosts ({g.load_balancer.max_unhealthy_hosts})",
            "Namespace": ELB_NAMESPACE, "MetricName": "UnHealthyHostCount",
            "Dimensions": elb_dims(color), "Statistic": "Maximum", "Period": period,
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": g.load_balancer.max_unhealthy_hosts, **common}
        for metric, threshold in ECS_ALARMS.items():
            short = "cpu" if metric.startswith("CPU") else "memory"
            out[f"{c}{short.capitalize()}Alarm"] = {
                "AlarmName": _sub(f"${{Name}}-{color}-{short}"), "level": "Warning",
                "AlarmDescription": f"{color}: average {metric} above {threshold:g} % for 15 "
                "minutes: scale out (docs/operations.md)",
                "Namespace": "AWS/ECS", "MetricName": metric,
                "Dimensions": [{"Name": "ClusterName", "Value": _ref("Name")},
                               {"Name": "ServiceName", "Value": _sub(f"${{Name}}-{color}")}],
                "Statistic": "Average", "Period": 300, "EvaluationPeriods": 3,
                "DatapointsToAlarm": 3, "TreatMissingData": "notBreaching",
                "ComparisonOperator": "GreaterThanThreshold", "Threshold": threshold}
    out["AgentThrottlingAlarm"] = {
        "AlarmName": _sub("${Name}-agent-throttling"), "level": "Warning",
        "AlarmDescription": "Bedrock throttles InvokeAgent (both colors answer 503 "
        "AGENT_THROTTLED): ask for a quota increase or shed load",
        "Namespace": "AWS/Bedrock/Agents", "MetricName": "InvocationThrottles",
        "Dimensions": [{"Name": "Operation", "Value": "InvokeAgent"}],
        "Statistic": "Sum", "Period": period, "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": 0, **common}
    for table in ("SessionsTable", "RateLimitTable"):
        dims = [{"Name": "TableName", "Value": _ref(f"{table}Name")}]
        out[f"{table}ThrottlingAlarm"] = {
            "AlarmName": _sub(f"${{Name}}-{table.removesuffix('Table').lower()}-throttling"),
            "level": "Warning",
            "AlarmDescription": f"DynamoDB throttles {table} (both colors answer 503 "
            "STORE_THROTTLED)",
            "ComparisonOperator": "GreaterThanThreshold", "Threshold": 0,
            "Metrics": [
                _stat("reads", "AWS/DynamoDB", "ReadThrottleEvents", dims, "Sum", period),
                _stat("writes", "AWS/DynamoDB", "WriteThrottleEvents", dims, "Sum", period),
                {"Id": "throttles", "ReturnData": True, "Label": "throttle events",
                 "Expression": "reads + writes"}],
            **common}
    return out


def alarms(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for logical, spec in alarm_specs(plan).items():
        props = {k: v for k, v in spec.items() if k != "level"}
        props.update(_actions(spec["level"]))
        out[logical] = {"Type": "AWS::CloudWatch::Alarm", "Properties": props}
    return out


def _widget(x: int, y: int, title: str, metrics: list[list[Any]], *, stat: str = "Sum",
            period: int = 60, label: str = "", w: int = 12) -> dict[str, Any]:
    return {"type": "metric", "x": x, "y": y, "width": w, "height": 6, "properties": {
        "title": title, "region": "${AWS::Region}", "stat": stat, "period": period,
        "view": "timeSeries", "metrics": metrics, "yAxis": {"left": {"label": label}}}}


def dashboard_bodies(plan: Plan) -> dict[str, dict[str, Any]]:
    """Both dashboards (``${...}`` are Fn::Sub variables). Rates are per second over each
    period (``m / PERIOD(m)``), percentiles come from the raw samples, never an average."""
    period = plan.analysis.interval_s
    elb = ELB_NAMESPACE

    def tgm(color: str, metric: str, **opts: Any) -> list[Any]:
        return [elb, metric, "TargetGroup", f"${{{_cap(color)}Tg}}", "LoadBalancer", "${Lb}",
                opts]

    side: list[dict[str, Any]] = []
    for col, color in enumerate(COLORS):
        x, ns = 12 * col, DEFAULT_NAMESPACES[color]
        side += [
            _widget(x, 0, f"{color}: requests per second (load balancer)", [
                tgm(color, "RequestCount", id="r", visible=False),
                [{"expression": "r / PERIOD(r)", "label": "req/s", "id": "rps"}]],
                period=period, label="req/s"),
            _widget(x, 6, f"{color}: 5xx rate (load balancer)", [
                tgm(color, "HTTPCode_Target_5XX_Count", id="e", visible=False),
                tgm(color, "RequestCount", id="r", visible=False),
                [{"expression": "100 * e / r", "label": "5xx %", "id": "pct"}]],
                period=period, label="%"),
            _widget(x, 12, f"{color}: {CHAT_ENDPOINT} p90 / p99 (app)", [
                [ns, "RequestLatency", "Endpoint", CHAT_ENDPOINT, {"stat": "p90"}],
                [ns, "RequestLatency", "Endpoint", CHAT_ENDPOINT, {"stat": "p99"}]],
                period=period, label="ms"),
            _widget(x, 18, f"{color}: healthy / unhealthy targets", [
                tgm(color, "HealthyHostCount"), tgm(color, "UnHealthyHostCount")],
                stat="Maximum", period=period)]
    ops = [
        _widget(0, 0, "requests per second, both colors", [
            tgm("blue", "RequestCount", id="b", visible=False),
            tgm("green", "RequestCount", id="g", visible=False),
            [{"expression": "b / PERIOD(b)", "label": "blue req/s", "id": "brps"}],
            [{"expression": "g / PERIOD(g)", "label": "green req/s", "id": "grps"}]],
            period=period, label="req/s"),
        _widget(12, 0, "target response time p99", [
            tgm("blue", "TargetResponseTime", stat="p99"),
            tgm("green", "TargetResponseTime", stat="p99")], period=period, label="s"),
        _widget(0, 6, "ECS CPU and memory (average, %)", [
            ["AWS/ECS", m, "ClusterName", "${Name}", "ServiceName", f"${{Name}}-{c}"]
            for c in COLORS for m in ECS_ALARMS], stat="Average", period=300, label="%"),
        _widget(12, 6, "DynamoDB throttle events and agent throttles", [
            ["AWS/DynamoDB", m, "TableName", f"${{{t}}}"]
            for t in ("SessionsTableName", "RateLimitTableName")
            for m in ("ReadThrottleEvents", "WriteThrottleEvents")] + [
            ["AWS/Bedrock/Agents", "InvocationThrottles", "Operation", "InvokeAgent"]],
            period=period),
        _widget(0, 12, "load balancer 5xx (its own, per load balancer)", [
            [elb, "HTTPCode_ELB_5XX_Count", "LoadBalancer", "${Lb}"]], period=period),
        _widget(12, 12, "app 5xx per endpoint", [
            [{"expression": f"SEARCH('{{{ns},Endpoint}} MetricName=\"ErrorCount\"', 'Sum', "
              f"{period})", "label": color, "id": f"s{color}"}]
            for color, ns in DEFAULT_NAMESPACES.items()], period=period),
    ]
    return {"OperationsDashboard": {"widgets": ops}, "BlueGreenDashboard": {"widgets": side}}


def dashboards(plan: Plan) -> dict[str, Any]:
    variables = {"Lb": LB_DIM, "BlueTg": tg_dim("blue"), "GreenTg": tg_dim("green")}
    out: dict[str, Any] = {}
    for logical, body in dashboard_bodies(plan).items():
        suffix = "operations" if logical.startswith("Operations") else "blue-green"
        out[logical] = {"Type": "AWS::CloudWatch::Dashboard", "Properties": {
            "DashboardName": _sub(f"${{Name}}-{suffix}"),
            "DashboardBody": {"Fn::Sub": [json.dumps(body, separators=(",", ":")),
                                          variables]}}}
    return out


def outputs() -> dict[str, Any]:
    def out(value: Any, text: str) -> dict[str, Any]:
        return {"Value": value, "Description": text}
    o = {
        "LoadBalancerArn": out(_ref("LoadBalancer"), "the ALB"),
        "LoadBalancerDns": out(_att("LoadBalancer", "DNSName"), "production and test listeners"),
        "ProductionListenerArn": out(_ref("ProductionListener"), "CUTOVER_LISTENER_ARN"),
        "TestListenerArn": out(_ref("TestListener"), "green before any weight (parity)"),
        "CutoverRuleArn": out(_ref("CutoverRule"), "CUTOVER_RULE_ARN: the weighted rule"),
        "ClusterName": out(_ref("Cluster"), "the ECS cluster"),
        "CutoverTableName": out(_ref("CutoverTable"), "CUTOVER_TABLE"),
        "SessionsTableName": out(_ref("SessionsTable"), "SESSIONS_TABLE"),
        "RateLimitTableName": out(_ref("RateLimitTable"), "RATE_LIMIT_TABLE"),
        "CriticalTopicArn": out(_ref("CriticalTopic"), "CUTOVER_TOPIC_ARN"),
        "WarningTopicArn": out(_ref("WarningTopic"), "warnings"),
    }
    for color in COLORS:
        c = _cap(color)
        o[f"{c}TargetGroupArn"] = out(_ref(f"{c}TargetGroup"), f"{color.upper()}_TARGET_GROUP_ARN")
        o[f"{c}ServiceName"] = out(_att(f"{c}Service", "Name"), f"{color}'s ECS service")
        o[f"{c}TaskDefinitionArn"] = out(_ref(f"{c}TaskDefinition"), "the stack's revision")
    return o


def build(plan: Plan | None = None) -> dict[str, Any]:
    plan = plan or load_plan(DEFAULT_PLAN)
    resources: dict[str, Any] = {}
    for part in (tables(), network(plan), ecs(), topics(), alarms(plan), dashboards(plan)):
        resources.update(part)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "chatbot blue/green on ECS Fargate behind an ALB (generated by "
                       "deploy/infra/template.py; do not edit by hand)",
        "Metadata": {"chatbot:cutover-rule-tag": f"{ROLE_TAG['Key']}={ROLE_TAG['Value']}",
                     "chatbot:plan": plan.name},
        "Parameters": parameters(),
        "Conditions": conditions(),
        "Resources": resources,
        "Outputs": outputs(),
    }


class _NoAliases(yaml.SafeDumper):
    """CloudFormation rejects YAML aliases (cfn-lint W1101): every shared piece written out."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(plan: Plan | None = None) -> str:
    head = ("# GENERATED by deploy/infra/template.py from shared/, docker/ and the cutover plan.\n"
            "# Do not edit: python -m deploy stack template --write\n")
    return head + yaml.dump(build(plan), Dumper=_NoAliases, sort_keys=False, width=100)


def load() -> dict[str, Any]:
    """The committed template (the file ops deploy)."""
    return yaml.safe_load(TEMPLATE_PATH.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def template_body() -> str:
    return TEMPLATE_PATH.read_text(encoding="utf-8")


__all__ = ["TEMPLATE_PATH", "alarm_specs", "app_metrics", "build", "dashboard_bodies",
           "dockerfile", "load", "render"]

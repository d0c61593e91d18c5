"""The template deployed on moto server's CloudFormation through ``stack apply`` (a change
set), read back through the AWS APIs and compared with what the apps and devstack create for
themselves; and the policy test on the roles moto stores."""

from __future__ import annotations

import ast
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from deploy.infra import stack as st
from deploy.infra.policy import BOTOCORE, allows, api_name, app_calls
from deploy.infra.template import dockerfile
from devstack.loadbalancer import PRODUCTION_PORT, RULE_PRIORITY, TEST_PORT, create_local_alb
from devstack.stack import DevStack
from shared.sessions import USER_INDEX
from shared.settings import DEFAULT_NAMESPACES

# moto skips AWS::CloudWatch::Alarm (and SNS::Subscription) with a UserWarning, inside its
# server thread; the alarms are checked in the template (test_template.py)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("infra-moto"),
              pytest.mark.filterwarnings("ignore:Tried to parse .* by moto's CloudFormation"
                                         ":UserWarning")]


@dataclass
class Deployed:
    name: str
    outputs: dict[str, str]
    params: dict[str, str]
    printed: list[str]

    def client(self, service: str) -> Any:
        return self._clients[service]

    _clients: dict[str, Any]


def _clients(url: str) -> dict[str, Any]:
    kw = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    return {s: boto3.client(s, **kw) for s in  # type: ignore[call-overload]
            ("cloudformation", "elbv2", "ec2", "dynamodb", "ecs", "sns", "cloudwatch", "iam")}


@pytest.fixture(scope="module")
def deployed(stack: DevStack) -> Iterator[Deployed]:
    clients = _clients(stack.moto_url)
    name = f"cb{uuid.uuid4().hex[:8]}"
    params = {**st.DEVSTACK_PARAMS, **st.devstack_network(clients["ec2"], f"{name}-net"),
              "Name": name, "SessionsTableName": f"{name}_sessions",
              "RateLimitTableName": f"{name}_rate_limits", "CutoverTableName": f"{name}_cutovers"}
    printed: list[str] = []
    out = st.apply(clients["cloudformation"], clients["elbv2"], name, params,
                   printer=printed.append)
    yield Deployed(name, out, params, printed, clients)
    clients["cloudformation"].delete_stack(StackName=name)


def test_apply_printed_the_change_set_and_the_outputs(deployed: Deployed) -> None:
    text = "\n".join(deployed.printed)
    assert "CREATE" in text
    assert "Add     CutoverRule" in text
    assert f"stack {deployed.name}: CREATE_COMPLETE" in text
    assert {"CutoverRuleArn", "BlueTargetGroupArn", "TestListenerArn"} <= set(deployed.outputs)


def _table_shape(desc: dict[str, Any]) -> dict[str, Any]:
    return {"keys": desc["KeySchema"],
            "attributes": sorted(desc["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
            "indexes": sorted((i["IndexName"], json.dumps(i["KeySchema"]),
                               json.dumps(i["Projection"], sort_keys=True))
                              for i in desc.get("GlobalSecondaryIndexes", [])),
            "billing": desc.get("BillingModeSummary", {}).get("BillingMode")}


def test_tables_match_the_ones_devstack_creates(deployed: Deployed, stack: DevStack) -> None:
    ddb = deployed.client("dynamodb")
    for mine, local in (("sessions", "chat_sessions"), ("rate_limits", "chat_rate_limits"),
                        ("cutovers", "chat_cutovers")):
        got = ddb.describe_table(TableName=f"{deployed.name}_{mine}")["Table"]
        want = ddb.describe_table(TableName=local)["Table"]
        assert _table_shape(got) == _table_shape(want), mine
    sessions = ddb.describe_table(TableName=f"{deployed.name}_sessions")["Table"]
    assert [i["IndexName"] for i in sessions["GlobalSecondaryIndexes"]] == [USER_INDEX]


def test_load_balancer_matches_the_rehearsal_alb(deployed: Deployed, stack: DevStack) -> None:
    elbv2 = deployed.client("elbv2")
    local = create_local_alb(stack.moto_url, {"blue": "http://127.0.0.1:18001",
                                              "green": "http://127.0.0.1:18002"},
                             name=f"l{deployed.name}")
    out = deployed.outputs
    listeners = {lst["Port"]: lst for lst in elbv2.describe_listeners(
        LoadBalancerArn=out["LoadBalancerArn"])["Listeners"]}
    assert set(listeners) == {PRODUCTION_PORT, TEST_PORT}
    assert listeners[TEST_PORT]["DefaultActions"][0]["TargetGroupArn"] == \
        out["GreenTargetGroupArn"]
    rule = elbv2.describe_rules(RuleArns=[out["CutoverRuleArn"]])["Rules"][0]
    local_rule = elbv2.describe_rules(RuleArns=[local.rule_arn])["Rules"][0]
    assert rule["Priority"] == local_rule["Priority"] == str(RULE_PRIORITY)
    assert rule["Conditions"] == local_rule["Conditions"]
    assert rule["Actions"] == [{"Type": "forward", "ForwardConfig": {"TargetGroups": [
        {"TargetGroupArn": out["BlueTargetGroupArn"], "Weight": 100},
        {"TargetGroupArn": out["GreenTargetGroupArn"], "Weight": 0}],
        "TargetGroupStickinessConfig": {"Enabled": False}}}]
    tags = elbv2.describe_tags(ResourceArns=[out["CutoverRuleArn"], local.rule_arn])
    assert tags["TagDescriptions"][0]["Tags"] == tags["TagDescriptions"][1]["Tags"]
    shape = ("Protocol", "TargetType", "HealthCheckProtocol", "HealthCheckPath",
             "HealthCheckPort", "Matcher")
    for color in ("blue", "green"):
        tg = elbv2.describe_target_groups(
            TargetGroupArns=[out[f"{color.capitalize()}TargetGroupArn"]])["TargetGroups"][0]
        ltg = elbv2.describe_target_groups(
            TargetGroupArns=[local.target_groups[color]])["TargetGroups"][0]
        assert {k: tg[k] for k in shape} == {k: ltg[k] for k in shape}
        assert tg["TargetGroupName"].endswith(color)  # how the controller tells the colors
        assert tg["Port"] == dockerfile(color)["port"]


def test_the_cutover_controller_finds_the_stack_rule_by_its_listener(deployed: Deployed) -> None:
    from deploy.cli import target_groups
    from deploy.settings import DeploySettings
    from deploy.traffic import find_rule

    elbv2 = deployed.client("elbv2")
    out = deployed.outputs
    rule = find_rule(elbv2, rule_arn=None, listener_arn=out["ProductionListenerArn"],
                     tag=("chatbot:role", "cutover"))
    assert rule == out["CutoverRuleArn"]
    assert target_groups(elbv2, rule, DeploySettings()) == {
        "blue": out["BlueTargetGroupArn"], "green": out["GreenTargetGroupArn"]}


def test_cluster_task_definitions_topics_dashboards(deployed: Deployed) -> None:
    ecs, out = deployed.client("ecs"), deployed.outputs
    assert ecs.describe_clusters(clusters=[out["ClusterName"]])["clusters"][0]["status"] == \
        "ACTIVE"
    for color in ("blue", "green"):
        td = ecs.describe_task_definition(
            taskDefinition=out[f"{color.capitalize()}TaskDefinitionArn"])["taskDefinition"]
        # moto's CloudFormation keeps Family, ContainerDefinitions, Volumes and Memory only (Cpu,
        # NetworkMode, the roles and RequiresCompatibilities: test_template.py checks them)
        assert td["memory"] == "2048"
        container = td["containerDefinitions"][0]
        assert container["image"] == deployed.params[f"{color.capitalize()}Image"]
        assert container["secrets"][0]["name"] == "API_KEYS"
        assert container["healthCheck"]["command"] == dockerfile(color)["health"]["Command"]
        svc = ecs.describe_services(cluster=out["ClusterName"],
                                    services=[f"{deployed.name}-{color}"])["services"][0]
        assert svc["taskDefinition"] == td["taskDefinitionArn"]
        assert svc["desiredCount"] == 2
    topics = {t["TopicArn"] for t in deployed.client("sns").list_topics()["Topics"]}
    assert {out["CriticalTopicArn"], out["WarningTopicArn"]} <= topics
    cw = deployed.client("cloudwatch")
    body = json.loads(cw.get_dashboard(DashboardName=f"{deployed.name}-blue-green")
                      ["DashboardBody"])
    lb_dim = out["LoadBalancerArn"].split("loadbalancer/", 1)[1]
    tg_dim = out["GreenTargetGroupArn"].split(":")[5]
    text = json.dumps(body)
    assert lb_dim in text
    assert tg_dim in text
    assert "${" not in text
    assert cw.get_dashboard(DashboardName=f"{deployed.name}-operations")["DashboardBody"]


def _role_document(iam: Any, color: str, name: str) -> dict[str, Any]:
    role = next(r for r in iam.list_roles()["Roles"]
                if r["RoleName"].startswith(f"{name}-{color.capitalize()}TaskRole"))
    policy = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=f"{color}-app")
    doc = policy["PolicyDocument"]
    if isinstance(doc, dict):
        return doc
    try:
        return dict(json.loads(doc))
    except json.JSONDecodeError:  # moto stores a CloudFormation policy as a Python repr
        return dict(ast.literal_eval(doc))


def test_every_app_call_is_allowed_by_its_task_role_and_nothing_more(deployed: Deployed) -> None:
    ddb, iam = deployed.client("dynamodb"), deployed.client("iam")
    arn = {f"{s}_table": ddb.describe_table(TableName=f"{deployed.name}_{t}")["Table"]["TableArn"]
           for s, t in (("sessions", "sessions"), ("rate_limit", "rate_limits"))}
    alias = "arn:aws:bedrock:us-east-1:123456789012:agent-alias/DEVAGENT01/DEVALIAS01"
    calls = app_calls()
    assert {(c.service, c.operation) for c in calls} >= {
        ("dynamodb", "put_item"), ("dynamodb", "query"), ("bedrock", "invoke_agent"),
        ("cloudwatch", "put_metric_data"), ("bedrock", "list_sessions")}
    for color, namespace in DEFAULT_NAMESPACES.items():
        doc = _role_document(iam, color, deployed.name)
        granted = {a for s in doc["Statement"] for a in
                   (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
        assert granted == {c.action for c in calls}, "the role grants more (or less)"
        assert not any("*" in a for a in granted)
        for call in calls:
            if call.table:
                resource = arn[call.table] + (f"/index/{USER_INDEX}" if call.index else "")
            elif call.action == "bedrock:InvokeAgent":
                resource = alias
            else:
                resource = "*"
            ctx = {"cloudwatch:namespace": namespace}
            assert allows(doc, call.action, resource, ctx), (color, call)
        # nothing more: the other color's namespace, the cutover table, another alias
        other = next(ns for c, ns in DEFAULT_NAMESPACES.items() if c != color)
        assert not allows(doc, "cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": other})
        cutover = ddb.describe_table(TableName=f"{deployed.name}_cutovers")["Table"]["TableArn"]
        assert not allows(doc, "dynamodb:GetItem", cutover)
        assert not allows(doc, "dynamodb:Scan", arn["sessions_table"])
        assert not allows(doc, "dynamodb:Query", arn["sessions_table"])  # the index only
        assert not allows(doc, "dynamodb:PutItem", arn["rate_limit_table"])
        assert not allows(doc, "bedrock:InvokeAgent", alias.replace("DEVALIAS01", "OTHER"))


def test_policy_actions_are_real_operations() -> None:
    for call in app_calls():
        assert api_name(call.service, call.operation) == call.action.split(":", 1)[1]
    assert set(BOTOCORE) == {"dynamodb", "cloudwatch", "bedrock"}


def test_plan_changes_nothing_and_an_update_goes_through_a_change_set(
        deployed: Deployed) -> None:
    cfn, ecs = deployed.client("cloudformation"), deployed.client("ecs")
    printed: list[str] = []
    changed = {**deployed.params, "GreenDesiredCount": "3"}
    st.plan(cfn, deployed.name, changed, printer=printed.append)
    svc = ecs.describe_services(cluster=deployed.outputs["ClusterName"],
                                services=[f"{deployed.name}-green"])["services"][0]
    assert svc["desiredCount"] == 2
    assert any("UPDATE" in line for line in printed)
    st.apply(cfn, deployed.client("elbv2"), deployed.name, changed, printer=printed.append)
    svc = ecs.describe_services(cluster=deployed.outputs["ClusterName"],
                                services=[f"{deployed.name}-green"])["services"][0]
    assert svc["desiredCount"] == 3


def test_a_rule_change_mid_cutover_is_refused(deployed: Deployed) -> None:
    elbv2, out = deployed.client("elbv2"), deployed.outputs
    change = st.ChangeSet("x", deployed.name, "UPDATE", "CREATE_COMPLETE", changes=[
        {"ResourceChange": {"Action": "Modify", "LogicalResourceId": "CutoverRule"}}])
    assert change.touches("CutoverRule")
    elbv2.modify_rule(RuleArn=out["CutoverRuleArn"], Actions=[{"Type": "forward",
                      "ForwardConfig": {"TargetGroups": [
                          {"TargetGroupArn": out["BlueTargetGroupArn"], "Weight": 90},
                          {"TargetGroupArn": out["GreenTargetGroupArn"], "Weight": 10}]}}])
    try:
        assert sorted(st.rule_weights(elbv2, out["CutoverRuleArn"]).values()) == [10, 90]
    finally:
        elbv2.modify_rule(RuleArn=out["CutoverRuleArn"], Actions=[{"Type": "forward",
                          "ForwardConfig": {"TargetGroups": [
                              {"TargetGroupArn": out["BlueTargetGroupArn"], "Weight": 100},
                              {"TargetGroupArn": out["GreenTargetGroupArn"], "Weight": 0}]}}])


# --- release on moto's ECS: what it can show (see docs/operations.md for what it cannot) -----

def _service(ecs: Any, deployed: Deployed, monkeypatch: pytest.MonkeyPatch, name: str) -> str:
    """A service moto reports as rolled out (MOTO_ECS_SERVICE_RUNNING = its desired count)."""
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "2")  # = desiredCount
    ecs.create_service(cluster=deployed.outputs["ClusterName"], serviceName=name,
                       taskDefinition=deployed.outputs["GreenTaskDefinitionArn"],
                       desiredCount=2)
    return name


def test_release_registers_a_revision_and_smoke_passes(
        deployed: Deployed, monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.infra.release import release

    ecs = deployed.client("ecs")
    svc = _service(ecs, deployed, monkeypatch, f"{deployed.name}-rel-ok")
    lines: list[str] = []
    result = release(ecs, cluster=deployed.outputs["ClusterName"], service=svc,
                     container="green", image="green:2", smoke=lambda: (True, "12/12"),
                     timeout_s=5, poll_s=0.1, printer=lines.append)
    assert result.ok, lines
    assert result.exit_code == 0
    new = ecs.describe_task_definition(taskDefinition=result.new_revision)["taskDefinition"]
    old = ecs.describe_task_definition(taskDefinition=result.previous_revision)["taskDefinition"]
    assert new["revision"] == old["revision"] + 1
    assert new["containerDefinitions"][0]["image"] == "green:2"
    strip = {k: v for k, v in new["containerDefinitions"][0].items() if k != "image"}
    assert strip == {k: v for k, v in old["containerDefinitions"][0].items() if k != "image"}
    got = ecs.describe_services(cluster=deployed.outputs["ClusterName"], services=[svc])
    assert got["services"][0]["taskDefinition"] == result.new_revision


def test_a_failed_smoke_test_rolls_back_to_the_previous_revision(
        deployed: Deployed, monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.infra.release import release

    ecs = deployed.client("ecs")
    svc = _service(ecs, deployed, monkeypatch, f"{deployed.name}-rel-bad")
    result = release(ecs, cluster=deployed.outputs["ClusterName"], service=svc,
                     container="green", image="green:broken", smoke=lambda: (False, "3 failed"),
                     timeout_s=5, poll_s=0.1, printer=lambda _: None)
    assert not result.ok
    assert result.rolled_back
    assert result.exit_code == 3
    assert "smoke test failed" in result.reason
    got = ecs.describe_services(cluster=deployed.outputs["ClusterName"], services=[svc])
    assert got["services"][0]["taskDefinition"] == result.previous_revision


def test_a_rollout_that_never_settles_is_bounded_and_rolled_back(deployed: Deployed) -> None:
    """The stack's own service: moto leaves its deployment IN_PROGRESS (nothing runs)."""
    from deploy.infra.release import release

    ecs, cluster = deployed.client("ecs"), deployed.outputs["ClusterName"]
    svc = f"{deployed.name}-blue"
    before = ecs.describe_services(cluster=cluster, services=[svc])["services"][0]
    result = release(ecs, cluster=cluster, service=svc, container="blue", image="blue:2",
                     smoke=None, timeout_s=0.3, poll_s=0.1, printer=lambda _: None)
    assert not result.ok
    assert "not steady after" in result.reason
    assert not result.rolled_back  # the rollback cannot settle on moto either: said so
    after = ecs.describe_services(cluster=cluster, services=[svc])["services"][0]
    assert after["taskDefinition"] == before["taskDefinition"]

"""The controller against devstack's real APIs (ELBv2, DynamoDB, CloudWatch, SNS on moto
server), with no traffic: the decisions that need no load. Load-driven decisions are the
rehearsal's (tests/deploy/rehearsal/test_run.py, ``make cutover``)."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from deploy.analysis import CloudWatchSource
from deploy.controller import Controller, PreTrafficResult
from deploy.notify import Notifier
from deploy.plan import Plan, parse_plan
from deploy.state import StateStore, read_audit
from deploy.traffic import ALL_BLUE, ElbTraffic, Weights
from devstack.loadbalancer import create_local_alb, elbv2_client
from devstack.stack import DevStack
from shared.sessions import CUTOVER_TABLE

pytestmark = pytest.mark.integration


def plan(**changes: Any) -> Plan:
    base: dict[str, Any] = {
        "name": "test", "steps": [{"weight": 10, "bake_s": 0}, {"weight": 100, "bake_s": 0}],
        "analysis": {"interval_s": 1, "metrics_delay_s": 0, "inconclusive_limit": 2,
                     "error_limit": 2},
        "pre_traffic": {"parity": False}, "lease_s": 3}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return parse_plan(base)


class Setup:
    def __init__(self, stack: DevStack, tmp: Path, the_plan: Plan,
                 parity: PreTrafficResult | None = None) -> None:
        url = stack.moto_url
        self.alb = create_local_alb(url, {"blue": "http://127.0.0.1:18011",
                                          "green": "http://127.0.0.1:18012"},
                                    name=f"c{uuid.uuid4().hex[:10]}")
        self.cw = boto3.client("cloudwatch", endpoint_url=url, region_name="us-east-1")
        self.sns = boto3.client("sns", endpoint_url=url, region_name="us-east-1")
        self.sqs = boto3.client("sqs", endpoint_url=url, region_name="us-east-1")
        topic = self.sns.create_topic(Name=f"cutover-{uuid.uuid4().hex[:8]}")["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
                           Attributes={"RawMessageDelivery": "true"})
        self.traffic = ElbTraffic(elbv2_client(url), self.alb.rule_arn, self.alb.target_groups)
        ns = uuid.uuid4().hex[:8]
        source = CloudWatchSource(self.cw, {"blue": f"T/{ns}/blue", "green": f"T/{ns}/green"},
                                  load_balancer=(self.alb.load_balancer_arn,
                                                 self.alb.target_groups))
        fast = Config(retries={"max_attempts": 2, "mode": "standard"})  # a fault fails fast
        self.store = StateStore(boto3.client("dynamodb", endpoint_url=url, config=fast,
                                             region_name="us-east-1"), CUTOVER_TABLE)
        self.lines: list[str] = []
        self.controller = Controller(
            the_plan, self.traffic, source, self.store, Notifier(self.sns, topic), tmp,
            parity=(lambda: parity) if parity else None, printer=self.lines.append,
            tick_s=0.05)

    def notifications(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=0).get("Messages", [])
            if not got:
                return out
            out += [json.loads(m["Body"]) for m in got]

    def audit(self) -> list[dict[str, Any]]:
        assert self.controller.audit is not None
        return read_audit(self.controller.audit.path)


def test_a_failing_parity_suite_blocks_the_cutover_and_moves_no_traffic(
        stack: DevStack, tmp_path: Path) -> None:
    failed = PreTrafficResult(False, {"failed_cases": 3, "cases": 120}, "3 failing cases")
    s = Setup(stack, tmp_path, plan(pre_traffic={"parity": True}), parity=failed)
    outcome = s.controller.start()
    assert (outcome.state, outcome.exit_code) == ("blocked", 1)
    assert "parity failed" in outcome.reason
    assert s.traffic.weights() == ALL_BLUE
    assert not [e for e in s.audit() if e["event"] == "weights"]
    record = s.store.get(outcome.cutover_id)
    assert record is not None
    assert record.state == "blocked"
    assert record.pre_traffic["parity"] == {"failed_cases": 3, "cases": 120}
    assert s.store.lock(s.alb.rule_arn) is None  # released
    events = [n["event"] for n in s.notifications()]
    assert events == ["started", "blocked"]


def test_pre_traffic_without_parity_targets_fails_closed(stack: DevStack, tmp_path: Path
                                                         ) -> None:
    s = Setup(stack, tmp_path, plan(pre_traffic={"parity": True}))
    outcome = s.controller.start()
    assert outcome.state == "blocked"
    assert "PARITY_BLUE_URL" in outcome.reason


def test_an_alarm_rolls_back_at_once(stack: DevStack, tmp_path: Path) -> None:
    name = f"alarm-{uuid.uuid4().hex[:8]}"
    s = Setup(stack, tmp_path, plan(alarms=[name],
                                    steps=[{"weight": 10, "bake_s": 30},
                                           {"weight": 100, "bake_s": 0}]))
    s.cw.put_metric_alarm(AlarmName=name, Namespace="AWS/ApplicationELB",
                          MetricName="HTTPCode_Target_5XX_Count", Statistic="Sum", Period=60,
                          EvaluationPeriods=1, Threshold=1,
                          ComparisonOperator="GreaterThanThreshold")

    def fire(event: dict[str, Any]) -> None:
        if event["event"] == "weights":
            s.cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="test")

    s.controller.listeners.append(fire)
    outcome = s.controller.start()
    assert (outcome.state, outcome.exit_code) == ("rolled_back", 3)
    assert name in outcome.reason
    assert s.traffic.weights() == ALL_BLUE
    audit = s.audit()
    windows = [e for e in audit if e["event"] == "window"]
    assert [w["verdict"] for w in windows] == ["alarm"]  # the first window, not a later one
    rolled = next(e for e in audit if e["event"] == "rolled_back")
    assert rolled["rollback_s"] >= 0
    assert rolled["weights"] == {"blue": 100, "green": 0}
    events = [n["event"] for n in s.notifications()]
    assert events == ["started", "pre_traffic", "weights", "rollback", "rolled_back"]


def test_no_data_holds_and_never_passes(stack: DevStack, tmp_path: Path) -> None:
    s = Setup(stack, tmp_path, plan())
    outcome = s.controller.start()
    assert (outcome.state, outcome.exit_code) == ("paused", 4)
    audit = s.audit()
    assert [e["verdict"] for e in audit if e["event"] == "window"] == ["inconclusive"] * 2
    assert not [e for e in audit if e["event"] == "step_passed"]
    assert s.traffic.weights() == Weights(90, 10)  # a pause leaves the weights where they are
    assert "resume --id" in s.lines[-1]


def test_unreadable_metrics_roll_back_after_the_error_limit(stack: DevStack, tmp_path: Path
                                                            ) -> None:
    # an alarm the plan names but CloudWatch does not have: every window's read fails
    s = Setup(stack, tmp_path, plan(alarms=[f"missing-{uuid.uuid4().hex[:6]}"]))
    outcome = s.controller.start()
    assert outcome.state == "rolled_back"
    assert "unreadable" in outcome.reason
    assert [e["event"] for e in s.audit()].count("window_error") == 2
    assert s.traffic.weights() == ALL_BLUE


def test_ctrl_c_pauses_and_resume_continues_from_the_same_step(stack: DevStack,
                                                                tmp_path: Path) -> None:
    long_step = plan(steps=[{"weight": 10, "bake_s": 60}, {"weight": 100, "bake_s": 0}])
    s = Setup(stack, tmp_path, long_step)

    def interrupt(event: dict[str, Any]) -> None:
        if event["event"] == "weights":
            threading.Timer(0.3, s.controller.interrupted.set).start()

    s.controller.listeners.append(interrupt)
    outcome = s.controller.start()
    assert (outcome.state, outcome.exit_code) == ("paused", 130)
    assert s.traffic.weights() == Weights(90, 10)
    assert s.store.lock(s.alb.rule_arn) is None
    # a second start is refused: a cutover is open on this rule
    refused = Controller(long_step, s.traffic, s.controller.source, s.store,
                         s.controller.notifier, tmp_path, printer=s.lines.append).start()
    assert refused.exit_code == 5
    assert outcome.cutover_id in refused.reason
    # resume with a plan that no longer holds (bake 0): continues at step 1, then step 2
    s.controller.interrupted.clear()
    s.controller.listeners.clear()
    s.controller.plan = plan(steps=[{"weight": 10, "bake_s": 0}, {"weight": 100, "bake_s": 0}],
                             analysis={"inconclusive_limit": 1})
    resumed = s.controller.resume(outcome.cutover_id)
    audit = s.audit()
    event = next(e for e in audit if e["event"] == "resumed")
    assert event["step"] == 0
    assert event["was"] == "paused"
    assert resumed.state == "paused"  # no data here either: held again, at the same step


def test_an_operator_can_promote_or_abort_a_running_cutover(stack: DevStack,
                                                             tmp_path: Path) -> None:
    baking = plan(steps=[{"weight": 10, "bake_s": 60}, {"weight": 50, "bake_s": 60},
                         {"weight": 100, "bake_s": 0}], analysis={"inconclusive_limit": 100})
    for request, state, weights in (("promote", "completed", Weights(0, 100)),
                                    ("abort", "aborted", ALL_BLUE)):
        s = Setup(stack, tmp_path / request, baking)

        def ask(event: dict[str, Any], s: Setup = s, request: str = request) -> None:
            if event["event"] == "weights" and event["weights"]["green"] == 10:
                threading.Timer(0.2, s.store.request, (event["cutover_id"], request)).start()

        s.controller.listeners.append(ask)
        outcome = s.controller.start()
        assert outcome.state == state, outcome
        assert s.traffic.weights() == weights
        audit = s.audit()
        assert [e["request"] for e in audit if e["event"] == "requested"] == [request]
        # acted on while step 1 baked: no step passed, far fewer windows than its bake
        assert not [e for e in audit if e["event"] == "step_passed"]
        assert len([e for e in audit if e["event"] == "window"]) < 30


def test_a_state_table_that_fails_mid_cutover_rolls_back(stack: DevStack, tmp_path: Path
                                                         ) -> None:
    s = Setup(stack, tmp_path, plan())

    def break_the_table(event: dict[str, Any]) -> None:
        if event["event"] == "pre_traffic":  # the next record write fails, every attempt
            httpx.post(stack.moto_url + "/_faults/config",
                       json={"dynamodb": {"PutItem": "internal"}}, timeout=5).raise_for_status()

    s.controller.listeners.append(break_the_table)
    try:
        outcome = s.controller.start()
    finally:
        httpx.delete(stack.moto_url + "/_faults/config", timeout=5).raise_for_status()
    assert outcome.state == "rolled_back"
    assert "InternalServerError" in outcome.reason
    assert s.traffic.weights() == ALL_BLUE
    assert not [e for e in s.audit() if e["event"] == "weights"]

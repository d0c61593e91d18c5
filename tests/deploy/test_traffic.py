"""The ELBv2 backend on moto server: weights written and read back, a mismatch caught."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from deploy.cli import load_balancer_arn, target_groups
from deploy.settings import DeploySettings
from deploy.traffic import ALL_BLUE, ElbTraffic, TrafficError, Weights, find_rule
from devstack.loadbalancer import LocalAlb, create_local_alb, elbv2_client
from devstack.stack import DevStack

pytestmark = pytest.mark.integration


@pytest.fixture
def alb(stack: DevStack) -> tuple[Any, LocalAlb]:
    name = f"t{uuid.uuid4().hex[:10]}"
    made = create_local_alb(stack.moto_url, {"blue": "http://127.0.0.1:18001",
                                             "green": "http://127.0.0.1:18002"}, name=name)
    return elbv2_client(stack.moto_url), made


def test_weights_are_written_and_read_back(alb: tuple[Any, LocalAlb]) -> None:
    elbv2, made = alb
    traffic = ElbTraffic(elbv2, made.rule_arn, made.target_groups)
    assert traffic.weights() == ALL_BLUE
    for green in (10, 50, 100):
        assert traffic.set(Weights.green_at(green)) == Weights(100 - green, green)
        action = elbv2.describe_rules(RuleArns=[made.rule_arn])["Rules"][0]["Actions"][0]
        weights = {g["TargetGroupArn"]: g["Weight"]
                   for g in action["ForwardConfig"]["TargetGroups"]}
        assert weights == {made.target_groups["blue"]: 100 - green,
                           made.target_groups["green"]: green}
        assert action["ForwardConfig"]["TargetGroupStickinessConfig"] == {"Enabled": False}
    got, took, health = traffic.rollback()
    assert got == ALL_BLUE
    assert took >= 0
    assert "blue: 1/1 targets healthy" in health


def test_a_write_that_lands_otherwise_is_caught(alb: tuple[Any, LocalAlb]) -> None:
    elbv2, made = alb
    traffic = ElbTraffic(elbv2, made.rule_arn, made.target_groups)

    def tamper(params: dict[str, Any], **_: Any) -> None:
        # what the service stores is not what was asked (another writer, a rounding ALB)
        params["Actions"][0]["ForwardConfig"]["TargetGroups"][1]["Weight"] += 1

    elbv2.meta.events.register("before-parameter-build.elastic-load-balancing-v2.ModifyRule",
                               tamper)
    try:
        with pytest.raises(TrafficError, match="reads back"):
            traffic.set(Weights.green_at(10))
    finally:
        elbv2.meta.events.unregister("before-parameter-build.elastic-load-balancing-v2.ModifyRule",
                                     tamper)


def test_a_rule_edited_by_hand_to_another_group_is_refused(alb: tuple[Any, LocalAlb]) -> None:
    elbv2, made = alb
    traffic = ElbTraffic(elbv2, made.rule_arn, {"blue": made.target_groups["blue"],
                                                "green": made.target_groups["blue"]})
    with pytest.raises(TrafficError, match="unknown target groups"):
        traffic.weights()


def test_bad_weights_are_refused_before_any_call(alb: tuple[Any, LocalAlb]) -> None:
    elbv2, made = alb
    traffic = ElbTraffic(elbv2, made.rule_arn, made.target_groups)
    with pytest.raises(TrafficError, match="add up"):
        traffic.set(Weights(90, 20))
    assert traffic.weights() == ALL_BLUE


def test_the_rule_is_found_by_tag_and_its_colors_by_name(alb: tuple[Any, LocalAlb]) -> None:
    elbv2, made = alb
    rule = find_rule(elbv2, listener_arn=made.production_listener_arn,
                     tag=("chatbot:role", "cutover"))
    assert rule == made.rule_arn
    assert target_groups(elbv2, rule, DeploySettings()) == made.target_groups
    assert load_balancer_arn(rule) == made.load_balancer_arn

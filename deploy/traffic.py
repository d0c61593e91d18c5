"""Traffic through the real ELBv2 API: the forward action of one listener rule carries both
target groups and their weights.

Every change is read back (``describe_rules``) and a mismatch is an error: the controller never
assumes a write landed. Rollback is one ``modify_rule`` to 100/0, read back, then a blue health
check (``describe_target_health``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

COLORS = ("blue", "green")


class TrafficError(RuntimeError):
    """The rule could not be written or read, or reads back other than written."""


@dataclass(frozen=True)
class Weights:
    blue: int
    green: int

    @staticmethod
    def green_at(percent: int) -> Weights:
        return Weights(100 - percent, percent)

    def to_dict(self) -> dict[str, int]:
        return {"blue": self.blue, "green": self.green}

    def __str__(self) -> str:
        return f"{self.blue}/{self.green}"


ALL_BLUE = Weights(100, 0)


def find_rule(elbv2: Any, *, rule_arn: str | None = None, listener_arn: str | None = None,
              tag: tuple[str, str] | None = None) -> str:
    """The cutover rule: by ARN, or the one rule of the listener carrying the tag."""
    if rule_arn:
        return rule_arn
    if not listener_arn or not tag:
        raise TrafficError("name the rule: CUTOVER_RULE_ARN, or CUTOVER_LISTENER_ARN with "
                           "CUTOVER_RULE_TAG")
    rules = [r for r in elbv2.describe_rules(ListenerArn=listener_arn)["Rules"]
             if not r.get("IsDefault")]
    if not rules:
        raise TrafficError(f"listener {listener_arn} has no rule")
    tags = elbv2.describe_tags(ResourceArns=[r["RuleArn"] for r in rules])["TagDescriptions"]
    key, value = tag
    found = [t["ResourceArn"] for t in tags
             if any(x["Key"] == key and x["Value"] == value for x in t.get("Tags", []))]
    if len(found) != 1:
        raise TrafficError(f"expected one rule tagged {key}={value} on {listener_arn}, "
                           f"found {len(found)}")
    return str(found[0])


class ElbTraffic:
    """The weighted rule of one listener, blue and green target groups."""

    def __init__(self, elbv2: Any, rule_arn: str, target_groups: dict[str, str],
                 stickiness_s: int = 0) -> None:
        missing = [c for c in COLORS if c not in target_groups]
        if missing:
            raise TrafficError(f"target group of {', '.join(missing)} unknown")
        self.elbv2 = elbv2
        self.rule_arn = rule_arn
        self.target_groups = dict(target_groups)
        self.stickiness_s = stickiness_s

    def _rule(self) -> dict[str, Any]:
        rules = self.elbv2.describe_rules(RuleArns=[self.rule_arn])["Rules"]
        if len(rules) != 1:
            raise TrafficError(f"rule {self.rule_arn} not found")
        return dict(rules[0])

    def weights(self) -> Weights:
        """What the rule forwards now; anything but one forward action to exactly our two
        target groups is an error."""
        actions = [a for a in self._rule()["Actions"] if a["Type"] == "forward"]
        if len(actions) != 1:
            raise TrafficError(f"rule {self.rule_arn}: expected one forward action, "
                               f"found {len(actions)}")
        groups = actions[0].get("ForwardConfig", {}).get("TargetGroups")
        if groups is None:  # a plain forward to one group
            groups = [{"TargetGroupArn": actions[0]["TargetGroupArn"], "Weight": 1}]
        by_arn = {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
        unknown = set(by_arn) - set(self.target_groups.values())
        if unknown:
            raise TrafficError(f"rule {self.rule_arn} forwards to unknown target groups "
                               f"{sorted(unknown)}")
        w = {c: by_arn.get(arn, 0) for c, arn in self.target_groups.items()}
        total = w["blue"] + w["green"]
        if total == 0:
            raise TrafficError(f"rule {self.rule_arn} forwards with all weights 0")
        if total != 100:  # weights are relative; report them as percent
            green = round(100 * w["green"] / total)
            return Weights(100 - green, green)
        return Weights(w["blue"], w["green"])

    def _action(self, weights: Weights) -> dict[str, Any]:
        config: dict[str, Any] = {"TargetGroups": [
            {"TargetGroupArn": self.target_groups["blue"], "Weight": weights.blue},
            {"TargetGroupArn": self.target_groups["green"], "Weight": weights.green}]}
        config["TargetGroupStickinessConfig"] = (
            {"Enabled": True, "DurationSeconds": self.stickiness_s} if self.stickiness_s
            else {"Enabled": False})
        return {"Type": "forward", "ForwardConfig": config}

    def set(self, weights: Weights) -> Weights:
        """Write the weights, then read them back; a mismatch raises."""
        if weights.blue + weights.green != 100 or min(weights.blue, weights.green) < 0:
            raise TrafficError(f"weights {weights} do not add up to 100")
        self.elbv2.modify_rule(RuleArn=self.rule_arn, Actions=[self._action(weights)])
        got = self.weights()
        if got != weights:
            raise TrafficError(f"rule {self.rule_arn} reads back {got} after writing {weights}")
        return got

    def target_health(self, color: str) -> tuple[bool, str]:
        """(all registered targets healthy and at least one, a description)."""
        arn = self.target_groups[color]
        states = [d["TargetHealth"]["State"] for d in self.elbv2.describe_target_health(
            TargetGroupArn=arn)["TargetHealthDescriptions"]]
        healthy = sum(s == "healthy" for s in states)
        ok = bool(states) and healthy == len(states)
        return ok, f"{color}: {healthy}/{len(states)} targets healthy"

    def rollback(self) -> tuple[Weights, float, str]:
        """100/0 now: (weights read back, seconds it took, blue's health)."""
        started = time.monotonic()
        got = self.set(ALL_BLUE)
        healthy, detail = self.target_health("blue")
        took = time.monotonic() - started
        if not healthy:
            detail += " (blue is not healthy: traffic is all on blue anyway; page a human)"
        return got, took, detail

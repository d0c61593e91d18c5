"""The cutover plan, as data: ``deploy/plans/default.yaml``, validated by :class:`Plan`.

A plan says how traffic moves (the steps and their bake times), how each analysis window is
judged (the gates), and what happens when a window fails, is inconclusive, or cannot be read.
Its thresholds exist once, here: the gates read them, and the alarms of the infrastructure are
checked against them. A bad plan is a :class:`PlanError` that names the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PLANS = Path(__file__).resolve().parent / "plans"
DEFAULT_PLAN = PLANS / "default.yaml"
# CloudWatch periods: high-resolution metrics allow 1, 5, 10 and 30 s, anything else is a
# multiple of 60 (GetMetricData's Period)
HIGH_RES_PERIODS = (1, 5, 10, 30)


class PlanError(ValueError):
    """A plan that cannot be used; the message names each bad field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Model):
    weight: int = Field(ge=1, le=100, description="green's share of the traffic, in percent")
    bake_s: float = Field(ge=0, description="how long the step runs before it may pass")
    min_green_requests: int = Field(
        default=0, ge=0, description="green requests over the step before it may pass")


class ErrorRateGate(_Model):
    """5xx rate: green <= blue + max_increase, and green <= max (the guide: < 1 %)."""

    max_increase: float = Field(default=0.005, ge=0, le=1)
    max: float = Field(default=0.01, ge=0, le=1)
    min_requests: int = Field(default=200, ge=1,
                              description="green requests a window needs to judge a rate")


class LatencyGate(_Model):
    """A percentile: green <= blue x max_ratio (unless within slack_ms of blue), and <= max_ms."""

    max_ratio: float = Field(ge=1)
    slack_ms: float = Field(default=25, ge=0,
                            description="a difference below this is never a regression")
    max_ms: float = Field(gt=0)
    min_requests: int = Field(ge=1, description="green samples the percentile needs "
                              "(CloudWatch's rule for percentile alarms: 10/(1-p))")


class LoadBalancerGate(_Model):
    """What the load balancer saw per target group: an app that crashes, hangs or refuses
    connections cannot report its own errors."""

    enabled: bool = True
    max_unhealthy_hosts: int = Field(default=0, ge=0)


class Gates(_Model):
    error_rate: ErrorRateGate = ErrorRateGate()
    p90: LatencyGate = LatencyGate(max_ratio=1.25, max_ms=500, min_requests=100)
    p99: LatencyGate = LatencyGate(max_ratio=1.5, slack_ms=50, max_ms=800, min_requests=1000)
    load_balancer: LoadBalancerGate = LoadBalancerGate()
    per_endpoint_min_requests: int = Field(
        default=100, ge=1, description="an endpoint is judged on its own once green served "
        "this many of its requests in a window (where traffic allows)")


class Analysis(_Model):
    interval_s: int = Field(default=60, ge=1, description="one analysis window")
    metrics_delay_s: float = Field(
        default=60, ge=0, description="how far behind now a window ends: metrics reach "
        "CloudWatch late (the apps flush every few seconds, the ALB every minute)")
    failure_limit: int = Field(default=0, ge=0,
                               description="failed windows tolerated in a step; one more "
                               "rolls back")
    inconclusive_limit: int = Field(
        default=5, ge=1, description="inconclusive windows in a row before on_inconclusive")
    on_inconclusive: Literal["pause", "rollback"] = "pause"
    error_limit: int = Field(default=3, ge=1, description="windows in a row whose metrics "
                             "could not be read before on_error")
    on_error: Literal["pause", "rollback"] = "rollback"

    @field_validator("interval_s")
    @classmethod
    def _period(cls, value: int) -> int:
        if value not in HIGH_RES_PERIODS and value % 60:
            raise ValueError("a CloudWatch period: 1, 5, 10, 30 or a multiple of 60")
        return value


class PreTraffic(_Model):
    """Before any weight above 0: green's targets healthy, then the parity suite in staging
    mode against blue and green (green through the test listener)."""

    target_health: bool = True
    parity: bool = True
    parity_filter: str | None = Field(default=None, description="only cases whose id "
                                      "contains this (None: the whole corpus)")
    parity_generated: int = Field(default=0, ge=0)
    parity_profile: str | None = Field(default=None, description="staging profile file")


class Plan(_Model):
    name: str = "default"
    steps: tuple[Step, ...] = Field(min_length=1)
    analysis: Analysis = Analysis()
    gates: Gates = Gates()
    alarms: tuple[str, ...] = Field(default=(), description="CloudWatch alarms: any in ALARM "
                                    "rolls back at once")
    pre_traffic: PreTraffic = PreTraffic()
    post_promotion_bake_s: float = Field(
        default=0, ge=0, description="after 100 %: blue stays registered and the gates keep "
        "running this long; rollback still works")
    stickiness_s: int = Field(default=0, ge=0, le=604_800, description="target-group "
                              "stickiness on the weighted rule (0: off; conversations are "
                              "safe across colors)")
    approve_each_step: bool = False
    lease_s: float = Field(default=60, ge=2, description="the lock's lease; renewed every "
                           "third of it")

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        weights = [s.weight for s in steps]
        if weights != sorted(set(weights)):
            raise ValueError("weights must strictly increase")
        if weights and weights[-1] != 100:
            raise ValueError("the last step must be weight 100")
        return steps

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True)
                              .encode()).hexdigest()[:12]

    def worst_case_s(self) -> float:
        """The longest a cutover can take with no failure: every step baking, then holding on
        inconclusive windows up to the limit, then the post-promotion bake."""
        a = self.analysis
        hold = a.inconclusive_limit * a.interval_s
        per_step = [max(s.bake_s, a.interval_s) + a.metrics_delay_s + hold for s in self.steps]
        return sum(per_step) + self.post_promotion_bake_s


def _errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "plan"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def parse_plan(data: object, source: str = "plan") -> Plan:
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(f"{source} is not a valid plan:\n{_errors(exc)}") from None


def load_plan(path: Path = DEFAULT_PLAN) -> Plan:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PlanError(f"{path}: {exc}") from None
    return parse_plan(data, str(path))

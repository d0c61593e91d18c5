"""The plan: the shipped ones load; a bad plan is an error that names the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.plan import DEFAULT_PLAN, PLANS, PlanError, load_plan, parse_plan

pytestmark = pytest.mark.unit


def base() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_PLAN.read_text())


@pytest.mark.parametrize("path", sorted(PLANS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_plans_load(path: Path) -> None:
    plan = load_plan(path)
    assert plan.steps[-1].weight == 100


def test_default_plan_is_the_guides_steps_and_criteria() -> None:
    plan = load_plan()
    assert [s.weight for s in plan.steps] == [10, 50, 100]
    assert plan.gates.error_rate.max == 0.01  # the guide's success criterion: < 1 % errors
    assert (plan.gates.p90.max_ms, plan.gates.p99.max_ms) == (500, 800)
    assert plan.gates.p99.min_requests >= 1000  # CloudWatch's 10/(1-p) for p99
    assert plan.stickiness_s == 0


@pytest.mark.parametrize(("change", "field"), [
    (lambda p: p["steps"].reverse(), "steps"),
    (lambda p: p["steps"].pop(), "steps"),  # the last step is not 100
    (lambda p: p["steps"][0].update(weight=0), "steps.0.weight"),
    (lambda p: p["analysis"].update(interval_s=7), "analysis.interval_s"),
    (lambda p: p["analysis"].update(on_inconclusive="carry-on"), "analysis.on_inconclusive"),
    (lambda p: p["gates"]["error_rate"].update(max=2), "gates.error_rate.max"),
    (lambda p: p["gates"]["p99"].update(max_ratio=0.5), "gates.p99.max_ratio"),
    (lambda p: p.update(surprise=1), "surprise"),
])
def test_bad_plan_names_the_field(change: Any, field: str) -> None:
    plan = base()
    change(plan)
    with pytest.raises(PlanError) as info:
        parse_plan(plan, "test.yaml")
    assert f"  {field}" in str(info.value)
    assert "test.yaml" in str(info.value)


def test_unreadable_plan_file_is_a_plan_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [")
    with pytest.raises(PlanError, match=r"bad\.yaml"):
        load_plan(bad)


def test_worst_case_adds_bakes_holds_and_the_post_promotion_bake() -> None:
    plan = parse_plan({"steps": [{"weight": 50, "bake_s": 100}, {"weight": 100, "bake_s": 50}],
                       "analysis": {"interval_s": 10, "metrics_delay_s": 5,
                                    "inconclusive_limit": 2},
                       "post_promotion_bake_s": 30})
    assert plan.worst_case_s() == (100 + 5 + 20) + (50 + 5 + 20) + 30

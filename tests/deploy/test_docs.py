"""docs/cutover.md stays true: every plan field, command, scenario and audit event is in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy import cli
from deploy.plan import Analysis, Plan, load_plan
from deploy.rehearsal.run import SCENARIOS

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "cutover.md").read_text()


@pytest.mark.parametrize("name", sorted(set(Plan.model_fields) - {"name"}))
def test_every_plan_field_is_documented(name: str) -> None:
    assert f"`{name}`" in DOC or f"`{name}." in DOC


@pytest.mark.parametrize("name", sorted(Analysis.model_fields))
def test_every_analysis_field_is_documented(name: str) -> None:
    assert f"`analysis.{name}" in DOC or f"`{name}`" in DOC


def test_every_command_and_scenario_is_documented() -> None:
    commands = re.findall(r'\("(\w+)", "[^"]* [^"]*"\)', Path(cli.__file__).read_text())
    assert {"plan", "start", "status", "pause", "resume", "promote", "abort"} <= set(commands)
    for command in commands:
        assert f"python -m deploy cutover {command}" in DOC
    for scenario in SCENARIOS:
        assert f"`{scenario}`" in DOC


def test_every_audit_event_is_documented() -> None:
    source = (ROOT / "deploy" / "controller.py").read_text()
    events = set(re.findall(r'_event\(record, "(\w+)"', source))
    events |= set(re.findall(r'_transition\(record, (?:"\w+"|\w+), "(\w+)"', source))
    assert {"started", "window", "rollback", "rolled_back"} <= events
    missing = sorted(e for e in events if f"`{e}`" not in DOC)
    assert not missing


def test_the_defaults_quoted_are_the_plans() -> None:
    plan = load_plan()
    assert f"worst case ({plan.worst_case_s() / 60:.0f} minutes" in DOC
    assert f"`max` ({plan.gates.error_rate.max * 100:g} %" in DOC
    assert f"> `max_ms` ({plan.gates.p90.max_ms:g}" in DOC

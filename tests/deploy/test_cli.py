"""``python -m deploy cutover ...`` against devstack (AWS_ENDPOINT_URL set): the commands an
operator types when no controller is running, and the requests they leave for one that is."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest

from deploy.cli import main
from deploy.state import Record, StateStore
from devstack.loadbalancer import create_local_alb
from devstack.stack import DevStack
from shared.sessions import CUTOVER_TABLE

pytestmark = pytest.mark.integration


@pytest.fixture
def rule(stack: DevStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    alb = create_local_alb(stack.moto_url, {"blue": "http://127.0.0.1:18021",
                                            "green": "http://127.0.0.1:18022"},
                           name=f"cli{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.moto_url)
    monkeypatch.setenv("CUTOVER_RULE_ARN", alb.rule_arn)
    monkeypatch.setenv("CUTOVER_REPORT_DIR", str(tmp_path / "cutover"))
    return alb.rule_arn


def test_status_of_a_rule_with_no_cutover(rule: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cutover", "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"rule": rule, "weights": {"blue": 100, "green": 0}, "lock": None,
                   "cutover": None}
    assert main(["cutover", "status"]) == 0
    out = capsys.readouterr().out
    assert "blue/green 100/0" in out
    assert "no active cutover" in out


def test_requests_need_an_active_cutover_and_promote_needs_yes(
        rule: str, stack: DevStack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cutover", "pause"]) == 1
    assert "no active cutover" in capsys.readouterr().err
    store = StateStore(boto3.client("dynamodb", endpoint_url=stack.moto_url,
                                    region_name="us-east-1"), CUTOVER_TABLE)
    record = store.create(Record(cutover_id=uuid.uuid4().hex, rule_arn=rule, plan={},
                                 plan_digest="x", state="baking", step=1,
                                 started_at="2026-12-01T00:00:00Z"))
    assert main(["cutover", "promote"]) == 2
    assert "--yes" in capsys.readouterr().err
    assert main(["cutover", "promote", "--yes"]) == 0
    assert (store.get(record.cutover_id) or record).requested == "promote"
    assert main(["cutover", "status"]) == 0
    assert f"cutover {record.cutover_id}: baking, step 2/3" in capsys.readouterr().out


def test_a_bad_plan_is_refused_naming_the_field(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "plan.yaml"
    bad.write_text("steps: [{weight: 50, bake_s: 1}]\n")
    assert main(["cutover", "plan", "--plan", str(bad)]) == 2
    assert "the last step must be weight 100" in capsys.readouterr().err
    assert main(["cutover", "plan"]) == 0
    assert "worst case" in capsys.readouterr().out

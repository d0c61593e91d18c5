"""``python -m deploy stack|report|preflight`` against devstack (AWS_ENDPOINT_URL set)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from deploy.cli import main
from devstack.stack import DevStack

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("infra-moto"),
              pytest.mark.filterwarnings("ignore:Tried to parse .* by moto's CloudFormation"
                                         ":UserWarning")]


def test_stack_apply_report_and_preflight_on_devstack(
        stack: DevStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.moto_url)
    monkeypatch.setenv("CUTOVER_REPORT_DIR", str(tmp_path / "cutover"))
    name = f"cli{uuid.uuid4().hex[:6]}"
    params = ["--param", f"Name={name}", "--param", f"SessionsTableName={name}_s",
              "--param", f"RateLimitTableName={name}_r", "--param", f"CutoverTableName={name}_c"]
    assert main(["stack", "plan", "--stack", name, *params]) == 0
    out = capsys.readouterr().out
    assert "[devstack at" in out
    assert "Add     CutoverRule" in out
    assert main(["stack", "apply", "--stack", name, *params]) == 0
    out = capsys.readouterr().out
    assert f"stack {name}: CREATE_COMPLETE" in out
    assert "CutoverRuleArn = arn:aws:elasticloadbalancing" in out
    # no traffic yet: the report is written and says it cannot judge
    code = main(["report", "--since", "10m", "--stack", name, "--out", str(tmp_path / "rep")])
    assert code == 1
    assert "verdict INCOMPLETE" in capsys.readouterr().out
    assert (tmp_path / "rep" / "report.png").exists()
    # preflight: no targets registered, moto keeps no alarms from the stack: not ready
    assert main(["preflight", "--stack", name]) == 1
    out = capsys.readouterr().out
    assert "[ok  ] stack complete" in out
    assert "[FAIL] blue targets healthy: 0/0 healthy" in out
    assert "[ok  ] rollback path reachable" in out
    assert "[ ? ]" in out


def test_template_command_prints_the_committed_template(
        capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.infra.template import TEMPLATE_PATH

    assert main(["stack", "template"]) == 0
    assert capsys.readouterr().out == TEMPLATE_PATH.read_text(encoding="utf-8")

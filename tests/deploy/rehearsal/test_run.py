"""One rehearsal scenario inside ``make test``: the whole path on devstack (both colors as
shipped behind the local ALB, percentiles through the CloudWatch front, the real controller).
``make cutover`` runs every scenario."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.rehearsal.run import Rehearsal, ScenarioResult, markdown, spans

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("rehearsal"), pytest.mark.timeout(300)]


def test_spans_follow_the_weight_changes() -> None:
    audit = [{"event": "started", "t": 5.0},
             {"event": "weights", "t": 10.0, "weights": {"blue": 90, "green": 10}},
             {"event": "window", "t": 15.0},
             {"event": "weights", "t": 20.0, "weights": {"blue": 50, "green": 50}}]
    assert spans(audit, 30.0) == [("0: before (100/0)", 0.0, 10.0),
                                  ("1: blue/green 90/10", 10.0, 20.0),
                                  ("2: blue/green 50/50", 20.0, 30.0)]


def test_a_degraded_green_is_rolled_back_by_the_first_window_that_holds_the_fault(
        tmp_path: Path) -> None:
    lines: list[str] = []
    with Rehearsal(tmp_path / "cutover", printer=lines.append) as rehearsal:
        [result] = rehearsal.run(["degrade"])
    assert isinstance(result, ScenarioResult)
    assert result.passed, (result.problems, lines[-30:])
    assert result.outcome["state"] == "rolled_back"
    assert result.detect_s is not None
    assert result.rollback_s is not None
    audit = [json.loads(line) for line in
             (tmp_path / "cutover" / "degrade" / "audit.jsonl").read_text().splitlines()]
    events = [e["event"] for e in audit]
    assert events[:3] == ["started", "pre_traffic", "weights"]
    assert events[-2:] == ["rollback", "rolled_back"]
    window = [e for e in audit if e["event"] == "window"][-1]
    assert window["verdict"] == "fail"
    assert window["figures"]["service"]["green"]["p90_ms"] > 1000  # the fault, as CloudWatch saw it
    png = tmp_path / "cutover" / "degrade" / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| degrade |" in markdown([result], rehearsal.boot_s, 0)

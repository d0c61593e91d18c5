"""The CI workflow, statically: it parses, runs make test and make parity on every push, and
builds each image from docker/ (no GitHub runner here; actionlint is not installed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


@pytest.fixture(scope="module")
def wf() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _runs(job: dict[str, Any]) -> list[str]:
    return [s["run"] for s in job["steps"] if "run" in s]


def test_triggers_on_every_push(wf: dict[Any, Any]) -> None:
    on: dict[str, Any] = wf["on"] if "on" in wf else wf[True]  # YAML 1.1: bare `on` is True
    assert "push" in on
    assert on["push"] is None or not on["push"].get("branches")


def test_jobs_call_the_makefile_targets(wf: dict[str, Any]) -> None:
    runs = _runs(wf["jobs"]["test"])
    assert "make test" in runs
    assert "make parity" in runs
    targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M))
    for run in runs:
        for target in re.findall(r"\bmake (\w[\w-]*)", run):
            assert target in targets, target


def test_both_images_are_built_from_their_dockerfiles(wf: dict[str, Any]) -> None:
    job = wf["jobs"]["images"]
    colors = job["strategy"]["matrix"]["color"]
    assert sorted(colors) == ["blue", "green"]
    for color in colors:
        assert (ROOT / "docker" / f"{color}.Dockerfile").exists()
    assert any("docker build -f docker/${{ matrix.color }}.Dockerfile" in r for r in _runs(job))


def test_least_privilege_and_bounded(wf: dict[str, Any]) -> None:
    assert wf["permissions"] == {"contents": "read"}
    for job in wf["jobs"].values():
        assert job["timeout-minutes"] <= 30
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), step["uses"]

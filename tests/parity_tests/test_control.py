"""Control steps: read and validated with the case file, applied to the devstack fault injector
for every lane, awaited, and always switched back to healthy when the case ends."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError

from devstack.moto_faults import FaultyMotoServer
from parity_tests.harness import runner as runner_mod
from parity_tests.harness.lanes import Lane
from parity_tests.harness.model import CaseError, case_from_dict
from parity_tests.harness.runner import Runner


def case(*steps: dict[str, Any]) -> Any:
    return case_from_dict({"name": "c", "needs": ["store-control"], "steps": list(steps)},
                          "cases/x.yaml", 0)


@pytest.mark.unit
def test_a_control_step_is_read_with_its_switches() -> None:
    c = case({"name": "down", "control": {"cloudwatch": "down"}},
             {"request": {"method": "GET", "path": "/health"}, "expect_status": 200},
             {"control": {"dynamodb": {"UpdateItem": "throttle"}, "await": "cloudwatch"}})
    assert c.controlled
    assert [s.is_control for s in c.steps] == [True, False, True]
    assert c.steps[0].control == {"cloudwatch": "down"}
    assert c.steps[2].name == "step-3"
    assert not case({"request": {"method": "GET", "path": "/health"}}).controlled


@pytest.mark.unit
@pytest.mark.parametrize(("step", "message"), [
    ({"control": {"cloudwatch": "sideways"}}, "cloudwatch"),
    ({"control": {"dynamodb": {"Scan": "throttle"}}}, "unknown operation"),
    ({"control": {"dynamodb": {"GetItem": "melt"}}}, "unknown fault"),
    ({"control": {"await": "dynamodb"}}, "await"),
    ({"control": {}}, "mapping"),
    ({"control": {"cloudwatch": "down"}, "expect_status": 200}, "only name and control"),
])
def test_a_bad_control_step_is_refused_with_the_case_named(step: dict[str, Any],
                                                           message: str) -> None:
    with pytest.raises(CaseError, match=message) as info:
        case(step)
    assert "cases/x.yaml: c step 1" in str(info.value)


@pytest.fixture(scope="module")
def injector() -> Iterator[FaultyMotoServer]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    srv = FaultyMotoServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def lanes(url: str) -> list[Lane]:
    return [Lane(name=name, color="blue", url="http://127.0.0.1:1", http=httpx.Client(),
                 aws_url=url, namespace=f"Control/{name}") for name in ("blue", "green")]


def put_metric(url: str, namespace: str) -> None:
    cw = boto3.client("cloudwatch", endpoint_url=url, region_name="us-east-1",
                      config=Config(retries={"total_max_attempts": 1}),
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    cw.put_metric_data(Namespace=namespace, MetricData=[{"MetricName": "m", "Value": 1.0}])


def state(url: str) -> dict[str, Any]:
    return dict(httpx.get(url + "/_faults/config").json())


@pytest.mark.integration
def test_switches_apply_then_reset_when_the_case_ends(injector: FaultyMotoServer) -> None:
    seen: list[dict[str, Any]] = []
    runner = Runner(lanes(injector.url), [], [], None)
    original = runner.control

    def spy(control: dict[str, Any], before: dict[str, int]) -> str | None:
        problem = original(control, before)
        seen.append(state(injector.url))
        return problem

    runner.control = spy  # type: ignore[method-assign]
    result = runner.run_case(case({"control": {"dynamodb": {"*": "throttle"}}},
                                  {"control": {"cloudwatch": "down"}}))
    assert result.error is None
    assert result.steps == []
    assert seen[-1]["dynamodb"] == {"*": "throttle"}
    assert seen[-1]["cloudwatch"] == "down"
    after = state(injector.url)
    assert after["dynamodb"] == {}
    assert after["cloudwatch"] == "up"


@pytest.mark.integration
def test_await_needs_a_cloudwatch_fault_in_every_lane(injector: FaultyMotoServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_mod, "AWAIT_S", 0.3)
    runner = Runner(lanes(injector.url), [], [], None)
    before = runner._injected()
    assert runner.control({"cloudwatch": "down"}, before) is None
    with pytest.raises(ConnectionClosedError):
        put_metric(injector.url, "Control/blue")
    problem = runner.control({"await": "cloudwatch"}, before)
    assert problem is not None
    assert "green" in problem
    assert "blue" not in problem
    with pytest.raises(ConnectionClosedError):
        put_metric(injector.url, "Control/green")
    assert runner.control({"await": "cloudwatch"}, before) is None
    runner.control({"cloudwatch": "up"}, before)
    put_metric(injector.url, "Control/green")


@pytest.mark.integration
def test_a_failed_control_step_ends_the_case_and_still_resets(
        injector: FaultyMotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_mod, "AWAIT_S", 0.1)
    runner = Runner(lanes(injector.url), [], [], None)
    result = runner.run_case(case({"control": {"cloudwatch": "down"}},
                                  {"name": "wait", "control": {"await": "cloudwatch"}},
                                  {"request": {"method": "GET", "path": "/health"}}))
    assert result.error is not None
    assert result.error.startswith("step wait: no CloudWatch")
    assert result.steps == []  # the request after it was never sent
    assert state(injector.url)["cloudwatch"] == "up"


@pytest.mark.unit
def test_without_an_injector_a_control_step_is_an_error(tmp_path: Path) -> None:
    lane = Lane(name="blue", color="blue", url="http://x", http=httpx.Client())
    result = Runner([lane], [], [], None).run_case(case({"control": {"cloudwatch": "down"}}))
    assert result.error is not None
    assert "local stack" in (result.error or "")

"""Cases at once on one set of lanes (parity_tests/harness/routing.py): each side effect goes to
the case that names its key, what no case names is compared at the end, and a case that cannot
share the lanes runs alone."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parity_tests.harness.lanes import Lane, case_keys
from parity_tests.harness.model import Case, case_from_dict, load_file
from parity_tests.harness.routing import (
    RoutedEffects,
    holds_a_worker,
    request_names,
    runs_alone,
)
from parity_tests.harness.runner import UNCLAIMED_CASE, CaseResult, Runner
from tests.parity_tests.test_harness_catches_bugs import NOISE, Lanes, findings

CASES = Path("parity_tests/cases")


class FakeEffects:
    """What SideEffects.collect would read: whatever was queued since the last pull."""

    def __init__(self) -> None:
        self.queued: list[dict[str, Any]] = []
        self.pulls = 0

    def collect(self, lane: Lane) -> dict[str, Any]:
        self.pulls += 1
        out: dict[str, Any] = {}
        for doc in self.queued:
            for role, changed in doc.get("dynamodb", {}).items():
                out.setdefault("dynamodb", {}).setdefault(role, {}).update(changed)
            out.setdefault("agent_calls", []).extend(doc.get("agent_calls", []))
        self.queued.clear()
        return out


def lane() -> Lane:
    return Lane(name="blue", color="blue", url="http://blue", http=None)  # type: ignore[arg-type]


@pytest.mark.unit
def test_each_change_goes_to_the_case_that_names_its_key() -> None:
    inner = FakeEffects()
    routed = RoutedEffects(inner, lambda _lane: set())  # type: ignore[arg-type]
    inner.queued.append({"dynamodb": {"sessions": {"s-a": {"n": 1}, "s-b": {"n": 2}}},
                         "agent_calls": [{"session_id": "s-a"}, {"session_id": "s-b"}]})
    mine = routed.collect(lane(), {"s-a", "u-a"})
    assert mine == {"dynamodb": {"sessions": {"s-a": {"n": 1}}},
                    "agent_calls": [{"session_id": "s-a"}]}
    assert routed.collect(lane(), {"s-a"}) == {}  # nothing new for it
    inner.queued.append({"dynamodb": {"sessions": {"s-c": None}}})
    assert routed.collect(lane(), {"s-b"}) == {
        "dynamodb": {"sessions": {"s-b": {"n": 2}}}, "agent_calls": [{"session_id": "s-b"}]}
    assert routed.unclaimed(lane()) == {"dynamodb": {"sessions": {"s-c": None}}}


@pytest.mark.unit
def test_a_pull_begun_after_the_answers_is_shared() -> None:
    inner = FakeEffects()
    routed = RoutedEffects(inner, lambda _lane: set())  # type: ignore[arg-type]
    routed.collect(lane(), {"x"}, since=0.0)
    assert inner.pulls == 1
    routed.collect(lane(), {"x"}, since=0.0)  # the first pull began after 0.0: no new one
    assert inner.pulls == 1
    routed.collect(lane(), {"x"}, since=float("inf"))  # answers after the last pull: pull
    assert inner.pulls == 2
    routed.collect(lane(), {"x"})  # no time given: always pull
    assert inner.pulls == 3


@pytest.mark.unit
def test_names_are_every_id_a_request_carries() -> None:
    case = case_from_dict({"name": "n", "request": {
        "method": "POST", "path": "/api/v1/users/u%2D1/sessions", "query": {"cursor": "c-1"},
        "json": {"session_id": "s-1", "nested": [{"user_id": "u-2"}]}}}, "f.yaml", 0)
    names = request_names(case.steps[0].request)
    assert {"u%2D1", "u-1", "c-1", "s-1", "u-2"} <= names


@pytest.mark.unit
def test_what_cannot_share_the_lanes_runs_alone() -> None:
    store = {c.id: c for c in load_file(CASES / "store_faults.yaml")}
    assert runs_alone(store["store_faults/rate-limiter-throttle"])  # a global fault switch
    assert not runs_alone(store["store_faults/chat-read-throttle"])  # a marker in its own id
    concurrency = load_file(CASES / "concurrency.yaml")
    assert all(runs_alone(c) for c in concurrency if any(s.concurrent > 1 for s in c.steps))
    seeded = [c for c in load_file(CASES / "time.yaml") if c.controlled]
    assert seeded
    assert not any(runs_alone(c) for c in seeded)
    slow = {c.id: c for c in load_file(CASES / "wire_slow.yaml")}
    assert holds_a_worker(slow["wire_slow/idle-connection"])
    assert not holds_a_worker(store["store_faults/chat-read-throttle"])


# --- on real lanes (in-process, devstack) ------------------------------------------------

def at_once(built: Lanes, cases: list[Case]) -> list[CaseResult]:
    return Runner(built.lanes, NOISE, [], built.effects, concurrency=4,
                  case_keys=case_keys).run(cases)


def sample() -> list[Case]:
    return [*load_file(CASES / "chat.yaml"), *load_file(CASES / "sessions.yaml"),
            *load_file(CASES / "users.yaml")][:60]


def stray_writes(runtime: Any) -> None:
    """Green also writes a session nobody asked for on every chat (an id no answer shows)."""
    execute = runtime.execute

    async def wrong(call: Any) -> Any:
        out = await execute(call)
        if getattr(call, "operation", "") == "put_item":
            item = dict(call.params["Item"])
            item["session_id"] = {"S": f"stray-{secrets.token_hex(6)}"}
            await execute(type(call)("dynamodb", "put_item", {
                "TableName": call.params["TableName"], "Item": item}))
        return out

    runtime.execute = wrong


@pytest.mark.integration
@pytest.mark.xdist_group("parity-self-test")
def test_cases_at_once_agree_as_shipped(lanes: Callable[..., Lanes]) -> None:
    results = at_once(lanes(), sample())
    assert findings(results) == {}
    assert all(r.case.id != UNCLAIMED_CASE for r in results)


@pytest.mark.integration
@pytest.mark.xdist_group("parity-self-test")
def test_a_write_no_case_named_is_caught_at_once(lanes: Callable[..., Lanes]) -> None:
    results = at_once(lanes(patch_runtime=stray_writes), sample())
    unclaimed = [r for r in results if r.case.id == UNCLAIMED_CASE]
    assert unclaimed
    assert unclaimed[0].failed
    paths = {d.path for d in unclaimed[0].steps[0].differences}
    assert any(p.startswith("dynamodb.sessions.") for p in paths), paths




@pytest.mark.unit
def test_unclaimed_side_effects_are_reported_like_a_case(tmp_path: Path) -> None:
    """The end-of-run step has effects but no requests or answers: every writer takes it."""
    from io import StringIO

    from rich.console import Console

    from parity_tests.harness import report
    from parity_tests.harness.compare import Delta
    from parity_tests.harness.runner import StepResult

    step = StepResult(UNCLAIMED_CASE, "unclaimed", 0, "-", "-", None, {}, {},
                      effects={"blue": {"dynamodb": {"sessions": {"stray-1": {"n": 1}}}},
                               "green": {}})
    step.differences.append(Delta("dynamodb.sessions.stray-1.n", 1, 2))
    result = CaseResult(Case(id=UNCLAIMED_CASE, steps=()), steps=[step])
    summary = report.summarize([result], {"lanes": ["blue", "green"], "mode": "local",
                                          "duration_s": 1.0})
    assert not summary["passed"]
    report.write_json(summary, [result], tmp_path)
    report.write_junit([result], summary, tmp_path)
    report.write_html(summary, [result], {}, tmp_path)
    from parity_tests.harness import reproduce
    reproduce.write_reproducers([result], tmp_path, {"blue": "http://b", "green": "http://g"},
                                ("k",), None, NOISE)
    out = StringIO()
    report.print_summary(summary, Console(file=out, width=200))
    assert UNCLAIMED_CASE in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "dynamodb.sessions.stray-1.n" in out.getvalue()

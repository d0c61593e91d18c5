"""Staging mode against what ``make run`` boots: devstack, blue (gunicorn) and green (uvicorn)
with DevStack.env(), the dev key and make run's metrics flush, on ONE shared sessions table.

Bounded with case filters (the whole corpus against ``make run`` is measured by hand)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from devstack.procs import free_port
from devstack.run import Server
from devstack.stack import DevStack
from parity_tests.harness.lanes import remote_lanes
from parity_tests.harness.model import load_corpus
from parity_tests.harness.rules import load_noise
from parity_tests.harness.runner import Runner
from parity_tests.harness.staging import StagingHooks, StagingProfile, run_staging
from shared.settings import DEV_API_KEY

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "parity_tests" / "profiles" / "make-run.yaml"


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevStack, str, str]]:
    logs = tmp_path_factory.mktemp("make-run")
    with DevStack() as stack:
        # as devstack/run.py main(): one env for both colors, one table pair
        env = {**stack.env(), "API_KEYS": DEV_API_KEY, "METRICS_FLUSH_INTERVAL_S": "5"}
        servers = [Server(color, free_port(), env, log_path=logs / f"{color}.log").start()
                   for color in ("blue", "green")]
        try:
            for server in servers:
                server.wait_healthy(60)
            yield stack, servers[0].url, servers[1].url
        finally:
            for server in servers:
                server.stop()


def _stored_ids(stack: DevStack) -> set[str]:
    ddb = boto3.client("dynamodb", endpoint_url=stack.moto_url, region_name="us-east-1")
    items = ddb.scan(TableName="chat_sessions", ProjectionExpression="session_id")["Items"]
    return {item["session_id"]["S"] for item in items}


def test_the_corpus_passes_against_make_run(make_run: tuple[DevStack, str, str],
                                            tmp_path: Path) -> None:
    stack, blue, green = make_run
    profile = StagingProfile.load(PROFILE)
    result = run_staging(blue, green, profile=profile, api_key=DEV_API_KEY,
                         report_dir=tmp_path / "auth", case_filter="auth_cors/")
    assert result.passed, result.summary["first_differences"] or result.summary
    skipped = {s["case"]: s["reason"] for s in result.summary["skipped"]}
    assert set(skipped) == {"auth_cors/second-key", "auth_cors/preflight-allowed",
                            "auth_cors/preflight-refused", "auth_cors/simple-cross-origin"}
    assert all("needs" in reason for reason in skipped.values())
    junit = (tmp_path / "auth" / "junit.xml").read_text()
    assert junit.count("<skipped") == 4

    result = run_staging(blue, green, profile=profile, api_key=DEV_API_KEY,
                         report_dir=tmp_path / "scenarios", case_filter="scenarios/")
    assert result.passed, result.summary["first_differences"] or result.summary
    assert result.summary["cases"] == 6
    # both colors wrote to the one table, each under its own prefix
    prefixes = result.summary["id_prefixes"]
    stored = _stored_ids(stack)
    for lane in ("blue", "green"):
        mine = {i for i in stored if i.startswith(prefixes[lane])}
        assert len(mine) >= 5, (lane, sorted(stored))
    assert prefixes["blue"] != prefixes["green"]


def test_without_per_lane_ids_the_colors_collide(make_run: tuple[DevStack, str, str]) -> None:
    """The same prefix for both lanes (ids shared, as before staging mode): the colors race on
    one table and the run fails, so the passing run above owes its verdict to the prefixes."""
    _, blue, green = make_run
    cases = [c for c in load_corpus(ROOT / "parity_tests" / "cases")
             if c.id.startswith(("scenarios/", "users/list-after-chats"))]
    noise = load_noise(ROOT / "parity_tests" / "noise.yaml", "remote")
    lanes = remote_lanes(blue, green, (DEV_API_KEY,))
    try:
        shared = StagingHooks({"blue": "zz1-", "green": "zz1-"}, "emulator", None)
        results = Runner(lanes, noise, [], None, hooks=shared).run(cases)
    finally:
        for lane in lanes:
            lane.http.close()
    failed = [r.case.id for r in results if r.failed]
    assert failed, "shared ids went unnoticed"


def test_raw_cases_reach_the_servers_and_are_skipped_behind_a_proxy(
        make_run: tuple[DevStack, str, str], tmp_path: Path) -> None:
    """make-run's targets are the servers themselves over plain HTTP: raw cases run and pass;
    the rehearsal's profile (the local ALB in front) lists the same cases as skipped."""
    _, blue, green = make_run
    result = run_staging(blue, green, profile=StagingProfile.load(PROFILE), api_key=DEV_API_KEY,
                         report_dir=tmp_path / "raw", case_filter="wire_headers/")
    assert result.passed, result.summary["first_differences"] or result.summary
    assert result.summary["cases"] >= 10
    assert result.summary["skipped"] == []
    rehearsal = StagingProfile.load(PROFILE.parent / "rehearsal.yaml")
    result = run_staging(blue, green, profile=rehearsal, api_key=DEV_API_KEY,
                         report_dir=tmp_path / "proxy", case_filter="wire_headers/")
    assert result.summary["cases"] == 0
    assert {s["class"] for s in result.summary["skipped"]} == {"raw-wire"}

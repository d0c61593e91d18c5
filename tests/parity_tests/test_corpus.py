"""The parity corpus (``parity_tests/cases``): it parses, it covers every route x documented
status that can be produced with DynamoDB and the agent up, and its expected statuses are what
both colors really answer.

The unit tests read the case files only. ``test_case_statuses`` replays every case in-process
against blue and green (each on its own tables, like the harness's lanes) and once more against
blue on the same tables, so a case whose statuses depend on leftovers of an earlier run shows up.

Raw steps (``raw:``, bytes on a socket: parity_tests/harness/wire.py) reach the servers' own
HTTP/1.1 parsers, which the in-process replay (ASGI/WSGI) does not have: it skips them and says
so; ``make parity`` checks them against real servers. Their expected statuses are checked here
against the route's documented statuses or the servers' own answers (shared/wire.py), and they
count towards no route's coverage.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from devstack.agent_emulator import FAULT_KINDS, parse_markers
from devstack.stack import DevStack, create_tables
from parity_tests.harness.model import ABSENT, Case, Request, Step, get_path, load_corpus
from shared.errors import CATALOGUE
from shared.routes import ROUTES, Route, routes_for_path
from shared.wire import SERVER_INTERIM, SERVER_REFUSALS
from tests.conftest import COLORS, ColorClient, open_client

ROOT = Path(__file__).resolve().parents[2]
CASES_DIR = ROOT / "parity_tests" / "cases"
API_KEYS = "parity-key-1,parity-key-2"
API_KEY = "parity-key-1"
CORS_ORIGINS = "https://app.example.com"

# Documented statuses the corpus cannot produce with DynamoDB and the agent up, and why.
# (Also listed at the top of parity_tests/cases/errors.yaml.)
_BUG = "500 needs a bug in the app"
_RATE = "429 needs more requests than the harness's high rate limit"
_SLASH = ("404 for a user id holding '/': that is another path, which the corpus sends "
          "(users/user-id-routing) but which reaches no route to be counted under")
UNREACHABLE: dict[str, dict[int, str]] = {
    "health": {500: _BUG},
    "health_detailed": {500: _BUG},  # its 503: store_faults.yaml, DynamoDB switched down
    # chat's 409 SESSION_CONFLICT needs a race; its 409 SESSION_USER_MISMATCH is covered, and
    # its 503 comes from the agent (AGENT_THROTTLED / AGENT_UNAVAILABLE), so both stay required.
    # Every /api route's 503 from the store comes from the fault injector (store_faults.yaml).
    "chat": {500: _BUG, 429: _RATE},
    "get_session": {500: _BUG, 429: _RATE},
    "delete_session": {500: _BUG, 429: _RATE},
    "list_user_sessions": {500: _BUG, 429: _RATE, 404: _SLASH},
    "metrics_performance": {500: _BUG},
    "metrics": {500: _BUG},
    "openapi": {500: _BUG},
}

# README: "devstack: AWS on your machine", marker -> what the client gets.
FAULT_STATUS: dict[str, int] = {
    "throttle": 503, "quota": 503, "midstream-throttle": 503,
    "unavailable": 503, "dependency": 503, "model-not-ready": 503, "disconnect": 503,
    "internal": 502, "bad-gateway": 502, "validation": 502, "access-denied": 502,
    "not-found": 502, "conflict": 502, "midstream": 502, "malformed": 502, "empty": 502,
    "timeout": 504, "stall": 504,
}
# Answered before routing on any path, so in no Route.statuses: a path over MAX_PATH_CHARS is
# 414 URI_TOO_LONG, an oversized header or too many is 431 HEADERS_TOO_LARGE
# (shared/pipeline.py, Exchange.admit).
BEFORE_ROUTING = {spec.status for code, spec in CATALOGUE.items()
                  if code.value in ("URI_TOO_LONG", "HEADERS_TOO_LARGE")}
# Answered by routing on a path no route has (or a method it lacks), as the envelope.
ROUTING = {spec.status for code, spec in CATALOGUE.items()
           if code.value in ("NOT_FOUND", "METHOD_NOT_ALLOWED")}
# What the servers themselves answer to raw bytes, before (so whatever) the route: their parsers'
# refusals and the interim 100 (shared/wire.py, "Who answers"). Never a route's status.
SERVER_LEVEL = {*SERVER_REFUSALS, *SERVER_INTERIM}
RAW_NOT_REPLAYED = ("raw steps send bytes on a socket to a real server's HTTP/1.1 parser; the "
                    "in-process replay talks ASGI/WSGI (checked against real servers by "
                    "make parity)")
MAX_LATENCY_CASES = 3
MAX_LATENCY_MS = 200
_TEMPLATE = re.compile(r"{{[^}]*}}")


@cache
def corpus() -> list[Case]:
    return load_corpus(CASES_DIR)


def route_of(method: str, path: str) -> Route | None:
    """The route a request reaches (HEAD reaches GET's), with ``{{...}}`` as a dummy id."""
    plain = unquote(_TEMPLATE.sub("x1", path).split("?", 1)[0])
    wanted = "GET" if method == "HEAD" else method
    return next((r for r in routes_for_path(plain) if r.method == wanted), None)


def covered_pairs(cases: list[Case], raw: bool = False) -> dict[tuple[str, int], list[str]]:
    """Route x expected status -> the steps expecting it: request steps (the coverage, checked
    in-process by ``test_case_statuses``), or with ``raw`` the raw steps (never coverage: their
    400s and 417s are the servers' parsers', not the route's)."""
    pairs: dict[tuple[str, int], list[str]] = {}
    for case in cases:
        for step in case.steps:
            if step.is_control or (step.raw is not None) != raw:
                continue
            route = route_of(step.request.method, step.request.path)
            if route is not None and step.expect_status is not None:
                pairs.setdefault((route.name, step.expect_status), []).append(
                    f"{case.id}:{step.name}")
    return pairs


def reachable_pairs() -> set[tuple[str, int]]:
    return {(r.name, s) for r in ROUTES for s in r.statuses if s not in UNREACHABLE[r.name]}


def message_of(request: Request) -> str:
    if isinstance(request.json, dict) and isinstance(request.json.get("message"), str):
        return str(request.json["message"])
    return request.body or ""


# --- unit: the files ----------------------------------------------------------------------------

@pytest.mark.unit
def test_corpus_parses_with_unique_ids_and_descriptions() -> None:
    cases = corpus()
    assert cases
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids))
    slugs = [c.slug for c in cases]
    assert len(slugs) == len(set(slugs)), "two cases would share ids through {{case}}"
    assert [c.id for c in cases if not c.description.strip()] == []
    names = [(c.id, s.name) for c in cases for s in c.steps]
    assert len(names) == len(set(names)), "step names repeat within a case"


@pytest.mark.unit
def test_every_step_expects_a_status() -> None:
    missing = [f"{c.id}:{s.name}" for c in corpus() for s in c.steps
               if s.expect_status is None and not s.is_control and s.raw is None]
    assert missing == []
    # a raw step says how its connection ends, and expects a status exactly when it is answered
    # (a connection closed, reset or hung without a whole answer has no status to expect)
    raw = [(f"{c.id}:{s.name}", s.expect_end, s.expect_status) for c in corpus()
           for s in c.steps if s.raw is not None]
    assert raw, "no raw step: the wire corpus is gone"
    wrong = [r for r in raw if r[1] is None or (r[1] == "answered") != (r[2] is not None)]
    assert wrong == []


@pytest.mark.unit
def test_size_and_agent_time_stay_small() -> None:
    cases = corpus()
    steps = sum(len(c.steps) for c in cases)
    # store_faults.yaml added 67 (13 of them control steps), large_headers.json 7
    # time.yaml, concurrency.yaml, upstream_text.yaml and the generated limits/ added ~110
    assert 150 <= steps <= 480, steps
    latency: dict[str, int] = {}
    for case in cases:
        for step in case.steps:
            if step.is_control:
                continue
            ms = parse_markers(message_of(step.request)).latency_ms
            if ms is not None:
                latency[case.id] = max(ms, latency.get(case.id, 0))
    assert len(latency) <= MAX_LATENCY_CASES, latency
    assert all(ms <= MAX_LATENCY_MS for ms in latency.values()), latency
    big = CASES_DIR / "large_body.json"
    assert big.stat().st_size < 1_100_000


@pytest.mark.unit
def test_every_reachable_route_status_is_covered() -> None:
    for route in ROUTES:  # the exclusions are documented statuses, each with a reason
        assert set(UNREACHABLE[route.name]) <= set(route.statuses), route.name
    assert set(UNREACHABLE) == {r.name for r in ROUTES}
    covered = covered_pairs(corpus())
    missing = sorted(reachable_pairs() - set(covered))
    assert missing == [], f"route x status pairs no step covers: {missing}"


@pytest.mark.unit
def test_expected_statuses_are_documented_for_their_route() -> None:
    """A step that reaches a route expects one of that route's documented statuses (or one
    the app answers before routing, whatever the route)."""
    by_name = {r.name: r for r in ROUTES}
    stray = {pair: where for pair, where in covered_pairs(corpus()).items()
             if pair[1] not in {*by_name[pair[0]].statuses, *BEFORE_ROUTING}}
    assert stray == {}


@pytest.mark.unit
def test_raw_statuses_are_documented_or_the_servers_own() -> None:
    """A raw step's expected status is one its route documents (or the app answers before
    routing), routing's 404/405 when it reaches no route, or one the servers themselves answer
    (shared/wire.py: SERVER_REFUSALS, SERVER_INTERIM): nothing else."""
    from parity_tests.harness import wire

    # the runner lets exactly these through without the envelope (wire.violations)
    assert set(wire.SERVER_STATUSES) == set(SERVER_REFUSALS)
    by_name = {r.name: r for r in ROUTES}
    stray = {pair: where for pair, where in covered_pairs(corpus(), raw=True).items()
             if pair[1] not in {*by_name[pair[0]].statuses, *BEFORE_ROUTING, *SERVER_LEVEL}}
    assert stray == {}
    unrouted = [f"{c.id}:{s.name} expects {s.expect_status}" for c in corpus() for s in c.steps
                if s.raw is not None and s.expect_status is not None
                and route_of(s.request.method, s.request.path) is None
                and s.expect_status not in {*ROUTING, *BEFORE_ROUTING, *SERVER_LEVEL}]
    assert unrouted == []


@pytest.mark.unit
def test_every_agent_fault_is_covered_and_stores_nothing() -> None:
    assert set(FAULT_STATUS) == set(FAULT_KINDS)
    seen: set[str] = set()
    for case in corpus():
        first = case.steps[0]
        fault = parse_markers(message_of(first.request)).fault
        if fault not in FAULT_STATUS:
            continue
        assert first.expect_status == FAULT_STATUS[fault], case.id
        sid = first.request.json["session_id"]
        after = case.steps[1]
        assert (after.request.method, after.request.path) == (
            "GET", f"/api/v1/chat/sessions/{sid}"), case.id
        assert after.expect_status == 404, case.id
        seen.add(fault)
    assert seen == set(FAULT_KINDS)


# --- integration: the expected statuses, for real, in both colors -------------------------------

def send(client: ColorClient, request: Request) -> Any:
    """What the harness's runner sends for a rendered request."""
    headers = dict(request.headers)
    if request.auth and not any(k.lower() == "x-api-key" for k in headers):
        headers["X-API-Key"] = API_KEYS.split(",")[request.key - 1]
    if request.json is not ABSENT and request.body is None and not any(
            k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    return client.request(request.method, request.path, params=request.query or None,
                          headers=headers, content=request.content())


def control(client: ColorClient, stack: DevStack, step: Step,
            variables: dict[str, str] | None = None) -> None:
    """A control step on devstack's fault injector; ``await: cloudwatch`` flushes the app's
    metrics (in-process apps have no lanes to wait for) and checks the flush met the outage;
    ``seed`` puts its items into the color's sessions table."""
    assert stack.moto is not None
    assert step.control is not None
    if "seed" in step.control:
        import boto3

        from parity_tests.harness.runner import seed_items

        ddb = boto3.client("dynamodb", endpoint_url=stack.moto_url, region_name="us-east-1")
        for item in seed_items(step.control["seed"], variables or {}):
            ddb.put_item(TableName=client.settings.sessions_table, Item=item)
    config = {k: v for k, v in step.control.items() if k not in ("await", "seed")}
    if config:
        stack.moto.switches.update(config)
    if step.control.get("await") == "cloudwatch":
        namespace = client.settings.metrics_namespace or ""
        before = stack.moto.switches.snapshot()["injected"]["cloudwatch"].get(namespace, 0)
        assert client.flush_metrics() == 0
        after = stack.moto.switches.snapshot()["injected"]["cloudwatch"].get(namespace, 0)
        assert after > before, "the flush did not meet the CloudWatch outage"


def run_case(client: ColorClient, case: Case, stack: DevStack) -> list[int]:
    variables = {**case.variables, "case": case.slug}
    statuses = []
    try:
        for step in case.steps:
            if step.raw is not None:  # not replayed in-process (RAW_NOT_REPLAYED)
                continue
            if step.is_control:
                control(client, stack, step, variables)
                continue
            statuses.append(_run_step(client, step, variables))
    finally:
        if case.controlled and stack.moto is not None:
            stack.moto.switches.reset()
    return statuses


def _run_step(client: ColorClient, step: Step, variables: dict[str, str]) -> int:
    resp = send(client, step.request.render(variables))
    for name, path in step.capture.items():
        try:
            variables[name] = str(get_path(resp.json(), path))
        except (KeyError, IndexError, TypeError, ValueError):
            variables[name] = f"no-{name}"  # later steps then fail visibly
    return int(resp.status_code)


@pytest.fixture(scope="module")
def clients(stack: DevStack) -> Iterator[dict[str, ColorClient]]:
    """One app per color for the whole corpus (as the harness runs one server per lane), each
    on its own tables, with the harness's settings: two API keys, one CORS origin, a high rate
    limit and a 1 s agent read timeout (the devstack emulator stalls for 5 s)."""
    suffix = uuid.uuid4().hex[:8]
    with ExitStack() as exits:
        out = {}
        for color in COLORS:
            sessions = f"parity_{color}_sessions_{suffix}"
            limits = f"parity_{color}_limits_{suffix}"
            create_tables(stack.moto_url, sessions, limits)
            settings = stack.settings(
                api_keys=API_KEYS, cors_origins=CORS_ORIGINS, agent_read_timeout_s=1.0,
                agent_max_attempts=1, rate_limit_requests=1_000_000,
                sessions_table=sessions, rate_limit_table=limits,
                metrics_namespace=f"ParityCorpus/{color}/{suffix}",
                # moto on a busy 2-core machine: a slow answer must not fail a case
                dynamodb_read_timeout_s=15.0, dynamodb_max_attempts=1)
            out[color] = open_client(color, settings, exits)
        yield out


@pytest.mark.integration
@pytest.mark.parametrize("case", corpus(), ids=lambda c: c.id)
def test_case_statuses(case: Case, clients: dict[str, ColorClient], stack: DevStack,
                      record_property: Any) -> None:
    """Each step's status is its expect_status in blue and in green; a blue/green difference
    is reported as such (an app bug, never to be hidden by editing the corpus). Raw steps are
    not replayed (:data:`RAW_NOT_REPLAYED`): a case of raw steps only is skipped with the
    reason; in a mixed case they are left out, named in the junit properties and in any
    failure's message."""
    raw = [s.name for s in case.steps if s.raw is not None]
    if raw and all(s.raw is not None or s.is_control for s in case.steps):
        pytest.skip(f"{case.id}: every step is raw: {RAW_NOT_REPLAYED}")
    note = f" (raw steps not replayed: {', '.join(raw)})" if raw else ""
    if raw:
        record_property("raw_steps_not_replayed", ", ".join(raw))
    got = {color: run_case(clients[color], case, stack) for color in COLORS}
    # same tables: leftovers must not matter
    got["blue-again"] = run_case(clients["blue"], case, stack)
    steps = [s for s in case.steps if not s.is_control and s.raw is None]
    expected = [s.expect_status for s in steps]
    if got["blue"] != got["green"]:
        lines = [f"  {s.name}: expected {e}, blue {b}, green {g}"
                 for s, e, b, g in zip(steps, expected, got["blue"], got["green"],
                                       strict=True) if b != g]
        pytest.fail(f"{case.id}: blue and green differ{note}\n" + "\n".join(lines))
    assert got["blue"] == expected, [note] * bool(raw) + [
        f"{s.name}: expected {e}, got {b}"
        for s, e, b in zip(steps, expected, got["blue"], strict=True) if e != b]
    assert got["blue-again"] == expected, (
        f"a second run on the same tables answers differently{note}")

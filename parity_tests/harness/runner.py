"""Run cases against the lanes and judge every step.

For each step: send the same rendered request to every lane at once, read each lane's side
effects, normalise (aliases for generated ids), then compare blue with blue-aa (the A/A
baseline: anything that differs there and is not declared is *undeclared noise*) and blue with
green (what is left after noise and known differences is a *difference*). Each lane's response is
also parsed with the shared contract for its route and status (*contract violations*).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic import ValidationError

from parity_tests.harness.compare import Aliases, Delta, alias_ids, diff, flatten
from parity_tests.harness.lanes import Lane, SideEffects
from parity_tests.harness.model import (
    ABSENT,
    MAX_CONCURRENT,
    Case,
    Request,
    Step,
    get_path,
)
from parity_tests.harness.model import _fill as _fill_text
from parity_tests.harness.routing import (
    SLOW_RAW_AT_ONCE,
    RoutedEffects,
    answer_names,
    expected_s,
    holds_a_worker,
    request_names,
    runs_alone,
)
from parity_tests.harness.rules import KnownDifference, NoiseRule
from shared.routes import Route, routes_for_path

COMPARED_HEADERS = (
    "content-type", "content-encoding", "access-control-allow-origin",
    "access-control-allow-credentials", "access-control-allow-methods",
    "access-control-allow-headers", "access-control-expose-headers", "access-control-max-age",
    "retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "allow", "vary",
    "x-content-type-options", "x-frame-options", "referrer-policy", "cache-control",
    "content-security-policy", "cross-origin-resource-policy",
)


@dataclass
class LaneResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_ms: float
    error: str | None = None

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class StepResult:
    case_id: str
    step: str
    index: int
    method: str
    path: str
    route: str | None
    requests: dict[str, Request]
    responses: dict[str, LaneResponse]
    differences: list[Delta] = field(default_factory=list)
    undeclared_noise: list[Delta] = field(default_factory=list)
    known: list[tuple[Delta, KnownDifference]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    expectation: str | None = None
    error: str | None = None
    effects: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.differences or self.undeclared_noise or self.violations
                    or self.expectation or self.error)


@dataclass
class CaseResult:
    case: Case
    steps: list[StepResult] = field(default_factory=list)
    error: str | None = None

    @property
    def failed(self) -> bool:
        return bool(self.error) or any(s.failed for s in self.steps)


AWAIT_S = 20.0  # a control step's await: how long a flush may take to meet the outage

# answered before a route's handler runs, on any route: preflight, CORS refusal, wrong method,
# over-long path
BEFORE_ROUTING = (204, 403, 405, 414)


def route_of(method: str, path: str) -> Route | None:
    candidates = routes_for_path(path.split("?", 1)[0])
    for route in candidates:
        if route.method == method or (method == "HEAD" and route.method == "GET"):
            return route
    return None


def contract_violations(method: str, path: str, resp: LaneResponse) -> list[str]:
    """What the shared contract says this answer may be, and how it is not."""
    if resp.error:
        return []
    route = route_of(method, path)
    status = resp.status
    if route is None:
        allowed = {404, 405, 403, 401, 429, 413, 414, 204, 503, 500}
        return [] if status in allowed else [f"status {status} on an unrouted request"]
    if status not in route.statuses and status not in BEFORE_ROUTING:
        return [f"status {status} is not documented for {route.method} {route.path}"]
    if method == "HEAD" or status == 204:
        return []
    model = route.model_for(status)
    if model is None:
        return []
    try:
        model.model_validate_json(resp.body)
    except ValidationError as exc:
        return [f"body does not match {model.__name__}: {e['loc']} {e['msg']}"
                for e in exc.errors()[:5]]
    return []


def seed_items(raw: dict[str, Any], static: dict[str, str]) -> list[dict[str, Any]]:
    """The DynamoDB items of a control step's ``seed`` (see :mod:`parity_tests.harness.model`),
    stamped relative to now, as the apps would store them (:func:`shared.sessions.to_item`)."""
    from shared.contracts import ChatMessage, SessionRecord
    from shared.sessions import to_item

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    items = []
    for spec in raw["sessions"]:
        created = now - dt.timedelta(seconds=int(spec.get("age_s", 7200)))
        messages = []
        for turn in range(int(spec.get("turns", 1))):
            messages += [ChatMessage(role="user", content=f"seeded question {turn + 1}",
                                     timestamp=created),
                         ChatMessage(role="assistant", content=f"seeded answer {turn + 1}",
                                     timestamp=created)]
        user = spec.get("user_id")
        record = SessionRecord(
            session_id=_fill_text(str(spec["session_id"]), static),
            user_id=_fill_text(str(user), static) if user is not None else None,
            created_at=created, updated_at=created,
            expires_at=now + dt.timedelta(seconds=int(spec["expires_in_s"])),
            message_count=len(messages), messages=messages)
        items.append(to_item(record, 1))
    return items


class RunHooks:
    """What a staging run changes in how a case is sent and compared (nothing, here)."""

    def template(self, lane: str, request: Request, static: dict[str, str]) -> Request:
        """The step's request (not yet rendered) as this lane sends it."""
        return request

    def before_step(self, request: Request, lanes: int) -> None:
        """Called before a step's requests are sent (pacing)."""

    def document(self, lane: str, route: str | None, raw: dict[str, Any]) -> dict[str, Any]:
        """A lane's answer (status, headers, body, effects) before ids are aliased."""
        return raw


UNCLAIMED_CASE = "run/unclaimed-side-effects"
CONCURRENCY = 6  # cases in flight at once in a local run (python -m parity_tests --concurrency)


@dataclass
class _CaseContext:
    """One case in flight: the ids it named per lane, the API keys its worker sends."""

    names: dict[str, set[str]] = field(default_factory=dict)
    keys: tuple[str, ...] | None = None


class Runner:
    """Runs cases against the lanes. With ``case_keys`` (a local run), case number n sends
    ``case_keys(n)`` as its API keys: its own rate-limit counter. With ``concurrency`` > 1 (a
    local run), that many cases are in flight at once, their side effects told apart by
    :class:`~parity_tests.harness.routing.RoutedEffects`; the cases that
    :func:`~parity_tests.harness.routing.runs_alone` then run one by one."""

    def __init__(self, lanes: list[Lane], noise: list[NoiseRule], known: list[KnownDifference],
                 effects: SideEffects | None, today: dt.date | None = None,
                 progress: Callable[[CaseResult], None] | None = None,
                 hooks: RunHooks | None = None, history_limit: int = 20,
                 concurrency: int = 1,
                 case_keys: Callable[[int], tuple[str, ...]] | None = None) -> None:
        self.hooks = hooks or RunHooks()
        self.lanes = lanes
        self.noise = noise
        self.known = [k for k in known if not k.expired(today or dt.date.today())]
        self.progress = progress
        self._local = threading.local()
        self._progress_lock = threading.Lock()
        self.concurrency = max(1, concurrency)
        self.case_keys = case_keys
        self.routed: RoutedEffects | None = None
        self.effects: SideEffects | RoutedEffects | None = effects
        if effects is not None and self.concurrency > 1:
            self.routed = RoutedEffects(effects, self._names_of)
            self.effects = self.routed
        self.used_rules: set[int] = set()
        self.used_known: set[int] = set()
        # one client for the fault injector (a client per call built an SSL context each
        # time: 20-50 ms of CPU, 10 s over a run); no kept-alive sockets, so nothing to close
        self._control_http = httpx.Client(
            timeout=10, limits=httpx.Limits(max_keepalive_connections=0))
        self.pool = ThreadPoolExecutor(max_workers=len(lanes) * self.concurrency)
        self.burst_pool = ThreadPoolExecutor(max_workers=len(lanes) * MAX_CONCURRENT)
        self.history_limit = history_limit

    # per case, per thread: the aliases of generated ids, the ids the case named, its keys
    @property
    def aliases(self) -> dict[str, Aliases]:
        if not hasattr(self._local, "aliases"):
            self._local.aliases = {lane.name: Aliases() for lane in self.lanes}
        return self._local.aliases  # type: ignore[no-any-return]

    @aliases.setter
    def aliases(self, value: dict[str, Aliases]) -> None:
        self._local.aliases = value

    def _context(self) -> _CaseContext:
        """The calling thread's case (the steps' sending threads are handed it)."""
        if not hasattr(self._local, "context"):
            self._local.context = _CaseContext()
        return self._local.context  # type: ignore[no-any-return]

    def _names_of(self, lane: str) -> set[str]:
        return self._context().names.get(lane, set())

    def _name(self, lane: str, names: set[str], context: _CaseContext | None = None) -> None:
        if self.routed is not None:
            (context or self._context()).names.setdefault(lane, set()).update(names)

    def run(self, cases: Iterable[Case]) -> list[CaseResult]:
        cases = list(cases)
        if self.concurrency == 1:
            results = []
            for number, case in enumerate(cases):
                result = self.run_case(case, number)
                results.append(result)
                if self.progress:
                    self.progress(result)
            return results
        return self._run_at_once(cases)

    def _collect(self, lane: Lane, context: _CaseContext, since: float | None = None
                 ) -> dict[str, Any]:
        """A lane's side effects for the case of ``context`` (from any thread); ``since``: when
        the step's answers were all in."""
        assert self.effects is not None
        if self.routed is None:
            return self.effects.collect(lane)
        return self.routed.collect(lane, context.names.get(lane.name, set()), since)

    def _done(self, result: CaseResult) -> None:
        if self.progress:
            with self._progress_lock:
                self.progress(result)

    def _run_at_once(self, cases: list[Case]) -> list[CaseResult]:
        """The cases that run alone, one by one; then the others, ``concurrency`` at a time,
        the longest first; then what no case claimed."""
        by_index: dict[int, CaseResult] = {}
        # the longest first, so that the run does not end on one slow case
        shared = sorted(((i, c) for i, c in enumerate(cases) if not runs_alone(c)),
                        key=lambda item: -expected_s(item[1]))
        alone = [(i, c) for i, c in enumerate(cases) if runs_alone(c)]
        # the ones that run alone first: they mostly wait (fault switches, timeouts), while the
        # run-level checks' stack boots beside them
        for index, case in alone:
            by_index[index] = result = self.run_case(case, index)
            self._done(result)
        queue = list(shared)
        queue_lock = threading.Condition()
        slow = {i for i, c in shared if holds_a_worker(c)}
        slow_running = [0]

        def take() -> tuple[int, Case] | None:
            """The next case, skipping slow raw ones while SLOW_RAW_AT_ONCE are running."""
            with queue_lock:
                while queue:
                    for at, (index, _case) in enumerate(queue):
                        if index not in slow or slow_running[0] < SLOW_RAW_AT_ONCE:
                            slow_running[0] += index in slow
                            return queue.pop(at)
                    queue_lock.wait()  # only slow ones are left: wait for one to end
                return None

        def worker() -> None:
            while True:
                item = take()
                if item is None:
                    return
                index, case = item
                try:
                    result = self.run_case(case, index)
                except Exception as exc:  # one case's crash is its own failure, not the run's
                    result = CaseResult(case, error=f"runner: {type(exc).__name__}: {exc}")
                by_index[index] = result
                if index in slow:
                    with queue_lock:
                        slow_running[0] -= 1
                        queue_lock.notify_all()
                self._done(result)

        threads = [threading.Thread(target=worker, name=f"parity-case-{n}")
                   for n in range(self.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results = [by_index[i] for i in range(len(cases))]
        unclaimed = self._unclaimed()
        if unclaimed is not None:
            results.append(unclaimed)
        return results

    def _unclaimed(self) -> CaseResult | None:
        """Side effects no case named, compared between the lanes like a step's."""
        if self.routed is None:
            return None
        docs_raw = {lane.name: self.routed.unclaimed(lane) for lane in self.lanes}
        if not any(docs_raw.values()):
            return None
        case = Case(id=UNCLAIMED_CASE, steps=(), source="(the runner)", description=(
            "Writes and agent calls that no case named (a session id it sent or was answered),"
            " compared between the lanes at the end of the run."))
        result = CaseResult(case)
        self.aliases = {lane.name: Aliases() for lane in self.lanes}
        step = StepResult(case.id, "unclaimed", 0, "-", "-", None, {}, {},
                          effects=docs_raw)
        docs = {}
        for lane in self.lanes:
            raw = self.hooks.document(lane.name, None, dict(docs_raw[lane.name]))
            aliased = alias_ids(raw, self.noise, self.aliases[lane.name])
            flat: dict[str, Any] = {}
            for key, value in aliased.items():
                flat.update(flatten(value, key, ("agent_calls",)))
            docs[lane.name] = flat
        self._judge(case, step, docs)
        result.steps.append(step)
        return result if step.failed else None

    def run_case(self, case: Case, number: int = 0) -> CaseResult:
        """One case, all its steps in order (``number``: its place in the run, which picks
        its API keys when the runner has ``case_keys``)."""
        result = CaseResult(case)
        self._context().keys = self.case_keys(number) if self.case_keys else None
        static = {**case.variables, "case": case.slug}
        variables = {lane.name: dict(static) for lane in self.lanes}
        # ids never cross cases (each case has its own users and sessions): a divergence in one
        # case must not shift the numbering of the next
        self.aliases = {lane.name: Aliases() for lane in self.lanes}
        self._context().names = {lane.name: set() for lane in self.lanes}
        injected = self._injected() if case.controlled else {}
        try:
            for index, step in enumerate(case.steps):
                if step.control is not None:
                    problem = (self.seed(step.control["seed"], static)
                               if "seed" in step.control else None)
                    rest = {k: v for k, v in step.control.items() if k != "seed"}
                    if not problem and rest:
                        problem = self.control(rest, injected)
                    if problem:
                        result.error = f"step {step.name}: {problem}"
                        break
                    continue
                if step.raw is not None:  # bytes on a socket (parity_tests.harness.wire)
                    try:
                        result.steps.append(self.run_raw(case, step, index, variables))
                    except KeyError as exc:
                        result.error = f"step {step.name}: {exc.args[0]}"
                        break
                    continue
                try:
                    rendered = {lane.name: self.hooks.template(lane.name, step.request, static)
                                .render(variables[lane.name]) for lane in self.lanes}
                    copies = {lane.name: [
                        self.hooks.template(lane.name, step.request, static).render(
                            {**variables[lane.name], "i": str(i + 1)})
                        for i in range(step.concurrent)] for lane in self.lanes
                    } if step.concurrent > 1 else {}
                except KeyError as exc:
                    result.error = f"step {step.name}: {exc.args[0]}"
                    break
                outcome = (self.run_concurrent(case, step, index, copies) if copies
                           else self.run_step(case, step, index, rendered))
                result.steps.append(outcome)
                for name, path in step.capture.items():
                    for lane in self.lanes:
                        try:
                            value = get_path(outcome.responses[lane.name].json, path)
                        except (KeyError, IndexError, TypeError):
                            outcome.error = (f"capture {name} from {path}: absent in "
                                             f"{lane.name}'s answer")
                            return result
                        variables[lane.name][name] = str(value)
        finally:
            if case.controlled:  # a case never leaves a fault switched on for the next
                self._faults("DELETE")
        return result

    # --- control steps: the devstack fault injector ------------------------------------------

    def _injectors(self) -> list[str]:
        return sorted({lane.aws_url for lane in self.lanes if lane.aws_url})

    def _faults(self, method: str, config: dict[str, Any] | None = None) -> list[Any]:
        return [self._control_http.request(method, url + "/_faults/config", json=config
                                           ).raise_for_status().json()
                for url in self._injectors()]

    def _injected(self) -> dict[str, int]:
        """CloudWatch faults injected so far, per namespace, summed over the injectors."""
        counts: dict[str, int] = {}
        for state in self._faults("GET"):
            for scope, n in state["injected"]["cloudwatch"].items():
                counts[scope] = counts.get(scope, 0) + int(n)
        return counts

    def seed(self, raw: dict[str, Any], static: dict[str, str]) -> str | None:
        """Put the same seeded items into every lane's sessions table (DynamoDB PutItem), then
        read the lanes' side effects once so the seeding is no step's effect."""
        if self.effects is None or any(not lane.aws_url or "sessions" not in lane.tables
                                       for lane in self.lanes):
            return "seeding needs the local stack (each lane's tables)"
        items = seed_items(raw, static)
        for lane in self.lanes:
            self._name(lane.name, {str(v.get("S")) for item in items for v in item.values()
                                   if isinstance(v, dict) and "S" in v})
            ddb = self.effects.client(lane)
            for item in items:
                ddb.put_item(TableName=lane.tables["sessions"], Item=item)
        for lane in self.lanes:
            self.effects.collect(lane)
        return None

    def control(self, control: dict[str, Any], before: dict[str, int]) -> str | None:
        """Apply a control step; a problem (as text) fails the case."""
        if not self._injectors():
            return "control steps need the local stack (its fault injector)"
        config = {k: v for k, v in control.items() if k not in ("await", "seed")}
        if config:
            self._faults("POST", config)
        if control.get("await") == "cloudwatch":
            deadline = time.monotonic() + AWAIT_S
            while True:
                now = self._injected()
                missing = [lane.name for lane in self.lanes
                           if now.get(lane.namespace or "", 0) <= before.get(
                               lane.namespace or "", 0)]
                if not missing:
                    return None
                if time.monotonic() > deadline:
                    return (f"no CloudWatch call of {', '.join(missing)} met the outage "
                            f"within {AWAIT_S:.0f} s")
                time.sleep(0.1)
        return None

    # --- one step ---------------------------------------------------------------------------

    def _send(self, lane: Lane, request: Request, context: _CaseContext | None = None
              ) -> LaneResponse:
        context = context or self._context()
        headers = dict(request.headers)
        if request.auth and not any(k.lower() == "x-api-key" for k in headers):
            keys = context.keys or lane.api_keys or (lane.api_key,)
            headers["X-API-Key"] = keys[min(request.key, len(keys)) - 1]
        if self.routed is not None:
            self._name(lane.name, request_names(request), context)
        content = request.content()
        if request.json is not ABSENT and request.body is None and not any(
                k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            # urlencode keeps repeated keys in their order (httpx's params would group them)
            url = request.path + ("?" + urlencode(request.query) if request.query else "")
            resp = lane.http.request(request.method, url,
                                     headers=headers, content=content)
        except httpx.HTTPError as exc:
            return LaneResponse(0, {}, b"", (time.perf_counter() - started) * 1000,
                                error=type(exc).__name__)
        answer = LaneResponse(resp.status_code, {k.lower(): v for k, v in resp.headers.items()},
                              resp.content, (time.perf_counter() - started) * 1000)
        if self.routed is not None:
            self._name(lane.name, answer_names(answer.json), context)
        return answer

    def run_step(self, case: Case, step: Step, index: int, rendered: dict[str, Request]
                 ) -> StepResult:
        self.hooks.before_step(rendered[self.lanes[0].name], len(self.lanes))
        context = self._context()
        futures = {lane.name: self.pool.submit(self._send, lane, rendered[lane.name], context)
                   for lane in self.lanes}
        responses = {name: f.result() for name, f in futures.items()}
        answered = time.monotonic()
        effects: dict[str, Any] = {}
        if self.effects is not None:
            effects_f = {lane.name: self.pool.submit(self._collect, lane, context, answered)
                         for lane in self.lanes}
            effects = {name: f.result() for name, f in effects_f.items()}
        first = rendered[self.lanes[0].name]
        route = route_of(first.method, first.path)
        result = StepResult(case.id, step.name, index, first.method, first.path,
                            route.path if route else None, rendered, responses,
                            effects=effects)
        template = result.route
        docs = {lane.name: self._document(lane, rendered[lane.name], responses[lane.name],
                                          effects.get(lane.name), case, template)
                for lane in self.lanes}
        self._judge(case, result, docs)
        for lane in self.lanes:
            resp = responses[lane.name]
            if resp.error:
                result.error = f"{lane.name}: {resp.error}"
            for violation in contract_violations(first.method, first.path, resp):
                result.violations.append(f"{lane.name}: {violation}")
        missed = [f"{name} answered {r.status}" for name, r in responses.items()
                  if step.expect_status is not None and r.status != step.expect_status]
        if missed:
            result.expectation = f"expected {step.expect_status}; " + ", ".join(missed)
        return result

    # --- a raw step: bytes on a socket ------------------------------------------------------

    def run_raw(self, case: Case, step: Step, index: int,
                variables: dict[str, dict[str, str]]) -> StepResult:
        """Send a raw step's bytes to every lane at once (:mod:`parity_tests.harness.wire`);
        compare per lane the answers (status, error code, envelope or not, how many, in what
        order) and how the connection ended; then the side effects, as for any step (a body the
        server could not read whole is never acted on: the stored state shows it)."""
        from parity_tests.harness import wire

        assert step.raw is not None
        context = self._context() if hasattr(self, "_context") else None
        keys = getattr(context, "keys", None)
        rendered = {}
        secrets: dict[str, str] = {}
        for lane in self.lanes:
            url = httpx.URL(lane.url)
            secrets[lane.name] = keys[0] if keys else lane.api_key
            rendered[lane.name] = step.raw.render({
                **variables[lane.name], "host": f"{url.host}:{url.port}",
                "api_key": secrets[lane.name]})
        self.hooks.before_step(step.request, len(self.lanes))

        def send(lane: Lane) -> wire.Exchange:
            url = httpx.URL(lane.url)
            if url.scheme != "http":
                return wire.Exchange(error=f"raw steps need a plain http target, not {url}")
            raw = rendered[lane.name]
            return wire.send_raw(url.host, url.port or 80, raw.encoded(),
                                 half_close=raw.half_close, read_timeout=raw.read_timeout)

        futures = {lane.name: self.pool.submit(send, lane) for lane in self.lanes}
        exchanges = {name: f.result() for name, f in futures.items()}
        compared = wire.documents(exchanges)
        method, path = step.raw.request_line
        # what was sent, as the report keeps it: the lane's key never leaves the run
        requests = {name: Request(method=method, path=path, auth=False, body=r.text().replace(
                        secrets[name], "{{api_key}}") if secrets[name] else r.text())
                    for name, r in rendered.items()}
        responses = {}
        for name, ex in exchanges.items():
            first = ex.answers[0] if ex.answers else None
            headers = {k.lower(): v for k, v in (first.headers if first else [])}
            headers["wire-answers"] = " | ".join(ex.summaries()) or "(none)"
            headers["wire-end"] = ex.end
            responses[name] = LaneResponse(first.status if first else 0, headers,
                                           first.body if first else b"", ex.elapsed_ms,
                                           error=ex.error)
        name_it = getattr(self, "_name", None)
        if name_it is not None:  # what the case named: for side effects sent at once
            for lane in self.lanes:
                tokens = set(wire.TOKEN.findall(requests[lane.name].body or ""))
                for answer in exchanges[lane.name].answers:
                    tokens |= set(wire.TOKEN.findall(answer.body.decode("latin-1")))
                name_it(lane.name, tokens)
        effects: dict[str, Any] = {}
        if self.effects is not None:
            collect = getattr(self, "_collect", None)
            effects = {lane.name: (collect(lane, context) if collect is not None and context
                                   is not None else self.effects.collect(lane))
                       for lane in self.lanes}
        route = route_of(method, path)
        result = StepResult(case.id, step.name, index, method, path,
                            route.path if route else None, requests, responses,
                            effects=effects)
        docs = {}
        for lane in self.lanes:
            raw_doc = {**compared[lane.name], **effects.get(lane.name, {})}
            raw_doc = self.hooks.document(lane.name, result.route, raw_doc)
            aliased = alias_ids(raw_doc, self.noise, self.aliases[lane.name])
            flat: dict[str, Any] = {}
            for key, value in aliased.items():
                flat.update(flatten(value, key, case.unordered))
            docs[lane.name] = flat
        self._judge(case, result, docs)
        for lane in self.lanes:
            ex = exchanges[lane.name]
            if ex.error:
                result.error = f"{lane.name}: {ex.error}"
            for problem in wire.violations(ex):
                result.violations.append(f"{lane.name}: {problem}")
            final = [a for a in ex.answers if a.status >= 200][:1]  # the step's own request
            for answer in final:
                if answer.envelope or 200 <= answer.status < 300:
                    resp = LaneResponse(answer.status, dict(answer.headers), answer.body, 0)
                    for violation in contract_violations(method, path, resp):
                        result.violations.append(f"{lane.name}: {violation}")
        missed = [f"{name} answered {responses[name].status}" for name in exchanges
                  if step.expect_status is not None
                  and responses[name].status != step.expect_status]
        ended = [f"{name} ended {compared[name]['end']} ({exchanges[name].end})"
                 for name in exchanges
                 if step.expect_end is not None and compared[name]["end"] != step.expect_end]
        if missed or ended:
            result.expectation = "; ".join(
                ([f"expected {step.expect_status}; " + ", ".join(missed)] if missed else [])
                + ([f"expected the connection {step.expect_end}; " + ", ".join(ended)]
                   if ended else []))
        return result

    # --- a concurrent step ---------------------------------------------------------------

    def _stored_turns(self, lane: Lane, requests: list[Request]) -> dict[str, tuple[int, int]]:
        """Per session a copy names (a chat's session_id): (message_count, user messages)."""
        out: dict[str, tuple[int, int]] = {}
        if self.effects is None or not lane.aws_url or "sessions" not in lane.tables:
            return out
        ddb = self.effects.client(lane)
        for request in requests:
            sid = request.json.get("session_id") if isinstance(request.json, dict) else None
            if not isinstance(sid, str) or sid in out:
                continue
            item = ddb.get_item(TableName=lane.tables["sessions"], ConsistentRead=True,
                                Key={"session_id": {"S": sid}}).get("Item")
            if item is None:
                out[sid] = (0, 0)
                continue
            users = sum(1 for m in item.get("messages", {}).get("L", [])
                        if m["M"]["role"]["S"] == "user")
            out[sid] = (int(item["message_count"]["N"]), users)
        return out

    def run_concurrent(self, case: Case, step: Step, index: int,
                       copies: dict[str, list[Request]]) -> StepResult:
        """Every copy of the request in flight at once in every lane; answers compared as a
        multiset, the stored sessions' turn counts checked against the answers."""
        first_lane = self.lanes[0].name
        self.hooks.before_step(copies[first_lane][0], len(self.lanes) * step.concurrent)
        before = {lane.name: self._stored_turns(lane, copies[lane.name]) for lane in self.lanes}
        context = self._context()
        futures = {lane.name: [self.burst_pool.submit(self._send, lane, r, context)
                               for r in copies[lane.name]] for lane in self.lanes}
        answers = {name: [f.result() for f in fs] for name, fs in futures.items()}
        effects: dict[str, Any] = {}
        if self.effects is not None:
            effects = {lane.name: self.effects.collect(lane) for lane in self.lanes}
        after = {lane.name: self._stored_turns(lane, copies[lane.name]) for lane in self.lanes}
        first = copies[first_lane][0]
        route = route_of(first.method, first.path)
        result = StepResult(case.id, step.name, index, first.method, first.path,
                            route.path if route else None,
                            {n: c[0] for n, c in copies.items()},
                            {n: a[0] for n, a in answers.items()}, effects=effects)
        docs = {}
        for lane in self.lanes:
            tally: dict[str, int] = {}
            for resp in answers[lane.name]:
                body = resp.json
                code = body.get("error_code") if isinstance(body, dict) else None
                key = f"{resp.status} {code}" if code else str(resp.status)
                tally[key] = tally.get(key, 0) + 1
                if resp.error:
                    result.error = f"{lane.name}: {resp.error}"
                for violation in contract_violations(first.method, first.path, resp):
                    result.violations.append(f"{lane.name}: {violation}")
            ok = sum(1 for r in answers[lane.name] if r.status == 200)
            for sid, (count, users) in after[lane.name].items():
                was, was_users = before[lane.name].get(sid, (0, 0))
                trimmed = count > self.history_limit  # older turns left the history
                if count - was != 2 * ok or (not trimmed and users - was_users != ok):
                    result.violations.append(
                        f"{lane.name}: invariant: session {sid} gained {count - was} messages "
                        f"({users - was_users} user turns) for {ok} chats answered 200 (a turn "
                        "lost or doubled)")
            raw = {"answers": tally, **effects.get(lane.name, {})}
            raw = self.hooks.document(lane.name, result.route, raw)
            aliased = alias_ids(raw, self.noise, self.aliases[lane.name])
            flat: dict[str, Any] = {}
            for key, value in aliased.items():
                flat.update(flatten(value, key, (*case.unordered, "agent_calls")))
            docs[lane.name] = flat
        self._judge(case, result, docs)
        # a concurrent step's expect_status: at least one copy answers it in every lane
        missed = [f"{name} answered {sorted(r.status for r in rs)}"
                  for name, rs in answers.items() if step.expect_status is not None
                  and all(r.status != step.expect_status for r in rs)]
        if missed:
            result.expectation = f"expected {step.expect_status}; " + ", ".join(missed)
        return result

    def _judge(self, case: Case, result: StepResult, docs: dict[str, dict[str, Any]]) -> None:
        """blue vs blue-aa (undeclared noise), then blue vs the candidate (differences)."""
        names = [lane.name for lane in self.lanes]
        baseline, candidate = names[0], names[-1]
        noisy: set[str] = set()
        if "blue-aa" in docs:
            for delta in diff(docs[baseline], docs["blue-aa"], self.noise, result.route,
                              self.used_rules):
                noisy.add(delta.path)
                result.undeclared_noise.append(delta)
        for delta in diff(docs[baseline], docs[candidate], self.noise, result.route,
                          self.used_rules):
            if delta.path in noisy:
                continue  # already reported as undeclared noise
            known = next(((i, k) for i, k in enumerate(self.known)
                          if k.covers(case.id, delta.path)), None)
            if known is not None:
                self.used_known.add(known[0])
                result.known.append((delta, known[1]))
            else:
                result.differences.append(delta)

    def _document(self, lane: Lane, request: Request, resp: LaneResponse,
                  effects: dict[str, Any] | None, case: Case, route: str | None = None
                  ) -> dict[str, Any]:
        headers = {k: v for k, v in resp.headers.items() if k in COMPARED_HEADERS}
        sent_id = any(k.lower() == "x-request-id" for k in request.headers)
        if sent_id and "x-request-id" in resp.headers:
            headers["x-request-id"] = resp.headers["x-request-id"]
        body = resp.json
        if body is None:
            body = resp.body.decode("utf-8", errors="replace")
        raw = {"status": resp.status, "headers": headers, "body": body, **(effects or {})}
        raw = self.hooks.document(lane.name, route, raw)
        aliased = alias_ids(raw, self.noise, self.aliases[lane.name])
        flat: dict[str, Any] = {}
        for key, value in aliased.items():
            flat.update(flatten(value, key, case.unordered))
        return flat

"""Cases at once on one set of lanes: whose side effects are whose.

A local run sends several cases at once to the same lanes, to spend the time one case waits for
a timeout on the others. Their side effects land in the same tables and the same agent call log,
so each change is given to the case that *names* its key: a session id that the case sent (in a
path, a query or a body) or was answered (anywhere in a body). Session and user ids are unique per
case in the corpus (``s-{{case}}``, generated ids), so this is exact:

- one pull per lane reads everything new (the tables' streams and the agent's call log);
- each change goes to the pulling case if it names the key, or waits, unclaimed, until a case
  names it (a session id a server generated is named by the answer that carries it, which is
  read before the pull);
- what no case ever claims is compared between the lanes at the end of the run
  (:meth:`RoutedEffects.unclaimed`), so a write that no case asked for is still seen.

What cannot be told apart runs alone (:func:`runs_alone`): a case that switches the fault
injector (the switch is global) or has a step with requests in flight at once (its outcome
depends on the servers' free workers, which other cases would take).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from parity_tests.harness.lanes import Lane, SideEffects
from parity_tests.harness.model import ABSENT, Case, Request

SLOW_RAW_AT_ONCE = 2  # slow-client raw cases in flight at once (each holds a blue worker)


def holds_a_worker(case: Case) -> bool:
    """A raw case whose client is slow or idle on purpose: it holds one of blue's sync workers
    until a server bound closes it, so only :data:`SLOW_RAW_AT_ONCE` run at once (were blue's
    workers all held, the next connection would wait in the backlog, its bounds starting late
    in blue only)."""
    return any(s.raw is not None and (s.expect_end in ("closed", "timeout") or any(
        isinstance(w, dict) and "pause" in w for w in s.raw.writes)) for s in case.steps)


def expected_s(case: Case) -> float:
    """About how long a case waits (not computes): the runner starts the longest first, so
    that the last seconds of a run are not one slow case alone (longest processing time first).
    Read from what the case asks for: a raw client's pauses and read timeout, an agent or
    DynamoDB fault marker (a timeout, or a failure the SDK retries after a backoff)."""
    total = 0.0
    for step in case.steps:
        if step.raw is not None:
            total += sum(float(w["pause"]) for w in step.raw.writes
                         if isinstance(w, dict) and "pause" in w)
            # a closing server ends the read early, one that keeps the connection alive after
            # its answer (green) does not: the read timeout, either way at most
            total += step.raw.read_timeout
            continue
        if step.request is None:
            continue
        text = json.dumps(step.request.to_dict(), default=str)
        if "[[fault:timeout" in text or "[[fault:stall" in text or "ddb:timeout" in text:
            total += 5.0
        elif "[[fault:" in text or "ddb:" in text or "[[latency:" in text:
            total += 1.0
        total += 0.05 * step.concurrent
    return total


def runs_alone(case: Case) -> bool:
    """Whether the case must have the lanes to itself."""
    return any((s.control is not None and set(s.control) - {"seed"}) or s.concurrent > 1
               for s in case.steps)


def _strings(value: Any, out: set[str]) -> None:
    """Every string in a JSON value (keys too), however deep, without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.add(item)
        elif isinstance(item, dict):
            out.update(str(key) for key in item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def request_names(request: Request) -> set[str]:
    """Every id a request may name: its path segments (also decoded), query values, body
    strings."""
    out: set[str] = set()
    for segment in request.path.split("?", 1)[0].split("/"):
        if segment:
            out.update((segment, unquote(segment)))
    for _, value in request.query:
        out.update((value, unquote(value)))
    if request.json is not ABSENT:
        _strings(request.json, out)
    if request.body is not None:
        try:
            _strings(json.loads(request.body), out)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            out.add(request.body)
    return out


def answer_names(body: Any) -> set[str]:
    out: set[str] = set()
    _strings(body, out)
    return out


def _calls_of(call: dict[str, Any], names: set[str]) -> bool:
    return str(call.get("session_id")) in names


class RoutedEffects:
    """A :class:`SideEffects` whose ``collect`` gives the calling case its own changes only.

    ``names(lane)`` is what the calling thread's case has named so far in that lane."""

    def __init__(self, inner: SideEffects, names: Callable[[str], set[str]]) -> None:
        self.inner = inner
        self._names = names
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._pending: dict[str, dict[str, Any]] = {}
        self._pulled_at: dict[str, float] = {}  # lane -> when its last pull began

    # what is not per case goes to the real reader
    def client(self, lane: Lane) -> Any:
        return self.inner.client(lane)

    def final_state(self, lane: Lane) -> dict[str, Any]:
        return self.inner.final_state(lane)

    def run_counters(self, lane: Lane) -> dict[str, float]:
        return self.inner.run_counters(lane)

    def _lock(self, lane: Lane) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(lane.name, threading.Lock())

    def _pull(self, lane: Lane, since: float | None = None) -> dict[str, Any]:
        """Read everything new into the lane's pending changes (under the lane's lock), unless
        a pull that began at or after ``since`` (a monotonic time, when the caller's answers
        were all in) has done it already: every write of the caller's step landed before its
        answer, so that pull saw it. Cases in flight at once share their pulls this way."""
        pending = self._pending.setdefault(lane.name, {"dynamodb": {}, "agent_calls": []})
        if since is not None and self._pulled_at.get(lane.name, float("-inf")) >= since:
            return pending
        self._pulled_at[lane.name] = time.monotonic()
        doc = self.inner.collect(lane)
        for role, changed in doc.get("dynamodb", {}).items():
            pending["dynamodb"].setdefault(role, {}).update(changed)
        pending["agent_calls"].extend(doc.get("agent_calls", []))
        return pending

    def collect(self, lane: Lane, names: set[str] | None = None,
                since: float | None = None) -> dict[str, Any]:
        """The changes the case names (by default the calling thread's case); ``since``: when
        its step's answers were all in (see :meth:`_pull`)."""
        if names is None:
            names = self._names(lane.name)
        with self._lock(lane):
            pending = self._pull(lane, since)
            dynamodb: dict[str, Any] = {}
            for role, changed in pending["dynamodb"].items():
                mine = [key for key in changed if key in names]
                if mine:
                    dynamodb[role] = {key: changed.pop(key) for key in mine}
            calls = [c for c in pending["agent_calls"] if _calls_of(c, names)]
            pending["agent_calls"] = [c for c in pending["agent_calls"]
                                      if not _calls_of(c, names)]
        doc: dict[str, Any] = {}
        if dynamodb:
            doc["dynamodb"] = dynamodb
        if calls:
            doc["agent_calls"] = calls
        return doc

    def unclaimed(self, lane: Lane) -> dict[str, Any]:
        """What no case named, after a last pull: ``{}`` when every change had its case."""
        with self._lock(lane):
            pending = self._pull(lane)
            doc: dict[str, Any] = {}
            dynamodb = {role: dict(changed) for role, changed in pending["dynamodb"].items()
                        if changed}
            if dynamodb:
                doc["dynamodb"] = dynamodb
            if pending["agent_calls"]:
                doc["agent_calls"] = list(pending["agent_calls"])
            return doc


__all__ = ["RoutedEffects", "answer_names", "request_names", "runs_alone"]


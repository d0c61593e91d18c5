"""The cutover controller: pre-traffic gate, then each step's weight, bake and analysis, then
promotion or rollback. Fails closed: an error while moving traffic holds or rolls back as the
plan says, never carries on.

Exit codes (:class:`Outcome`): 0 completed, 1 blocked before traffic, 2 failed (rollback could
not be confirmed: page a human), 3 rolled back, 4 paused (resume or abort), 5 lock lost or held,
130 interrupted (paused, resumable).
"""

from __future__ import annotations

import math
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploy.analysis import SERVICE, CloudWatchSource, WindowResult, judge
from deploy.notify import Notifier
from deploy.plan import Plan, Step
from deploy.state import (
    ACTIVE,
    AuditLog,
    Heartbeat,
    LockHeld,
    Record,
    StateError,
    StateStore,
    new_owner,
)
from deploy.traffic import ALL_BLUE, ElbTraffic, TrafficError, Weights

AWS_ERRORS = (BotoCoreError, ClientError, TrafficError, StateError, LookupError, OSError)
EXIT = {"completed": 0, "blocked": 1, "failed": 2, "rolled_back": 3, "paused": 4,
        "lock": 5, "aborted": 3, "interrupted": 130}


@dataclass(frozen=True)
class Outcome:
    cutover_id: str
    state: str
    reason: str
    exit_code: int


@dataclass(frozen=True)
class PreTrafficResult:
    passed: bool
    summary: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


ParityGate = Callable[[], PreTrafficResult]


def _fmt(value: float | None, unit: str = "ms") -> str:
    return "-" if value is None else f"{value:.0f}{unit}"


def window_line(plan: Plan, step_index: int, weights: Weights, result: WindowResult,
                counts: dict[str, int], left_s: float) -> str:
    """One live line per analysis window."""
    scope = SERVICE if SERVICE in result.figures.scopes else next(
        iter(sorted(result.figures.scopes)), SERVICE)
    parts = [f"step {step_index + 1}/{len(plan.steps)} {weights}"]
    colors = result.figures.scopes.get(scope, {})
    for color in ("blue", "green"):
        f = colors.get(color)
        if f is None:
            parts.append(f"{color} -")
            continue
        parts.append(f"{color} {f.requests:.0f} req {f.errors_5xx:.0f} 5xx "
                     f"p90 {_fmt(f.p90_ms)} p99 {_fmt(f.p99_ms)}")
    parts.append(f"{result.verdict.upper()} (pass {counts['pass']}, fail {counts['fail']}, "
                 f"inconclusive {counts['inconclusive']})")
    parts.append(f"{max(0.0, left_s):.0f}s left")
    line = " | ".join(parts)
    if result.verdict != "pass":
        line += " | " + "; ".join(result.reasons[:3])
    return line


class Controller:
    def __init__(self, plan: Plan, traffic: ElbTraffic, source: CloudWatchSource,
                 store: StateStore, notifier: Notifier, report_dir: Path, *,
                 parity: ParityGate | None = None, printer: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.time, owner: str | None = None,
                 tick_s: float = 0.2) -> None:
        self.plan = plan
        self.traffic = traffic
        self.source = source
        self.store = store
        self.notifier = notifier
        self.report_dir = report_dir
        self.parity = parity
        self.print = printer
        self.clock = clock
        self.owner = owner or new_owner()
        self.tick_s = tick_s
        self.interrupted = threading.Event()
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.audit: AuditLog | None = None
        self._heartbeat: Heartbeat | None = None

    # --- plumbing ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """Ctrl-C or SIGTERM: weights stay where they are, the record stays resumable."""
        def handler(signum: int, _frame: object) -> None:
            self.interrupted.set()
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def _event(self, record: Record, event: str, notify: bool = False, **fields: Any
               ) -> dict[str, Any]:
        assert self.audit is not None
        line = self.audit.write(event, state=record.state, step=record.step,
                                weights=dict(record.weights), **fields)
        for listener in self.listeners:
            listener(line)
        if notify:
            self.notifier.send({k: v for k, v in line.items() if k != "figures"})
        return line

    def _transition(self, record: Record, state: str, event: str, reason: str = "",
                    **fields: Any) -> None:
        record.state = state
        if reason:
            record.reason = reason
        try:
            self.store.save(record)
        except AWS_ERRORS as exc:  # the audit log and the notification still say it
            fields["state_write_error"] = f"{type(exc).__name__}: {exc}"
        self._event(record, event, notify=True, reason=reason, **fields)

    def _audit_for(self, cutover_id: str) -> AuditLog:
        return AuditLog(self.report_dir / cutover_id / "audit.jsonl", cutover_id, self.clock)

    # --- entry points -----------------------------------------------------------------------

    def start(self) -> Outcome:
        cutover_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock())) + \
            "-" + uuid.uuid4().hex[:6]
        rule = self.traffic.rule_arn
        try:
            self.store.acquire(rule, self.owner, cutover_id, self.plan.lease_s)
        except LockHeld as exc:
            self.print(f"refused: {exc}")
            return Outcome(exc.cutover_id, "lock", str(exc), EXIT["lock"])
        try:
            active = self.store.active(rule)
            if active is not None:
                self.store.release(rule, self.owner)
                msg = (f"refused: cutover {active.cutover_id} is {active.state} at step "
                       f"{active.step + 1}; resume it (python -m deploy cutover resume) or "
                       "abort it (python -m deploy cutover abort)")
                self.print(msg)
                return Outcome(active.cutover_id, "lock", msg, EXIT["lock"])
            weights = self.traffic.weights()
            if weights != ALL_BLUE:
                self.store.release(rule, self.owner)
                msg = (f"refused: the rule forwards {weights} (blue/green), not 100/0, and no "
                       "cutover is recorded; set it to 100/0 by hand, or abort")
                self.print(msg)
                return Outcome(cutover_id, "blocked", msg, EXIT["blocked"])
            now = self.clock()
            record = self.store.create(Record(
                cutover_id=cutover_id, rule_arn=rule, plan=self.plan.model_dump(mode="json"),
                plan_digest=self.plan.digest, started_at=_iso(now), updated_at=_iso(now),
                owner=self.owner))
        except AWS_ERRORS as exc:
            self.store.release(rule, self.owner)
            msg = f"could not start: {type(exc).__name__}: {exc}"
            self.print(msg)
            return Outcome(cutover_id, "blocked", msg, EXIT["blocked"])
        self.audit = self._audit_for(cutover_id)
        self._event(record, "started", notify=True, plan=self.plan.name,
                    plan_digest=self.plan.digest, owner=self.owner)
        self.print(f"cutover {cutover_id}: plan {self.plan.name} "
                   f"({', '.join(str(s.weight) + '%' for s in self.plan.steps)}), "
                   f"audit {self.audit.path}")
        return self._run(record)

    def resume(self, cutover_id: str | None = None, wait_s: float = 0.0) -> Outcome:
        """Continue a paused or orphaned cutover from the step it was at. With ``wait_s``,
        wait that long for a dead controller's lease to run out."""
        rule = self.traffic.rule_arn
        record = self.store.get(cutover_id) if cutover_id else self.store.active(rule)
        if record is None or record.state not in ACTIVE:
            what = f"cutover {cutover_id}" if cutover_id else f"an active cutover of {rule}"
            msg = f"nothing to resume: {what} not found" + (
                f" ({record.state})" if record else "")
            self.print(msg)
            return Outcome(cutover_id or "", "blocked", msg, EXIT["blocked"])
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.store.acquire(rule, self.owner, record.cutover_id, self.plan.lease_s)
                break
            except LockHeld as exc:
                if time.monotonic() >= deadline or self.interrupted.is_set():
                    self.print(f"refused: {exc}")
                    return Outcome(record.cutover_id, "lock", str(exc), EXIT["lock"])
                time.sleep(min(1.0, max(0.1, exc.expires_in_s)))
        record = self.store.get(record.cutover_id) or record
        self.audit = self._audit_for(record.cutover_id)
        record.owner = self.owner
        record.requested = ""
        was = record.state
        if record.state in ("paused", "rolling_back"):
            record.state = "rolling_back" if was == "rolling_back" else (
                "pre_traffic" if record.reason.startswith("pre-traffic") else "baking")
        self.store.save(record)
        self._event(record, "resumed", notify=True, was=was, owner=self.owner)
        self.print(f"cutover {record.cutover_id}: resumed at step {record.step + 1}/"
                   f"{len(self.plan.steps)} (was {was})")
        if record.state == "rolling_back":
            return self._rollback(record, "resumed an unfinished rollback")
        return self._run(record)

    def abort(self, cutover_id: str | None = None) -> Outcome:
        """Roll back now. A running controller is asked to do it (it reads the request
        within a second); with none running, this command takes the lock and does it."""
        rule = self.traffic.rule_arn
        record = self.store.get(cutover_id) if cutover_id else self.store.active(rule)
        if record is None or record.state not in ACTIVE:
            # nothing recorded: still make sure the traffic is all blue
            got, took, health = self.traffic.rollback()
            msg = f"no active cutover; rule set to {got} in {took:.2f} s; {health}"
            self.print(msg)
            return Outcome(cutover_id or "", "rolled_back", msg, EXIT["rolled_back"])
        try:
            self.store.acquire(rule, self.owner, record.cutover_id, self.plan.lease_s)
        except LockHeld:
            self.store.request(record.cutover_id, "abort")
            msg = (f"cutover {record.cutover_id} is running elsewhere; asked it to abort "
                   "(it rolls back within a second)")
            self.print(msg)
            return Outcome(record.cutover_id, "aborted", msg, EXIT["aborted"])
        try:
            record = self.store.get(record.cutover_id) or record
            self.audit = self._audit_for(record.cutover_id)
            return self._rollback(record, "aborted by an operator", final="aborted")
        finally:
            self.store.release(rule, self.owner)

    # --- the run ----------------------------------------------------------------------------

    def _run(self, record: Record) -> Outcome:
        self._heartbeat = Heartbeat(self.store, record.rule_arn, self.owner,
                                    self.plan.lease_s).start()
        try:
            try:
                return self._steps(record)
            except AWS_ERRORS as exc:  # a state write or read-back failed mid-step
                return self._on_error(record, f"{type(exc).__name__}: {exc}")
        finally:
            self._heartbeat.stop()
            if not self._heartbeat.lost.is_set():
                try:
                    self.store.release(record.rule_arn, self.owner)
                except AWS_ERRORS as exc:
                    self.print(f"warning: could not release the lock ({exc}); it expires in "
                               f"{self.plan.lease_s:.0f} s")

    def _steps(self, record: Record) -> Outcome:
        if record.state == "pre_traffic":
            blocked = self._pre_traffic(record)
            if blocked is not None:
                return blocked
            record.state = "baking"
            self.store.save(record)
        for index in range(record.step, len(self.plan.steps)):
            step = self.plan.steps[index]
            record.step = index
            if self.interrupted.is_set():  # e.g. Ctrl-C while the parity suite ran
                return self._decide(record, "interrupted")
            target = Weights.green_at(step.weight)
            try:
                record.weights = self.traffic.set(target).to_dict()
            except AWS_ERRORS as exc:
                return self._on_error(record, f"setting {target}: {type(exc).__name__}: {exc}")
            self.store.save(record)
            self._event(record, "weights", notify=True)
            self.print(f"step {index + 1}/{len(self.plan.steps)}: weights blue/green {target} "
                       "(read back)")
            outcome = self._bake(record, step, index)
            if outcome == "passed":
                record.step = index + 1
                self._transition(record, "baking", "step_passed", f"step {index + 1} passed")
                if self.plan.approve_each_step and index + 1 < len(self.plan.steps):
                    return self._pause(record, "awaiting approval of the next step")
                continue
            return self._decide(record, outcome)
        if self.plan.post_promotion_bake_s:
            self.print(f"promoted: blue stays registered for {self.plan.post_promotion_bake_s:.0f}"
                       " s, gates still running")
            outcome = self._bake(record, Step(weight=100, bake_s=self.plan.post_promotion_bake_s),
                                 len(self.plan.steps) - 1, post=True)
            if outcome != "passed":
                return self._decide(record, outcome)
        self._transition(record, "completed", "completed", "green carries all traffic")
        self.print(f"cutover {record.cutover_id}: completed, green at 100 %")
        return Outcome(record.cutover_id, "completed", "green carries all traffic", 0)

    def _decide(self, record: Record, outcome: str) -> Outcome:
        kind, _, why = outcome.partition(":")
        if kind == "rollback":
            return self._rollback(record, why or "a gate failed")
        if kind == "pause":
            return self._pause(record, why or "paused")
        if kind == "abort":
            return self._rollback(record, "aborted by an operator", final="aborted")
        if kind == "promote":
            return self._promote(record)
        if kind == "interrupted":
            return self._pause(record, "interrupted (Ctrl-C or SIGTERM)", code=EXIT["interrupted"])
        if kind == "lost":
            msg = (f"lost the lock ({self._heartbeat.error if self._heartbeat else ''}); "
                   "stopped without touching traffic")
            self.print(msg)
            return Outcome(record.cutover_id, "lock", msg, EXIT["lock"])
        raise AssertionError(outcome)

    def _pre_traffic(self, record: Record) -> Outcome | None:
        pre = self.plan.pre_traffic
        summary: dict[str, Any] = {}
        try:
            if pre.target_health:
                ok, detail = self.traffic.target_health("green")
                summary["target_health"] = detail
                if not ok:
                    return self._block(record, f"pre-traffic: {detail}", summary)
            if pre.parity:
                if self.parity is None:
                    return self._block(record, "pre-traffic: the parity gate has no targets "
                                       "(PARITY_BLUE_URL, PARITY_GREEN_URL)", summary)
                self.print("pre-traffic: parity suite against blue and green (staging mode)")
                result = self.parity()
                summary["parity"] = result.summary
                got = result.summary
                self.print(f"pre-traffic: parity {'passed' if result.passed else 'FAILED'}: "
                           f"{got.get('cases', '?')} cases, {got.get('skipped', 0)} skipped, "
                           f"{got.get('failed_cases', 0)} failing, "
                           f"{got.get('differences', 0)} differences in "
                           f"{got.get('duration_s', 0):.0f} s")
                if not result.passed:
                    return self._block(record, f"pre-traffic: parity failed: {result.reason}",
                                       summary)
        except AWS_ERRORS as exc:
            return self._block(record, f"pre-traffic: {type(exc).__name__}: {exc}", summary)
        record.pre_traffic = summary
        self._transition(record, "baking", "pre_traffic", "passed", summary=summary)
        self.print("pre-traffic: passed (" + ", ".join(
            f"{k}: {v if isinstance(v, str) else 'passed'}" for k, v in summary.items()) + ")")
        return None

    def _block(self, record: Record, reason: str, summary: dict[str, Any]) -> Outcome:
        record.pre_traffic = summary
        self._transition(record, "blocked", "blocked", reason, summary=summary)
        self.print(f"blocked: {reason}; no traffic moved")
        return Outcome(record.cutover_id, "blocked", reason, EXIT["blocked"])

    def _wait_until(self, when: float, record: Record) -> str | None:
        """Sleep until ``when``, watching for Ctrl-C, a lost lease and operator requests."""
        last_poll = 0.0
        while self.clock() < when:
            if self.interrupted.is_set():
                return "interrupted"
            if self._heartbeat is not None and self._heartbeat.lost.is_set():
                return "lost"
            if time.monotonic() - last_poll >= 1.0:
                last_poll = time.monotonic()
                try:
                    fresh = self.store.get(record.cutover_id)
                except AWS_ERRORS:
                    fresh = None  # a failed read is retried next second; the lease guards us
                if fresh is not None and fresh.requested:
                    record.version = fresh.version
                    what, record.requested = fresh.requested, ""
                    try:
                        self.store.save(record)
                    except AWS_ERRORS:
                        record.version = fresh.version  # acted on anyway; saved with the state
                    self._event(record, "requested", request=what)
                    return {"pause": "pause:paused by an operator", "abort": "abort",
                            "promote": "promote"}.get(what, "pause:unknown request " + what)
            time.sleep(min(self.tick_s, max(0.0, when - self.clock())))
        return None

    def _bake(self, record: Record, step: Step, index: int, post: bool = False) -> str:
        a = self.plan.analysis
        started = self.clock()
        window_end = math.ceil(started / a.interval_s) * a.interval_s + a.interval_s
        counts = {"pass": 0, "fail": 0, "inconclusive": 0}
        streak = errors = 0
        green_requests = 0.0
        weights = Weights(record.weights["blue"], record.weights["green"])
        while True:
            interrupted = self._wait_until(window_end + a.metrics_delay_s, record)
            if interrupted:
                return interrupted
            start = window_end - a.interval_s
            try:
                figures = self.source.read(start, window_end, self.plan.alarms)
            except AWS_ERRORS as exc:
                errors += 1
                self._event(record, "window_error", error=f"{type(exc).__name__}: {exc}",
                            start=start, end=window_end)
                self.print(f"step {index + 1}: metrics unreadable ({type(exc).__name__}: "
                           f"{exc}), {errors}/{a.error_limit}")
                if errors >= a.error_limit:
                    return f"{a.on_error}:metrics unreadable in {errors} windows in a row"
                window_end += a.interval_s
                continue
            errors = 0
            result = judge(self.plan.gates, figures)
            counts[result.verdict if result.verdict != "alarm" else "fail"] += 1
            record.windows += 1
            scope = figures.scopes.get(SERVICE) or {}
            green = scope.get("green")
            green_requests += green.requests if green else 0.0
            left = started + step.bake_s - self.clock()
            self._event(record, "window", post_promotion=post, **result.to_dict())
            self.print(window_line(self.plan, index, weights, result, counts, left))
            if result.verdict == "alarm":
                return "rollback:alarm " + ", ".join(result.reasons)
            if result.verdict == "fail" and counts["fail"] > a.failure_limit:
                return "rollback:" + "; ".join(result.reasons)
            if result.verdict == "inconclusive":
                streak += 1
                if streak >= a.inconclusive_limit:
                    self._event(record, "held", reason=f"{streak} inconclusive windows")
                    return (f"{a.on_inconclusive}:{streak} inconclusive windows in a row ("
                            + "; ".join(result.reasons[:2]) + ")")
            else:
                streak = 0
            if result.verdict == "pass" and self.clock() - started >= step.bake_s and \
                    green_requests >= step.min_green_requests:
                return "passed"
            window_end += a.interval_s

    def _on_error(self, record: Record, what: str) -> Outcome:
        self.print(f"error: {what}")
        if self.plan.analysis.on_error == "rollback":
            return self._rollback(record, what)
        return self._pause(record, what)

    def _pause(self, record: Record, reason: str, code: int = EXIT["paused"]) -> Outcome:
        self._transition(record, "paused", "paused", reason)
        self.print(f"paused at step {record.step + 1} with weights blue/green "
                   f"{record.weights['blue']}/{record.weights['green']}: {reason}\n"
                   f"  continue: python -m deploy cutover resume --id {record.cutover_id}\n"
                   f"  roll back: python -m deploy cutover abort --id {record.cutover_id}")
        return Outcome(record.cutover_id, "paused", reason, code)

    def _promote(self, record: Record) -> Outcome:
        try:
            record.weights = self.traffic.set(Weights.green_at(100)).to_dict()
        except AWS_ERRORS as exc:
            return self._on_error(record, f"promote: {type(exc).__name__}: {exc}")
        record.step = len(self.plan.steps)
        self._event(record, "weights", notify=True)
        self._transition(record, "completed", "promoted", "promoted by an operator")
        self.print(f"cutover {record.cutover_id}: promoted by an operator, green at 100 %")
        return Outcome(record.cutover_id, "completed", "promoted by an operator", 0)

    def _rollback(self, record: Record, reason: str, final: str = "rolled_back") -> Outcome:
        decided = self.clock()
        self._transition(record, "rolling_back", "rollback", reason)
        self.print(f"ROLLBACK: {reason}")
        last = ""
        for attempt in range(1, 4):
            try:
                got, took, health = self.traffic.rollback()
            except AWS_ERRORS as exc:
                last = f"{type(exc).__name__}: {exc}"
                self._event(record, "rollback_error", attempt=attempt, error=last)
                time.sleep(0.5 * attempt)
                continue
            record.weights = got.to_dict()
            record.rollback_s = round(self.clock() - decided, 3)
            self._transition(record, final, "rolled_back", reason, rollback_s=record.rollback_s,
                             write_s=round(took, 3), blue_health=health)
            self.print(f"rolled back to {got} in {record.rollback_s:.2f} s ({health})")
            return Outcome(record.cutover_id, final, reason, EXIT[final])
        self._transition(record, "failed", "rollback_failed", f"{reason}; rollback failed: "
                         f"{last}")
        self.print(f"FAILED: could not confirm the rollback ({last}); set the rule to 100/0 "
                   "by hand now")
        return Outcome(record.cutover_id, "failed", last, EXIT["failed"])


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + \
        f".{int(epoch * 1000) % 1000:03d}Z"

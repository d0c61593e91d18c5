"""``make cutover``: the cutover rehearsed for real on devstack.

It boots moto (behind the fault injector and the CloudWatch front), one agent emulator per
color (so a fault can be given to green alone), blue and green as shipped (gunicorn and
uvicorn, one shared sessions table), the local ALB (:mod:`devstack.loadbalancer`, routing by the
weighted rule in moto), then runs each scenario with the real controller (:mod:`deploy.cli`'s
``build``) and a bounded load of multi-turn conversations through the production listener:

==================  ============================================================================
``healthy``         green is promoted to 100 %; no conversation broken
``degrade``         at 50 %, green's agent answers in 1.5 s: rolled back at the end of the first
                    window that holds the fault
``alarm``           at 10 %, a listed CloudWatch alarm goes to ALARM (``set_alarm_state``):
                    rolled back at the end of that window
``green-dies``      at 10 %, green's processes are killed: the load balancer's 5xx and unhealthy
                    host are seen and it rolls back
``controller-dies`` the controller (a ``python -m deploy`` process) is killed at 50 %: a second
                    one is refused by the lock; ``resume`` continues from step 2 and completes
``low-traffic``     0.5 requests/s: every window is inconclusive, the gate holds and pauses,
                    never passes; then ``abort`` rolls back
==================  ============================================================================

Per scenario: ``reports/cutover/<scenario>/audit.jsonl``, ``timeline.png``, the expected against
the real outcome, time to detect and to roll back, and what clients saw per color per step.
``reports/cutover/summary.json`` and ``summary.md`` hold them all; the exit code is 1 when a
scenario ended other than expected.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import yaml

from deploy.cli import build
from deploy.controller import Controller, Outcome
from deploy.infra.report import write_report
from deploy.plan import PLANS, Plan, load_plan
from deploy.rehearsal.loadgen import LoadGenerator, RequestRecord, summarize
from deploy.rehearsal.timeline import plot_timeline
from deploy.settings import DeploySettings
from deploy.state import read_audit
from deploy.traffic import ALL_BLUE
from devstack.loadbalancer import LocalAlb, create_local_alb
from devstack.procs import (
    EmulatorProcess,
    LoadBalancerProcess,
    MotoProcess,
    free_port,
    process_tree,
)
from devstack.run import ROOT, Server
from devstack.stack import FAKE_CREDENTIALS, create_cutover_table, create_tables
from shared.settings import DEFAULT_NAMESPACES

REHEARSAL_PLAN = PLANS / "rehearsal.yaml"
API_KEY = "rehearsal-key-1"
PARITY_KEY = "rehearsal-key-2"
ALARM = "chatbot-green-target-5xx"
SMOKE = "scenarios/"  # the parity cases of the other scenarios' pre-traffic gate
DEGRADED_MS = 1500  # green's agent latency in the degrade scenario
SCENARIOS = ("healthy", "degrade", "alarm", "green-dies", "controller-dies", "low-traffic")
EXPECTED = {
    "healthy": "completed: green at 100 %, no conversation broken",
    "degrade": "rolled back to 100/0 by the first window holding the fault",
    "alarm": "rolled back to 100/0 by the first window after the alarm",
    "green-dies": "rolled back to 100/0 on the load balancer's 5xx / unhealthy host",
    "controller-dies": "second controller refused by the lock; resume continues at step 2; "
                       "completed, no conversation broken",
    "low-traffic": "held (inconclusive), paused at step 1, never passed",
}


@dataclass
class ScenarioResult:
    name: str
    expected: str
    actual: str = ""
    passed: bool = False
    problems: list[str] = field(default_factory=list)
    detect_s: float | None = None
    rollback_s: float | None = None
    duration_s: float = 0.0
    outcome: dict[str, Any] = field(default_factory=dict)
    clients: dict[str, Any] = field(default_factory=dict)
    broken_conversations: int = 0
    conversations: int = 0
    mixed_conversations: int = 0  # answered by both colors, turn by turn (no stickiness)
    notes: list[str] = field(default_factory=list)
    audit: str = ""
    timeline: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spans(audit: list[dict[str, Any]], end: float) -> list[tuple[str, float, float]]:
    """The steps as clients lived them: from each weights change to the next."""
    changes = [e for e in audit if e["event"] == "weights"]
    out: list[tuple[str, float, float]] = []
    for i, event in enumerate(changes):
        stop = changes[i + 1]["t"] if i + 1 < len(changes) else end
        label = f"{i + 1}: blue/green {event['weights']['blue']}/{event['weights']['green']}"
        out.append((label, float(event["t"]), float(stop)))
    first = float(changes[0]["t"]) if changes else end
    return [("0: before (100/0)", 0.0, first), *out]


class Rehearsal(contextlib.AbstractContextManager["Rehearsal"]):
    def __init__(self, report_dir: Path, *, plan: Plan | None = None, rate_per_s: float = 30.0,
                 agent_latency_ms: int = 30, printer: Callable[[str], None] = print) -> None:
        self.report_dir = report_dir
        self.plan = plan or load_plan(REHEARSAL_PLAN)
        self.rate = rate_per_s
        self.agent_latency_ms = agent_latency_ms
        self.print = printer
        self.logs = report_dir / "logs"
        self.helpers: list[Any] = []
        self.servers: dict[str, Server] = {}
        self.agents: dict[str, EmulatorProcess] = {}

    # --- the stack --------------------------------------------------------------------------

    def __enter__(self) -> Rehearsal:
        started = time.perf_counter()
        if self.report_dir.exists():
            shutil.rmtree(self.report_dir)
        self.logs.mkdir(parents=True)
        for name, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        try:
            self.moto = MotoProcess(self.logs / "moto.log")
            self.helpers.append(self.moto)
            for color in ("blue", "green"):
                agent = EmulatorProcess(self.logs / f"{color}-agent.log", 3.0,
                                        "--latency-ms", str(self.agent_latency_ms))
                self.helpers.append(agent)
                self.agents[color] = agent
            self.moto.wait()
            create_tables(self.moto.url, "chat_sessions", "chat_rate_limits")
            create_cutover_table(self.moto.url)
            env = {**FAKE_CREDENTIALS, "DYNAMODB_ENDPOINT_URL": self.moto.url,
                   "CLOUDWATCH_ENDPOINT_URL": self.moto.url, "ENVIRONMENT": "test",
                   "SESSIONS_TABLE": "chat_sessions", "RATE_LIMIT_TABLE": "chat_rate_limits",
                   "API_KEYS": f"{API_KEY},{PARITY_KEY}", "RATE_LIMIT_REQUESTS": "1000000",
                   "METRICS_FLUSH_INTERVAL_S": "1", "METRICS_STORAGE_RESOLUTION": "1",
                   # a silent DynamoDB (the suite's ddb:timeout cases) answers in about 2 s
                   "DYNAMODB_READ_TIMEOUT_S": "1", "DYNAMODB_MAX_ATTEMPTS": "2"}
            for agent in self.agents.values():
                agent.wait()
            for color in ("blue", "green"):
                self.servers[color] = Server(
                    color, free_port(), {**env, "BEDROCK_ENDPOINT_URL": self.agents[color].url},
                    log_path=self.logs / f"{color}.log").start()
            for server in self.servers.values():
                server.wait_healthy(60)
            self.alb: LocalAlb = create_local_alb(
                self.moto.url, {c: s.url for c, s in self.servers.items()})
            self.lb = LoadBalancerProcess(
                self.logs / "loadbalancer.log", self.moto.url,
                {self.alb.production_listener_arn: 0, self.alb.test_listener_arn: 0},
                "--publish-interval-s", "1", "--poll-interval-s", "0.5",
                "--health-interval-s", "1")
            self.helpers.append(self.lb)
            self.lb.wait()
            self.production_url = self.lb.listener_urls[self.alb.production_listener_arn]
            self.test_url = self.lb.listener_urls[self.alb.test_listener_arn]
            self.cloudwatch = boto3.client("cloudwatch", endpoint_url=self.moto.url,
                                           region_name="us-east-1")
            self._create_alarm()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.boot_s = time.perf_counter() - started
        self.print(f"booted in {self.boot_s:.1f} s: blue {self.servers['blue'].url}, green "
                   f"{self.servers['green'].url}, ALB production {self.production_url}, test "
                   f"{self.test_url}, AWS {self.moto.url}")
        return self

    def _create_alarm(self) -> None:
        """The alarm the plan lists (moto never evaluates it: the alarm scenario forces it)."""
        tg = self.alb.target_groups["green"].split(":", 5)[-1]
        lb = self.alb.load_balancer_arn.split("loadbalancer/", 1)[-1]
        self.cloudwatch.put_metric_alarm(
            AlarmName=ALARM, Namespace="AWS/ApplicationELB",
            MetricName="HTTPCode_Target_5XX_Count", Statistic="Sum", Period=60,
            EvaluationPeriods=1, Threshold=5, ComparisonOperator="GreaterThanThreshold",
            Dimensions=[{"Name": "TargetGroup", "Value": tg},
                        {"Name": "LoadBalancer", "Value": lb}],
            TreatMissingData="notBreaching")

    def __exit__(self, *exc: object) -> None:
        for server in self.servers.values():
            server.terminate()
        for server in self.servers.values():
            server.stop()
        for helper in reversed(self.helpers):
            helper.stop()

    def migration_report(self, out_dir: Path, since: float,
                         results: list[ScenarioResult]) -> dict[str, Any]:
        """``python -m deploy report`` on the rehearsal's data (moto ends with the rehearsal)."""
        return write_report(
            self.cloudwatch, namespaces=dict(DEFAULT_NAMESPACES),
            load_balancer_arn=self.alb.load_balancer_arn, target_groups=self.alb.target_groups,
            audit_paths=[Path(r.audit) for r in results if r.audit],
            since=dt.datetime.fromtimestamp(since, dt.UTC), until=dt.datetime.now(dt.UTC),
            out_dir=out_dir)

    def settings(self, report_dir: Path) -> DeploySettings:
        return DeploySettings(aws_endpoint_url=self.moto.url,
                              cutover_rule_arn=self.alb.rule_arn,
                              parity_blue_url=self.production_url,
                              parity_green_url=self.test_url,
                              parity_api_key=PARITY_KEY,
                              cutover_report_dir=report_dir)

    def env(self, report_dir: Path) -> dict[str, str]:
        """The same settings for a ``python -m deploy`` process."""
        return {**os.environ, **FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.moto.url,
                "CUTOVER_RULE_ARN": self.alb.rule_arn, "PARITY_BLUE_URL": self.production_url,
                "PARITY_GREEN_URL": self.test_url, "PARITY_API_KEY": PARITY_KEY,
                "CUTOVER_REPORT_DIR": str(report_dir)}

    def plan_for(self, name: str) -> Plan:
        """The whole parity suite gates the healthy cutover; the other scenarios are about
        traffic, and their gate runs the multi-step conversations only (``SMOKE``)."""
        if name == "healthy":
            return self.plan
        pre = self.plan.pre_traffic.model_copy(update={"parity_filter": SMOKE})
        return self.plan.model_copy(update={"pre_traffic": pre})

    def controller(self, name: str, report_dir: Path) -> Controller:
        controller = build(self.settings(report_dir), self.plan_for(name), report_dir)
        controller.print = lambda line: self.print(f"  [{name}] {line}")
        return controller

    # --- between scenarios ------------------------------------------------------------------

    def reset(self, controller: Controller) -> None:
        """Back to the start line: healthy colors, no fault, no open cutover, 100/0."""
        for agent in self.agents.values():
            httpx.post(agent.url + "/_emulator/config",
                       json={"latency_ms": self.agent_latency_ms}, timeout=5).raise_for_status()
        self.cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="OK",
                                        StateReason="rehearsal reset")
        green = self.servers["green"]
        if green.proc is None or green.proc.poll() is not None:
            self.print("  restarting green")
            green.proc = None
            green.start()
            green.wait_healthy(60)
        active = controller.store.active(controller.traffic.rule_arn)
        if active is not None:
            controller.abort(active.cutover_id)
        if controller.traffic.weights() != ALL_BLUE:
            controller.traffic.set(ALL_BLUE)
        self._wait_lb_healthy()

    def _wait_lb_healthy(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stats = httpx.get(self.lb.url + "/_lb/stats", timeout=5).json()
            groups = stats.get("target_groups", {})
            if groups and all(g.get("healthy", 0) >= 1 for g in groups.values()):
                return
            time.sleep(0.3)
        raise TimeoutError("the load balancer never saw both colors healthy")

    def kill_green(self) -> float:
        server = self.servers["green"]
        assert server.proc is not None
        for proc in reversed(process_tree(server.proc.pid)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signal.SIGKILL)
        killed = time.time()
        server.proc.wait(10)
        return killed

    # --- scenarios --------------------------------------------------------------------------

    def run(self, names: list[str]) -> list[ScenarioResult]:
        results = []
        for name in names:
            self.print(f"scenario {name}: expect {EXPECTED[name]}")
            started = time.perf_counter()
            result = getattr(self, "scenario_" + name.replace("-", "_"))(name)
            result.duration_s = round(time.perf_counter() - started, 1)
            results.append(result)
            self.print(f"scenario {name}: {'PASS' if result.passed else 'FAIL'} "
                       f"({result.actual}) in {result.duration_s:.0f} s"
                       + ("".join(f"\n    problem: {p}" for p in result.problems)))
        return results

    def _load(self, rate: float | None = None) -> LoadGenerator:
        return LoadGenerator(self.production_url, API_KEY, rate_per_s=rate or self.rate,
                             users=10, turns=4, max_duration_s=150, timeout_s=10)

    @staticmethod
    def _start_load_after_gate(controller: Controller, load: LoadGenerator) -> None:
        """The clients arrive once the pre-traffic gate has passed (the suite runs on a quiet
        stack); the first analysis window opens after the weights move, with load on both."""
        def on_event(event: dict[str, Any]) -> None:
            if event["event"] == "pre_traffic" and not load.running:
                load.start()
        controller.listeners.append(on_event)

    def _in_thread(self, controller: Controller) -> tuple[threading.Thread, list[Outcome]]:
        box: list[Outcome] = []
        thread = threading.Thread(target=lambda: box.append(controller.start()),
                                  name="controller", daemon=True)
        thread.start()
        return thread, box

    def _finish(self, result: ScenarioResult, directory: Path, load: LoadGenerator,
                audit: list[dict[str, Any]], marks: list[tuple[float, str]],
                expect_intact: bool) -> None:
        load.stop()
        problems = load.verify()
        records: list[RequestRecord] = load.records
        result.broken_conversations = len(problems)
        colors: dict[str, set[str]] = {}
        for record in records:
            if record.status == 200 and record.color:
                colors.setdefault(record.conversation, set()).add(record.color)
        result.mixed_conversations = sum(len(c) > 1 for c in colors.values())
        result.conversations = len(colors)
        if expect_intact and problems:
            result.problems += [f"broken conversation: {p}" for p in problems[:5]]
        end = max([r.t for r in records] + [e["t"] for e in audit] + [time.time()])
        result.clients = summarize(records, spans(audit, end + 1))
        path = directory / "audit.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in audit), encoding="utf-8")
        result.audit = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        png = directory / "timeline.png"
        plot_timeline(audit, records, png, title=f"cutover rehearsal: {result.name}",
                      marks=marks)
        result.timeline = str(png.relative_to(ROOT) if png.is_relative_to(ROOT) else png)
        rolled = [e for e in audit if e["event"] == "rolled_back"]
        if rolled:
            result.rollback_s = rolled[-1].get("rollback_s")
        result.passed = not result.problems

    def _audit(self, controller: Controller) -> list[dict[str, Any]]:
        return read_audit(controller.audit.path) if controller.audit else []

    def _gated(self, name: str, weight: int, inject: Callable[[], str],
               expect_state: str = "rolled_back") -> ScenarioResult:
        """A cutover whose green is harmed once the weights reach ``weight``."""
        result = ScenarioResult(name, EXPECTED[name])
        directory = self.report_dir / name
        controller = self.controller(name, directory)
        self.reset(controller)
        marks: list[tuple[float, str]] = []

        def on_event(event: dict[str, Any]) -> None:
            if event["event"] == "weights" and event["weights"]["green"] == weight and not marks:
                marks.append((time.time(), inject()))

        controller.listeners.append(on_event)
        load = self._load()
        self._start_load_after_gate(controller, load)
        thread, box = self._in_thread(controller)
        thread.join(120)
        audit = self._audit(controller)
        outcome = box[0] if box else None
        result.outcome = asdict(outcome) if outcome else {"state": "did not finish"}
        result.actual = f"{outcome.state}: {outcome.reason}" if outcome else "did not finish"
        if outcome is None or outcome.state != expect_state:
            result.problems.append(f"ended {result.actual}, expected {expect_state}")
        if marks:
            fault_t = marks[0][0]
            decided = [e for e in audit if e["event"] == "rollback" and e["t"] >= fault_t]
            if decided:
                result.detect_s = round(decided[0]["t"] - fault_t, 2)
            judged = [e for e in audit if e["event"] == "window" and e["end"] > fault_t]
            if judged and judged[0]["verdict"] not in ("fail", "alarm"):
                result.problems.append(f"the first window holding the fault was "
                                       f"{judged[0]['verdict']}, not fail")
            passed_after = [e for e in judged if e["verdict"] == "pass"]
            if passed_after:
                result.problems.append("a window passed after the fault started")
        else:
            result.problems.append(f"weights never reached {weight} %; the fault was not "
                                   "injected")
        if controller.traffic.weights() != ALL_BLUE:
            result.problems.append(f"weights end at {controller.traffic.weights()}, not 100/0")
        self._finish(result, directory, load, audit, marks, expect_intact=False)
        return result

    def scenario_healthy(self, name: str) -> ScenarioResult:
        result = ScenarioResult(name, EXPECTED[name])
        directory = self.report_dir / name
        controller = self.controller(name, directory)
        self.reset(controller)
        load = self._load()
        self._start_load_after_gate(controller, load)
        outcome = controller.start()
        audit = self._audit(controller)
        result.outcome = asdict(outcome)
        result.actual = f"{outcome.state}: {outcome.reason}"
        if outcome.state != "completed":
            result.problems.append(f"ended {result.actual}")
        if controller.traffic.weights().green != 100:
            result.problems.append(f"weights end at {controller.traffic.weights()}")
        pre = next((e for e in audit if e["event"] == "pre_traffic"), None)
        if pre is None:
            result.problems.append("no pre-traffic gate was recorded")
        else:
            result.notes.append("pre-traffic: " + json.dumps(
                {k: (v if isinstance(v, str) else {x: v.get(x) for x in (
                    "passed", "cases", "skipped_count", "duration_s") if x in v})
                 for k, v in pre.get("summary", {}).items()}, default=str))
        self._finish(result, directory, load, audit, [], expect_intact=True)
        return result

    def scenario_degrade(self, name: str) -> ScenarioResult:
        def inject() -> str:
            httpx.post(self.agents["green"].url + "/_emulator/config",
                       json={"latency_ms": DEGRADED_MS}, timeout=5).raise_for_status()
            return f"green's agent: {DEGRADED_MS} ms"
        return self._gated(name, 50, inject)

    def scenario_alarm(self, name: str) -> ScenarioResult:
        def inject() -> str:
            self.cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="ALARM",
                                            StateReason="rehearsal: forced")
            return f"{ALARM} in ALARM"
        return self._gated(name, 10, inject)

    def scenario_green_dies(self, name: str) -> ScenarioResult:
        return self._gated(name, 10, lambda: (self.kill_green(), "green killed")[1])

    def scenario_low_traffic(self, name: str) -> ScenarioResult:
        result = ScenarioResult(name, EXPECTED[name])
        directory = self.report_dir / name
        controller = self.controller(name, directory)
        self.reset(controller)
        load = self._load(rate=0.5)
        self._start_load_after_gate(controller, load)
        outcome = controller.start()
        audit = self._audit(controller)
        result.outcome = asdict(outcome)
        result.actual = f"{outcome.state}: {outcome.reason}"
        windows = [e for e in audit if e["event"] == "window"]
        if outcome.state != "paused":
            result.problems.append(f"ended {result.actual}, expected paused")
        if any(e["verdict"] == "pass" for e in windows) or any(
                e["event"] == "step_passed" for e in audit):
            result.problems.append("a window or a step passed on too little data")
        held = next((e for e in audit if e["event"] == "held"), None)
        if held is not None:
            result.detect_s = round(held["t"] - audit[0]["t"], 2)
        aborted = controller.abort(outcome.cutover_id)
        result.notes.append(f"then abort: {aborted.state} ({aborted.reason})")
        audit = self._audit(controller)
        if controller.traffic.weights() != ALL_BLUE:
            result.problems.append("abort did not bring the weights back to 100/0")
        self._finish(result, directory, load, audit, [], expect_intact=True)
        return result

    def scenario_controller_dies(self, name: str) -> ScenarioResult:
        result = ScenarioResult(name, EXPECTED[name])
        directory = self.report_dir / name
        controller = self.controller(name, directory)
        self.reset(controller)
        load = self._load().start()
        directory.mkdir(parents=True, exist_ok=True)
        plan_path = directory / "plan.yaml"
        plan_path.write_text(yaml.safe_dump(self.plan_for(name).model_dump(mode="json"),
                                            sort_keys=False), encoding="utf-8")
        plan = str(plan_path)
        cmd = [sys.executable, "-m", "deploy", "cutover"]
        env = self.env(directory)
        log = (directory / "controller-1.log").open("wb")
        first = subprocess.Popen([*cmd, "start", "--plan", plan],  # noqa: S603 - ours
                                 cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        marks: list[tuple[float, str]] = []
        audit_path: Path | None = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and first.poll() is None:
            found = sorted(directory.glob("*/audit.jsonl"))
            if found:
                audit_path = found[-1]
                events = read_audit(audit_path)
                if any(e["event"] == "weights" and e["weights"]["green"] == 50 for e in events):
                    first.send_signal(signal.SIGKILL)
                    marks.append((time.time(), "controller killed"))
                    break
            time.sleep(0.1)
        first.wait(10)
        log.close()
        if not marks or audit_path is None:
            result.problems.append("the first controller never reached step 2")
            result.actual = "did not reach step 2"
            self._finish(result, directory, load, read_audit(audit_path) if audit_path else [],
                         marks, expect_intact=True)
            return result
        second = subprocess.run([*cmd, "start", "--plan", plan], cwd=ROOT, env=env,  # noqa: S603
                                capture_output=True, text=True, timeout=60, check=False)
        (directory / "controller-2.log").write_text(second.stdout + second.stderr)
        refused = second.returncode == 5 and "holds the cutover lock" in second.stdout
        result.notes.append("second controller: exit " + str(second.returncode) + ", "
                            + second.stdout.strip().splitlines()[-1][:200])
        if not refused:
            result.problems.append("the second controller was not refused by the lock")
        resumed_at = time.time()
        third = subprocess.run([*cmd, "resume", "--plan", plan, "--wait", "30"],  # noqa: S603
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                               check=False)
        (directory / "controller-3.log").write_text(third.stdout + third.stderr)
        marks.append((resumed_at, "resume started"))
        audit = read_audit(audit_path)
        resumed = [e for e in audit if e["event"] == "resumed"]
        result.actual = (f"second controller exit {second.returncode}; resume exit "
                         f"{third.returncode}, state "
                         + (audit[-1]["state"] if audit else "?"))
        if third.returncode != 0:
            result.problems.append(f"resume ended with exit {third.returncode}: "
                                   + third.stdout.strip()[-300:])
        if not resumed or resumed[0]["step"] != 1:
            result.problems.append("resume did not continue from step 2")
        later = [e for e in audit if e["event"] == "weights" and resumed
                 and e["t"] > resumed[0]["t"]]
        if later and later[0]["weights"]["green"] != 50:
            result.problems.append(f"resume set {later[0]['weights']} first, not 50/50")
        if resumed:
            result.detect_s = round(resumed[0]["t"] - marks[0][0], 2)  # time to take over
            result.notes.append("resume took over "
                                f"{result.detect_s:.1f} s after the kill (lease "
                                f"{self.plan.lease_s:g} s)")
        self._finish(result, directory, load, audit, marks, expect_intact=True)
        return result


def markdown(results: list[ScenarioResult], boot_s: float, total_s: float) -> str:
    lines = [f"# Cutover rehearsal: {'PASS' if all(r.passed for r in results) else 'FAIL'}",
             "", f"boot {boot_s:.1f} s, total {total_s:.0f} s", "",
             "| scenario | expected | actual | verdict | detect s | rollback s | conversations "
             "(mixed colors) | broken |", "|---|---|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.name} | {r.expected} | {r.actual} | "
                     f"{'PASS' if r.passed else 'FAIL'} | "
                     f"{r.detect_s if r.detect_s is not None else ''} | "
                     f"{r.rollback_s if r.rollback_s is not None else ''} | "
                     f"{r.conversations} ({r.mixed_conversations}) | "
                     f"{r.broken_conversations} |")
    lines += ["", "## What clients saw, per step and color (requests, 5xx or no answer, p90)", ""]
    for r in results:
        lines.append(f"**{r.name}**: " + "; ".join(
            f"{span}: " + ", ".join(f"{color} {int(f['requests'])} req {int(f['errors_5xx'])} "
                                    f"err p90 {f['p90_ms']:.0f} ms"
                                    for color, f in per_color.items())
            for span, per_color in r.clients.items() if per_color))
        for problem in r.problems:
            lines.append(f"- problem: {problem}")
        for note in r.notes:
            lines.append(f"- {note}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.rehearsal",
                                     description="Rehearse the cutover on devstack.")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, from {', '.join(SCENARIOS)}")
    parser.add_argument("--report-dir", type=Path, default=Path("reports/cutover"))
    parser.add_argument("--rate", type=float, default=30.0, help="client requests per second")
    parser.add_argument("--migration-dir", type=Path, default=Path("reports/migration"),
                        help="where the migration report over the whole rehearsal goes")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}")
    started, since = time.perf_counter(), time.time()
    with Rehearsal(args.report_dir, rate_per_s=args.rate,
                   printer=lambda line: print(line, flush=True)) as rehearsal:
        results = rehearsal.run(names)
        boot_s = rehearsal.boot_s
        migration = rehearsal.migration_report(args.migration_dir, since, results)
        print(f"migration report: {args.migration_dir}/report.html, report.md, report.png "
              f"(verdict {migration.get('verdict', '?')})", flush=True)
    total = time.perf_counter() - started
    summary = {"passed": all(r.passed for r in results), "boot_s": round(boot_s, 1),
               "total_s": round(total, 1), "scenarios": [r.to_dict() for r in results]}
    (args.report_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    text = markdown(results, boot_s, total)
    (args.report_dir / "summary.md").write_text(text + "\n")
    print(text, flush=True)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

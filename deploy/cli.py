"""``python -m deploy cutover plan|start|status|pause|resume|promote|abort``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from deploy.analysis import CloudWatchSource
from deploy.controller import EXIT, Controller, PreTrafficResult
from deploy.infra import commands as infra
from deploy.notify import Notifier
from deploy.plan import DEFAULT_PLAN, Plan, PlanError, load_plan
from deploy.settings import DeploySettings, DeploySettingsError, load_deploy_settings
from deploy.state import StateStore, read_audit
from deploy.traffic import ElbTraffic, TrafficError, find_rule


def load_balancer_arn(rule_arn: str) -> str:
    """``...:listener-rule/app/<name>/<lb>/<listener>/<rule>`` ->
    ``...:loadbalancer/app/<name>/<lb>``."""
    head, _, tail = rule_arn.partition(":listener-rule/")
    parts = tail.split("/")
    if not head or len(parts) < 3:
        raise TrafficError(f"not a listener rule ARN: {rule_arn}")
    return f"{head}:loadbalancer/{'/'.join(parts[:3])}"


def target_groups(elbv2: Any, rule_arn: str, settings: DeploySettings) -> dict[str, str]:
    if settings.blue_target_group_arn and settings.green_target_group_arn:
        return {"blue": settings.blue_target_group_arn, "green": settings.green_target_group_arn}
    rule = elbv2.describe_rules(RuleArns=[rule_arn])["Rules"][0]
    arns = [g["TargetGroupArn"] for a in rule["Actions"] if a["Type"] == "forward"
            for g in a.get("ForwardConfig", {}).get("TargetGroups", [])]
    if not arns:
        raise TrafficError(f"rule {rule_arn} has no weighted forward action")
    found: dict[str, str] = {}
    for group in elbv2.describe_target_groups(TargetGroupArns=arns)["TargetGroups"]:
        for color in ("blue", "green"):
            if group["TargetGroupName"].lower().endswith(color):
                found[color] = group["TargetGroupArn"]
    if set(found) != {"blue", "green"}:
        raise TrafficError("cannot tell the colors of the rule's target groups (names ending "
                           "in blue and green); set BLUE_TARGET_GROUP_ARN and "
                           "GREEN_TARGET_GROUP_ARN")
    return found


PARITY_FIGURES = ("passed", "cases", "steps", "failed_cases", "differences",
                  "contract_violations", "expectation_failures", "errors", "skipped_by_class",
                  "duration_s", "reports")


def compact_parity(summary: dict[str, Any]) -> dict[str, Any]:
    """What the cutover's record keeps of a staging run (a DynamoDB item holds 400 KB): the
    verdict and counts, the skipped cases by class, the first failures, where the reports are."""
    out = {k: summary[k] for k in PARITY_FIGURES if k in summary}
    out["skipped"] = len(summary.get("skipped", []))
    out["first_differences"] = list(summary.get("first_differences", []))[:5]
    out["first_failures"] = list(summary.get("first_failures", []))[:5]
    out["errors_detail"] = list(summary.get("errors_detail", []))[:3]
    return out


def parity_gate(settings: DeploySettings, plan: Plan, report_dir: Path) -> Any:
    blue, green = settings.parity_blue_url, settings.parity_green_url
    if not (blue and green):
        return None

    def run() -> PreTrafficResult:
        from parity_tests.harness.staging import profile_named, run_staging

        pre = plan.pre_traffic
        profile = profile_named(pre.parity_profile) if pre.parity_profile else None
        key = settings.parity_api_key.get_secret_value() if settings.parity_api_key else None
        out = report_dir / "parity"
        out.mkdir(parents=True, exist_ok=True)
        with (out / "console.txt").open("w", encoding="utf-8") as text:
            # the suite's own terminal output goes to a file; the controller prints its verdict
            result = run_staging(blue, green, profile=profile, api_key=key, report_dir=out,
                                 case_filter=pre.parity_filter, generated=pre.parity_generated,
                                 console=Console(file=text, width=120, highlight=False))
        summary = compact_parity(result.summary)
        reason = "" if result.passed else (
            f"{summary.get('failed_cases', '?')} failing cases; see "
            f"{result.report_dir}/report.html")
        return PreTrafficResult(result.passed, summary, reason)
    return run


def build(settings: DeploySettings, plan: Plan, report_dir: Path | None = None) -> Controller:
    elbv2 = settings.client("elbv2")
    rule = find_rule(elbv2, rule_arn=settings.cutover_rule_arn,
                     listener_arn=settings.cutover_listener_arn, tag=settings.rule_tag)
    groups = target_groups(elbv2, rule, settings)
    traffic = ElbTraffic(elbv2, rule, groups, stickiness_s=plan.stickiness_s)
    source = CloudWatchSource(settings.client("cloudwatch"),
                              {"blue": settings.blue_namespace, "green": settings.green_namespace},
                              load_balancer=(load_balancer_arn(rule), groups)
                              if plan.gates.load_balancer.enabled else None)
    store = StateStore(settings.client("dynamodb"), settings.cutover_table)
    notifier = Notifier(settings.client("sns") if settings.cutover_topic_arn else None,
                        settings.cutover_topic_arn)
    out = report_dir or settings.cutover_report_dir
    return Controller(plan, traffic, source, store, notifier, out,
                      parity=parity_gate(settings, plan, out), printer=_print)


def _print(line: str) -> None:
    print(line, flush=True)


def describe_plan(plan: Plan) -> str:
    a, g = plan.analysis, plan.gates
    lines = [f"plan {plan.name} ({plan.digest}): {len(plan.steps)} steps, worst case "
             f"{plan.worst_case_s() / 60:.1f} min without a failure"]
    pre = plan.pre_traffic
    lines.append("  0. pre-traffic: " + ", ".join(filter(None, [
        "describe_target_health(green): every target healthy" if pre.target_health else "",
        "parity suite, staging mode (PARITY_BLUE_URL vs PARITY_GREEN_URL)" if pre.parity
        else ""])) + "; a failure blocks the cutover, no traffic moves")
    for i, step in enumerate(plan.steps, 1):
        lines.append(f"  {i}. modify_rule blue/green {100 - step.weight}/{step.weight}, then "
                     f"describe_rules (read back); bake {step.bake_s:.0f} s"
                     + (f", at least {step.min_green_requests} green requests"
                        if step.min_green_requests else ""))
    lines.append(f"  every {a.interval_s} s window (ending {a.metrics_delay_s:.0f} s behind "
                 "now): get_metric_data (both colors' namespaces per endpoint, "
                 "AWS/ApplicationELB per target group)"
                 + (f", describe_alarms {list(plan.alarms)}" if plan.alarms else ""))
    lines.append(f"  gates: 5xx rate <= blue + {g.error_rate.max_increase:.2%} and <= "
                 f"{g.error_rate.max:.2%} (>= {g.error_rate.min_requests} requests); "
                 f"p90 <= blue x {g.p90.max_ratio:g} and <= {g.p90.max_ms:g} ms "
                 f"(>= {g.p90.min_requests}); p99 <= blue x {g.p99.max_ratio:g} and <= "
                 f"{g.p99.max_ms:g} ms (>= {g.p99.min_requests}); unhealthy green hosts <= "
                 f"{g.load_balancer.max_unhealthy_hosts}; per endpoint from "
                 f"{g.per_endpoint_min_requests} green requests")
    lines.append(f"  a failed window beyond {a.failure_limit} rolls back; an alarm rolls back "
                 f"at once; {a.inconclusive_limit} inconclusive windows in a row: "
                 f"{a.on_inconclusive}; {a.error_limit} unreadable windows: {a.on_error}")
    lines.append("  rollback: modify_rule 100/0, describe_rules (read back), "
                 "describe_target_health(blue)")
    if plan.post_promotion_bake_s:
        lines.append(f"  after 100 %: {plan.post_promotion_bake_s:.0f} s with blue registered "
                     "and the gates running")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deploy", description="Ops commands.")
    sub = p.add_subparsers(dest="group", required=True)
    cut = sub.add_parser("cutover", help="move traffic from blue to green in gated steps")
    cmds = cut.add_subparsers(dest="command", required=True)
    for name, text in (("plan", "a dry run: every step, gate, API call and the worst case"),
                       ("start", "start a cutover"), ("status", "the cutover's state"),
                       ("pause", "ask the running controller to pause"),
                       ("resume", "continue a paused or orphaned cutover"),
                       ("promote", "skip the remaining steps (needs --yes)"),
                       ("abort", "roll back now")):
        c = cmds.add_parser(name, help=text)
        c.add_argument("--plan", type=Path, default=DEFAULT_PLAN)
        c.add_argument("--id", dest="cutover_id", default=None)
        c.add_argument("--report-dir", type=Path, default=None)
        if name == "resume":
            c.add_argument("--wait", type=float, default=0.0,
                           help="seconds to wait for a dead controller's lease to end")
        if name == "promote":
            c.add_argument("--yes", action="store_true")
        if name == "status":
            c.add_argument("--json", action="store_true")
    infra.add_commands(sub)  # stack, release, report, preflight
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.group != "cutover":
        return infra.run(args)
    try:
        plan = load_plan(args.plan)
    except PlanError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "plan":
        print(describe_plan(plan))
        return 0
    try:
        settings = load_deploy_settings()
        controller = build(settings, plan, args.report_dir)
    except (DeploySettingsError, TrafficError) as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "start":
        controller.install_signal_handlers()
        return controller.start().exit_code
    if args.command == "resume":
        controller.install_signal_handlers()
        return controller.resume(args.cutover_id, wait_s=args.wait).exit_code
    if args.command == "abort":
        return controller.abort(args.cutover_id).exit_code
    store, rule = controller.store, controller.traffic.rule_arn
    record = store.get(args.cutover_id) if args.cutover_id else store.active(rule)
    if args.command == "status":
        lock = store.lock(rule)
        live = controller.traffic.weights()
        doc = {"rule": rule, "weights": live.to_dict(), "lock": lock,
               "cutover": record.to_dict() if record else None}
        if args.json:
            print(json.dumps(doc, indent=2, default=str))
            return 0
        print(f"rule {rule}: blue/green {live}")
        print(f"lock: {lock['owner']} (cutover {lock['holds']})" if lock else "lock: free")
        if record is None:
            print("no active cutover")
            return 0
        print(f"cutover {record.cutover_id}: {record.state}, step {record.step + 1}/"
              f"{len(plan.steps)}, {record.windows} windows, reason: {record.reason or '-'}")
        audit = controller.report_dir / record.cutover_id / "audit.jsonl"
        for line in read_audit(audit)[-5:]:
            print(f"  {line['ts']} {line['event']} {line.get('reason', '') or ''}")
        return 0
    if record is None:
        print("no active cutover", file=sys.stderr)
        return EXIT["blocked"]
    if args.command == "promote" and not args.yes:
        print("promote skips the remaining steps and their gates; say --yes", file=sys.stderr)
        return 2
    store.request(record.cutover_id, args.command)
    print(f"asked cutover {record.cutover_id} to {args.command} (it acts within a second)")
    return 0

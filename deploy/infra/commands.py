"""``python -m deploy stack plan|apply|template``, ``release``, ``report``, ``preflight``.

Against devstack when ``AWS_ENDPOINT_URL`` is set (the stack's VPC and subnets are made in moto
when not given), against AWS when it is unset.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploy.infra import report as rep
from deploy.infra import stack as st
from deploy.infra import template as tpl
from deploy.infra.release import ReleaseError, release
from deploy.settings import DeploySettings, DeploySettingsError, load_deploy_settings

DEFAULT_STACK = "chatbot"


def _duration(text: str) -> dt.timedelta:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration like 90s, 30m, 2h or 1d")
    return dt.timedelta(seconds=float(m.group(1)) * {"s": 1, "m": 60, "h": 3600,
                                                     "d": 86400}[m.group(2)])


def _when(text: str) -> dt.datetime:
    try:
        return dt.datetime.now(dt.UTC) - _duration(text)
    except argparse.ArgumentTypeError:
        value = dt.datetime.fromisoformat(text)
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def add_commands(sub: Any) -> None:
    stack = sub.add_parser("stack", help="the CloudFormation stack, through change sets")
    cmds = stack.add_subparsers(dest="command", required=True)
    for name, text in (("plan", "create a change set, print it, delete it"),
                       ("apply", "create a change set, print it, execute it, wait"),
                       ("template", "print (or --write) the generated template")):
        c = cmds.add_parser(name, help=text)
        c.add_argument("--stack", default=DEFAULT_STACK)
        c.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
        if name == "apply":
            c.add_argument("--force", action="store_true",
                           help="apply a change to the weighted rule mid-cutover")
            c.add_argument("--timeout", type=float, default=1800)
        if name == "template":
            c.add_argument("--write", action="store_true")
    rel = sub.add_parser("release", help="a new image on one color's service, with rollback")
    rel.add_argument("color", choices=("blue", "green"))
    rel.add_argument("--image", required=True)
    rel.add_argument("--stack", default=DEFAULT_STACK)
    rel.add_argument("--timeout", type=float, default=900)
    rel.add_argument("--no-smoke", action="store_true",
                     help="skip the parity suite against the test listener")
    rpt = sub.add_parser("report", help="the migration report (HTML, MD, PNG)")
    rpt.add_argument("--since", default="2h", help="90m, 2h, or an ISO time")
    rpt.add_argument("--until", default=None)
    rpt.add_argument("--stack", default=DEFAULT_STACK)
    rpt.add_argument("--audit", type=Path, action="append", default=None,
                     help="audit.jsonl files (default: every one under CUTOVER_REPORT_DIR)")
    rpt.add_argument("--out", type=Path, default=Path("reports/migration"))
    pre = sub.add_parser("preflight", help="the pre-migration checklist")
    pre.add_argument("--stack", default=DEFAULT_STACK)


def _params(settings: DeploySettings, pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param {pair!r}: KEY=VALUE")
        params[key] = value
    if settings.aws_endpoint_url:  # devstack: placeholders and a VPC in moto
        params = {**st.DEVSTACK_PARAMS, **(st.devstack_network(settings.client("ec2"))
                                           if "VpcId" not in params else {}), **params}
    return params


def _outputs(settings: DeploySettings, name: str) -> dict[str, str]:
    return st.outputs(settings.client("cloudformation"), name)


def run(args: argparse.Namespace) -> int:
    if args.group == "stack" and args.command == "template":
        text = tpl.render()
        if args.write:
            tpl.TEMPLATE_PATH.write_text(text, encoding="utf-8")
            print(f"wrote {tpl.TEMPLATE_PATH}")
        else:
            sys.stdout.write(text)
        return 0
    try:
        settings = load_deploy_settings()
    except DeploySettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    where = f"devstack at {settings.aws_endpoint_url}" if settings.aws_endpoint_url else \
        f"AWS {settings.aws_region}"
    print(f"[{where}]", flush=True)
    try:
        if args.group == "stack":
            return _stack(settings, args)
        if args.group == "release":
            return _release(settings, args)
        if args.group == "report":
            return _report(settings, args)
        return _preflight(settings, args)
    except (st.StackError, ReleaseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _say(line: str) -> None:
    print(line, flush=True)


def _stack(settings: DeploySettings, args: argparse.Namespace) -> int:
    cfn, params = settings.client("cloudformation"), _params(settings, args.param)
    if args.command == "plan":
        st.plan(cfn, args.stack, params, printer=_say)
        return 0
    st.apply(cfn, settings.client("elbv2"), args.stack, params, printer=_say, force=args.force,
             timeout_s=args.timeout)
    return 0


def _smoke(settings: DeploySettings, out: dict[str, str]) -> Any:
    blue, green = settings.parity_blue_url, settings.parity_green_url
    if not (blue and green):
        print("smoke: PARITY_BLUE_URL / PARITY_GREEN_URL unset (the production and test "
              f"listeners of {out.get('LoadBalancerDns', 'the ALB')}); skipped", flush=True)
        return None

    def smoke() -> tuple[bool, str]:
        from parity_tests.harness.staging import run_staging

        key = settings.parity_api_key.get_secret_value() if settings.parity_api_key else None
        result = run_staging(blue, green, api_key=key,
                             report_dir=Path("reports/release/parity"))
        return bool(result.passed), f"(report {result.report_dir}/report.html)"
    return smoke


def _release(settings: DeploySettings, args: argparse.Namespace) -> int:
    out = _outputs(settings, args.stack)
    cluster = out.get("ClusterName", args.stack)
    service = f"{cluster}-{args.color}" if "ClusterName" in out else f"{args.stack}-{args.color}"
    smoke = None if args.no_smoke else _smoke(settings, out)
    result = release(settings.client("ecs"), cluster=cluster, service=service,
                     container=args.color, image=args.image, smoke=smoke,
                     timeout_s=args.timeout, printer=_say)
    print(f"release {'done' if result.ok else 'FAILED'}: {result.reason or result.new_revision}")
    return result.exit_code


def _report(settings: DeploySettings, args: argparse.Namespace) -> int:
    since = _when(args.since)
    until = _when(args.until) if args.until else dt.datetime.now(dt.UTC)
    try:
        out = _outputs(settings, args.stack)
    except (ClientError, BotoCoreError) as exc:  # no stack: the apps' metrics only
        print(f"no stack {args.stack} ({type(exc).__name__}); reading the apps' namespaces")
        out = {}
    groups = {c: out[f"{c.capitalize()}TargetGroupArn"] for c in ("blue", "green")
              if f"{c.capitalize()}TargetGroupArn" in out}
    audits = args.audit or sorted(settings.cutover_report_dir.rglob("audit.jsonl"))
    summary = rep.write_report(
        settings.client("cloudwatch"),
        namespaces={"blue": settings.blue_namespace, "green": settings.green_namespace},
        load_balancer_arn=out.get("LoadBalancerArn"),
        target_groups=groups if len(groups) == 2 else None, audit_paths=list(audits),
        since=since, until=until, out_dir=args.out)
    for c in summary["criteria"]:
        print(f"  {c['verdict']:<11} {c['name']}: {c['measured']} (target {c['target']})")
    print(f"verdict {summary['verdict']}; wrote {', '.join(summary['files'].values())}")
    return 0 if summary["verdict"] == "PASS" else 1


def _preflight(settings: DeploySettings, args: argparse.Namespace) -> int:
    """The guide's pre-migration checklist: machine checks, then the questions."""
    results: list[tuple[str, bool | None, str]] = []
    cfn = settings.client("cloudformation")
    status = st.stack_status(cfn, args.stack)
    results.append(("stack complete", status in st.DONE, str(status)))
    out = st.outputs(cfn, args.stack) if status else {}
    elbv2 = settings.client("elbv2")
    for color in ("blue", "green"):
        arn = out.get(f"{color.capitalize()}TargetGroupArn")
        if not arn:
            results.append((f"{color} targets healthy", False, "no target group output"))
            continue
        health = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        healthy = [h for h in health if h["TargetHealth"]["State"] == "healthy"]
        results.append((f"{color} targets healthy", bool(health) and len(healthy) == len(health),
                        f"{len(healthy)}/{len(health)} healthy"))
    cw = settings.client("cloudwatch")
    prefix = args.stack
    alarms = cw.describe_alarms(AlarmNamePrefix=prefix).get("MetricAlarms", [])
    firing = [a["AlarmName"] for a in alarms if a["StateValue"] == "ALARM"]
    results.append(("alarms in OK", bool(alarms) and not firing,
                    f"{len(alarms)} alarms, in ALARM: {firing or 'none'}"))
    rule = out.get("CutoverRuleArn")
    if rule:
        weights = st.rule_weights(elbv2, rule)
        results.append(("rollback path reachable (rule readable, at 100/0)",
                        sorted(weights.values()) == [0, 100]
                        and weights.get(out.get("BlueTargetGroupArn", "")) == 100,
                        str(weights)))
    else:
        results.append(("rollback path reachable", False, "no CutoverRuleArn output"))
    smoke = _smoke(settings, out)
    if smoke is None:
        results.append(("parity green on the test listener", None, "PARITY_* unset: not run"))
    else:
        ok, detail = smoke()
        results.append(("parity green on the test listener", ok, detail))
    for name, ok, detail in results:
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[ok]
        print(f"  [{mark}] {name}: {detail}")
    print("\nAnswer these yourself (docs/operations.md, the checklist):")
    for question in ("Was green load-tested with satisfactory results (make bench, make soak)?",
                     "Are the stakeholders told of the window?",
                     "Has a rollback been rehearsed (make cutover) this week?",
                     "Is someone watching the operations dashboard and the critical topic?"):
        print(f"  [ ? ] {question}")
    return 0 if all(ok is not False for _, ok, _ in results) else 1

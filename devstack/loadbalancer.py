"""A local application load balancer: routes HTTP by the ELBv2 configuration stored in moto.

moto stores load balancers, listeners, rules and weighted ``ForwardConfig`` target groups, but
routes nothing. This is the missing data plane for devstack: it reads the configuration back
through the ELBv2 API, as a cutover controller writes it (``modify_rule`` on a weighted forward
rule), and routes real requests by it, so a rehearsal of the cutover moves real traffic. It also
publishes the load balancer's own CloudWatch metrics per target group, as an ALB does.

Control plane (:func:`create_local_alb`)
    Creates, through boto3 at ``aws_url``: a VPC and two subnets, an internal application load
    balancer, one target group per color (HTTP, ``HealthCheckPath /health``, target type ``ip``,
    the target registered as ``Id=127.0.0.1`` and its port), a **production listener** (port 80,
    default action forward to blue) with a **rule at priority 100** (``path-pattern /*``, forward
    with ``ForwardConfig`` blue 100, green 0, tagged ``chatbot:role=cutover``) and a **test
    listener** (port 8080, forward to green only). Calling it again finds the same resources by
    name, port and priority (moto itself would create a second load balancer of the same name
    and a second listener on the same port) and returns the same ARNs.

Data plane (:class:`LoadBalancer`, ``python -m devstack.loadbalancer``)
    Serves each given listener ARN on its own 127.0.0.1 port.

    - **Routing table.** Every ``poll_interval_s`` it calls ``describe_listeners``,
      ``describe_rules``, ``describe_target_groups`` and ``describe_target_health`` (for the
      registered targets only: moto reports every ip target ``healthy`` at once, so the state is
      ignored) and builds a new table. A failed poll keeps the last good table (logged on the
      first failure and on recovery), so a moto blink never routes nothing.
    - **Rules** by priority: ``path-pattern`` (``*`` any run of characters, ``?`` one,
      case-sensitive, against the path without the query), ``host-header`` (case-insensitive,
      port ignored, same wildcards) and ``http-request-method``; values of one condition are
      OR'ed, conditions AND'ed; no rule matching → the listener's default action. Actions:
      ``forward`` (``TargetGroupArn`` or ``ForwardConfig`` weights → a weighted random choice per
      request, RNG seedable; all weights 0 → 503) and ``fixed-response``; any other type → 503.
    - **Targets.** Round robin over a group's registered targets that pass this process's own
      health checks (HTTP GET on the group's ``HealthCheckPath``, port ``traffic-port`` or its
      own, ``Matcher.HttpCode`` such as ``200`` or ``200-299,302``). The interval is
      ``health_interval_s`` (the group's 30 s is too slow for a rehearsal); the thresholds and
      the timeout are the group's unless overridden; a round of checks (all targets at once)
      starts when the previous one has ended, so a check slower than the interval delays the
      next round instead of piling up. A target's **first** check decides its
      initial state (a devstack shortcut: an ALB keeps a new target ``initial`` until it has
      passed ``HealthyThresholdCount`` checks); after that the thresholds apply. When no target
      of a group is healthy the group **fails open** to all its targets, as an ALB does.
    - **Proxying.** Method, raw path and query, headers (hop-by-hop ones dropped, ``Host``
      kept) and body are passed on; ``X-Forwarded-For`` (appended to), ``X-Forwarded-Proto:
      http``, ``X-Forwarded-Port`` (the local port the client connected to) and
      ``X-Amzn-Trace-Id`` (when absent) are added, as an ALB does. No header is added by the HTTP
      client itself (no ``User-Agent``, ``Accept-Encoding`` or ``Content-Type``). Bodies are
      buffered both ways (the apps' bodies are small) and the target's answer (status, headers,
      body bytes, content encoding) is returned unchanged, but for its hop-by-hop headers and
      its framing (``Content-Length`` kept, chunked re-chunked). Connections to targets are kept
      alive for ``target_keepalive_s`` (2 s, below gunicorn's and uvicorn's 5 s, so a pooled
      connection is never reused just as the target closes it).
    - **Errors** as an ALB answers them, with its small HTML body and ``Server: awselb/2.0``:
      connection refused or reset, or a malformed answer → **502**; no answer within
      ``idle_timeout_s`` (60 s by default, ALB's idle timeout) or no connection within
      ``connect_timeout_s`` (10 s, ALB's) → **504**; no routable target group or no registered
      target, or no routing table yet → **503**. Refused connections and connect timeouts count
      as ``TargetConnectionErrorCount``.

Metrics (every ``publish_interval_s``, ``put_metric_data`` at the same ``aws_url``)
    Namespace ``AWS/ApplicationELB``, ``StorageResolution`` 1, dimensions ``TargetGroup=
    targetgroup/<name>/<id>`` and ``LoadBalancer=app/<name>/<id>`` (the ARN suffixes, as AWS
    names them): ``RequestCount``, ``HTTPCode_Target_{2,3,4,5}XX_Count``,
    ``HTTPCode_ELB_5XX_Count``, ``TargetConnectionErrorCount`` and ``TargetResponseTime``
    (seconds from sending the request to the target's response headers, as ``Values``/``Counts``
    rounded to 1 ms, at most 150 distinct values per datum, so percentiles can be computed) only
    for a group that had requests in the interval; ``HealthyHostCount`` and
    ``UnHealthyHostCount`` for every group of the served listeners, every interval.

    **Devstack convenience:** ``HTTPCode_ELB_5XX_Count`` is published per target group (the
    ELB-generated 5xx of the requests routed to that group); real AWS publishes it per load
    balancer only. Requests that reach no group (no table, all weights 0, fixed-response) are
    counted in ``/_lb/stats`` only. No metric is published with the ``LoadBalancer`` dimension
    alone: moto's ``get_metric_statistics`` matches on a subset of a datum's dimensions, so it
    would count those requests twice in a per-load-balancer query. A failed publish keeps its
    data for the next interval (up to ``MAX_PENDING_DATUMS``).

Admin endpoints (a separate port, ``admin_url``: never shadows an app path, never counted)
    ``GET /_lb/stats`` → JSON: per target group (``name``, ``dimension``, its targets with their
    health, ``totals``: ``requests``, ``2xx``..``5xx`` from the target, ``elb_502``/``elb_503``/
    ``elb_504``, ``elb_5xx``, ``connection_errors``), the routing table per listener (rules with
    priority, conditions and the forward weights; the default action), and the poller's state
    (``version``, ``polls``, ``errors``, ``last_error``, ``age_s``). ``POST /_lb/poll`` polls now
    and answers the new table's version. ``GET /_lb/health`` → ``{"status": "ok"}``.

CLI
    ``python -m devstack.loadbalancer --aws-url URL --listener ARN=PORT [--listener ARN=PORT]
    [--publish-interval-s 1] [--poll-interval-s 0.5] [--health-interval-s 1] [--seed N]
    [--admin-port P] [--idle-timeout-s 60] [--connect-timeout-s 10] [--healthy-threshold N]
    [--unhealthy-threshold N] [--health-timeout-s S] [--no-publish]``
    (PORT 0: any free port) prints one JSON line ``{"url", "admin_url", "ports", "listeners",
    "pid"}`` on stdout once every port listens; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiohttp
import boto3
from aiohttp import web
from botocore.config import Config
from multidict import CIMultiDict
from yarl import URL

log = logging.getLogger("devstack.loadbalancer")
ALB_LINE_LIMIT = 16_384  # an ALB refuses request lines and header lines past 16 KiB
ALB_MAX_HEADERS = 1_000  # past the apps' own limit of 100 names, so they answer it (431)
ALB_CLIENT_IDLE_S = 60.0  # an ALB's default client idle timeout

NAMESPACE = "AWS/ApplicationELB"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
                        "upgrade"})
MAX_VALUES_PER_DATUM = 150
MAX_DATUMS_PER_CALL = 20
MAX_PENDING_DATUMS = 5000
ROLE_TAG = {"Key": "chatbot:role", "Value": "cutover"}
PRODUCTION_PORT, TEST_PORT, RULE_PRIORITY = 80, 8080, 100
REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


# --------------------------------------------------------------------------- control plane


@dataclass(frozen=True)
class LocalAlb:
    """The ARNs :func:`create_local_alb` made (or found)."""

    load_balancer_arn: str
    production_listener_arn: str
    test_listener_arn: str
    rule_arn: str
    target_groups: dict[str, str]
    vpc_id: str = ""
    target_urls: dict[str, str] = field(default_factory=dict)


def elbv2_client(aws_url: str, region: str = "us-east-1") -> Any:
    """A boto3 ELBv2 client for moto at ``aws_url`` (no stubs for elbv2 here: typed ``Any``)."""
    return _client("elbv2", aws_url, region)


def _client(service: str, aws_url: str, region: str, **config: Any) -> Any:
    return boto3.client(service, endpoint_url=aws_url, region_name=region,  # type: ignore[call-overload]
                        aws_access_key_id="testing",
                        aws_secret_access_key="testing",  # noqa: S106 - moto's
                        config=Config(**config) if config else None)


def create_local_alb(aws_url: str, targets: Mapping[str, str], *, region: str = "us-east-1",
                     name: str = "chatbot") -> LocalAlb:
    """Create (or find) the ALB of a cutover rehearsal in moto; see the module docstring.

    ``targets`` maps each color to its base URL (``http://127.0.0.1:8001``); it must hold
    ``blue`` and ``green``."""
    if not {"blue", "green"} <= set(targets):
        raise ValueError(f"targets needs blue and green, got {sorted(targets)}")
    ec2, elb = _client("ec2", aws_url, region), elbv2_client(aws_url, region)
    existing = _find(elb.describe_load_balancers, "LoadBalancers", "LoadBalancerNotFound",
                     Names=[name])
    if existing:
        lb = existing[0]
        vpc_id = lb["VpcId"]
    else:
        vpc_id = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
        ec2.create_tags(Resources=[vpc_id], Tags=[{"Key": "Name", "Value": name}])
        subnets = [ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.77.{i}.0/24",
                                     AvailabilityZone=f"{region}{zone}")["Subnet"]["SubnetId"]
                   for i, zone in enumerate("ab", start=1)]
        lb = elb.create_load_balancer(Name=name, Subnets=subnets, Scheme="internal",
                                      Type="application", IpAddressType="ipv4",
                                      Tags=[{"Key": "chatbot:stack", "Value": name}]
                                      )["LoadBalancers"][0]
    lb_arn = lb["LoadBalancerArn"]

    tg_arns: dict[str, str] = {}
    for color, base in sorted(targets.items()):
        url = URL(base)
        if url.host is None or url.port is None:
            raise ValueError(f"target {color}: {base!r} has no host and port")
        tg_name = f"{name}-{color}"
        found = _find(elb.describe_target_groups, "TargetGroups", "TargetGroupNotFound",
                      Names=[tg_name])
        tg = found[0] if found else elb.create_target_group(
            Name=tg_name, Protocol="HTTP", Port=url.port, VpcId=vpc_id, TargetType="ip",
            HealthCheckProtocol="HTTP", HealthCheckPath="/health", HealthCheckPort="traffic-port",
            Matcher={"HttpCode": "200"}, Tags=[{"Key": "chatbot:color", "Value": color}],
        )["TargetGroups"][0]
        tg_arns[color] = tg["TargetGroupArn"]
        wanted = {"Id": url.host, "Port": url.port}
        registered = [d["Target"] for d in elb.describe_target_health(
            TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]]
        stale = [t for t in registered if (t["Id"], t.get("Port")) != (url.host, url.port)]
        if stale:
            elb.deregister_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=stale)
        if len(stale) == len(registered):
            elb.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[wanted])

    listeners = {lst["Port"]: lst for lst in
                 elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]}

    def listener(port: int, color: str) -> str:
        if port in listeners:
            return str(listeners[port]["ListenerArn"])
        return str(elb.create_listener(
            LoadBalancerArn=lb_arn, Protocol="HTTP", Port=port,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arns[color]}],
        )["Listeners"][0]["ListenerArn"])

    production, test = listener(PRODUCTION_PORT, "blue"), listener(TEST_PORT, "green")
    rules = [r for r in elb.describe_rules(ListenerArn=production)["Rules"]
             if r["Priority"] == str(RULE_PRIORITY)]
    if rules:
        rule_arn = rules[0]["RuleArn"]
    else:
        rule_arn = elb.create_rule(
            ListenerArn=production, Priority=RULE_PRIORITY,
            Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/*"]}}],
            Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": [
                {"TargetGroupArn": tg_arns["blue"], "Weight": 100},
                {"TargetGroupArn": tg_arns["green"], "Weight": 0}]}}],
            Tags=[ROLE_TAG])["Rules"][0]["RuleArn"]
    return LocalAlb(load_balancer_arn=lb_arn, production_listener_arn=production,
                    test_listener_arn=test, rule_arn=rule_arn, target_groups=tg_arns,
                    vpc_id=vpc_id, target_urls=dict(targets))


def _find(call: Callable[..., dict[str, Any]], key: str, not_found: str,
          **kwargs: Any) -> list[dict[str, Any]]:
    """``call(**kwargs)[key]``, or ``[]`` when the call fails with the code ``not_found``."""
    try:
        return list(call(**kwargs)[key])
    except Exception as exc:  # botocore ClientError, by code
        if getattr(exc, "response", {}).get("Error", {}).get("Code") == not_found:
            return []
        raise


# --------------------------------------------------------------------------- routing table


def arn_suffix(arn: str, kind: str) -> str:
    """``targetgroup/<name>/<id>`` or ``app/<name>/<id>``: the dimension values AWS uses."""
    resource = arn.split(":", 5)[-1]
    if kind == "loadbalancer":
        return resource.removeprefix("loadbalancer/")
    if kind == "listener":  # listener/app/<lb>/<id>/<id> -> app/<lb>/<id>
        return "/".join(resource.split("/")[1:4])
    return resource


def wildcard(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """ELBv2 wildcards: ``*`` any run of characters (none too), ``?`` exactly one."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    @property
    def key(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TargetGroup:
    arn: str
    name: str
    lb_dimension: str
    port: int
    targets: tuple[Target, ...]
    health_path: str = "/health"
    health_port: str = "traffic-port"
    health_timeout_s: float = 5.0
    healthy_threshold: int = 5
    unhealthy_threshold: int = 2
    matcher: str = "200"
    health_enabled: bool = True

    @property
    def dimension(self) -> str:
        return arn_suffix(self.arn, "targetgroup")

    def health_url(self, target: Target) -> str:
        port = target.port if self.health_port in ("", "traffic-port") else int(self.health_port)
        return f"http://{target.host}:{port}{self.health_path or '/'}"


def matcher_accepts(matcher: str, status: int) -> bool:
    """``Matcher.HttpCode``: ``200``, ``200,202`` or ``200-299`` (mixed too)."""
    for part in matcher.split(","):
        lo, _, hi = part.strip().partition("-")
        with contextlib.suppress(ValueError):
            if int(lo) <= status <= int(hi or lo):
                return True
    return False


@dataclass(frozen=True)
class Forward:
    groups: tuple[tuple[str, int], ...]  # (target group ARN, weight)


@dataclass(frozen=True)
class FixedResponse:
    status: int
    content_type: str
    body: str


@dataclass(frozen=True)
class Unsupported:
    kind: str


Action = Forward | FixedResponse | Unsupported


@dataclass(frozen=True)
class Condition:
    field: str
    values: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]

    def matches(self, host: str, path: str, method: str) -> bool:
        if self.field == "path-pattern":
            subject = path
        elif self.field == "host-header":
            subject = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        elif self.field == "http-request-method":
            return method in self.values
        else:  # query-string, http-header, source-ip: not evaluated, never match
            return False
        return any(p.fullmatch(subject) for p in self.patterns)


@dataclass(frozen=True)
class Rule:
    priority: int
    arn: str
    conditions: tuple[Condition, ...]
    action: Action

    def matches(self, host: str, path: str, method: str) -> bool:
        return all(c.matches(host, path, method) for c in self.conditions)


@dataclass(frozen=True)
class ListenerTable:
    arn: str
    lb_arn: str
    rules: tuple[Rule, ...]  # by priority
    default: Action

    def route(self, host: str, path: str, method: str) -> tuple[str, Action]:
        """The matching rule's ARN (or ``default``) and its action."""
        for rule in self.rules:
            if rule.matches(host, path, method):
                return rule.arn, rule.action
        return "default", self.default


@dataclass(frozen=True)
class RoutingTable:
    listeners: dict[str, ListenerTable]
    target_groups: dict[str, TargetGroup]
    version: int = 0


def parse_action(actions: Iterable[Mapping[str, Any]]) -> Action:
    """The first terminating action of a rule or a listener (by ``Order``)."""
    ordered = sorted(actions, key=lambda a: int(a.get("Order", 0)))
    for action in ordered:
        kind = action.get("Type", "")
        if kind == "forward":
            config = action.get("ForwardConfig") or {}
            groups = config.get("TargetGroups") or []
            if groups:
                return Forward(tuple((g["TargetGroupArn"], max(0, int(g.get("Weight", 1))))
                                     for g in groups))
            return Forward(((action["TargetGroupArn"], 1),))
        if kind == "fixed-response":
            fixed = action.get("FixedResponseConfig") or {}
            return FixedResponse(int(fixed.get("StatusCode", "503")),
                                 fixed.get("ContentType", "text/plain"),
                                 fixed.get("MessageBody", ""))
        if kind.startswith("authenticate"):
            continue
        return Unsupported(kind)
    return Unsupported("none")


def parse_condition(raw: Mapping[str, Any]) -> Condition:
    name = raw.get("Field", "")
    config_key = {"path-pattern": "PathPatternConfig", "host-header": "HostHeaderConfig",
                  "http-request-method": "HttpRequestMethodConfig"}.get(name, "")
    values = tuple((raw.get(config_key) or {}).get("Values") or raw.get("Values") or ())
    patterns = tuple(wildcard(v, ignore_case=name == "host-header") for v in values)
    return Condition(name, values, patterns)


def parse_rules(listener_arn: str, lb_arn: str, default_actions: Iterable[Mapping[str, Any]],
                rules: Iterable[Mapping[str, Any]]) -> ListenerTable:
    parsed: list[Rule] = []
    default = parse_action(default_actions)
    for raw in rules:
        if raw.get("IsDefault") or raw.get("Priority") == "default":
            default = parse_action(raw.get("Actions") or [])
            continue
        parsed.append(Rule(int(raw["Priority"]), raw["RuleArn"],
                           tuple(parse_condition(c) for c in raw.get("Conditions") or []),
                           parse_action(raw.get("Actions") or [])))
    parsed.sort(key=lambda r: r.priority)
    return ListenerTable(listener_arn, lb_arn, tuple(parsed), default)


def parse_target_group(raw: Mapping[str, Any], health: Iterable[Mapping[str, Any]],
                       lb_arn: str) -> TargetGroup:
    targets = tuple(Target(d["Target"]["Id"], int(d["Target"].get("Port") or raw["Port"]))
                    for d in health)
    return TargetGroup(
        arn=raw["TargetGroupArn"], name=raw["TargetGroupName"],
        lb_dimension=arn_suffix(lb_arn, "loadbalancer"), port=int(raw.get("Port") or 80),
        targets=targets, health_path=raw.get("HealthCheckPath") or "/",
        health_port=str(raw.get("HealthCheckPort") or "traffic-port"),
        health_timeout_s=float(raw.get("HealthCheckTimeoutSeconds") or 5),
        healthy_threshold=int(raw.get("HealthyThresholdCount") or 5),
        unhealthy_threshold=int(raw.get("UnhealthyThresholdCount") or 2),
        matcher=(raw.get("Matcher") or {}).get("HttpCode") or "200",
        health_enabled=bool(raw.get("HealthCheckEnabled", True)))


def fetch_table(elb: Any, listener_arns: Iterable[str], version: int) -> RoutingTable:
    """One poll of the ELBv2 API (blocking: run it in a thread)."""
    arns = list(listener_arns)
    listeners: dict[str, ListenerTable] = {}
    for raw in elb.describe_listeners(ListenerArns=arns)["Listeners"]:
        rules: list[dict[str, Any]] = []
        page: dict[str, Any] = {"ListenerArn": raw["ListenerArn"]}
        while True:
            answer = elb.describe_rules(**page)
            rules.extend(answer["Rules"])
            if not answer.get("NextMarker"):
                break
            page["Marker"] = answer["NextMarker"]
        listeners[raw["ListenerArn"]] = parse_rules(
            raw["ListenerArn"], raw["LoadBalancerArn"], raw.get("DefaultActions") or [], rules)
    missing = set(arns) - set(listeners)
    if missing:
        raise LookupError(f"listeners not found: {sorted(missing)}")
    referenced: dict[str, str] = {}  # TG ARN -> LB ARN
    for table in listeners.values():
        for action in (table.default, *(r.action for r in table.rules)):
            if isinstance(action, Forward):
                for tg_arn, _ in action.groups:
                    referenced.setdefault(tg_arn, table.lb_arn)
    groups: dict[str, TargetGroup] = {}
    if referenced:
        described = elb.describe_target_groups(TargetGroupArns=sorted(referenced))
        for raw in described["TargetGroups"]:
            health = elb.describe_target_health(
                TargetGroupArn=raw["TargetGroupArn"])["TargetHealthDescriptions"]
            groups[raw["TargetGroupArn"]] = parse_target_group(
                raw, health, referenced[raw["TargetGroupArn"]])
    return RoutingTable(listeners, groups, version)


def describe_action(action: Action, groups: Mapping[str, TargetGroup]) -> dict[str, Any]:
    if isinstance(action, Forward):
        return {"type": "forward", "target_groups": [
            {"arn": arn, "name": groups[arn].name if arn in groups else None, "weight": weight}
            for arn, weight in action.groups]}
    if isinstance(action, FixedResponse):
        return {"type": "fixed-response", "status": action.status}
    return {"type": action.kind, "supported": False}


# --------------------------------------------------------------------------- health and stats


@dataclass
class HealthState:
    state: str = "initial"  # initial | healthy | unhealthy
    successes: int = 0
    failures: int = 0
    reason: str = ""

    def record(self, ok: bool, healthy_threshold: int, unhealthy_threshold: int,
               reason: str = "") -> None:
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.state == "initial" or self.successes >= healthy_threshold:
                self.state, self.reason = "healthy", ""
        else:
            self.failures, self.successes = self.failures + 1, 0
            self.reason = reason
            if self.state == "initial" or self.failures >= unhealthy_threshold:
                self.state = "unhealthy"


@dataclass
class GroupCounts:
    """What one target group saw: per publish interval, and as totals."""

    counts: Counter[str] = field(default_factory=Counter)
    response_times_ms: Counter[int] = field(default_factory=Counter)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n


COUNT_METRICS = {"requests": "RequestCount", "2xx": "HTTPCode_Target_2XX_Count",
                 "3xx": "HTTPCode_Target_3XX_Count", "4xx": "HTTPCode_Target_4XX_Count",
                 "5xx": "HTTPCode_Target_5XX_Count", "elb_5xx": "HTTPCode_ELB_5XX_Count",
                 "connection_errors": "TargetConnectionErrorCount"}


def metric_datums(group: TargetGroup, counts: GroupCounts | None, healthy: int,
                  unhealthy: int, when: datetime) -> list[dict[str, Any]]:
    """The CloudWatch datums of one target group for one interval (pure)."""
    dims = [{"Name": "TargetGroup", "Value": group.dimension},
            {"Name": "LoadBalancer", "Value": group.lb_dimension}]

    def datum(name: str, unit: str, **value: Any) -> dict[str, Any]:
        return {"MetricName": name, "Dimensions": dims, "Timestamp": when, "Unit": unit,
                "StorageResolution": 1, **value}

    out = [datum("HealthyHostCount", "Count", Value=float(healthy)),
           datum("UnHealthyHostCount", "Count", Value=float(unhealthy))]
    if counts is None or not counts.counts["requests"]:
        return out
    for key, name in COUNT_METRICS.items():
        out.append(datum(name, "Count", Value=float(counts.counts[key])))
    times = sorted(counts.response_times_ms.items())
    for start in range(0, len(times), MAX_VALUES_PER_DATUM):
        chunk = times[start:start + MAX_VALUES_PER_DATUM]
        out.append(datum("TargetResponseTime", "Seconds",
                         Values=[ms / 1000 for ms, _ in chunk],
                         Counts=[float(n) for _, n in chunk]))
    return out


def error_page(status: int) -> web.Response:
    title = f"{status} {REASONS.get(status, 'Error')}"
    body = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n")
    return web.Response(status=status, body=body.encode(), content_type="text/html",
                        headers={"Server": "awselb/2.0"})


class _Passthrough(web.Response):
    """A target's answer as it came: aiohttp adds ``Content-Type: application/octet-stream``,
    ``Server`` and ``Date`` when they are missing; those it added are taken out again."""

    async def _prepare_headers(self) -> None:
        had = {name for name in _ADDED_BY_AIOHTTP if name in self.headers}
        await super()._prepare_headers()
        for name in _ADDED_BY_AIOHTTP - had:
            self.headers.pop(name, None)


_ADDED_BY_AIOHTTP = frozenset({"Content-Type", "Server", "Date"})


def trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"


# --------------------------------------------------------------------------- the data plane


class LoadBalancer:
    """The data plane, on its own event loop in a thread (:meth:`start`, :meth:`stop`).

    ``listeners`` maps each listener ARN to its local port (0: any free port); ``ports`` and
    ``urls`` hold the bound ones after :meth:`start`."""

    def __init__(self, aws_url: str, listeners: Mapping[str, int], *,
                 region: str = "us-east-1", host: str = "127.0.0.1",
                 poll_interval_s: float = 0.5, publish_interval_s: float = 1.0,
                 health_interval_s: float = 1.0, healthy_threshold: int | None = None,
                 unhealthy_threshold: int | None = None, health_timeout_s: float | None = None,
                 idle_timeout_s: float = 60.0,
                 connect_timeout_s: float = 10.0, target_keepalive_s: float = 2.0,
                 seed: int | None = None, admin_port: int = 0, publish: bool = True) -> None:
        if not listeners:
            raise ValueError("at least one listener ARN")
        self.aws_url, self.region, self.host = aws_url, region, host
        self.poll_interval_s, self.publish_interval_s = poll_interval_s, publish_interval_s
        self.health_interval_s = health_interval_s
        self.healthy_threshold, self.unhealthy_threshold = healthy_threshold, unhealthy_threshold
        self.health_timeout_s = health_timeout_s
        self.idle_timeout_s, self.connect_timeout_s = idle_timeout_s, connect_timeout_s
        self.target_keepalive_s, self.publish_enabled = target_keepalive_s, publish
        self._wanted_ports = dict(listeners)
        self._admin_wanted = admin_port
        self.ports: dict[str, int] = {}
        self.admin_port = 0
        self.rng = random.Random(seed)  # noqa: S311 - traffic split, not crypto
        self.table: RoutingTable | None = None
        self.health: dict[tuple[str, str], HealthState] = {}
        self._rr: Counter[str] = Counter()
        self._interval: dict[str, GroupCounts] = {}
        self._totals: dict[str, GroupCounts] = {}
        self._unrouted: Counter[str] = Counter()
        self._pending: list[dict[str, Any]] = []
        self.poll_state: dict[str, Any] = {"version": 0, "polls": 0, "errors": 0,
                                           "last_error": None, "last_success": None}
        self.publish_state: dict[str, Any] = {"calls": 0, "datums": 0, "errors": 0,
                                              "last_error": None}
        # one retry at most: a poll that fails is retried by the next poll anyway
        self._elb = _client("elbv2", aws_url, region, retries={"total_max_attempts": 2},
                            connect_timeout=2, read_timeout=5)
        self._cw = _client("cloudwatch", aws_url, region,
                           retries={"total_max_attempts": 2}, connect_timeout=2,
                           read_timeout=5)
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lb-aws")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._session: aiohttp.ClientSession | None = None
        self._poll_lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def urls(self) -> dict[str, str]:
        return {arn: f"http://{self.host}:{port}" for arn, port in self.ports.items()}

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    def start(self, timeout_s: float = 30.0) -> LoadBalancer:
        """Bind every port, poll once (a failure is logged and retried), then return."""
        self._thread = threading.Thread(target=self._run, name="loadbalancer", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._failure is not None:
            self.stop()
            raise RuntimeError(f"the load balancer did not start: {self._failure!r}")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout_s)
        self._thread = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> LoadBalancer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            import uvloop  # optional speed-up (uvicorn[standard] brings it)
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover
            loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._failure = exc
            log.exception("load balancer failed")
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._poll_lock = asyncio.Lock()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=self.target_keepalive_s,
                                           enable_cleanup_closed=False),
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s,
                                          sock_read=self.idle_timeout_s))
        runners: list[web.BaseRunner] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            for arn, port in self._wanted_ports.items():
                # an ALB's limits, not aiohttp's: a 16 KiB request line and header line, a 60 s
                # client idle timeout, bodies as sent (no size cap, no decompression)
                server = web.Server(self._handler_for(arn), max_line_size=ALB_LINE_LIMIT,
                                    max_field_size=ALB_LINE_LIMIT, max_headers=ALB_MAX_HEADERS,
                                    keepalive_timeout=ALB_CLIENT_IDLE_S, auto_decompress=False)
                runner = web.ServerRunner(server, access_log=None, handle_signals=False)
                runners.append(runner)
                self.ports[arn] = await self._serve(runner, port)
            admin = web.Application()
            admin.router.add_get("/_lb/stats", self._stats)
            admin.router.add_post("/_lb/poll", self._poll_now)
            admin.router.add_get("/_lb/health", self._health_endpoint)
            admin_runner = web.AppRunner(admin, access_log=None, handle_signals=False)
            runners.append(admin_runner)
            self.admin_port = await self._serve(admin_runner, self._admin_wanted)
            await self.poll_once()
            if self.table is not None:
                await self._health_round()
            tasks = [asyncio.create_task(self._every(self.poll_interval_s, self.poll_once)),
                     asyncio.create_task(self._every(self.health_interval_s, self._health_round))]
            if self.publish_enabled:
                tasks.append(asyncio.create_task(
                    self._every(self.publish_interval_s, self.publish_once)))
            log.info(json.dumps({"event": "loadbalancer.started", "ports": self.ports,
                                 "admin_url": self.admin_url}))
            self._ready.set()
            await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for each in runners:
                await each.cleanup()
            if self.publish_enabled and self.ports:
                with contextlib.suppress(Exception):
                    await self.publish_once()  # the last partial interval
            await self._session.close()

    async def _serve(self, runner: web.BaseRunner, port: int) -> int:
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        site = web.SockSite(runner, sock, backlog=1024)
        await site.start()
        return int(sock.getsockname()[1])

    async def _every(self, interval_s: float, step: Callable[[], Any]) -> None:
        next_at = time.monotonic()
        while True:
            next_at += interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic step %s failed", getattr(step, "__name__", step))
            next_at = max(next_at, time.monotonic() - interval_s)

    # ------------------------------------------------------------------ polling

    async def poll_once(self) -> int:
        """Read the configuration once; keeps the last good table on any failure."""
        assert self._poll_lock is not None
        async with self._poll_lock:
            state = self.poll_state
            state["polls"] += 1
            loop = asyncio.get_running_loop()
            try:
                table = await loop.run_in_executor(
                    self._executor, fetch_table, self._elb, list(self._wanted_ports),
                    state["version"] + 1)
            except Exception as exc:
                if state["last_error"] is None:
                    log.warning(json.dumps({"event": "loadbalancer.poll_failed",
                                            "error": repr(exc)[:300],
                                            "kept_version": state["version"]}))
                state["errors"] += 1
                state["last_error"] = repr(exc)[:300]
                return int(state["version"])
            if state["last_error"] is not None:
                log.info(json.dumps({"event": "loadbalancer.poll_recovered"}))
            if self.table is None or _routes(self.table) != _routes(table):
                log.info(json.dumps({"event": "loadbalancer.table", "version": table.version,
                                     "routes": _routes(table)}))
            self.table = table
            state.update(version=table.version, last_error=None, last_success=time.time())
            return table.version

    # ------------------------------------------------------------------ health checks

    def _thresholds(self, group: TargetGroup) -> tuple[int, int]:
        return (self.healthy_threshold or group.healthy_threshold,
                self.unhealthy_threshold or group.unhealthy_threshold)

    async def _health_round(self) -> None:
        table = self.table
        if table is None:
            return
        checks = [(g, t) for g in table.target_groups.values() for t in g.targets]
        live = {(g.arn, t.key) for g, t in checks}
        for key in set(self.health) - live:
            del self.health[key]
        await asyncio.gather(*(self._check(g, t) for g, t in checks))

    async def _check(self, group: TargetGroup, target: Target) -> None:
        state = self.health.setdefault((group.arn, target.key), HealthState())
        if not group.health_enabled:
            state.state = "healthy"
            return
        timeout = self.health_timeout_s or group.health_timeout_s
        assert self._session is not None
        try:
            async with self._session.get(
                    group.health_url(target), allow_redirects=False,
                    headers={"User-Agent": "ELB-HealthChecker/2.0", "Connection": "close"},
                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                await resp.read()
                ok, reason = matcher_accepts(group.matcher, resp.status), f"HTTP {resp.status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            ok, reason = False, type(exc).__name__
        before = state.state
        state.record(ok, *self._thresholds(group), reason=reason)
        if state.state != before:
            log.info(json.dumps({"event": "loadbalancer.target_health", "target_group":
                                 group.name, "target": target.key, "from": before,
                                 "to": state.state, "reason": state.reason}))

    def routable(self, group: TargetGroup) -> list[Target]:
        """The healthy targets, or all of them when none is (fail open)."""
        healthy = [t for t in group.targets
                   if self.health.get((group.arn, t.key), HealthState()).state == "healthy"]
        return healthy or list(group.targets)

    def host_counts(self, group: TargetGroup) -> tuple[int, int]:
        states = [self.health.get((group.arn, t.key), HealthState()).state
                  for t in group.targets]
        return states.count("healthy"), states.count("unhealthy")

    # ------------------------------------------------------------------ proxying

    def _handler_for(self, listener_arn: str) -> Callable[[web.BaseRequest],
                                                          Any]:
        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            return await self._proxy(listener_arn, request)
        return handler

    def _count(self, tg_arn: str, key: str, n: int = 1) -> None:
        for book in (self._interval, self._totals):
            book.setdefault(tg_arn, GroupCounts()).add(key, n)

    def _choose(self, action: Forward) -> str | None:
        arns = [arn for arn, _ in action.groups]
        weights = [w for _, w in action.groups]
        if not any(weights):
            return None
        if len(arns) == 1:
            return arns[0]
        return self.rng.choices(arns, weights)[0]

    async def _proxy(self, listener_arn: str, request: web.BaseRequest) -> web.StreamResponse:
        table = self.table
        listener = table.listeners.get(listener_arn) if table is not None else None
        raw_path = request.raw_path
        if listener is None or table is None:
            self._unrouted["no_table"] += 1
            return error_page(503)
        path = raw_path.split("?", 1)[0]
        _, action = listener.route(request.headers.get("Host", ""), path, request.method)
        if isinstance(action, FixedResponse):
            self._unrouted["fixed_response"] += 1
            return web.Response(status=action.status, text=action.body,
                                content_type=action.content_type.split(";")[0],
                                headers={"Server": "awselb/2.0"})
        tg_arn = self._choose(action) if isinstance(action, Forward) else None
        group = table.target_groups.get(tg_arn) if tg_arn is not None else None
        if tg_arn is None or group is None:
            self._unrouted["no_target_group"] += 1
            return error_page(503)
        self._count(tg_arn, "requests")
        targets = self.routable(group)
        if not targets:
            self._count(tg_arn, "elb_5xx")
            self._count(tg_arn, "elb_503")
            return error_page(503)
        target = targets[self._rr[tg_arn] % len(targets)]
        self._rr[tg_arn] += 1
        return await self._forward(request, tg_arn, target, raw_path)

    def _upstream_headers(self, request: web.BaseRequest) -> CIMultiDict[str]:
        """The request's headers less hop-by-hop ones (and those its ``Connection`` names),
        ``Content-Length`` (recomputed from the buffered body) and the ``X-Forwarded-Proto``
        and ``-Port`` a client sent; plus the ALB's own ``X-Forwarded-*`` and trace id."""
        named = {v.strip().lower() for v in
                 ",".join(request.headers.getall("Connection", [])).split(",")}
        dropped = HOP_BY_HOP | named | {"content-length", "x-forwarded-proto",
                                        "x-forwarded-port"}
        headers: CIMultiDict[str] = CIMultiDict(
            (name, value) for name, value in request.headers.items()
            if name.lower() not in dropped)
        peer = request.remote or ""
        prior = ", ".join(headers.popall("X-Forwarded-For", []))
        headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        headers["X-Forwarded-Proto"] = "http"
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        headers["X-Forwarded-Port"] = str(sockname[1]) if sockname else ""
        if "X-Amzn-Trace-Id" not in headers:
            headers["X-Amzn-Trace-Id"] = trace_id()
        return headers

    async def _forward(self, request: web.BaseRequest, tg_arn: str, target: Target,
                       raw_path: str) -> web.StreamResponse:
        assert self._session is not None
        # the stream, not request.read(): that caps bodies at aiohttp's 1 MiB
        body = await request.content.read() if request.body_exists else None
        url = URL(f"http://{target.host}:{target.port}{raw_path}", encoded=True)
        started = time.perf_counter()
        try:
            async with self._session.request(
                    request.method, url, headers=self._upstream_headers(request), data=body,
                    allow_redirects=False, compress=None, chunked=None) as upstream:
                elapsed_ms = round((time.perf_counter() - started) * 1000)
                payload = await upstream.read()
                status = upstream.status
                response = _Passthrough(status=status, reason=upstream.reason)
                for name, value in upstream.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        response.headers.add(name, value)
                response.body = payload
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            self._count(tg_arn, "connection_errors")
            timed_out = isinstance(exc, aiohttp.ConnectionTimeoutError)
            return self._elb_error(tg_arn, 504 if timed_out else 502)
        except (aiohttp.SocketTimeoutError, TimeoutError):
            return self._elb_error(tg_arn, 504)
        except (aiohttp.ClientError, OSError):  # reset, disconnected, malformed answer
            return self._elb_error(tg_arn, 502)
        self._count(tg_arn, f"{status // 100}xx" if 200 <= status < 600 else "other")
        for book in (self._interval, self._totals):
            book.setdefault(tg_arn, GroupCounts()).response_times_ms[elapsed_ms] += 1
        return response

    def _elb_error(self, tg_arn: str, status: int) -> web.Response:
        self._count(tg_arn, "elb_5xx")
        self._count(tg_arn, f"elb_{status}")
        return error_page(status)

    # ------------------------------------------------------------------ metrics

    async def publish_once(self) -> int:
        """Publish one interval's datums (and any left from a failed publish)."""
        table = self.table
        interval, self._interval = self._interval, {}
        if table is None:
            return 0
        when = datetime.now(UTC)
        datums = list(self._pending)
        for arn, group in sorted(table.target_groups.items()):
            healthy, unhealthy = self.host_counts(group)
            datums.extend(metric_datums(group, interval.get(arn), healthy, unhealthy, when))
        self._pending = []
        loop = asyncio.get_running_loop()
        sent = 0
        for start in range(0, len(datums), MAX_DATUMS_PER_CALL):
            batch = datums[start:start + MAX_DATUMS_PER_CALL]
            try:
                await loop.run_in_executor(self._executor, functools.partial(
                    self._cw.put_metric_data, Namespace=NAMESPACE, MetricData=batch))
            except Exception as exc:
                self.publish_state["errors"] += 1
                if self.publish_state["last_error"] is None:
                    log.warning(json.dumps({"event": "loadbalancer.publish_failed",
                                            "error": repr(exc)[:300]}))
                self.publish_state["last_error"] = repr(exc)[:300]
                self._pending = (datums[start:])[-MAX_PENDING_DATUMS:]
                return sent
            sent += len(batch)
            self.publish_state["calls"] += 1
            self.publish_state["datums"] += len(batch)
        self.publish_state["last_error"] = None
        return sent

    # ------------------------------------------------------------------ admin

    def stats(self) -> dict[str, Any]:
        """What ``GET /_lb/stats`` answers; from another thread, it is read on the loop."""
        loop = self._loop
        if loop is not None and loop.is_running() and threading.current_thread() is not \
                self._thread:
            async def read() -> dict[str, Any]:
                return self._stats_now()
            return asyncio.run_coroutine_threadsafe(read(), loop).result(10)
        return self._stats_now()

    def _stats_now(self) -> dict[str, Any]:
        table = self.table
        groups = table.target_groups if table is not None else {}
        out_groups: dict[str, Any] = {}
        for arn in sorted(set(groups) | set(self._totals)):
            totals = self._totals.get(arn, GroupCounts()).counts
            group = groups.get(arn)
            entry: dict[str, Any] = {"totals": {
                k: totals[k] for k in ("requests", "2xx", "3xx", "4xx", "5xx", "elb_5xx",
                                       "elb_502", "elb_503", "elb_504", "connection_errors")}}
            if group is not None:
                healthy, unhealthy = self.host_counts(group)
                entry.update(
                    name=group.name, dimension=group.dimension,
                    load_balancer=group.lb_dimension, healthy=healthy, unhealthy=unhealthy,
                    targets=[{"id": t.host, "port": t.port,
                              "health": self.health.get((arn, t.key), HealthState()).state,
                              "reason": self.health.get((arn, t.key), HealthState()).reason}
                             for t in group.targets])
            out_groups[arn] = entry
        listeners: dict[str, Any] = {}
        if table is not None:
            for arn, lt in table.listeners.items():
                listeners[arn] = {
                    "port": self.ports.get(arn), "url": self.urls.get(arn),
                    "rules": [{"priority": r.priority, "arn": r.arn,
                               "conditions": [{"field": c.field, "values": list(c.values)}
                                              for c in r.conditions],
                               "action": describe_action(r.action, groups)} for r in lt.rules],
                    "default": describe_action(lt.default, groups)}
        last = self.poll_state["last_success"]
        return {"target_groups": out_groups, "listeners": listeners,
                "unrouted": dict(self._unrouted),
                "poll": {**self.poll_state,
                         "age_s": round(time.time() - last, 3) if last else None},
                "publish": dict(self.publish_state)}

    async def _stats(self, _: web.Request) -> web.Response:
        return web.json_response(self._stats_now())

    async def _poll_now(self, _: web.Request) -> web.Response:
        version = await self.poll_once()
        return web.json_response({"version": version, "error": self.poll_state["last_error"]})

    async def _health_endpoint(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


def _routes(table: RoutingTable) -> dict[str, Any]:
    """What a routing table routes where (for the change log line)."""
    return {arn: {"rules": [(r.priority, describe_action(r.action, table.target_groups))
                            for r in lt.rules],
                  "default": describe_action(lt.default, table.target_groups)}
            for arn, lt in table.listeners.items()} | {
        "targets": {g.name: [t.key for t in g.targets] for g in table.target_groups.values()}}


# --------------------------------------------------------------------------- CLI


def _listener_arg(text: str) -> tuple[str, int]:
    arn, sep, port = text.rpartition("=")
    if not sep or not arn.startswith("arn:") or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected ARN=PORT, got {text!r}")
    return arn, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.loadbalancer",
        description="Serve ELBv2 listeners stored in moto: route by their rules and weights.")
    parser.add_argument("--aws-url", required=True, help="moto's URL (ELBv2 and CloudWatch)")
    parser.add_argument("--listener", type=_listener_arg, action="append", required=True,
                        metavar="ARN=PORT", help="a listener ARN and its local port (0: any)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--admin-port", type=int, default=0)
    parser.add_argument("--publish-interval-s", type=float, default=1.0)
    parser.add_argument("--poll-interval-s", type=float, default=0.5)
    parser.add_argument("--health-interval-s", type=float, default=1.0)
    parser.add_argument("--healthy-threshold", type=int, default=None)
    parser.add_argument("--unhealthy-threshold", type=int, default=None)
    parser.add_argument("--health-timeout-s", type=float, default=None)
    parser.add_argument("--idle-timeout-s", type=float, default=60.0)
    parser.add_argument("--connect-timeout-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-publish", action="store_true", help="publish no metrics")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    lb = LoadBalancer(
        args.aws_url, dict(args.listener), region=args.region, host=args.host,
        poll_interval_s=args.poll_interval_s, publish_interval_s=args.publish_interval_s,
        health_interval_s=args.health_interval_s, healthy_threshold=args.healthy_threshold,
        unhealthy_threshold=args.unhealthy_threshold, health_timeout_s=args.health_timeout_s,
        idle_timeout_s=args.idle_timeout_s,
        connect_timeout_s=args.connect_timeout_s, seed=args.seed, admin_port=args.admin_port,
        publish=not args.no_publish)
    lb.start()
    first = next(iter(lb.urls.values()))
    print(json.dumps({"url": first, "admin_url": lb.admin_url, "ports": lb.ports,
                      "listeners": lb.urls, "pid": os.getpid()}), flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        lb.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

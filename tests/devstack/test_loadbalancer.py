"""The local ALB data plane over the real wire: moto (behind the fault injector) holds the ELBv2
configuration, two tiny target servers answer their color, the load balancer routes between them
by what it reads back, and publishes AWS/ApplicationELB metrics to moto's CloudWatch."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import http.server
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from devstack.loadbalancer import (
    MAX_VALUES_PER_DATUM,
    FixedResponse,
    Forward,
    GroupCounts,
    HealthState,
    LoadBalancer,
    LocalAlb,
    TargetGroup,
    Unsupported,
    arn_suffix,
    create_local_alb,
    elbv2_client,
    matcher_accepts,
    metric_datums,
    parse_action,
    parse_rules,
    wildcard,
)
from devstack.procs import LoadBalancerProcess, MotoProcess

POLL_S = 0.25
GZIPPED = gzip.compress(b"raw gzip bytes, passed on undecoded")


# --------------------------------------------------------------------------- target servers


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away (a health check or a request timed out, a stop)


class TargetServer:
    """A tiny HTTP/1.1 target in a thread, answering ``X-Color`` on every response."""

    def __init__(self, color: str, port: int = 0) -> None:
        self.color = color
        self.healthy = True
        self.seen: list[dict[str, Any]] = []
        self.connections: set[socket.socket] = set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes

            def log_message(self, *_: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                server.connections.add(self.connection)

            def finish(self) -> None:
                server.connections.discard(self.connection)
                super().finish()

            def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                        content_type: str | None = "text/plain") -> None:
                self.send_response(status)
                self.send_header("X-Color", server.color)
                if content_type:
                    self.send_header("Content-Type", content_type)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.seen.append({"method": self.command, "path": self.path,
                                    "headers": list(self.headers.items()), "body": body})
                if self.path == "/health":
                    self._answer(200 if server.healthy else 503, b"ok")
                elif self.path == "/slow":
                    time.sleep(2.0)
                    self._answer(200, b"late")
                elif self.path == "/raw":
                    self.send_response(201, "Made")
                    self.send_header("X-Color", server.color)
                    self.send_header("Set-Cookie", "a=1; Path=/")
                    self.send_header("Set-Cookie", "b=2; Path=/")
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(GZIPPED)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(GZIPPED)
                elif self.path.startswith("/status/"):
                    self._answer(int(self.path.rsplit("/", 1)[1]), b"as asked")
                else:
                    self._answer(200, server.color.encode())

            do_POST = do_HEAD = do_DELETE = do_GET

        self.httpd = _QuietServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop as a killed process does: the port refuses connections, and the connections
        kept alive to it are closed too (else a pooled one could still be answered)."""
        self.httpd.shutdown()
        self.httpd.server_close()
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, step_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {predicate}")
        time.sleep(step_s)


def set_weights(elb: Any, alb: LocalAlb, blue: int, green: int) -> None:
    elb.modify_rule(RuleArn=alb.rule_arn, Actions=[{"Type": "forward", "ForwardConfig": {
        "TargetGroups": [{"TargetGroupArn": alb.target_groups["blue"], "Weight": blue},
                         {"TargetGroupArn": alb.target_groups["green"], "Weight": green}]}}])


def rule_weights(stats: dict[str, Any], alb: LocalAlb) -> dict[str, int]:
    rule = stats["listeners"][alb.production_listener_arn]["rules"][0]
    names = {arn: color for color, arn in alb.target_groups.items()}
    return {names[g["arn"]]: g["weight"] for g in rule["action"]["target_groups"]}


def cw_stat(cw: Any, metric: str, group_arn: str, lb_arn: str, stat: str = "Sum") -> float:
    """``stat`` over the last minutes of one target group's metric (get_metric_statistics,
    which filters the namespace in moto)."""
    now = datetime.now(UTC)
    points = cw.get_metric_statistics(
        Namespace="AWS/ApplicationELB", MetricName=metric, Statistics=[stat], Period=60,
        StartTime=now - timedelta(minutes=10), EndTime=now + timedelta(minutes=2),
        Dimensions=[{"Name": "TargetGroup", "Value": arn_suffix(group_arn, "targetgroup")},
                    {"Name": "LoadBalancer", "Value": arn_suffix(lb_arn, "loadbalancer")}],
    )["Datapoints"]
    if stat == "Maximum":
        return max((p[stat] for p in points), default=0.0)
    return float(sum(p[stat] for p in points))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoProcess]:
    proc = MotoProcess(tmp_path_factory.mktemp("lb") / "moto.log")
    try:
        proc.wait()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, TargetServer]]:
    servers = {color: TargetServer(color) for color in ("blue", "green")}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(scope="module")
def alb(moto: MotoProcess, targets: dict[str, TargetServer]) -> LocalAlb:
    return create_local_alb(moto.url, {c: t.url for c, t in targets.items()})


@pytest.fixture(scope="module")
def elb(moto: MotoProcess) -> Any:
    return elbv2_client(moto.url)


@pytest.fixture(scope="module")
def cw(moto: MotoProcess) -> Any:
    return boto3.client("cloudwatch", endpoint_url=moto.url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def lb(moto: MotoProcess, alb: LocalAlb) -> Iterator[LoadBalancer]:
    with LoadBalancer(moto.url, {alb.production_listener_arn: 0, alb.test_listener_arn: 0},
                      seed=7, poll_interval_s=POLL_S, publish_interval_s=0.5,
                      health_interval_s=0.25, idle_timeout_s=1.0) as balancer:
        yield balancer


@pytest.fixture
def prod(lb: LoadBalancer, alb: LocalAlb) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lb.urls[alb.production_listener_arn], timeout=10) as client:
        yield client


def stats(lb: LoadBalancer) -> dict[str, Any]:
    return dict(httpx.get(f"{lb.admin_url}/_lb/stats", timeout=5).json())


# --------------------------------------------------------------------------- control plane


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_create_local_alb_makes_the_cutover_shape_and_finds_it_again(
        moto: MotoProcess, alb: LocalAlb, elb: Any, targets: dict[str, TargetServer]) -> None:
    again = create_local_alb(moto.url, {c: t.url for c, t in targets.items()})
    assert again == alb
    rules = elb.describe_rules(ListenerArn=alb.production_listener_arn)["Rules"]
    rule = next(r for r in rules if r["RuleArn"] == alb.rule_arn)
    assert rule["Priority"] == "100"
    assert rule["Conditions"] == [{"Field": "path-pattern",
                                   "PathPatternConfig": {"Values": ["/*"]}}]
    assert rule["Actions"][0]["ForwardConfig"]["TargetGroups"] == [
        {"TargetGroupArn": alb.target_groups["blue"], "Weight": 100},
        {"TargetGroupArn": alb.target_groups["green"], "Weight": 0}]
    tags = elb.describe_tags(ResourceArns=[alb.rule_arn])["TagDescriptions"][0]["Tags"]
    assert {"Key": "chatbot:role", "Value": "cutover"} in tags
    listeners = {lst["ListenerArn"]: lst for lst in
                 elb.describe_listeners(LoadBalancerArn=alb.load_balancer_arn)["Listeners"]}
    assert len(listeners) == 2
    assert listeners[alb.production_listener_arn]["DefaultActions"][0]["TargetGroupArn"] == \
        alb.target_groups["blue"]
    assert listeners[alb.test_listener_arn]["DefaultActions"][0]["TargetGroupArn"] == \
        alb.target_groups["green"]
    for color, arn in alb.target_groups.items():
        group = elb.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]
        assert (group["HealthCheckPath"], group["TargetType"], group["Protocol"]) == \
            ("/health", "ip", "HTTP")
        health = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        assert [h["Target"] for h in health] == [{"Id": "127.0.0.1",
                                                  "Port": targets[color].port}]
    assert len(elb.describe_load_balancers(Names=["chatbot"])["LoadBalancers"]) == 1


# --------------------------------------------------------------------------- routing


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_weights_100_0_send_everything_to_blue(lb: LoadBalancer, prod: httpx.Client) -> None:
    colors = Counter(prod.get(f"/any/path?n={i}").headers["x-color"] for i in range(50))
    assert colors == {"blue": 50}


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_modify_rule_80_20_is_applied_within_a_poll_and_splits_binomially(
        lb: LoadBalancer, alb: LocalAlb, elb: Any, prod: httpx.Client) -> None:
    try:
        set_weights(elb, alb, 80, 20)
        written = time.monotonic()
        wait_for(lambda: rule_weights(stats(lb), alb) == {"blue": 80, "green": 20},
                 timeout_s=5, step_s=0.02)
        applied_after = time.monotonic() - written
        assert applied_after < POLL_S + 1.5, applied_after
        n = 400
        colors = Counter(prod.get("/").headers["x-color"] for _ in range(n))
        # binomial(400, 0.2): mean 80, sd 8; 4 sd either way
        assert 48 <= colors["green"] <= 112, colors
        assert colors["blue"] + colors["green"] == n
    finally:
        set_weights(elb, alb, 100, 0)
        wait_for(lambda: rule_weights(stats(lb), alb) == {"blue": 100, "green": 0})


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_test_listener_routes_to_green_only(lb: LoadBalancer, alb: LocalAlb) -> None:
    with httpx.Client(base_url=lb.urls[alb.test_listener_arn], timeout=10) as client:
        colors = Counter(client.get(f"/x{i}").headers["x-color"] for i in range(30))
    assert colors == {"green": 30}


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_rules_by_priority_with_wildcards_then_the_default_action(
        lb: LoadBalancer, alb: LocalAlb, elb: Any, prod: httpx.Client) -> None:
    extra = elb.create_rule(
        ListenerArn=alb.production_listener_arn, Priority=10,
        Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/canary/?/*"]}}],
        Actions=[{"Type": "forward", "TargetGroupArn": alb.target_groups["green"]}],
    )["Rules"][0]["RuleArn"]
    try:
        lb_poll(lb)
        assert prod.get("/canary/a/x").headers["x-color"] == "green"
        assert prod.get("/canary/ab/x").headers["x-color"] == "blue"  # ? is one character
        assert prod.get("/Canary/a/x").headers["x-color"] == "blue"  # case-sensitive
    finally:
        elb.delete_rule(RuleArn=extra)
    elb.modify_rule(RuleArn=alb.rule_arn, Conditions=[
        {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*"]}}])
    try:
        set_weights(elb, alb, 0, 100)
        lb_poll(lb)
        assert prod.get("/api/v1/chat").headers["x-color"] == "green"  # the rule
        assert prod.get("/health").headers["x-color"] == "blue"  # the default action
    finally:
        elb.modify_rule(RuleArn=alb.rule_arn, Conditions=[
            {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/*"]}}])
        set_weights(elb, alb, 100, 0)
        lb_poll(lb)


def lb_poll(lb: LoadBalancer) -> None:
    answer = httpx.post(f"{lb.admin_url}/_lb/poll", timeout=10).json()
    assert answer["error"] is None


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_all_weights_zero_is_an_elb_503(lb: LoadBalancer, alb: LocalAlb, elb: Any,
                                        prod: httpx.Client) -> None:
    try:
        set_weights(elb, alb, 0, 0)
        lb_poll(lb)
        answer = prod.get("/")
        assert answer.status_code == 503
        assert answer.headers["server"] == "awselb/2.0"
        assert "<h1>503 Service Temporarily Unavailable</h1>" in answer.text
    finally:
        set_weights(elb, alb, 100, 0)
        lb_poll(lb)


# --------------------------------------------------------------------------- proxying


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_the_request_goes_on_as_an_alb_sends_it(lb: LoadBalancer, alb: LocalAlb,
                                                targets: dict[str, TargetServer]) -> None:
    port = lb.ports[alb.production_listener_arn]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/echo/a%2Fb//c?q=1&r=%2F&r=2", body=b'{"k": "v"}', headers={
            "X-Custom": "kept", "Connection": "keep-alive, X-Hop", "X-Hop": "dropped",
            "Keep-Alive": "timeout=5", "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https", "Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 200
        answer.read()
    finally:
        conn.close()
    seen = next(s for s in reversed(targets["blue"].seen) if s["path"].startswith("/echo/"))
    assert (seen["method"], seen["path"], seen["body"]) == \
        ("POST", "/echo/a%2Fb//c?q=1&r=%2F&r=2", b'{"k": "v"}')
    headers = dict(seen["headers"])
    trace = headers.pop("X-Amzn-Trace-Id")
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24}", trace)
    assert headers == {
        "Host": f"127.0.0.1:{port}", "Accept-Encoding": "identity", "Content-Length": "10",
        "Content-Type": "application/json", "X-Custom": "kept",
        "X-Forwarded-For": "203.0.113.9, 127.0.0.1", "X-Forwarded-Proto": "http",
        "X-Forwarded-Port": str(port)}


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_the_answer_comes_back_unchanged(lb: LoadBalancer, alb: LocalAlb) -> None:
    port = lb.ports[alb.production_listener_arn]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for method in ("GET", "HEAD"):
            conn.request(method, "/raw")
            answer = conn.getresponse()
            body = answer.read()
            assert (answer.status, answer.reason) == (201, "Made")
            assert answer.headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
            assert answer.headers["Content-Encoding"] == "gzip"
            assert answer.headers["Content-Length"] == str(len(GZIPPED))
            assert answer.headers["Server"].startswith("BaseHTTP/")  # the target's
            assert "Content-Type" not in answer.headers  # none added
            assert body == (GZIPPED if method == "GET" else b"")
        for status in (302, 404, 500):
            conn.request("GET", f"/status/{status}")
            answer = conn.getresponse()
            assert (answer.status, answer.read()) == (status, b"as asked")
    finally:
        conn.close()


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_a_target_slower_than_the_idle_timeout_is_a_504(lb: LoadBalancer, alb: LocalAlb,
                                                        prod: httpx.Client) -> None:
    blue = alb.target_groups["blue"]
    before = stats(lb)["target_groups"][blue]["totals"]
    answer = prod.get("/slow")
    assert answer.status_code == 504
    assert "<h1>504 Gateway Time-out</h1>" in answer.text
    after = stats(lb)["target_groups"][blue]["totals"]
    assert after["elb_504"] - before["elb_504"] == 1
    assert after["connection_errors"] == before["connection_errors"]


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_metrics_reach_cloudwatch_per_target_group(lb: LoadBalancer, alb: LocalAlb,
                                                   prod: httpx.Client, cw: Any) -> None:
    for i in range(20):
        prod.get(f"/status/{404 if i % 4 == 0 else 200}")
    blue = alb.target_groups["blue"]
    group = stats(lb)["target_groups"][blue]
    assert re.fullmatch(r"targetgroup/chatbot-blue/[0-9a-f]+", group["dimension"])
    assert re.fullmatch(r"app/chatbot/[0-9a-f]+", group["load_balancer"])
    totals: dict[str, int] = group["totals"]

    def published() -> bool:
        return (cw_stat(cw, "RequestCount", blue, alb.load_balancer_arn) == totals["requests"]
                and cw_stat(cw, "HTTPCode_Target_4XX_Count", blue, alb.load_balancer_arn)
                == totals["4xx"])

    wait_for(published, timeout_s=10, step_s=0.25)
    assert cw_stat(cw, "HTTPCode_Target_2XX_Count", blue, alb.load_balancer_arn) == \
        totals["2xx"]
    # one TargetResponseTime sample per answered request (the 504 got none)
    answered = totals["2xx"] + totals["3xx"] + totals["4xx"] + totals["5xx"]
    assert cw_stat(cw, "TargetResponseTime", blue, alb.load_balancer_arn,
                   "SampleCount") == answered
    assert cw_stat(cw, "HealthyHostCount", blue, alb.load_balancer_arn, "Maximum") == 1
    assert cw_stat(cw, "UnHealthyHostCount", blue, alb.load_balancer_arn, "Maximum") == 0


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_a_dead_target_is_a_502_a_connection_error_and_unhealthy(
        moto: MotoProcess, cw: Any) -> None:
    blue, green = TargetServer("blue"), TargetServer("green")
    try:
        dead = create_local_alb(moto.url, {"blue": blue.url, "green": green.url}, name="deadtg")
        with LoadBalancer(moto.url, {dead.production_listener_arn: 0}, seed=1,
                          poll_interval_s=POLL_S, publish_interval_s=0.25,
                          health_interval_s=0.2, unhealthy_threshold=2) as balancer, \
                httpx.Client(base_url=balancer.urls[dead.production_listener_arn],
                             timeout=10) as client:
            assert client.get("/").headers["x-color"] == "blue"
            blue.close()  # the port now refuses connections
            answers = [client.get("/") for _ in range(5)]
            assert [a.status_code for a in answers] == [502] * 5
            assert answers[0].headers["server"] == "awselb/2.0"
            assert "<h1>502 Bad Gateway</h1>" in answers[0].text
            tg = dead.target_groups["blue"]
            wait_for(lambda: balancer.stats()["target_groups"][tg]["unhealthy"] == 1)
            # no healthy target: the group fails open, the request still goes to blue
            assert client.get("/").status_code == 502

            def published() -> bool:
                lb_arn = dead.load_balancer_arn
                return (cw_stat(cw, "TargetConnectionErrorCount", tg, lb_arn) == 6
                        and cw_stat(cw, "HTTPCode_ELB_5XX_Count", tg, lb_arn) == 6
                        and cw_stat(cw, "UnHealthyHostCount", tg, lb_arn, "Maximum") == 1)

            wait_for(published, timeout_s=10, step_s=0.25)
            totals = stats(balancer)["target_groups"][tg]["totals"]
            assert (totals["requests"], totals["2xx"], totals["elb_502"]) == (7, 1, 6)
    finally:
        blue.close()
        green.close()


class Relay:
    """A TCP relay to moto that can be cut: the load balancer's view of moto blinking."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed: moto is "down"
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self.listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()
        self._thread.join(5)


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_a_failed_poll_keeps_the_last_routing_table(moto: MotoProcess, alb: LocalAlb) -> None:
    relay = Relay(moto.port)
    try:
        with LoadBalancer(relay.url, {alb.production_listener_arn: 0},
                          poll_interval_s=0.1, publish_interval_s=0.2) as balancer, \
                httpx.Client(base_url=balancer.urls[alb.production_listener_arn],
                             timeout=10) as client:
            assert client.get("/").headers["x-color"] == "blue"
            version = stats(balancer)["poll"]["version"]
            relay.cut()  # moto unreachable: every poll and publish fails
            wait_for(lambda: stats(balancer)["poll"]["errors"] >= 3)
            assert [client.get("/").headers["x-color"] for _ in range(10)] == ["blue"] * 10
            after = stats(balancer)
            assert after["poll"]["version"] >= version
            assert after["poll"]["last_error"]
            wait_for(lambda: stats(balancer)["publish"]["errors"] >= 1)
    finally:
        relay.cut()


# --------------------------------------------------------------------------- the process


@pytest.mark.integration
@pytest.mark.xdist_group("loadbalancer")
def test_the_cli_prints_its_ports_routes_and_stops_on_sigterm(
        moto: MotoProcess, alb: LocalAlb, tmp_path: Path) -> None:
    proc = LoadBalancerProcess(tmp_path / "lb.log", moto.url, {alb.test_listener_arn: 0},
                               "--seed", "3", "--poll-interval-s", "0.2")
    try:
        proc.wait()
        assert proc.info["pid"] == proc.pid
        assert proc.info["ports"] == proc.ports
        assert proc.info["admin_url"] == proc.url
        url = proc.listener_urls[alb.test_listener_arn]
        assert proc.info["url"] == url
        assert httpx.get(url + "/", timeout=10).headers["x-color"] == "green"
        page = httpx.get(proc.url + "/_lb/stats", timeout=10).json()
        assert page["target_groups"][alb.target_groups["green"]]["totals"]["requests"] >= 1
    finally:
        proc.stop()
    assert proc.proc.returncode == 0


# --------------------------------------------------------------------------- pure parts


@pytest.mark.unit
def test_wildcards_are_elbv2s() -> None:
    assert wildcard("/*").fullmatch("/")
    assert wildcard("/*").fullmatch("/a/b?c")
    assert wildcard("/api/?").fullmatch("/api/x")
    assert not wildcard("/api/?").fullmatch("/api/xy")
    assert not wildcard("/a.c").fullmatch("/abc")  # a dot is a dot
    assert wildcard("*.example.com", ignore_case=True).fullmatch("API.Example.com")


@pytest.mark.unit
def test_matcher_codes_lists_and_ranges() -> None:
    assert matcher_accepts("200", 200)
    assert not matcher_accepts("200", 204)
    assert matcher_accepts("200-299", 204)
    assert matcher_accepts("200,302", 302)
    assert not matcher_accepts("200-299,302", 301)


@pytest.mark.unit
def test_actions_and_rules_as_moto_describes_them() -> None:
    forward = parse_action([{"Type": "forward", "ForwardConfig": {"TargetGroups": [
        {"TargetGroupArn": "b", "Weight": 80}, {"TargetGroupArn": "g"}],
        "TargetGroupStickinessConfig": {"Enabled": False}}}])
    assert forward == Forward((("b", 80), ("g", 1)))  # moto: a missing Weight is 1
    assert parse_action([{"Type": "forward", "TargetGroupArn": "b"}]) == Forward((("b", 1),))
    assert parse_action([{"Type": "forward", "ForwardConfig": {"TargetGroups": [
        {"TargetGroupArn": "b", "Weight": -1}]}}]) == Forward((("b", 0),))
    assert parse_action([{"Type": "fixed-response", "FixedResponseConfig": {
        "StatusCode": "418", "ContentType": "text/plain", "MessageBody": "no"}}]) == \
        FixedResponse(418, "text/plain", "no")
    assert parse_action([{"Type": "redirect"}]) == Unsupported("redirect")
    table = parse_rules("l", "lb", [{"Type": "forward", "TargetGroupArn": "b"}], [
        {"RuleArn": "r2", "Priority": "20", "Conditions": [
            {"Field": "host-header", "HostHeaderConfig": {"Values": ["green.*"]}}],
         "Actions": [{"Type": "forward", "TargetGroupArn": "g"}]},
        {"RuleArn": "r1", "Priority": "5", "Conditions": [
            {"Field": "path-pattern", "Values": ["/x/*"]},
            {"Field": "http-request-method",
             "HttpRequestMethodConfig": {"Values": ["POST"]}}],
         "Actions": [{"Type": "forward", "TargetGroupArn": "x"}]},
        {"RuleArn": "d", "Priority": "default", "IsDefault": True,
         "Actions": [{"Type": "forward", "TargetGroupArn": "b"}]}])
    assert [r.priority for r in table.rules] == [5, 20]
    assert table.route("a", "/x/1", "POST")[0] == "r1"
    assert table.route("a", "/x/1", "GET")[0] == "default"  # both conditions must hold
    assert table.route("GREEN.local:8080", "/x/1", "GET")[0] == "r2"  # port ignored
    assert table.route("blue.local", "/", "GET") == ("default", Forward((("b", 1),)))


@pytest.mark.unit
def test_health_state_thresholds() -> None:
    state = HealthState()
    state.record(True, 3, 2)
    assert state.state == "healthy"  # the first check decides the initial state
    state.record(False, 3, 2)
    assert state.state == "healthy"
    state.record(False, 3, 2)
    assert state.state == "unhealthy"
    state.record(True, 3, 2)
    state.record(True, 3, 2)
    assert state.state == "unhealthy"
    state.record(True, 3, 2)
    assert state.state == "healthy"


@pytest.mark.unit
def test_datums_dimensions_and_response_time_values() -> None:
    group = TargetGroup(arn="arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/chatbot-blue/ab",
                        name="chatbot-blue", lb_dimension=arn_suffix(
                            "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/chatbot/cd",
                            "loadbalancer"), port=8001, targets=())
    when = datetime.now(UTC)
    quiet = metric_datums(group, None, 1, 0, when)
    assert [d["MetricName"] for d in quiet] == ["HealthyHostCount", "UnHealthyHostCount"]
    assert quiet[0]["Dimensions"] == [
        {"Name": "TargetGroup", "Value": "targetgroup/chatbot-blue/ab"},
        {"Name": "LoadBalancer", "Value": "app/chatbot/cd"}]
    assert all(d["StorageResolution"] == 1 for d in quiet)
    counts = GroupCounts()
    counts.add("requests", 400)
    counts.add("2xx", 400)
    for ms in range(MAX_VALUES_PER_DATUM + 50):  # 200 distinct values
        counts.response_times_ms[ms] += 2
    datums = metric_datums(group, counts, 1, 0, when)
    times = [d for d in datums if d["MetricName"] == "TargetResponseTime"]
    assert [len(d["Values"]) for d in times] == [MAX_VALUES_PER_DATUM, 50]
    assert times[0]["Unit"] == "Seconds"
    assert times[0]["Values"][1] == 0.001
    assert sum(sum(d["Counts"]) for d in times) == 400
    by_name = {d["MetricName"]: d.get("Value") for d in datums}
    assert by_name["RequestCount"] == 400
    assert by_name["HTTPCode_ELB_5XX_Count"] == 0
    assert by_name["TargetConnectionErrorCount"] == 0


@pytest.mark.unit
def test_arn_suffixes_are_the_cloudwatch_dimension_values() -> None:
    prefix = "arn:aws:elasticloadbalancing:us-east-1:123456789012:"
    assert arn_suffix(prefix + "loadbalancer/app/chatbot/50dc6c495c0c9188",
                      "loadbalancer") == "app/chatbot/50dc6c495c0c9188"
    assert arn_suffix(prefix + "targetgroup/chatbot-blue/73e2d6bc24d8a067",
                      "targetgroup") == "targetgroup/chatbot-blue/73e2d6bc24d8a067"
    assert arn_suffix(prefix + "listener/app/chatbot/50dc6c495c0c9188/f2f7dc8efc522ab2",
                      "listener") == "app/chatbot/50dc6c495c0c9188"


"""Start the embedded AWS stack and create what the apps need in it.

- moto in server mode (DynamoDB and CloudWatch): in-process ``mock_aws`` cannot patch
  aiobotocore, so both colors reach moto over HTTP, the real SDK wire path; it is served behind
  the fault injector (:mod:`devstack.moto_faults`: ``ddb:KIND:Operation`` markers, switches);
- the Bedrock agent-runtime emulator (:mod:`devstack.agent_emulator`);
- the session table (TTL on ``expires_at``, GSI on ``user_id``/``updated_at``) and the rate-limit
  table (TTL), created from the specs in :mod:`shared.sessions`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import boto3

from devstack.agent_emulator import AgentEmulator
from devstack.moto_atomic import install as install_atomic_writes
from devstack.moto_faults import FaultyMotoServer
from shared.sessions import (
    CUTOVER_TABLE,
    TTL_ATTRIBUTE,
    cutover_table_spec,
    rate_limit_table_spec,
    sessions_table_spec,
)
from shared.settings import DEV_API_KEY, Settings

log = logging.getLogger("devstack")
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def create_tables(endpoint: str, sessions_table: str, rate_limit_table: str,
                  region: str = "us-east-1", streams: bool = False) -> None:
    """Create both tables with their TTL (idempotent). ``streams`` turns on a NEW_IMAGE stream,
    which the parity harness reads to see exactly what each color wrote."""
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name=region,
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106
    existing = set(ddb.list_tables()["TableNames"])
    for spec in (sessions_table_spec(sessions_table), rate_limit_table_spec(rate_limit_table)):
        if spec["TableName"] in existing:
            continue
        if streams:
            spec["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
        ddb.create_table(**spec)
        ddb.get_waiter("table_exists").wait(TableName=spec["TableName"])
        ddb.update_time_to_live(
            TableName=spec["TableName"],
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )


def create_cutover_table(endpoint: str, name: str = CUTOVER_TABLE,
                         region: str = "us-east-1") -> None:
    """The cutover controller's state table (deploy/state.py), idempotent."""
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name=region,
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106
    if name not in ddb.list_tables()["TableNames"]:
        ddb.create_table(**cutover_table_spec(name))
        ddb.get_waiter("table_exists").wait(TableName=name)


@dataclass
class DevStack:
    """moto + the agent emulator on free loopback ports (or the ports given)."""

    host: str = "127.0.0.1"
    moto_port: int = 0
    agent_port: int = 0
    agent_latency_ms: int = 0
    agent_fault_timeout_s: float = 30.0
    moto_fault_timeout_s: float = 30.0  # how long a ddb:timeout:... marker stays silent
    tables: list[tuple[str, str]] = field(
        default_factory=lambda: [("chat_sessions", "chat_rate_limits")])
    streams: bool = False
    moto: FaultyMotoServer | None = None
    agent: AgentEmulator | None = None

    @property
    def moto_url(self) -> str:
        assert self.moto is not None
        host, port = self.moto.get_host_and_port()
        return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"  # noqa: S104

    @property
    def agent_url(self) -> str:
        assert self.agent is not None
        return self.agent.url.replace("0.0.0.0", "127.0.0.1")  # noqa: S104

    def start(self) -> DevStack:
        for name, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
        install_atomic_writes()  # moto's UpdateItem ADD is not atomic under concurrency
        # moto behind the DynamoDB/CloudWatch fault injector (devstack.moto_faults)
        self.moto = FaultyMotoServer(self.host, self.moto_port, self.moto_fault_timeout_s)
        self.moto.start()
        self.agent = AgentEmulator(host=self.host, port=self.agent_port,
                                   latency_ms=self.agent_latency_ms,
                                   fault_timeout_s=self.agent_fault_timeout_s)
        self.agent.start()
        for sessions, limits in self.tables:
            create_tables(self.moto_url, sessions, limits, streams=self.streams)
        create_cutover_table(self.moto_url)
        return self

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        if self.moto is not None:
            self.moto.stop()
            self.moto = None

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, sessions_table: str = "chat_sessions",
            rate_limit_table: str = "chat_rate_limits") -> dict[str, str]:
        """Environment for an app process pointed at this stack."""
        return {
            **FAKE_CREDENTIALS,
            "DYNAMODB_ENDPOINT_URL": self.moto_url,
            "CLOUDWATCH_ENDPOINT_URL": self.moto_url,
            "BEDROCK_ENDPOINT_URL": self.agent_url,
            "SESSIONS_TABLE": sessions_table,
            "RATE_LIMIT_TABLE": rate_limit_table,
        }

    def settings(self, **overrides: Any) -> Settings:
        """Settings for an in-process app pointed at this stack."""
        for name, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        base: dict[str, Any] = {
            "dynamodb_endpoint_url": self.moto_url,
            "cloudwatch_endpoint_url": self.moto_url,
            "bedrock_endpoint_url": self.agent_url,
        }
        base.update(overrides)
        return Settings(**base)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m devstack",
                                     description="Run the embedded AWS stack in the foreground.")
    parser.add_argument("--host", default=os.environ.get("DEVSTACK_HOST", "127.0.0.1"),
                        help="bind address (0.0.0.0 inside a container)")
    parser.add_argument("--moto-port", type=int, default=int(os.environ.get("MOTO_PORT", 5000)))
    parser.add_argument("--agent-port", type=int,
                        default=int(os.environ.get("AGENT_PORT", 5001)))
    parser.add_argument("--agent-latency-ms", type=int,
                        default=int(os.environ.get("AGENT_LATENCY_MS", 0)))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    stack = DevStack(host=args.host, moto_port=args.moto_port, agent_port=args.agent_port,
                     agent_latency_ms=args.agent_latency_ms).start()
    print(json.dumps({"moto": stack.moto_url, "agent": stack.agent_url,
                      "dev_api_key": DEV_API_KEY}), flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.is_set():
        time.sleep(0.2)
    stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

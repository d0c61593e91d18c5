"""Helper processes of the local stack: moto, the agent emulator, the load balancer, dynalite.

One way to start them (output to a log file), wait until they listen, and stop them (SIGTERM by
pid, then SIGKILL after a grace period), shared by the parity harness, its run-level checks,
``make soak`` and ``make bench``. Each helper runs in its own process so that it has its own
GIL and its own CPU reading. The app servers themselves are :class:`devstack.run.Server`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil

from devstack.run import ROOT


def free_port() -> int:
    """A free loopback port (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and its descendants (gunicorn's master and workers, uvicorn's supervisor and
    workers); empty once it has exited."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class HelperProcess:
    """A helper process with its stderr (and stdout, unless ``pipe_stdout``) in ``log``."""

    def __init__(self, name: str, cmd: list[str], log: Path, port: int, *,
                 pipe_stdout: bool = False, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(  # noqa: S603 - our own commands
            cmd, cwd=ROOT, env=env, stderr=self._log,
            stdout=subprocess.PIPE if pipe_stdout else self._log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_listening(self, timeout_s: float = 60.0) -> None:
        """Until the port accepts a connection; fails at once if the process exited."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not listen on {self.port} within {timeout_s} s; "
                           f"see {self.log_path}")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class EmulatorProcess(HelperProcess):
    """The agent emulator in its own process; its call log is read over HTTP."""

    def __init__(self, log: Path, fault_timeout_s: float = 3.0, *extra: str) -> None:
        port = free_port()
        super().__init__("agent emulator", [
            sys.executable, "-m", "devstack.agent_emulator", "--host", "127.0.0.1",
            "--port", str(port), "--fault-timeout-s", str(fault_timeout_s), *extra],
            log, port, pipe_stdout=True)
        self._http = httpx.Client(base_url=self.url, timeout=10)
        self._calls: list[dict[str, Any]] = []

    def wait(self) -> None:
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline():  # it prints one JSON line when it listens
            raise RuntimeError(f"the agent emulator did not start; see {self.log_path}")

    def calls(self) -> list[dict[str, Any]]:
        page = self._http.get("/_emulator/calls", params={"since": len(self._calls)}).json()
        self._calls.extend(page["calls"])
        return self._calls

    def stop(self, timeout_s: float = 10.0) -> None:
        self._http.close()
        super().stop(timeout_s)


class MotoProcess(HelperProcess):
    """moto in server mode behind the fault injector (:mod:`devstack.moto_faults`, which also
    makes its DynamoDB writes atomic), in its own process."""

    def __init__(self, log: Path, fault_timeout_s: float = 3.0) -> None:
        port = free_port()
        super().__init__("moto", [
            sys.executable, "-m", "devstack.moto_faults", "-H", "127.0.0.1", "-p", str(port),
            "--fault-timeout-s", str(fault_timeout_s)], log, port)

    def wait(self) -> None:
        self.wait_listening(60)


class LoadBalancerProcess(HelperProcess):
    """The local ALB data plane (:mod:`devstack.loadbalancer`) in its own process.

    ``listeners`` maps each listener ARN to its local port (0: a free one, picked here);
    ``extra`` are more CLI arguments (``--seed``, ``--poll-interval-s``...). ``url`` is the
    admin URL (``/_lb/stats``); ``listener_urls`` maps each listener ARN to its URL."""

    def __init__(self, log: Path, aws_url: str, listeners: Mapping[str, int],
                 *extra: str) -> None:
        admin = free_port()
        self.ports = {arn: port or free_port() for arn, port in listeners.items()}
        args = [arg for arn, port in self.ports.items() for arg in ("--listener", f"{arn}={port}")]
        super().__init__("load balancer", [
            sys.executable, "-m", "devstack.loadbalancer", "--aws-url", aws_url,
            "--admin-port", str(admin), *args, *extra], log, admin, pipe_stdout=True)
        self.listener_urls = {arn: f"http://127.0.0.1:{port}" for arn, port in self.ports.items()}
        self.info: dict[str, Any] = {}

    def wait(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # one JSON line once every port listens
        if not line:
            raise RuntimeError(f"the load balancer did not start; see {self.log_path}")
        self.info = json.loads(line)

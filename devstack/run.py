"""`make run`: devstack, blue under gunicorn and green under uvicorn, until Ctrl-C.

The process helpers here (:class:`Server`) also boot the real servers for the e2e tests and the
parity harness, with the same commands the images use (:mod:`devstack.commands`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devstack.commands import BLUE_CMD, GREEN_CMD
from devstack.stack import DevStack
from shared.settings import DEV_API_KEY

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"blue": BLUE_CMD, "green": GREEN_CMD}


def _resolve(cmd: list[str]) -> list[str]:
    """Run the venv's tools: ``python`` is this interpreter, scripts live beside it."""
    exe = Path(sys.executable)
    head = str(exe) if cmd[0] == "python" else str(exe.parent / cmd[0])
    return [head, *cmd[1:]]


@dataclass
class Server:
    color: str
    port: int
    env: dict[str, str]
    workers: int | None = None
    log_path: Path | None = None
    command: list[str] | None = None  # another command of devstack.commands (default: the color's)
    proc: subprocess.Popen[bytes] | None = None
    _log: object = field(default=None, repr=False)
    _signalled: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        env = {**os.environ, **self.env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        env.pop("METRICS_DIR", None)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if self.workers is not None:
            env["WEB_CONCURRENCY"] = str(self.workers)
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._log = out
        cmd = _resolve(self.command or COMMANDS[self.color])  # our own fixed commands
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env,  # noqa: S603
                                     stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.color} exited with {self.proc.returncode}"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            try:
                # a long timeout: a probe that gave up would still be served (and counted)
                with urllib.request.urlopen(self.url + "/health", timeout=15) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.color} not healthy on {self.url} after {timeout_s}s")

    def terminate(self) -> None:
        """Send SIGTERM once. A second one makes uvicorn force its exit (workers are killed
        mid-shutdown and lose their last metrics), so :meth:`stop` never repeats it."""
        if self.proc is not None and self.proc.poll() is None and not self._signalled:
            self.proc.send_signal(signal.SIGTERM)
            self._signalled = True

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (graceful: in-flight requests finish, metrics flush), then wait."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        self._signalled = False
        if hasattr(self._log, "close"):
            self._log.close()
        return code


def main() -> int:
    blue_port = int(os.environ.get("BLUE_PORT", 8001))
    green_port = int(os.environ.get("GREEN_PORT", 8002))
    stack = DevStack(moto_port=int(os.environ.get("MOTO_PORT", 0)),
                     agent_port=int(os.environ.get("AGENT_PORT", 0)),
                     agent_latency_ms=int(os.environ.get("AGENT_LATENCY_MS", 0))).start()
    env = {**stack.env(), "API_KEYS": os.environ.get("API_KEYS", DEV_API_KEY),
           "METRICS_FLUSH_INTERVAL_S": os.environ.get("METRICS_FLUSH_INTERVAL_S", "5")}
    logs = ROOT / ".run"
    logs.mkdir(exist_ok=True)
    servers = [Server("blue", blue_port, env, log_path=logs / "blue.log"),
               Server("green", green_port, env, log_path=logs / "green.log")]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_healthy()
        print(json.dumps({
            "blue": servers[0].url, "green": servers[1].url,
            "green_docs": servers[1].url + "/docs",
            "moto": stack.moto_url, "agent_emulator": stack.agent_url,
            "agent_calls": stack.agent_url + "/_emulator/calls",
            "dev_api_key": env["API_KEYS"], "logs": str(logs),
        }, indent=2), flush=True)
        print(f"try: curl -s {servers[0].url}/api/v1/chat -H 'Content-Type: application/json' "
              f"-H 'X-API-Key: {env['API_KEYS']}' -d '{{\"message\": \"hello\"}}'", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        while not stopping and all(s.proc and s.proc.poll() is None for s in servers):
            time.sleep(0.2)
    finally:
        for server in servers:
            server.stop()
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

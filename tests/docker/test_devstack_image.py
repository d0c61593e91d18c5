"""The devstack image's HEALTHCHECK, run for real against devstack and moto processes."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from devstack.commands import DEVSTACK_CMD
from tests.docker.test_docker import (
    DEVSTACK_HOST_ARGS,
    ROOT,
    _devstack_cli_options,
    _Health,
    closed_port,
    final_stage,
    health_server,  # noqa: F401 - a fixture used by name
    healthcheck_command,
    run_check,
)

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("devstack-image")]


def _wait_for_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    """Until something answers HTTP on ``url`` (any status), or the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError as exc:  # answering, if not with 200
            exc.close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"nothing answered on {url} after {timeout_s}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def devstack_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The image's own CMD on free ports, once it says it is ready (bound to loopback here)."""
    env = {"MOTO_PORT": str(closed_port()), "AGENT_PORT": str(closed_port())}
    cmd = [sys.executable, *DEVSTACK_CMD[1:], DEVSTACK_HOST_ARGS[0], "127.0.0.1"]
    log = tmp_path_factory.mktemp("devstack") / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT,
                                env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    try:
        # devstack prints one JSON line once moto, the emulator and the tables are up
        ready, _, _ = select.select([proc.stdout], [], [], 90)
        line = proc.stdout.readline() if ready else b""
        if not line:
            _stop(proc)
            pytest.fail(f"devstack did not start; see {log}:\n{log.read_text()[-3000:]}")
        assert json.loads(line)["moto"].endswith(":" + env["MOTO_PORT"])
        yield env
    finally:
        _stop(proc)
        proc.stdout.close()


@pytest.fixture(scope="module")
def _moto_process() -> Iterator[str]:
    """A moto server of our own (a subprocess: moto's state is per process)."""
    port = str(closed_port())
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/moto-api/", 60, proc)
        yield port
    finally:
        _stop(proc)


@pytest.fixture
def bare_moto_port(_moto_process: str) -> str:
    """That moto server, emptied: no tables."""
    reset = urllib.request.Request(f"http://127.0.0.1:{_moto_process}/moto-api/reset",
                                   method="POST")
    with urllib.request.urlopen(reset, timeout=10) as response:
        assert response.status == 200
    return _moto_process


def devstack_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_check(healthcheck_command(final_stage("devstack")), env)


def test_devstack_healthcheck_passes_on_the_running_devstack(
        devstack_ports: dict[str, str]) -> None:
    result = devstack_check(devstack_ports)
    assert result.returncode == 0, result.stderr


def test_devstack_healthcheck_fails_when_the_agent_is_down(
        devstack_ports: dict[str, str]) -> None:
    result = devstack_check({**devstack_ports, "AGENT_PORT": str(closed_port())})
    assert result.returncode != 0


def test_devstack_healthcheck_fails_when_the_agent_port_is_not_the_emulator(
        devstack_ports: dict[str, str],
        health_server: tuple[int, type[_Health]],  # noqa: F811 - the imported fixture
) -> None:
    port, handler = health_server  # answers 404 on anything but /health
    result = devstack_check({**devstack_ports, "AGENT_PORT": str(port)})
    assert result.returncode != 0
    assert handler.paths == ["/_emulator/health"]


def test_devstack_healthcheck_fails_when_moto_is_down(devstack_ports: dict[str, str]) -> None:
    result = devstack_check({**devstack_ports, "MOTO_PORT": str(closed_port())})
    assert result.returncode != 0


@pytest.mark.parametrize("ttl", [None, False, True], ids=["no-table", "no-ttl", "ready"])
def test_devstack_healthcheck_waits_for_the_tables(
        devstack_ports: dict[str, str], bare_moto_port: str, ttl: bool | None) -> None:
    import boto3

    from shared.sessions import TTL_ATTRIBUTE, rate_limit_table_spec
    from shared.settings import Settings

    if ttl is not None:  # what devstack does at start-up, the TTL last
        name = Settings.model_fields["rate_limit_table"].default
        ddb = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{bare_moto_port}",
                           region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        ddb.create_table(**rate_limit_table_spec(name))
        if ttl:
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE})
    result = devstack_check({**devstack_ports, "MOTO_PORT": bare_moto_port})
    assert (result.returncode == 0) is bool(ttl), result.stderr


def test_devstack_cli_has_the_host_option_the_image_uses() -> None:
    assert DEVSTACK_HOST_ARGS[0] in _devstack_cli_options()

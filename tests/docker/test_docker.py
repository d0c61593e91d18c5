"""Static checks of docker/*.Dockerfile, docker/compose.yaml and .dockerignore.

There is no Docker engine in CI, so the images are never built here. Instead each Dockerfile is
parsed (a small parser: line continuations, comments, JSON/shell forms, stages) and checked
against the repository: the CMD is the command in :mod:`devstack.commands` (what ships is what
the e2e tests run), every COPY'd path exists, the image runs as a non-root user, and the
HEALTHCHECK one-liner is executed for real against a local HTTP server.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from devstack.commands import BLUE_CMD, DEVSTACK_CMD, GREEN_CMD

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
BASE_IMAGE = "python:3.11-slim"
ROOT_USERS = {"root", "0"}


# ---------------------------------------------------------------- a small Dockerfile parser


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # everything after the keyword, continuations joined
    line: int  # where the instruction starts (1-based)

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """Split leading ``--flag=value`` options (COPY, HEALTHCHECK, FROM...) from the rest."""
        flags: dict[str, str] = {}
        rest = self.args
        while rest.startswith("--"):
            token, _, rest = rest.partition(" ")
            name, _, value = token[2:].partition("=")
            flags[name] = value
            rest = rest.lstrip()
        return flags, rest


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for ins in self.all("ENV"):
            values.update(parse_env(ins.args))
        return values


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, ``\\`` continuations joined.

    Comment lines inside a continued instruction are skipped, as Docker does. Heredocs and a
    non-default ``# escape=`` directive are not supported (and refused rather than misread).
    """
    lines = text.splitlines()
    if lines and lines[0].replace(" ", "").lower().startswith("#escape="):
        raise ValueError("only the default escape character is supported")
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and stripped.startswith("#"):
            continue  # a comment line inside a continuation
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        joined = " ".join(p for p in parts if p)
        parts = []
        keyword, _, args = joined.partition(" ")
        if "<<" in args and keyword.upper() in {"RUN", "COPY"}:
            raise ValueError(f"line {start}: heredocs are not supported by this parser")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    if parts:
        raise ValueError("the Dockerfile ends inside a line continuation")
    return instructions


def parse_stages(instructions: list[Instruction]) -> list[Stage]:
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            _, rest = ins.flags_and_rest()
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            if len(words) not in (1, 3) or (len(words) == 3 and name is None):
                raise ValueError(f"line {ins.line}: cannot read FROM {ins.args!r}")
            stages.append(Stage(base=words[0], name=name))
        elif ins.keyword == "ARG" and not stages:
            continue  # a global ARG before the first FROM
        elif not stages:
            raise ValueError(f"line {ins.line}: {ins.keyword} before any FROM")
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise ValueError("no FROM instruction")
    return stages


def parse_env(args: str) -> dict[str, str]:
    """``ENV A=1 B="two words"`` or the legacy ``ENV A value``."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    values: dict[str, str] = {}
    for word in words:
        name, eq, value = word.partition("=")
        if not eq:
            raise ValueError(f"cannot read ENV {args!r}")
        values[name] = value
    return values


def exec_form(args: str) -> list[str] | None:
    """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK, or None for shell form."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None  # Docker falls back to shell form for invalid JSON
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def healthcheck_command(stage: Stage) -> list[str]:
    checks = stage.all("HEALTHCHECK")
    assert len(checks) == 1, "exactly one HEALTHCHECK in the final stage"
    _, rest = checks[0].flags_and_rest()
    keyword, _, command = rest.partition(" ")
    assert keyword.upper() == "CMD", f"HEALTHCHECK must run a command, got {rest!r}"
    argv = exec_form(command.strip())
    assert argv is not None, "HEALTHCHECK CMD must be in exec (JSON array) form"
    return argv


# ------------------------------------------------------------------------------- the images


def _devstack_cli_options() -> set[str]:
    """Options `python -m devstack` accepts, read from stack.py's argparse calls (no import:
    the module pulls in moto)."""
    tree = ast.parse((ROOT / "devstack" / "stack.py").read_text(encoding="utf-8"))
    options: set[str] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            options.update(a.value for a in node.args
                           if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return options


# in its container devstack must listen on every interface, or blue and green cannot reach it
DEVSTACK_HOST_ARGS = ["--host", "0.0.0.0"]


@dataclass(frozen=True)
class ImageSpec:
    dockerfile: str
    cmd: list[str]
    port_env: dict[str, str]  # the port variables and their values
    context_sources: frozenset[str]  # exactly what is COPY'd from the build context
    lock: str  # the one requirements file the image installs


IMAGES = {
    "blue": ImageSpec("docker/blue.Dockerfile", BLUE_CMD, {"PORT": "8001"},
                      frozenset({"requirements.app.lock", "shared", "legacy_flask"}),
                      "requirements.app.lock"),
    "green": ImageSpec("docker/green.Dockerfile", GREEN_CMD, {"PORT": "8002"},
                       frozenset({"requirements.app.lock", "shared", "fastapi_app"}),
                       "requirements.app.lock"),
    "devstack": ImageSpec("docker/devstack.Dockerfile", DEVSTACK_CMD + DEVSTACK_HOST_ARGS,
                          {"MOTO_PORT": "5000", "AGENT_PORT": "5001"},
                          frozenset({"requirements.devstack.lock", "shared", "devstack"}),
                          "requirements.devstack.lock"),
}
APPS = ("blue", "green")


def load_stages(image: str) -> list[Stage]:
    path = ROOT / IMAGES[image].dockerfile
    return parse_stages(parse_dockerfile(path.read_text(encoding="utf-8")))


def final_stage(image: str) -> Stage:
    return load_stages(image)[-1]


def context_copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY/ADD from the build context (no ``--from``)."""
    copies = []
    for ins in stage.instructions:
        if ins.keyword not in {"COPY", "ADD"}:
            continue
        flags, rest = ins.flags_and_rest()
        if "from" in flags:
            continue
        words = exec_form(rest) or shlex.split(rest)
        assert len(words) >= 2, f"line {ins.line}: COPY needs a source and a destination"
        copies.append((words[:-1], words[-1]))
    return copies


def normalize_source(source: str) -> str:
    return source.strip("/").removeprefix("./").rstrip("/") or "."


# --------------------------------------------------------------------- parser self-checks


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = (
        "# a comment\n"
        "FROM python:3.11-slim AS base\n"
        "RUN echo one \\\n"
        "    # inside a continuation\n"
        "    && echo two\n"
        "\n"
        'ENV A=1 B="two words"\n'
        "ENV LEGACY some value\n"
        'CMD ["python", "-m", "x"]\n'
    )
    [stage] = parse_stages(parse_dockerfile(text))
    assert (stage.base, stage.name) == ("python:3.11-slim", "base")
    assert [i.keyword for i in stage.instructions] == ["RUN", "ENV", "ENV", "CMD"]
    assert stage.instructions[0].args == "echo one && echo two"
    assert stage.instructions[0].line == 3
    assert stage.env() == {"A": "1", "B": "two words", "LEGACY": "some value"}
    assert exec_form(stage.instructions[-1].args) == ["python", "-m", "x"]
    assert exec_form("python -m x") is None


def test_parser_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile("FROM python:3.11-slim\nRUN echo \\\n")
    with pytest.raises(ValueError, match="before any FROM"):
        parse_stages(parse_dockerfile("RUN echo hi\n"))
    with pytest.raises(ValueError, match="heredoc"):
        parse_dockerfile("FROM python:3.11-slim\nRUN <<EOF\necho\nEOF\n")


# ------------------------------------------------------------------------- Dockerfile checks


@pytest.mark.parametrize("image", IMAGES)
def test_every_stage_is_python_311_slim(image: str) -> None:
    stages = load_stages(image)
    assert stages[-1].base.split("@")[0] == BASE_IMAGE, "final stage base"
    names: set[str] = set()
    for stage in stages:
        # a builder on another base would leave the venv's python symlink dangling
        assert stage.base.split("@")[0] == BASE_IMAGE or stage.base in names, stage.base
        if stage.name:
            names.add(stage.name)


@pytest.mark.parametrize("image", IMAGES)
def test_final_stage_runs_as_non_root_before_cmd(image: str) -> None:
    instructions = final_stage(image).instructions
    keywords = [i.keyword for i in instructions]
    assert keywords.count("CMD") == 1
    cmd_at = keywords.index("CMD")
    users = [i for i in instructions[:cmd_at] if i.keyword == "USER"]
    assert users, "no USER before CMD"
    user = users[-1].args.split(":")[0]
    assert user not in ROOT_USERS, f"runs as {users[-1].args!r}"
    assert not [i for i in instructions if i.keyword == "USER" and i.line > users[-1].line]


@pytest.mark.parametrize("image", IMAGES)
def test_cmd_is_exec_form_and_the_shared_command(image: str) -> None:
    stage = final_stage(image)
    assert not stage.all("ENTRYPOINT"), "an ENTRYPOINT would prefix the CMD"
    [cmd] = stage.all("CMD")
    argv = exec_form(cmd.args)
    assert argv is not None, f"CMD is not in exec (JSON array) form: {cmd.args!r}"
    assert argv == IMAGES[image].cmd


@pytest.mark.parametrize("image", IMAGES)
def test_expose_matches_the_port_env(image: str) -> None:
    stage = final_stage(image)
    env = stage.env()
    expected = IMAGES[image].port_env
    assert {name: env.get(name) for name in expected} == expected
    exposed = {port.split("/")[0] for ins in stage.all("EXPOSE") for port in ins.args.split()}
    assert exposed == set(expected.values())


@pytest.mark.parametrize("image", APPS)
def test_apps_listen_on_all_interfaces(image: str) -> None:
    assert final_stage(image).env().get("HOST") == "0.0.0.0"


@pytest.mark.parametrize("image", IMAGES)
def test_runtime_settings(image: str) -> None:
    stage = final_stage(image)
    env = stage.env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert [i.args for i in stage.all("WORKDIR")][-1:] == ["/app"]
    assert [i.args for i in stage.all("STOPSIGNAL")] == ["SIGTERM"]


@pytest.mark.parametrize("image", IMAGES)
def test_copies_only_existing_needed_paths(image: str) -> None:
    copied: set[str] = set()
    for stage in load_stages(image):
        for sources, _ in context_copies(stage):
            for source in sources:
                assert not any(c in source for c in "*?["), f"wildcard COPY {source!r}"
                path = normalize_source(source)
                assert path != ".", "COPY . would ship the whole context"
                assert (ROOT / path).exists(), f"COPY source {source!r} is not in the repo"
                copied.add(path)
    assert copied == IMAGES[image].context_sources


@pytest.mark.parametrize("image", APPS)
def test_app_code_lands_in_workdir(image: str) -> None:
    stage = final_stage(image)
    destinations = {normalize_source(src): dest for srcs, dest in context_copies(stage)
                    for src in srcs}
    for package in IMAGES[image].context_sources - {IMAGES[image].lock}:
        assert destinations.get(package, "").rstrip("/") in {f"./{package}", f"/app/{package}"}


@pytest.mark.parametrize("image", IMAGES)
def test_installs_exactly_its_lock(image: str) -> None:
    installs = [ins for stage in load_stages(image) for ins in stage.all("RUN")
                if "pip install" in ins.args or "uv pip install" in ins.args]
    assert installs, "no pip install"
    for ins in installs:
        words = shlex.split(ins.args)
        requirement_files = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-r"]
        assert [Path(f).name for f in requirement_files] == [IMAGES[image].lock], ins.args
        assert "--no-cache-dir" in words


@pytest.mark.parametrize("image", IMAGES)
def test_final_stage_is_lean(image: str) -> None:
    stages = load_stages(image)
    final = stages[-1]
    for ins in final.all("RUN"):
        for tool in ("apt-get install", "apt install", "gcc", "build-essential", "pip install"):
            assert tool not in ins.args, f"line {ins.line}: {tool!r} in the final stage"
    venvs = [rest.split()[-1] for ins in final.all("COPY")
             for flags, rest in [ins.flags_and_rest()] if flags.get("from") in
             {s.name for s in stages[:-1]}]
    assert venvs, "the final stage copies nothing from a builder stage"
    path = final.env().get("PATH", "")
    assert path.split(":")[0] in {f"{v.rstrip('/')}/bin" for v in venvs}, path


# --------------------------------------------------- the HEALTHCHECK one-liners, for real


class _Health(BaseHTTPRequestHandler):
    status = 200
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        code = type(self).status if self.path == "/health" else 404
        body = b"" if code == 204 else json.dumps({"ok": code == 200}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Health", (_Health,), {"status": 200, "paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_check(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "python", "the check must run the image's python"
    return subprocess.run([sys.executable, *argv[1:]], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("image", APPS)
def test_app_healthcheck_targets_health_on_loopback(image: str) -> None:
    argv = healthcheck_command(final_stage(image))
    assert "http://127.0.0.1:" in " ".join(argv)
    assert "/health" in " ".join(argv)


@pytest.mark.parametrize("image", APPS)
def test_app_healthcheck_passes_on_200(
        image: str, health_server: tuple[int, type[_Health]]) -> None:
    port, handler = health_server
    result = run_check(healthcheck_command(final_stage(image)), {"PORT": str(port)})
    assert result.returncode == 0, result.stderr
    assert handler.paths == ["/health"]


@pytest.mark.parametrize("status", [503, 500, 204])  # /health answers 200, nothing else
@pytest.mark.parametrize("image", APPS)
def test_app_healthcheck_fails_on_anything_but_200(
        image: str, status: int, health_server: tuple[int, type[_Health]]) -> None:
    port, handler = health_server
    handler.status = status
    result = run_check(healthcheck_command(final_stage(image)), {"PORT": str(port)})
    assert result.returncode != 0
    assert handler.paths == ["/health"]


@pytest.mark.parametrize("image", APPS)
def test_app_healthcheck_fails_on_a_closed_port(image: str) -> None:
    result = run_check(healthcheck_command(final_stage(image)), {"PORT": str(closed_port())})
    assert result.returncode != 0


# ---------------------------------------------------------------------------- compose.yaml


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def services() -> dict[str, Any]:
    value = load_compose().get("services")
    assert isinstance(value, dict)
    return value


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


@dataclass(frozen=True)
class Published:
    host_ip: str
    host_port: str
    container_port: str


def parse_port(entry: object) -> Published:
    if isinstance(entry, dict):
        return Published(str(entry.get("host_ip", "")), str(entry.get("published", "")),
                         str(entry["target"]))
    spec = str(entry).split("/")[0]
    if spec.startswith("["):  # [::1]:8001:8001
        ip, _, spec = spec[1:].partition("]:")
        host_port, _, container = spec.rpartition(":")
        return Published(ip, host_port, container)
    parts = spec.split(":")
    if len(parts) == 3:
        return Published(*parts)
    if len(parts) == 2:
        return Published("", parts[0], parts[1])
    return Published("", "", parts[0])


EXPECTED_PORTS = {
    "devstack": {Published("127.0.0.1", "5000", "5000"), Published("127.0.0.1", "5001", "5001")},
    "blue": {Published("127.0.0.1", "8001", "8001")},
    "green": {Published("127.0.0.1", "8002", "8002")},
}


def test_parse_port_forms() -> None:
    assert parse_port("127.0.0.1:8001:8001/tcp") == Published("127.0.0.1", "8001", "8001")
    assert parse_port("8001:8001") == Published("", "8001", "8001")
    assert parse_port("8001") == Published("", "", "8001")
    assert parse_port("[::1]:8001:8001") == Published("::1", "8001", "8001")
    assert parse_port({"target": 8001, "published": "8001", "host_ip": "0.0.0.0"}) == \
        Published("0.0.0.0", "8001", "8001")


def test_compose_has_the_three_services() -> None:
    assert set(services()) == {"devstack", "blue", "green"}


@pytest.mark.parametrize("name", IMAGES)
def test_compose_builds_from_the_repo_root_with_the_matching_dockerfile(name: str) -> None:
    build = services()[name]["build"]
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    assert context == ROOT
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file()
    assert dockerfile == ROOT / IMAGES[name].dockerfile


@pytest.mark.parametrize("name", IMAGES)
def test_compose_publishes_only_the_documented_ports_on_loopback(name: str) -> None:
    published = {parse_port(p) for p in services()[name].get("ports", [])}
    assert published == EXPECTED_PORTS[name]
    assert not services()[name].get("network_mode"), "host networking would publish everything"
    # and the container side is what the image listens on
    assert {p.container_port for p in published} == set(IMAGES[name].port_env.values())


@pytest.mark.parametrize("name", APPS)
def test_compose_points_the_apps_at_devstack(name: str) -> None:
    env = environment(services()[name])
    devstack_env = final_stage("devstack").env()
    expected = {
        "DYNAMODB_ENDPOINT_URL": devstack_env["MOTO_PORT"],
        "CLOUDWATCH_ENDPOINT_URL": devstack_env["MOTO_PORT"],
        "BEDROCK_ENDPOINT_URL": devstack_env["AGENT_PORT"],
    }
    for variable, port in expected.items():
        url = urlsplit(env[variable])
        assert (url.scheme, url.hostname, str(url.port)) == ("http", "devstack", port), variable
    assert "devstack" in services()
    assert {k: env.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                     "AWS_DEFAULT_REGION", "API_KEYS", "ENVIRONMENT")} == {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "API_KEYS": "dev-key-not-for-production",
        "ENVIRONMENT": "local"}


@pytest.mark.parametrize("name", APPS)
def test_compose_env_is_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import load_settings

    for variable in list(os.environ):
        monkeypatch.delenv(variable)
    for variable, value in environment(services()[name]).items():
        monkeypatch.setenv(variable, value)
    settings = load_settings()
    assert settings.endpoint_for("bedrock") == "http://devstack:5001"
    assert settings.endpoint_for("dynamodb") == "http://devstack:5000"
    assert settings.environment == "local"


@pytest.mark.parametrize("name", APPS)
def test_compose_apps_wait_for_a_healthy_devstack(name: str) -> None:
    depends = services()[name].get("depends_on")
    assert isinstance(depends, dict), "depends_on needs the long form to carry a condition"
    assert depends["devstack"]["condition"] == "service_healthy"
    has_check = bool(final_stage("devstack").all("HEALTHCHECK")) or \
        "healthcheck" in services()["devstack"]
    assert has_check, "service_healthy with no healthcheck never becomes true"


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total, number = 0.0, ""
    rest = value
    while rest:
        if rest[0].isdigit() or rest[0] == ".":
            number += rest[0]
            rest = rest[1:]
            continue
        unit = next(u for u in sorted(units, key=len, reverse=True) if rest.startswith(u))
        total += float(number) * units[unit]
        number, rest = "", rest[len(unit):]
    assert not number, f"no unit in {value!r}"
    return total


@pytest.mark.parametrize("name", APPS)
def test_compose_lets_the_apps_shut_down_gracefully(name: str) -> None:
    # both servers drain for 30 s by default (GUNICORN_GRACEFUL_TIMEOUT / GRACEFUL_TIMEOUT);
    # compose's default 10 s would SIGKILL them mid-flush
    grace = services()[name].get("stop_grace_period")
    assert grace is not None
    assert _seconds(str(grace)) > 30
    assert _seconds("1m30s") == 90


# ----------------------------------------------------------------------------- .dockerignore


def dockerignore_excludes() -> Callable[[str], bool]:
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            patterns.append(line)

    def matches(pattern: str, path: str) -> bool:
        pattern = pattern.strip("/")
        parts = path.split("/")
        # a pattern that matches a directory excludes everything below it
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if pattern.startswith("**/"):
            tail = pattern[3:]
            return any(fnmatch.fnmatchcase(p, tail) for p in parts) or \
                any(fnmatch.fnmatchcase(p, pattern) for p in prefixes)
        return any(fnmatch.fnmatchcase(p, pattern) for p in prefixes)

    def excluded(path: str) -> bool:
        result = False
        for pattern in patterns:  # the last matching pattern wins
            negated = pattern.startswith("!")
            if matches(pattern.lstrip("!"), path):
                result = not negated
        return result

    return excluded


@pytest.mark.parametrize("path", [
    ".venv/bin/python", ".git/HEAD", "reports/junit.xml", "tests/docker/test_docker.py",
    "shared/__pycache__/settings.cpython-311.pyc", ".pytest_cache/README.md",
    ".mypy_cache/3.11/x.json", ".ruff_cache/CACHEDIR.TAG",
])
def test_dockerignore_excludes(path: str) -> None:
    assert dockerignore_excludes()(path)


@pytest.mark.parametrize("image", IMAGES)
def test_dockerignore_keeps_what_the_images_copy(image: str) -> None:
    excluded = dockerignore_excludes()
    for source in IMAGES[image].context_sources:
        files = [source] if (ROOT / source).is_file() else [
            p.relative_to(ROOT).as_posix() for p in (ROOT / source).rglob("*.py")]
        assert files
        assert not [f for f in files if excluded(f)], source

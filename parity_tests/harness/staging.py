"""Staging mode: the corpus against two deployed colors, as a library call.

A :class:`StagingProfile` (YAML, ``parity_tests/profiles/*.yaml``) says what the targets honour:
whether their agent is the emulator (fault markers honoured) or a real one, whether the devstack
store fault injector sits in front of their DynamoDB, whether they are the servers themselves over
plain HTTP (``raw_wire``: raw steps reach their parsers; never behind an ALB), and the settings
the corpus depends on.
Each case declares its needs (:mod:`parity_tests.harness.model`); a case the targets cannot
honour is skipped and listed with its reason. API key *values* never live in a profile: they come
from the caller (``api_key=``) or the environment (``PARITY_API_KEY``, ``PARITY_API_KEY_2``, ...).

Deployed colors share their tables, so every session and user id a case writes gets a short
per-lane, per-run prefix (``b3k9x-``, ``g3k9x-``): the two colors never touch each other's
records, and a run never meets an earlier run's. Ids that would outgrow their pattern keep their
exact length (the prefix replaces their first characters), ids the contract refuses are sent as
they are, and ids captured from an answer are never prefixed again. Before comparison each
lane's prefix reads ``<lane>-`` again, so the answers compare exactly.

::

    from parity_tests.harness.staging import StagingProfile, run_staging
    result = run_staging("https://blue.example.com", "https://green.example.com",
                         profile=StagingProfile.load(Path("parity_tests/profiles/make-run.yaml")),
                         api_key=os.environ["PARITY_API_KEY"])
    result.passed, result.summary["skipped"], result.report_dir

:func:`run_staging` never raises for a failing suite: a target that is down, or an error inside
the run, is a failed verdict with the reason in ``summary["errors_detail"]``. Bad arguments raise
``ValueError``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import string
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console

from parity_tests.harness.model import (
    _VAR,
    ABSENT,
    SETTING_KINDS,
    Case,
    Need,
    Request,
    _fill,
)
from parity_tests.harness.runner import CaseResult, RunHooks
from shared.contracts import SESSION_ID_PATTERN, USER_ID_PATTERN

HERE = Path(__file__).resolve().parent.parent
PROFILES = HERE / "profiles"
FIRST_DIFFERENCES = 20  # differences listed in the summary (all are in summary.json's failing)


# --- the profile -------------------------------------------------------------------------------

class TargetSettings(BaseModel):
    """The targets' settings the corpus depends on; ``None``: not known (cases needing it are
    skipped). Names and meanings as in :class:`shared.settings.Settings`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: int | None = Field(default=None, ge=0, description=(
        "How many API keys the runner may use (values: api_key= / PARITY_API_KEY, then "
        "PARITY_API_KEY_2, ...; never in this file)."))
    cors_origins: list[str] | None = None
    agent_read_timeout_s: float | None = None
    agent_deadline_s: float | None = None
    dynamodb_read_timeout_s: float | None = None
    dynamodb_max_attempts: int | None = None
    rate_limit_requests: int | None = Field(default=None, ge=1)
    rate_limit_window_s: int | None = Field(default=None, ge=1)
    session_history_limit: int | None = None
    max_body_bytes: int | None = None
    gzip_min_bytes: int | None = None
    proxy_added_headers: int | None = Field(default=None, ge=0, description=(
        "Headers a proxy in front of the targets adds to each request (an ALB adds "
        "X-Forwarded-For, -Proto, -Port and X-Amzn-Trace-Id: 4); they count toward the apps' "
        "header limit."))
    client_header_timeout_s: float | None = Field(default=None, gt=0, description=(
        "CLIENT_HEADER_TIMEOUT_S: a client slower than this with its request head is closed "
        "without an answer (raw slow-client cases assume the parity lanes' 2 s)."))
    client_body_timeout_s: float | None = Field(default=None, gt=0, description=(
        "CLIENT_BODY_TIMEOUT_S: the same for the body (parity lanes: 3 s)."))

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [o.rstrip("/") for o in value]


class StagingProfile(BaseModel):
    """What two deployed colors honour (see the module's docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "staging"
    description: str = ""
    agent: Literal["emulator", "real"] = Field(default="real", description=(
        "emulator: [[fault:...]] markers honoured, replies deterministic; real: markers "
        "ignored, chat response text and tokens_used compared by type only"))
    store_faults: bool = Field(default=False, description=(
        "the devstack store fault injector serves the targets' DynamoDB (ddb:KIND:Op markers)"))
    raw_wire: bool = Field(default=False, description=(
        "the targets are the servers themselves over plain HTTP, no proxy in front: raw steps "
        "(exact bytes on a socket, parity_tests/harness/wire.py) reach their parsers. False "
        "behind an ALB or any proxy, which answers, refuses or rewrites many of them "
        "(docs/alb.md)"))
    settings: TargetSettings = TargetSettings()

    @classmethod
    def load(cls, path: Path) -> StagingProfile:
        """Read a profile file; a bad one is a ValueError naming the file and each field."""
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        try:
            return cls.model_validate(raw if raw is not None else {})
        except ValidationError as exc:
            lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'profile'}: {e['msg']}"
                     for e in exc.errors()]
            raise ValueError(f"{path}: invalid staging profile:\n" + "\n".join(lines)) from None

    # --- which cases the targets can honour --------------------------------------------------

    def unmet(self, need: Need, keys: int, plain_http: bool = True) -> str | None:
        """Why ``need`` cannot be honoured (None: it can). ``keys``: key values at hand;
        ``plain_http``: whether every target URL is http:// (raw steps need it)."""
        if need.kind == "raw-wire":
            if not self.raw_wire:
                return ("raw steps send exact bytes to the servers themselves over plain HTTP; "
                        "the profile says raw_wire: false (a proxy in front, e.g. an ALB, "
                        "answers or rewrites them: docs/alb.md)")
            return None if plain_http else (
                "raw steps send exact bytes over plain HTTP; a target URL is https://")
        if need.kind == "store-control":
            return ("control steps switch the devstack fault injector for every lane at once "
                    "(local runs only)")
        if need.kind == "emulator-faults":
            return None if self.agent == "emulator" else (
                "needs the agent emulator's fault markers; the targets' agent is real")
        if need.kind == "store-faults":
            return None if self.store_faults else (
                "needs the devstack store fault injector (ddb:KIND:Operation markers); "
                "the profile says store_faults: false")
        have = getattr(self.settings, need.setting)
        if have is None:
            return f"needs {need.describe()}; the profile does not say"
        kind = SETTING_KINDS[need.setting]
        if kind == "count":
            usable = min(int(have), keys)
            return None if usable >= need.value else (
                f"needs {need.describe()}; {usable} usable (profile: {have}, key values "
                f"given: {keys})")
        if kind == "origins":
            missing = [o for o in need.value if o.rstrip("/") not in have]
            return None if not missing else (
                f"needs {need.describe()}; the targets allow {have or 'none'}")
        if isinstance(need.value, tuple):
            low, high = need.value
            ok = (low is None or have >= low) and (high is None or have <= high)
        else:
            ok = have == need.value
        return None if ok else f"needs {need.describe()}; the targets have {have:g}"

    def skip_reason(self, case: Case, keys: int = 1, plain_http: bool = True
                    ) -> tuple[str, str] | None:
        """(class, reason) of the first need the targets cannot honour, or None."""
        if case.controlled and not any(n.kind == "store-control" for n in case.needs):
            return "store-control", self.unmet(Need("store-control"), keys) or ""
        if any(s.raw is not None for s in case.steps) and not any(
                n.kind == "raw-wire" for n in case.needs):  # a case built in code
            reason = self.unmet(Need("raw-wire"), keys, plain_http)
            if reason is not None:
                return "raw-wire", reason
        for need in case.needs:
            reason = self.unmet(need, keys, plain_http)
            if reason is not None:
                cls = need.kind if need.kind != "setting" else f"settings.{need.setting}"
                return cls, reason
        return None


def profile_named(name_or_path: str) -> StagingProfile:
    """A profile by path, or by name under ``parity_tests/profiles/`` (``make-run``)."""
    path = Path(name_or_path)
    if not path.exists() and (PROFILES / f"{name_or_path}.yaml").exists():
        path = PROFILES / f"{name_or_path}.yaml"
    if not path.exists():
        raise ValueError(f"no staging profile {name_or_path!r} (a path, or one of "
                         f"{sorted(p.stem for p in PROFILES.glob('*.yaml'))})")
    return StagingProfile.load(path)


# --- per-lane ids ------------------------------------------------------------------------------

_SESSION_RX = re.compile(SESSION_ID_PATTERN)
_USER_RX = re.compile(USER_ID_PATTERN)
_SESSION_PATH = re.compile(r"^(/api/v1/chat/sessions/)([^/?#]+)$")
_USER_PATH = re.compile(r"^(/api/v1/users/)([^/?#]+)(/sessions)$")
_BODY_ID = re.compile(r'("(session_id|user_id)"\s*:\s*")((?:[^"\\]|\\.)*)(")')
ID_FIELDS = ("session_id", "user_id")


def valid_id(kind: str, value: str) -> bool:
    rx = _SESSION_RX if kind == "session_id" else _USER_RX
    return bool(rx.fullmatch(value)) and any(c.isalnum() for c in value)


def run_token(length: int = 5) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def lane_prefixes(lanes: list[str], token: str | None = None) -> dict[str, str]:
    """``{"blue": "b3k9x-", "green": "g3k9x-"}``: one letter per lane, one token per run."""
    token = token or run_token()
    letters = [name[0] if name[:1].isalnum() else str(i) for i, name in enumerate(lanes)]
    if len(set(letters)) != len(letters):
        letters = [str(i) for i in range(len(lanes))]
    return {name: f"{letter}{token}-" for name, letter in zip(lanes, letters, strict=True)}


def stage_id(kind: str, template: str, prefix: str, static: dict[str, str]) -> str:
    """The id a lane sends: prefixed when it is a valid id made of literal text and static
    variables; a valid id the prefix would make too long keeps its exact length; anything else
    (refused ids, captured values) is sent unchanged."""
    if any(m.group(1) not in static for m in _VAR.finditer(template)):
        return template  # holds a captured value: already this lane's own
    value = _fill(template, static)
    if not valid_id(kind, value):
        return template
    for candidate in (prefix + value, prefix + value[len(prefix):]):
        if valid_id(kind, candidate):
            return candidate
    return template


def prefix_ids(request: Request, prefix: str, static: dict[str, str]) -> Request:
    """``request`` (a template) with its session and user ids staged for one lane."""
    path = request.path
    if m := _SESSION_PATH.match(path):
        if "%" not in m.group(2):
            path = m.group(1) + stage_id("session_id", m.group(2), prefix, static)
    elif (m := _USER_PATH.match(path)) and "%" not in m.group(2):
        path = m.group(1) + stage_id("user_id", m.group(2), prefix, static) + m.group(3)
    body_json = request.json
    if isinstance(body_json, dict):
        body_json = {k: (stage_id(k, v, prefix, static) if k in ID_FIELDS and isinstance(v, str)
                         else v) for k, v in body_json.items()}
    body = request.body
    if body is not None:
        def repl(m: re.Match[str]) -> str:
            if "\\" in m.group(3):
                return m.group(0)
            return m.group(1) + stage_id(m.group(2), m.group(3), prefix, static) + m.group(4)
        body = _BODY_ID.sub(repl, body)
    return Request(method=request.method, path=path, headers=dict(request.headers),
                   query=list(request.query), json=body_json if request.json is not ABSENT
                   else ABSENT, body=body, auth=request.auth, key=request.key)


def unprefix(value: Any, prefix: str, alias: str = "<lane>-") -> Any:
    """Every occurrence of a lane's prefix (in strings and keys) read as ``alias``."""
    if isinstance(value, str):
        return value.replace(prefix, alias)
    if isinstance(value, list):
        return [unprefix(v, prefix, alias) for v in value]
    if isinstance(value, dict):
        return {unprefix(k, prefix, alias): unprefix(v, prefix, alias) for k, v in value.items()}
    return value


def shape(value: Any) -> str:
    """A value by its JSON type (and, for text, whether it is blank)."""
    if isinstance(value, str):
        return "<text>" if value.strip() else "<blank text>"
    if isinstance(value, bool):
        return "<boolean>"
    if isinstance(value, int):
        return "<integer>" if value >= 0 else "<negative integer>"
    if isinstance(value, float):
        return "<number>"
    return f"<{type(value).__name__}>"


def agent_shapes(route: str | None, raw: dict[str, Any]) -> dict[str, Any]:
    """With a real agent: the agent's text and token count compared by contract and type."""
    body = raw.get("body")
    if not isinstance(body, dict):
        return raw
    body = dict(body)
    if route == "/api/v1/chat":
        for key in ("response", "tokens_used"):
            if key in body and body[key] is not None:
                body[key] = shape(body[key])
    elif route == "/api/v1/chat/sessions/{session_id}" and isinstance(body.get("messages"), list):
        body["messages"] = [
            {**m, "content": shape(m.get("content"))}
            if isinstance(m, dict) and m.get("role") == "assistant" else m
            for m in body["messages"]]
    return {**raw, "body": body}


# --- pacing under the targets' rate limit ------------------------------------------------------

class Pacer:
    """Keeps the run's /api requests under the targets' fixed-window rate limit (the colors
    share one counter per key): when the next step would pass the budget, wait for the next
    window. At most ``max_wait_s`` per wait."""

    def __init__(self, requests: int, window_s: int, max_wait_s: float = 120.0) -> None:
        self.budget = max(1, requests - max(5, requests // 10))
        self.window_s = window_s
        self.max_wait_s = max_wait_s
        self.window = -1
        self.count = 0
        self.waited_s = 0.0

    def take(self, n: int, now: float | None = None) -> float:
        """Count ``n`` requests; returns the time waited first."""
        now = time.time() if now is None else now
        window = int(now // self.window_s)
        if window != self.window:
            self.window, self.count = window, 0
        waited = 0.0
        if self.count + n > self.budget:
            waited = min(self.max_wait_s, (window + 1) * self.window_s - now + 0.25)
            time.sleep(waited)
            self.waited_s += waited
            self.window, self.count = int(time.time() // self.window_s), 0
        self.count += n
        return waited


class StagingHooks(RunHooks):
    def __init__(self, prefixes: dict[str, str], agent: str, pacer: Pacer | None) -> None:
        self.prefixes = prefixes
        self.agent = agent
        self.pacer = pacer

    def template(self, lane: str, request: Request, static: dict[str, str]) -> Request:
        return prefix_ids(request, self.prefixes[lane], static)

    def before_step(self, request: Request, lanes: int) -> None:
        if self.pacer is not None and request.path.startswith("/api/"):
            self.pacer.take(lanes)

    def document(self, lane: str, route: str | None, raw: dict[str, Any]) -> dict[str, Any]:
        raw = unprefix(raw, self.prefixes[lane])
        return agent_shapes(route, raw) if self.agent == "real" else raw


# --- the run -----------------------------------------------------------------------------------

@dataclass
class StagingResult:
    passed: bool
    summary: dict[str, Any]
    report_dir: Path
    results: list[CaseResult]


def api_keys_from_env(api_key: str | None) -> tuple[str, ...]:
    """The key values at hand: ``api_key`` (or PARITY_API_KEY), then PARITY_API_KEY_2, ..."""
    first = api_key or os.environ.get("PARITY_API_KEY") or None
    if first is None:
        from parity_tests.harness.lanes import API_KEYS
        first = API_KEYS[0]
    keys = [first]
    while value := os.environ.get(f"PARITY_API_KEY_{len(keys) + 1}"):
        keys.append(value)
    return tuple(keys)


def probe(url: str) -> str | None:
    """Why a target cannot be tested (None: /health answered)."""
    try:
        resp = httpx.get(url.rstrip("/") + "/health", timeout=10)
    except httpx.HTTPError as exc:
        return f"{url}: /health unreachable ({type(exc).__name__}: {exc})"
    if resp.status_code != 200:
        return f"{url}: /health answered {resp.status_code}"
    return None


def _check_url(name: str, url: str) -> None:
    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(f"{name} must be an http(s) URL, not {url!r}")


def select(cases: list[Case], profile: StagingProfile, keys: int, plain_http: bool = True
           ) -> tuple[list[Case], list[dict[str, str]]]:
    """The cases the targets can honour, and every other one with its class and reason."""
    run: list[Case] = []
    skipped: list[dict[str, str]] = []
    for case in cases:
        why = profile.skip_reason(case, keys, plain_http)
        if why is None:
            run.append(case)
        else:
            skipped.append({"case": case.id, "class": why[0], "reason": why[1]})
    return run, skipped


def first_differences(results: list[CaseResult], limit: int = FIRST_DIFFERENCES
                      ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for case in results:
        for step in case.steps:
            for delta in step.differences:
                d = delta.to_dict()
                out.append({"case": case.case.id, "step": step.step, "path": d["path"],
                            "kind": d["kind"], "blue": d["blue"], "green": d["other"]})
                if len(out) >= limit:
                    return out
    return out


def run_staging(blue_url: str, green_url: str, *, profile: StagingProfile | None = None,
                api_key: str | None = None,
                report_dir: Path = Path("reports/parity-staging"),
                case_filter: str | None = None, generated: int = 0, seed: int = 20261122,
                console: Console | None = None, cases_dir: Path | None = None,
                noise_path: Path | None = None, known_path: Path | None = None,
                today: dt.date | None = None) -> StagingResult:
    """Replay the corpus (and ``generated`` cases) against two deployed colors; see the module
    docstring. Writes summary.json, junit.xml and report.html into ``report_dir``."""
    from parity_tests.harness import report
    from parity_tests.harness.lanes import remote_lanes
    from parity_tests.harness.model import load_corpus
    from parity_tests.harness.rules import load_known, load_noise
    from parity_tests.harness.runner import Runner

    _check_url("blue_url", blue_url)
    _check_url("green_url", green_url)
    if generated < 0:
        raise ValueError(f"generated must be >= 0, not {generated}")
    if profile is None:
        profile = StagingProfile()
    if not isinstance(profile, StagingProfile):
        raise ValueError(f"profile must be a StagingProfile, not {type(profile).__name__}")
    if console is None:
        from parity_tests.harness.cli import make_console
        console = make_console()
    today = today or dt.date.today()
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    keys = api_keys_from_env(api_key)
    problems: list[str] = []
    results: list[CaseResult] = []
    skipped: list[dict[str, str]] = []
    sources: dict[str, int] = {}
    expired: list[str] = []
    lane_names = ["blue", "green"]
    prefixes = lane_prefixes(lane_names)
    notes = [f"Staging profile {profile.name!r} (agent: {profile.agent}, store faults: "
             f"{'yes' if profile.store_faults else 'no'}, raw wire: "
             f"{'yes' if profile.raw_wire else 'no'}): side effects (DynamoDB, CloudWatch, "
             "agent calls) and the A/A baseline are NOT checked; only answers are compared.",
             "Ids are prefixed per lane and run (" + ", ".join(
                 f"{k} {v}" for k, v in prefixes.items()) + "); answers show them as <lane>-."]
    pacer = None
    if profile.settings.rate_limit_requests and profile.settings.rate_limit_window_s:
        pacer = Pacer(profile.settings.rate_limit_requests, profile.settings.rate_limit_window_s)
    unused: list[str] = []
    try:
        noise = load_noise(noise_path or HERE / "noise.yaml", "remote")
        known_all = load_known(known_path or HERE / "known_differences.yaml")
        expired = [f"{k.case} {k.path} (owner {k.owner}, expired {k.expires}): {k.reason}"
                   for k in known_all if k.expired(today)]
        cases = load_corpus(cases_dir or HERE / "cases")
        sources["corpus"] = len(cases)
        if generated:
            from parity_tests.harness.generate import generate_cases
            from shared.openapi import openapi_document
            extra = generate_cases(openapi_document(), generated, seed)
            cases += extra
            sources["generated"] = len(extra)
        if case_filter:
            cases = [c for c in cases if case_filter in c.id]
        plain_http = all(u.startswith("http://") for u in (blue_url, green_url))
        cases, skipped = select(cases, profile, len(keys), plain_http)
        sources["skipped"] = len(skipped)
        problems = [p for p in (probe(blue_url), probe(green_url)) if p]
        if not problems:
            lanes = remote_lanes(blue_url, green_url, keys)
            try:
                runner = Runner(lanes, noise, known_all, None, today=today,
                                hooks=StagingHooks(prefixes, profile.agent, pacer))
                with console.status(f"parity (staging): {len(cases)} cases"):
                    results = runner.run(cases)
                unused = [f"{r.path} ({r.kind})" for i, r in enumerate(noise)
                          if i not in runner.used_rules]
            finally:
                for lane in lanes:
                    lane.http.close()
    except Exception as exc:  # a run that breaks is a failed verdict, reported
        problems.append(f"{type(exc).__name__}: {exc}")
        problems.append(traceback.format_exc(limit=5))
    if pacer is not None and pacer.waited_s:
        notes.append(f"Paced under the targets' rate limit: waited {pacer.waited_s:.1f} s.")
    info: dict[str, Any] = {
        "sources": sources, "expired": expired, "notes": notes, "mode": "staging",
        "lanes": lane_names, "duration_s": time.perf_counter() - started,
        "unused_noise_rules": unused, "skipped": skipped, "run_errors": problems,
    }
    summary = report.summarize(results, info)
    summary.update(profile=profile.model_dump(mode="json"), id_prefixes=prefixes,
                   first_differences=first_differences(results),
                   reports={name: str(report_dir / name)
                            for name in ("summary.json", "junit.xml", "report.html")})
    urls = {"blue": blue_url, "green": green_url}
    writers: list[Callable[[], None]] = [
        lambda: report.write_json(summary, results, report_dir),
        lambda: report.write_junit(results, summary, report_dir),
        lambda: report.write_html(summary, results, urls, report_dir)]
    for write in writers:
        try:
            write()
        except Exception as exc:  # the verdict must still reach the caller
            summary["passed"] = False
            summary.setdefault("report_errors", []).append(f"{type(exc).__name__}: {exc}")
    report.print_summary(summary, console)
    console.print(f"reports: {report_dir}/summary.json, junit.xml, report.html")
    return StagingResult(passed=bool(summary["passed"]), summary=summary,
                         report_dir=report_dir, results=results)

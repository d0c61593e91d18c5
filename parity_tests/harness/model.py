"""Cases, steps and requests: the corpus's data model, and how a case file is read.

A case file (YAML or JSON, under ``parity_tests/cases/``) holds ``cases:``, a list of either

- a single request::

    - name: health
      request: {method: GET, path: /health}

- or a scenario of steps with captured variables::

    - name: session-lifecycle
      steps:
        - name: create
          request:
            method: POST
            path: /api/v1/chat
            json: {message: hello, user_id: "u-{{case}}"}
          capture: {sid: session_id}        # from each color's own answer
          expect_status: 200                # optional; checked on every color
        - request: {method: GET, path: "/api/v1/chat/sessions/{{sid}}"}

- or, among a scenario's steps, a *control* step, which sends no request to the colors but sets
  the devstack fault injector (:mod:`devstack.moto_faults`) for every lane at once, for faults
  no request can carry a marker for (the rate limiter's write, the readiness check, CloudWatch)::

        - name: dynamodb-throttles-the-rate-limiter
          control: {dynamodb: {UpdateItem: throttle}}   # {dynamodb: {}}: healthy again
        - control: {cloudwatch: down}                  # up
        - control: {await: cloudwatch}   # until a flush has failed in every lane (<= 20 s)

  The runner puts every switch back to healthy when the case ends, however it ends. Cases with
  control steps run against the local stack only.

  A control step may also *seed* items into every lane's sessions table through the DynamoDB API
  (the harness's control of time: a session whose ``expires_at`` has passed, which no request
  can make)::

        - control: {seed: {sessions: [{session_id: "sess-{{case}}", user_id: "u-{{case}}",
                                      expires_in_s: -60, turns: 2, age_s: 7200}]}}

- a step with ``concurrent: n`` sends n copies of its request at once in each lane (``{{i}}``
  is 1..n in each copy). Its answers are compared as a multiset of ``status error_code``
  (``answers.<status> <code>``: count), its side effects as usual (agent calls as a multiset),
  and every lane must keep the stored record's invariant: a chat's session gains exactly one
  turn per 200 answered (no turn lost or doubled), or the step reports a violation.

``{{name}}`` is replaced in paths, query values, header values, JSON strings and raw bodies.
``{{case}}`` is a slug unique to the case (the same for both colors), so cases that share a
table never see each other's users. Requests carry the API key unless ``auth: false``
(``key: 2``: the runner's second key, never its value in the file); a case asks the agent
emulator for a fault or latency with a marker in the message (``[[fault:throttle]]``,
``[[latency:200]]``).

A case declares what it needs of the targets, so a staging run (deployed colors described by a
:class:`parity_tests.harness.staging.StagingProfile`) runs only what they can honour and lists
every other case as skipped, with the reason::

    needs:
      - emulator-faults        # [[fault:...]], [[latency:...]], [[chunks:...]] markers honoured
      - store-faults           # ddb:KIND:Operation markers in ids (the devstack fault injector)
      - store-control          # control steps (switches the injector for every lane)
      - raw-wire               # raw steps: the targets are the servers themselves over plain
                               # HTTP, no proxy in front (added by itself when a step is raw)
      - settings:              # the targets' settings the expectations assume
          api_keys: 2                          # at least this many keys the runner may use
          cors_origins: [https://app.example.com]   # each of these allowed
          agent_read_timeout_s: {max: 5}       # a number: exact, or {min:, max:}
          max_body_bytes: 1048576

Markers, ``key: 2`` and control steps without the matching need are refused when the file is
read (a staging run would send them to targets that cannot honour them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

ABSENT: Any = object()
_VAR = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)\s*}}")


class CaseError(ValueError):
    """A case file that cannot be read; the message names the file and case."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    query: list[tuple[str, str]] = field(default_factory=list)
    json: Any = ABSENT
    body: str | None = None  # raw body (sent as UTF-8), for malformed input
    auth: bool = True
    key: int = 1  # which of the runner's API keys (1: the first)

    def render(self, variables: dict[str, str]) -> Request:
        return Request(
            method=self.method,
            path=_fill(self.path, variables),
            headers={k: _fill(v, variables) for k, v in self.headers.items()},
            query=[(k, _fill(v, variables)) for k, v in self.query],
            json=ABSENT if self.json is ABSENT else _fill_json(self.json, variables),
            body=None if self.body is None else _fill(self.body, variables),
            auth=self.auth,
            key=self.key,
        )

    def content(self) -> bytes | None:
        if self.body is not None:
            return self.body.encode("utf-8", errors="surrogatepass")
        if self.json is not ABSENT:
            return json.dumps(self.json, ensure_ascii=False).encode("utf-8",
                                                                    errors="surrogatepass")
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "path": self.path}
        if self.headers:
            out["headers"] = dict(self.headers)
        if self.query:
            out["query"] = [list(q) for q in self.query]
        if self.json is not ABSENT:
            out["json"] = self.json
        if self.body is not None:
            out["body"] = self.body
        if not self.auth:
            out["auth"] = False
        if self.key != 1:
            out["key"] = self.key
        return out


@dataclass(frozen=True)
class RawRequest:
    """A raw step's bytes (:mod:`parity_tests.harness.wire`): writes, as text (Latin-1, so
    every byte can be spelt; YAML escapes such as ``\\r\\n`` and ``\\x00``), ``{head: [lines]}``
    (joined with CRLF, then the blank line), ``{repeat: text, times: n}`` or ``{pause: s}``.
    ``{{host}}`` and ``{{api_key}}`` are the lane's own."""

    writes: tuple[Any, ...]  # str | {"pause": s} | {"repeat": str, "times": n}
    half_close: bool = False
    read_timeout: float = 5.0  # parity_tests.harness.wire.READ_TIMEOUT_S

    @property
    def request_line(self) -> tuple[str, str]:
        """Method and path of the first request line (for the route and the contract)."""
        first = next((w for w in self.writes if isinstance(w, str)), "")
        parts = first.split("\r\n", 1)[0].split(" ")
        method = parts[0] if parts and parts[0] else "RAW"
        path = parts[1].split("?", 1)[0] if len(parts) > 1 else "/"
        if "://" in path:  # absolute form: the path after the authority
            rest = path.split("://", 1)[1]
            path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        return method, path

    def render(self, variables: dict[str, str]) -> RawRequest:
        return RawRequest(tuple(_fill(w, variables) if isinstance(w, str) else
                                {**w, "repeat": _fill(w["repeat"], variables)} if "repeat" in w
                                else w for w in self.writes), self.half_close, self.read_timeout)

    def encoded(self) -> list[Any]:
        from parity_tests.harness import wire

        out: list[Any] = []
        for w in self.writes:
            if isinstance(w, str):
                out.append(w.encode("latin-1"))
            elif "pause" in w:
                out.append(wire.Pause(float(w["pause"])))
            else:
                out.append(wire.Repeat(str(w["repeat"]).encode("latin-1"), int(w["times"])))
        return out

    def text(self) -> str:
        from parity_tests.harness import wire

        return " ".join(wire.describe(self.encoded()))


@dataclass(frozen=True)
class Step:
    name: str
    request: Request
    capture: dict[str, str] = field(default_factory=dict)
    expect_status: int | None = None  # checked on every color; a miss fails the run
    control: dict[str, Any] | None = None  # a control step: fault switches, no request
    # requests of this step in flight at once in each lane (``{{i}}``: 1..n in each copy)
    concurrent: int = 1
    raw: RawRequest | None = None  # a raw step: bytes on a socket (``request`` is a summary)
    expect_end: str | None = None  # a raw step: how every lane's connection ends

    @property
    def is_control(self) -> bool:
        return self.control is not None


# a case's flag needs; raw-wire is added by itself when a step is raw (its bytes go to the
# servers themselves over plain HTTP: a proxy in front would answer or rewrite many of them)
FLAGS = ("emulator-faults", "store-faults", "store-control", "raw-wire")
# settings a case may need, and how a requirement is read: count (at least n), origins (each of
# these allowed), number (exact, or {min:, max:})
SETTING_KINDS: dict[str, str] = {
    "api_keys": "count",
    "cors_origins": "origins",
    "agent_read_timeout_s": "number",
    "agent_deadline_s": "number",
    "dynamodb_read_timeout_s": "number",
    "dynamodb_max_attempts": "number",
    "rate_limit_requests": "number",
    "rate_limit_window_s": "number",
    "session_history_limit": "number",
    "max_body_bytes": "number",
    "gzip_min_bytes": "number",
    "proxy_added_headers": "number",  # headers a proxy in front adds (an ALB: 4)
    "client_header_timeout_s": "number",  # the servers' wire bounds (slow-client raw cases)
    "client_body_timeout_s": "number",
}


@dataclass(frozen=True)
class Need:
    """One thing a case needs of its targets: a flag (:data:`FLAGS`) or a setting."""

    kind: str  # a flag, or "setting"
    setting: str = ""
    value: Any = None  # int (count), tuple of origins, number, or (min, max)

    def describe(self) -> str:
        if self.kind != "setting":
            return self.kind
        if SETTING_KINDS[self.setting] == "count":
            return f"{self.setting} >= {self.value}"
        if SETTING_KINDS[self.setting] == "origins":
            return f"{self.setting} allows {', '.join(self.value)}"
        if isinstance(self.value, tuple):
            low, high = self.value
            parts = ([f">= {low:g}"] if low is not None else []) + (
                [f"<= {high:g}"] if high is not None else [])
            return f"{self.setting} {' and '.join(parts)}"
        return f"{self.setting} = {self.value:g}"


@dataclass(frozen=True)
class Case:
    id: str
    steps: tuple[Step, ...]
    description: str = ""
    source: str = ""
    tags: tuple[str, ...] = ()
    variables: dict[str, str] = field(default_factory=dict)
    # body paths whose arrays compare as multisets (order does not matter)
    unordered: tuple[str, ...] = ()
    needs: tuple[Need, ...] = ()

    @property
    def controlled(self) -> bool:
        """Whether a step switches the fault injector (the case needs the local stack)."""
        return any(s.is_control for s in self.steps)

    @property
    def slug(self) -> str:
        return re.sub(r"[^0-9a-zA-Z]+", "-", self.id).strip("-").lower()[:60]


def _fill(text: str, variables: dict[str, str]) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise KeyError(f"variable {{{{{name}}}}} is not defined (yet)")
        return variables[name]

    return _VAR.sub(repl, text)


def _fill_json(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _fill(value, variables)
    if isinstance(value, list):
        return [_fill_json(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _fill_json(v, variables) for k, v in value.items()}
    return value


def get_path(document: Any, path: str) -> Any:
    """``a.b.0.c`` into parsed JSON; raises KeyError when absent."""
    node = document
    for part in path.split("."):
        if isinstance(node, list) and part.lstrip("-").isdigit():
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(path)
    return node


# --- reading files ---------------------------------------------------------------------------

def _request(raw: Any, where: str) -> Request:
    if not isinstance(raw, dict) or "method" not in raw or "path" not in raw:
        raise CaseError(f"{where}: a request needs method and path")
    unknown = set(raw) - {"method", "path", "headers", "query", "json", "body", "auth", "key"}
    if unknown:
        raise CaseError(f"{where}: unknown request keys {sorted(unknown)}")
    query = raw.get("query", [])
    if isinstance(query, dict):
        query = list(query.items())
    return Request(
        method=str(raw["method"]).upper(),
        path=str(raw["path"]),
        headers={str(k): str(v) for k, v in (raw.get("headers") or {}).items()},
        query=[(str(k), str(v)) for k, v in query],
        json=raw.get("json", ABSENT),
        body=raw.get("body"),
        auth=bool(raw.get("auth", True)),
        key=_key(raw.get("key", 1), where),
    )


def _key(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise CaseError(f"{where}: key is the runner's key number (1, 2, ...), not {raw!r}")
    return raw


def _number(raw: Any) -> bool:
    return isinstance(raw, int | float) and not isinstance(raw, bool)


def _setting_need(name: str, raw: Any, where: str) -> Need:
    kind = SETTING_KINDS.get(name)
    if kind is None:
        raise CaseError(f"{where}: unknown setting {name!r} in needs; one of "
                        f"{sorted(SETTING_KINDS)}")
    if kind == "count":
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise CaseError(f"{where}: needs {name} is a count (1, 2, ...), not {raw!r}")
        return Need("setting", name, raw)
    if kind == "origins":
        if not isinstance(raw, list) or not raw or not all(isinstance(o, str) for o in raw):
            raise CaseError(f"{where}: needs {name} is a list of origins, not {raw!r}")
        return Need("setting", name, tuple(raw))
    if _number(raw):
        return Need("setting", name, raw)
    if isinstance(raw, dict) and raw and set(raw) <= {"min", "max"} and all(
            _number(v) for v in raw.values()):
        return Need("setting", name, (raw.get("min"), raw.get("max")))
    raise CaseError(f"{where}: needs {name} is a number or {{min: x, max: y}}, not {raw!r}")


def _needs(raw: Any, where: str) -> tuple[Need, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise CaseError(f"{where}: needs is a list (flags {list(FLAGS)}, or {{settings: ...}})")
    needs: list[Need] = []
    for item in raw:
        if isinstance(item, str):
            if item not in FLAGS:
                raise CaseError(f"{where}: unknown need {item!r}; one of {list(FLAGS)} or "
                                "{settings: {...}}")
            needs.append(Need(item))
        elif isinstance(item, dict) and set(item) == {"settings"} and isinstance(
                item["settings"], dict) and item["settings"]:
            needs.extend(_setting_need(str(k), v, where) for k, v in item["settings"].items())
        else:
            raise CaseError(f"{where}: a need is one of {list(FLAGS)} or {{settings: {{name: "
                            f"value}}}}, not {item!r}")
    return tuple(needs)


_EMULATOR_MARKER = re.compile(r"\[\[(?:fault|latency|chunks):")
_STORE_MARKER = re.compile(r"ddb:[a-z-]+:[A-Za-z]+")


def _texts(request: Request) -> list[str]:
    out = [request.path, *request.headers.values(), *(v for _, v in request.query)]
    if request.body is not None:
        out.append(request.body)
    if request.json is not ABSENT:
        out.append(json.dumps(request.json, ensure_ascii=False))
    return out


def _check_needs(case: Case, where: str) -> None:
    """What a case sends must be declared in its needs (a staging run trusts them)."""
    flags = {n.kind for n in case.needs}
    keys = max((n.value for n in case.needs if n.setting == "api_keys"), default=1)
    for step in case.steps:
        if step.is_control:
            if "store-control" not in flags:
                raise CaseError(f"{where} step {step.name}: a control step needs "
                                "'store-control' in the case's needs")
            continue
        texts = _texts(step.request)
        if "emulator-faults" not in flags and any(_EMULATOR_MARKER.search(t) for t in texts):
            raise CaseError(f"{where} step {step.name}: an agent emulator marker needs "
                            "'emulator-faults' in the case's needs")
        if "store-faults" not in flags and any(_STORE_MARKER.search(t) for t in texts):
            raise CaseError(f"{where} step {step.name}: a ddb:KIND:Operation marker needs "
                            "'store-faults' in the case's needs")
        if step.request.key > keys:
            raise CaseError(f"{where} step {step.name}: key: {step.request.key} needs "
                            f"{{settings: {{api_keys: {step.request.key}}}}} in the case's needs")


def case_from_dict(raw: Any, source: str, index: int) -> Case:
    where = f"{source} case #{index + 1}"
    if not isinstance(raw, dict) or not raw.get("name"):
        raise CaseError(f"{where}: a case needs a name")
    name = str(raw["name"])
    where = f"{source}: {name}"
    if "raw" in raw and "request" not in raw and "steps" not in raw:  # a one-step raw case
        raw = {k: v for k, v in raw.items() if k not in ("raw", "expect_status", "expect_end")
               } | {"steps": [{k: raw[k] for k in ("raw", "expect_status", "expect_end")
                               if k in raw} | {"name": name}]}
    if ("request" in raw) == ("steps" in raw):
        raise CaseError(f"{where}: give either request, raw or steps")
    raw_steps = [{"name": name, "request": raw["request"], "capture": raw.get("capture", {}),
                  "expect_status": raw.get("expect_status")}] if "request" in raw \
        else raw["steps"]
    steps = []
    for i, step in enumerate(raw_steps):
        if isinstance(step, dict) and "control" in step and "request" not in step:
            steps.append(_control_step(step, f"{where} step {i + 1}", i))
            continue
        if isinstance(step, dict) and "raw" in step and "request" not in step:
            steps.append(_raw_step(step, f"{where} step {i + 1}", i))
            continue
        if not isinstance(step, dict) or "request" not in step:
            raise CaseError(f"{where} step {i + 1}: a step needs a request")
        unknown = set(step) - {"name", "request", "capture", "expect_status", "concurrent"}
        if unknown:
            raise CaseError(f"{where} step {i + 1}: unknown step keys {sorted(unknown)}")
        concurrent = step.get("concurrent", 1)
        if isinstance(concurrent, bool) or not isinstance(concurrent, int) or not (
                1 <= concurrent <= MAX_CONCURRENT):
            raise CaseError(f"{where} step {i + 1}: concurrent is 1..{MAX_CONCURRENT}, not "
                            f"{concurrent!r}")
        if concurrent > 1 and step.get("capture"):
            raise CaseError(f"{where} step {i + 1}: a concurrent step captures nothing")
        steps.append(Step(name=str(step.get("name") or f"step-{i + 1}"),
                          concurrent=concurrent,
                          request=_request(step["request"], f"{where} step {i + 1}"),
                          capture={str(k): str(v) for k, v in
                                   (step.get("capture") or {}).items()},
                          expect_status=(int(step["expect_status"])
                                         if step.get("expect_status") is not None else None)))
    stem = Path(source).stem
    case = Case(id=f"{stem}/{name}", steps=tuple(steps), description=str(raw.get("description",
                "")), source=source, tags=tuple(raw.get("tags", ())),
                variables={str(k): str(v) for k, v in (raw.get("vars") or {}).items()},
                unordered=tuple(raw.get("unordered", ())), needs=_needs(raw.get("needs"), where))
    if any(s.raw is not None for s in case.steps) and not any(
            n.kind == "raw-wire" for n in case.needs):
        case = replace(case, needs=(*case.needs, Need("raw-wire")))
    _check_needs(case, where)
    return case


CONTROL_REQUEST = Request(method="CONTROL", path="/_faults/config")  # never sent to a color
AWAITABLE = ("cloudwatch",)


def _control_step(raw: dict[str, Any], where: str, index: int) -> Step:
    from devstack.moto_faults import Switches

    unknown = set(raw) - {"name", "control"}
    if unknown:
        raise CaseError(f"{where}: a control step takes only name and control, not "
                        f"{sorted(unknown)}")
    control = raw["control"]
    if not isinstance(control, dict) or not control:
        raise CaseError(f"{where}: control is a mapping (dynamodb, cloudwatch, await)")
    wait = control.get("await")
    if wait is not None and wait not in AWAITABLE:
        raise CaseError(f"{where}: await one of {list(AWAITABLE)}, not {wait!r}")
    if "seed" in control:
        _check_seed(control["seed"], where)
    try:
        Switches().update({k: v for k, v in control.items() if k not in ("await", "seed")})
    except ValueError as exc:
        raise CaseError(f"{where}: {exc}") from None
    return Step(name=str(raw.get("name") or f"step-{index + 1}"), request=CONTROL_REQUEST,
                control=dict(control))


RAW_ENDS = ("answered", "closed", "reset", "timeout")  # see parity_tests.harness.wire


def _raw_step(raw: dict[str, Any], where: str, index: int) -> Step:
    """``raw: {send: [...], half_close: bool, read_timeout: s}``, ``expect_status`` (the first
    answer's), ``expect_end`` (one of :data:`RAW_ENDS`)."""
    unknown = set(raw) - {"name", "raw", "expect_status", "expect_end"}
    spec = raw["raw"]
    if unknown or not isinstance(spec, dict) or not isinstance(spec.get("send"), list) or set(
            spec) - {"send", "half_close", "read_timeout"}:
        raise CaseError(f"{where}: a raw step is {{raw: {{send: [...], half_close:, "
                        f"read_timeout:}}, expect_status:, expect_end:}}")
    writes: list[Any] = []
    for item in spec["send"]:
        if isinstance(item, str):
            writes.append(item)
        elif isinstance(item, dict) and set(item) == {"head"} and isinstance(item["head"], list):
            writes.append("\r\n".join(str(line) for line in item["head"]) + "\r\n\r\n")
        elif isinstance(item, dict) and set(item) == {"pause"} and _number(item["pause"]) \
                and 0 <= item["pause"] <= 10:
            writes.append({"pause": float(item["pause"])})
        elif isinstance(item, dict) and set(item) == {"repeat", "times"} and isinstance(
                item["repeat"], str) and isinstance(item["times"], int) and item["times"] > 0:
            writes.append(dict(item))
        else:
            raise CaseError(f"{where}: a write is text, {{head: [lines]}}, {{pause: s}} (0-10) "
                            f"or {{repeat: text, times: n}}, not {item!r}")
    try:
        for w in writes:
            (w if isinstance(w, str) else w.get("repeat", "")).encode("latin-1")
    except UnicodeEncodeError:
        raise CaseError(f"{where}: raw text is bytes spelt as Latin-1 (use \\xNN)") from None
    timeout = spec.get("read_timeout", 5.0)  # wire.READ_TIMEOUT_S
    if not _number(timeout) or not 0 < timeout <= 30:
        raise CaseError(f"{where}: read_timeout is 0-30 s, not {timeout!r}")
    end = raw.get("expect_end")
    if end is not None and end not in RAW_ENDS:
        raise CaseError(f"{where}: expect_end is one of {list(RAW_ENDS)}, not {end!r}")
    request = RawRequest(tuple(writes), bool(spec.get("half_close", False)), float(timeout))
    method, path = request.request_line
    return Step(name=str(raw.get("name") or f"step-{index + 1}"),
                request=Request(method=method, path=path, body=request.text(), auth=False),
                raw=request, expect_end=end,
                expect_status=(int(raw["expect_status"]) if raw.get("expect_status") is not None
                               else None))


MAX_CONCURRENT = 8
SEED_KEYS = {"session_id", "user_id", "expires_in_s", "turns", "age_s"}


def _check_seed(raw: Any, where: str) -> None:
    """``seed: {sessions: [{session_id, user_id?, expires_in_s, turns?, age_s?}]}``."""
    if not isinstance(raw, dict) or set(raw) != {"sessions"} or not isinstance(
            raw["sessions"], list) or not raw["sessions"]:
        raise CaseError(f"{where}: seed is {{sessions: [{{session_id:, expires_in_s:, ...}}]}}")
    for item in raw["sessions"]:
        if not isinstance(item, dict) or "session_id" not in item or "expires_in_s" not in item:
            raise CaseError(f"{where}: a seeded session needs session_id and expires_in_s")
        unknown = set(item) - SEED_KEYS
        if unknown:
            raise CaseError(f"{where}: unknown seeded-session keys {sorted(unknown)}")
        for key in ("expires_in_s", "turns", "age_s"):
            if key in item and (isinstance(item[key], bool) or not isinstance(item[key], int)):
                raise CaseError(f"{where}: {key} is a whole number of seconds (or turns)")


def load_file(path: Path) -> list[Case]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise CaseError(f"{path}: {exc}") from None
    if isinstance(data, dict) and data.get("generate") == "limits":
        # cases derived from the limits' own definitions when the corpus is read
        # (parity_tests.harness.generate.limit_cases)
        from parity_tests.harness.generate import limit_cases

        return limit_cases()
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise CaseError(f"{path}: expected a mapping with a 'cases' list")
    return [case_from_dict(raw, str(path), i) for i, raw in enumerate(data["cases"])]


def load_corpus(directory: Path) -> list[Case]:
    cases: list[Case] = []
    for path in sorted(directory.rglob("*")):
        if path.suffix in (".yaml", ".yml", ".json"):
            cases.extend(load_file(path))
    ids = [c.id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise CaseError(f"duplicate case ids: {dupes}")
    return cases

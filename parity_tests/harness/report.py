"""What a run tells QA and CI: summary.json, junit.xml, report.html and the terminal summary."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import platform
import re
import shlex
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, PackageLoader, select_autoescape
from rich.console import Console
from rich.table import Table
from rich.text import Text

from parity_tests.harness import wire
from parity_tests.harness.compare import MISSING, Delta
from parity_tests.harness.model import _VAR, RawRequest
from parity_tests.harness.runner import COMPARED_HEADERS, CaseResult, LaneResponse, StepResult
from shared.perfwindow import percentile
from shared.routes import ROUTES

UNROUTED = "(no route)"
ROOT = Path(__file__).resolve().parents[2]
ACCEPTED_HOLES = ROOT / "parity_tests" / "accepted_holes.yaml"
DEFAULT_CASES = ROOT / "parity_tests" / "cases"
PACKAGES = ("flask", "gunicorn", "fastapi", "uvicorn", "boto3", "aioboto3", "botocore",
            "aiobotocore", "pydantic", "moto", "httpx")
# which route each run-level check's answers reach: a name, or one per answer in order
# (parity_tests/harness/checks.py: the burst and the drain are chats; dependency_down sends
# chat, get-session, health-detailed, health, in that order)
CHECK_ROUTES: dict[str, str | tuple[str, ...]] = {
    "rate_limit_burst": "POST /api/v1/chat",
    "graceful_shutdown": "POST /api/v1/chat",
    "dependency_down": ("POST /api/v1/chat", "GET /api/v1/chat/sessions/{session_id}",
                        "GET /health/detailed", "GET /health"),
}


def relative(path: str | Path) -> str:
    """A path as the repo names it (absolute outside the repo)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except (ValueError, OSError):
        return str(path)


# --- accepted holes ----------------------------------------------------------------------------

@dataclass(frozen=True)
class AcceptedHole:
    route: str  # "METHOD /path" as shared/routes.py
    status: int
    reason: str
    owner: str

    @property
    def key(self) -> str:
        return f"{self.route} -> {self.status}"


def load_accepted_holes(path: Path = ACCEPTED_HOLES) -> list[AcceptedHole]:
    """The reviewed holes (``parity_tests/accepted_holes.yaml``); a bad file is a ValueError
    naming the file and entry. A missing file accepts nothing."""
    if not path.exists():
        return []
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: {exc}") from None
    entries = raw.get("holes") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a mapping with a 'holes' list")
    out = []
    for i, entry in enumerate(entries):
        where = f"{path} entry #{i + 1}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: an entry is a mapping (route, status, reason, owner)")
        missing = {"route", "status", "reason", "owner"} - set(entry)
        unknown = set(entry) - {"route", "status", "reason", "owner"}
        if missing or unknown:
            raise ValueError(f"{where}: missing {sorted(missing)}, unknown {sorted(unknown)}")
        status = entry["status"]
        if isinstance(status, bool) or not isinstance(status, int):
            raise ValueError(f"{where}: status is an HTTP status (an integer), not {status!r}")
        if not str(entry["reason"]).strip() or not str(entry["owner"]).strip():
            raise ValueError(f"{where}: reason and owner must not be empty")
        out.append(AcceptedHole(str(entry["route"]).strip(), status, str(entry["reason"]).strip(),
                                str(entry["owner"]).strip()))
    return out


def _check_statuses(check: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(route key, status, answers) of one run-level check's first color (the baseline, as
    steps count in the baseline lane)."""
    routes = CHECK_ROUTES.get(check.get("name", ""))
    colors = check.get("colors") or {}
    if routes is None or not colors:
        return []
    figures = next(iter(colors.values()))
    statuses = figures.get("statuses") if isinstance(figures, dict) else None
    out: list[tuple[str, int, int]] = []
    if isinstance(routes, str) and isinstance(statuses, dict):
        for status, n in statuses.items():
            if str(status).isdigit():
                out.append((routes, int(status), int(n)))
    elif isinstance(routes, tuple) and isinstance(statuses, list):
        for route, status in zip(routes, statuses, strict=False):
            if isinstance(status, int):
                out.append((route, status, 1))
    return out


def coverage(results: list[CaseResult], baseline: str, checks: list[dict[str, Any]] | None = None,
             accepted: list[AcceptedHole] | None = None) -> dict[str, Any]:
    """The route x status matrix over the run: steps (in the baseline lane) and the run-level
    checks' answers. A documented pair nothing exercised is a hole, unless accepted."""
    seen: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    by_check: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for case in results:
        for step in case.steps:
            resp = step.responses.get(baseline)
            if resp is None or resp.error:
                continue
            key = f"{step.method if step.method != 'HEAD' else 'GET'} {step.route}" \
                if step.route else UNROUTED
            seen[key][resp.status] += 1
    for check in checks or []:
        for key, status, n in _check_statuses(check):
            seen[key][status] += n
            if check["name"] not in by_check[key][str(status)]:
                by_check[key][str(status)].append(check["name"])
    accepted = accepted or []
    documented_pairs = {f"{r.method} {r.path} -> {s}" for r in ROUTES for s in r.statuses}
    accepted_by_key = {a.key: a for a in accepted}
    matrix: dict[str, dict[str, int]] = {}
    holes: list[str] = []
    accepted_holes: list[dict[str, Any]] = []
    stale: list[dict[str, Any]] = []
    for route in ROUTES:
        key = f"{route.method} {route.path}"
        row = {str(s): seen.get(key, {}).get(s, 0) for s in route.statuses}
        for status, count in seen.get(key, {}).items():
            row.setdefault(str(status), count)
        matrix[key] = dict(sorted(row.items()))
        for s in route.statuses:
            pair = f"{key} -> {s}"
            hole = accepted_by_key.get(pair)
            if seen.get(key, {}).get(s):
                if hole is not None:
                    stale.append({**asdict(hole), "pair": pair})
            elif hole is not None:
                accepted_holes.append({**asdict(hole), "pair": pair})
            else:
                holes.append(pair)
    if UNROUTED in seen:
        matrix[UNROUTED] = {str(s): n for s, n in sorted(seen[UNROUTED].items())}
    documented = len(documented_pairs)
    return {"matrix": matrix, "holes": holes, "accepted_holes": accepted_holes,
            "stale_accepted_holes": stale,
            "undocumented_accepted_holes": sorted(k for k in accepted_by_key
                                                  if k not in documented_pairs),
            "from_checks": {k: dict(v) for k, v in by_check.items()},
            "documented": documented,
            "covered": documented - len(holes) - len(accepted_holes)}


# --- the run's identity ------------------------------------------------------------------------

def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True,  # noqa: S603,S607
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def corpus_hash(cases_dir: Path = DEFAULT_CASES) -> str | None:
    """sha256 (first 16 hex) over every case file's relative path and bytes, in order."""
    if not cases_dir.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(cases_dir.rglob("*")):
        if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
            digest.update(str(path.relative_to(cases_dir)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def run_identity(info: dict[str, Any]) -> dict[str, Any]:
    """What this run was: when, which code (commit, and whether the tree had changes), which
    cases (seed, generated count, corpus hash), which packages."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    sources = info.get("sources", {})
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "seed": info.get("seed"),
        "generated": sources.get("generated", 0),
        "corpus_cases": sources.get("corpus"),
        "corpus_hash": corpus_hash(Path(info.get("cases_dir") or DEFAULT_CASES)),
        "filter": info.get("filter"),
        "packages": versions,
    }


def latency(results: list[CaseResult]) -> dict[str, dict[str, float]]:
    per_lane: dict[str, list[float]] = defaultdict(list)
    for case in results:
        for step in case.steps:
            for lane, resp in step.responses.items():
                if not resp.error:
                    per_lane[lane].append(resp.elapsed_ms)
    out = {}
    for lane, values in per_lane.items():
        ordered = sorted(values)
        out[lane] = {"p50_ms": round(percentile(ordered, 50), 2),
                     "p90_ms": round(percentile(ordered, 90), 2),
                     "p99_ms": round(percentile(ordered, 99), 2), "requests": len(values)}
    return out


def per_endpoint(results: list[CaseResult]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for case in results:
        for step in case.steps:
            key = f"{step.method} {step.route or UNROUTED}"
            row = table[key]
            row["steps"] += 1
            row["differences"] += len(step.differences)
            row["contract_violations"] += len(step.violations)
            row["undeclared_noise"] += len(step.undeclared_noise)
            row["failed_steps"] += step.failed
    return {k: dict(v) for k, v in sorted(table.items())}


def summarize(results: list[CaseResult], info: dict[str, Any]) -> dict[str, Any]:
    """Every count, the identity of the run and the coverage; ``passed`` is the verdict.
    ``info`` may carry ``identity`` (else computed), ``accepted_holes`` (a list of
    :class:`AcceptedHole`; else read from ``parity_tests/accepted_holes.yaml``), ``seed``,
    ``cases_dir`` and ``filter``."""
    steps = [s for c in results for s in c.steps]
    lanes = info["lanes"]
    run_errors = list(info.get("run_errors", []))
    accepted = info.get("accepted_holes")
    if accepted is None:
        try:
            accepted = load_accepted_holes()
        except ValueError as exc:
            run_errors.append(str(exc))
            accepted = []
    cov = coverage(results, lanes[0], info.get("checks", []), accepted)
    run_errors += [f"accepted_holes.yaml: {pair} is not a documented status of its route "
                   "(shared/routes.py)" for pair in cov["undocumented_accepted_holes"]]
    summary = {
        "identity": info.get("identity") or run_identity(info),
        "cases": len(results),
        "steps": len(steps),
        "differences": sum(len(s.differences) for s in steps) + len(info.get("cloudwatch", [])),
        "contract_violations": sum(len(s.violations) for s in steps),
        "undeclared_noise": sum(len(s.undeclared_noise) for s in steps),
        "expired_known_differences": len(info.get("expired", [])),
        "expectation_failures": sum(1 for s in steps if s.expectation),
        "errors": sum(1 for s in steps if s.error) + sum(1 for c in results if c.error),
        "known_differences": sum(len(s.known) for s in steps),
        "failed_cases": sum(1 for c in results if c.failed),
        "duration_s": round(info["duration_s"], 2),
        "boot_s": round(info.get("boot_s", 0.0), 2),
        "phases_s": info.get("phases_s", {}),
        "concurrency": info.get("concurrency", 1),
        "mode": info["mode"],
        "side_effects_checked": info["mode"] == "local",
        "aa_baseline": "blue-aa" in lanes,
        "lanes": lanes,
        "sources": info.get("sources", {}),
        "latency_ms": latency(results),
        "per_endpoint": per_endpoint(results),
        "coverage": cov,
        "cloudwatch_differences": info.get("cloudwatch", []),
        "expired": info.get("expired", []),
        "unused_noise_rules": info.get("unused_noise_rules", []),
        "notes": info.get("notes", []),
        # run-level checks (parity_tests/harness/checks.py): name, passed, colors, failures
        "checks": info.get("checks", []),
        "failed_checks": sum(1 for c in info.get("checks", []) if not c["passed"]),
        # cases the targets cannot honour (staging): [{case, class, reason}]
        "skipped": info.get("skipped", []),
        "skipped_by_class": dict(sorted(Counter(
            s["class"] for s in info.get("skipped", [])).items())),
        # what stopped the run itself (a target down, a broken corpus): never a pass
        "errors_detail": run_errors,
        "first_failures": first_failures(results),
    }
    summary["errors"] += len(summary["errors_detail"])
    summary["passed"] = not any(summary[k] for k in (
        "differences", "contract_violations", "undeclared_noise", "expired_known_differences",
        "expectation_failures", "errors", "failed_checks"))
    return summary


FIRST_FAILURES = 10


def first_failures(results: list[CaseResult], limit: int = FIRST_FAILURES
                   ) -> list[dict[str, Any]]:
    """The first failing cases, one entry per problem (at most 5 a case): a differing field
    path with both values, or what else failed."""
    out: list[dict[str, Any]] = []
    for case in results:
        if not case.failed:
            continue
        if len({o["case"] for o in out}) >= limit:
            break
        items: list[dict[str, Any]] = []
        if case.error:
            items.append({"case": case.case.id, "step": None, "problem": case.error})
        for step in case.steps:
            first = len(items)
            for d in step.differences + step.undeclared_noise:
                v = d.to_dict()
                items.append({"case": case.case.id, "step": step.step, "path": v["path"],
                              "blue": v["blue"], "other": v["other"]})
            for problem in [*step.violations, step.expectation, step.error]:
                if problem:
                    items.append({"case": case.case.id, "step": step.step, "problem": problem})
            raw = raw_of(case, step)
            if raw is not None and len(items) > first:  # what a raw step sent and got
                items[first]["wire"] = raw_view(raw, step)
        out += items[:5]
    return out


# --- raw steps (parity_tests/harness/wire.py) ---------------------------------------------------

def raw_of(case: CaseResult, step: StepResult) -> RawRequest | None:
    """The raw step ``step`` ran, as the case file spells it (``{{api_key}}`` unfilled: a key
    never reaches a report), or None for any other step."""
    steps = case.case.steps
    if 0 <= step.index < len(steps) and steps[step.index].name == step.step:
        return steps[step.index].raw
    return None


def raw_view(raw: RawRequest, step: StepResult) -> dict[str, Any]:
    """A raw step's bytes, escaped (wire.escape), and each lane's answers and end as the
    runner recorded them (its ``wire-answers`` and ``wire-end`` pseudo headers)."""
    return {"sent": raw.text(), "half_close": raw.half_close,
            "read_timeout_s": raw.read_timeout,
            "lanes": {name: {"answers": r.headers.get("wire-answers", "(none)"),
                             "end": r.headers.get("wire-end", "(unknown)")}
                      for name, r in step.responses.items()}}


def _printf(data: bytes) -> str:
    """``data`` as a printf(1) format in single quotes: printable ASCII as is, the rest as
    octal escapes (``%`` doubled, ``'`` and ``\\`` escaped)."""
    out = []
    for byte in data:
        char = chr(byte)
        if char == "%":
            out.append("%%")
        elif 32 <= byte < 127 and char not in "'\\":
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return "'" + "".join(out) + "'"


def raw_shell(base_url: str, raw: RawRequest, variables: dict[str, str]) -> str:
    """A shell line replaying a raw step with printf and OpenBSD nc, or a comment sending the
    reader to the Python reproducer when a shell line cannot (https, a repeated write)."""
    from urllib.parse import urlsplit

    url = urlsplit(base_url)
    exact = "the Python reproducer replays it exactly, and compares the answers"
    if url.scheme != "http" or not url.hostname:
        return f"# raw step: needs a plain http target (not {base_url or 'none'}); {exact}"
    if any(isinstance(w, dict) and "repeat" in w for w in raw.writes):
        return f"# raw step with a repeated write (too long for a shell line): {exact}"
    host = f"{url.hostname}:{url.port or 80}"
    known = {**variables, "host": host}
    parts: list[str] = []
    for write in raw.writes:
        if isinstance(write, dict):
            parts.append(f"sleep {float(write['pause']):g}")
            continue
        keys = 0
        chunks = []
        for i, piece in enumerate(re.split(r"{{\s*api_key\s*}}", write)):
            if i:
                keys += 1
                chunks.append("%s")
            filled = _VAR.sub(lambda m: known.get(m.group(1), m.group(0)), piece)
            chunks.append(_printf(filled.encode("latin-1"))[1:-1])
        parts.append("printf '" + "".join(chunks) + "'" + ' "$PARITY_API_KEY"' * keys)
    if not raw.half_close:
        parts.append(f"sleep {raw.read_timeout:g}")  # the connection stays open to read
    return (f"# raw step (OpenBSD nc; {exact}):\n{{ " + "; ".join(parts)
            + f"; }} | nc -N {shlex.quote(url.hostname)} {url.port or 80}")


def _json(value: Any) -> str:
    return printable(json.dumps(value, ensure_ascii=False, default=str))


# --- reproducers -------------------------------------------------------------------------------

def curl(base_url: str, step: StepResult, lane: str) -> str:
    request = step.requests[lane]
    url = base_url.rstrip("/") + request.path
    if request.query:
        from urllib.parse import urlencode
        url += "?" + urlencode(request.query)
    parts = ["curl", "-sS", "-i", "-X", request.method, shlex.quote(url)]
    for name, value in request.headers.items():
        parts += ["-H", shlex.quote(f"{name}: {value}")]
    if request.auth and not any(k.lower() == "x-api-key" for k in request.headers):
        parts += ["-H", '"X-API-Key: $PARITY_API_KEY"']
    content = request.content()
    if content is not None:
        if request.body is None and not any(k.lower() == "content-type"
                                            for k in request.headers):
            parts += ["-H", shlex.quote("Content-Type: application/json")]
        text = content.decode("utf-8", errors="replace")
        if len(text) > 4000:
            parts += ["--data-binary", shlex.quote(text[:200] + "...")]
            parts.append("# body truncated: see the case file")
        else:
            parts += ["--data-binary", shlex.quote(text)]
    return " ".join(parts)


# --- files -------------------------------------------------------------------------------------

def _lane_pair(step: StepResult, noise: bool) -> tuple[str, str]:
    """The two lanes a delta of ``step`` compares: baseline and A/A lane for undeclared noise,
    baseline and candidate (the last lane) for a difference."""
    names = list(step.responses) or list(step.effects)  # a step of effects alone: no answers
    if noise and "blue-aa" in names:
        return names[0], "blue-aa"
    return names[0], names[-1]


def delta_dict(delta: Delta, lanes: tuple[str, str]) -> dict[str, Any]:
    """A delta with its values under the names of the lanes it compares."""
    d = delta.to_dict()
    return {"path": d["path"], "kind": d["kind"], "lanes": list(lanes),
            lanes[0]: d["blue"], lanes[1]: d["other"]}


def write_json(summary: dict[str, Any], results: list[CaseResult], out: Path) -> None:
    failing = []
    for case in results:
        if not case.failed:
            continue
        failing.append({"case": case.case.id, "source": relative(case.case.source) if
                        case.case.source else "", "error": case.error, "steps": [
            {"step": s.step, "method": s.method, "path": s.path,
             "statuses": {k: v.status for k, v in s.responses.items()},
             "differences": [delta_dict(d, _lane_pair(s, False)) for d in s.differences],
             "undeclared_noise": [delta_dict(d, _lane_pair(s, True))
                                  for d in s.undeclared_noise],
             "contract_violations": s.violations, "expectation": s.expectation,
             "error": s.error} for s in case.steps if s.failed]})
    (out / "summary.json").write_text(json.dumps({**summary, "failing": failing}, indent=2,
                                                 default=str), encoding="utf-8")


def write_junit(results: list[CaseResult], summary: dict[str, Any], out: Path) -> None:
    suite = ET.Element("testsuite", name="parity", tests=str(len(results)),
                       failures=str(summary["failed_cases"]), time=str(summary["duration_s"]))
    for case in results:
        stem, _, name = case.case.id.partition("/")
        elapsed = sum(max((r.elapsed_ms for r in s.responses.values()), default=0.0)
                  for s in case.steps)  # a step of side effects alone has no answers
        tc = ET.SubElement(suite, "testcase", classname=f"parity.{stem}", name=name,
                           time=f"{elapsed / 1000:.3f}")
        if case.failed:
            lines = [case.error] if case.error else []
            for s in case.steps:
                if not s.failed:
                    continue
                lines.append(f"step {s.step}: {s.method} {s.path}")
                lines += [f"  difference {d.path}: blue={d.left!r} green={d.right!r}"
                          for d in s.differences]
                lines += [f"  undeclared noise {d.path}: {d.left!r} vs {d.right!r}"
                          for d in s.undeclared_noise]
                lines += [f"  contract: {v}" for v in s.violations]
                lines += [f"  expectation: {s.expectation}"] if s.expectation else []
                lines += [f"  error: {s.error}"] if s.error else []
            failure = ET.SubElement(tc, "failure", message=xml_text(lines[0][:200]) if lines
                                    else "failed")
            failure.text = xml_text("\n".join(lines))
    for skip in summary.get("skipped", []):
        stem, _, name = skip["case"].partition("/")
        tc = ET.SubElement(suite, "testcase", classname=f"parity.{stem}", name=name, time="0")
        ET.SubElement(tc, "skipped", message=xml_text(skip["reason"]))
    for problem in summary.get("errors_detail", [])[:1]:
        tc = ET.SubElement(suite, "testcase", classname="parity.run", name="run", time="0")
        error = ET.SubElement(tc, "error", message=xml_text(problem.splitlines()[0][:200]))
        error.text = xml_text("\n".join(summary["errors_detail"]))
    for check in summary.get("checks", []):
        tc = ET.SubElement(suite, "testcase", classname="parity.checks", name=check["name"],
                           time=f"{check['duration_s']:.3f}")
        if not check["passed"]:
            failure = ET.SubElement(tc, "failure", message=check["failures"][0][:200])
            failure.text = "\n".join(check["failures"]) + "\n" + json.dumps(
                check["colors"], indent=2, default=str)
    suite.set("tests", str(len(results) + len(summary.get("checks", []))
                           + len(summary.get("skipped", []))
                           + min(1, len(summary.get("errors_detail", [])))))
    suite.set("failures", str(summary["failed_cases"] + summary.get("failed_checks", 0)))
    suite.set("skipped", str(len(summary.get("skipped", []))))
    suite.set("errors", str(min(1, len(summary.get("errors_detail", [])))))
    ET.ElementTree(suite).write(out / "junit.xml", encoding="utf-8", xml_declaration=True)


def _pretty(resp: LaneResponse) -> str:
    parsed = resp.json
    if parsed is not None:
        return json.dumps(parsed, indent=2, ensure_ascii=False, sort_keys=False)
    return resp.body.decode("utf-8", errors="replace")[:20000]


_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def printable(text: str) -> str:
    """Text any file can hold: lone surrogates (from generated data) as ``\\udXXX``."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def xml_text(text: str) -> str:
    """Text XML 1.0 can hold: surrogates and control characters as visible escapes."""
    return _XML_ILLEGAL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", printable(text))


def _clean(value: Any) -> Any:
    """Every string inside ``value`` printable (the template escapes it; this makes it
    encodable)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def _highlight(text: str, paths: list[str]) -> list[dict[str, Any]]:
    """Lines, each marked when it holds a differing field's last key (the template escapes
    the text; nothing here is markup)."""
    keys = {p.split(".")[-1] for p in paths if p.startswith("body.")}
    return [{"text": printable(line),
             "mark": any(line.strip().startswith(f'"{k}"') for k in keys)}
            for line in text.splitlines()]


OPEN_CASES = 3  # failing cases shown expanded; the rest are collapsed
VALUE_CHARS = 2000


def show(value: Any) -> str:
    """A compared value as JSON (``null``, ``true``, ``"text"``); an absent one as
    ``(absent)``."""
    if value is MISSING:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return printable(text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + "…")


def anchor(index: int) -> str:
    return f"case-{index + 1}"


def _differing_headers(step: StepResult) -> set[str]:
    """The compared headers (runner.COMPARED_HEADERS, and X-Request-ID when the request sent
    one) whose values differ between the lanes; a lane's color and generated ids are not."""
    responses = list(step.responses.values())
    compared = set(COMPARED_HEADERS)
    if any(k.lower() == "x-request-id" for r in step.requests.values() for k in r.headers):
        compared.add("x-request-id")
    names = {n for r in responses for n in r.headers if n in compared}
    return {n for n in names if len({r.headers.get(n) for r in responses}) > 1}


INDEX_ROWS = 50  # failing cases listed in the index before the rest is collapsed
OVERVIEW_ROWS = 15  # rows shown before the rest of the overview is collapsed


def group_path(path: str) -> str:
    """A field path as the overview groups it: list indices and stored items' keys read
    ``*`` (``body.messages.*.content``, ``dynamodb.sessions.*.message_count``)."""
    parts = path.split(".")
    if parts[0] == "dynamodb" and len(parts) > 2:
        parts[2] = "*"
    return ".".join("*" if p.isdigit() else p for p in parts)


def _overview(failing: list[tuple[int, CaseResult]]) -> list[dict[str, Any]]:
    """What failed, grouped: one row per field path (differences, noise) or problem text,
    with how often and the cases it touches."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}

    def add(kind: str, what: str, lanes: str, index: int, case: CaseResult) -> None:
        row = groups.setdefault((kind, what, lanes), {"kind": kind, "what": what,
                                                      "lanes": lanes, "count": 0, "cases": {}})
        row["count"] += 1
        row["cases"].setdefault(case.case.id, anchor(index))

    for index, case in failing:
        if case.error:
            add("case error", case.error, "", index, case)
        for step in case.steps:
            for d in step.differences:
                add("difference", group_path(d.path), " vs ".join(_lane_pair(step, False)),
                    index, case)
            for d in step.undeclared_noise:
                add("undeclared noise", group_path(d.path), " vs ".join(_lane_pair(step, True)),
                    index, case)
            for v in step.violations:
                lane, _, text = v.partition(": ")
                add("contract violation", text or v, lane if text else "", index, case)
            if step.expectation:
                add("expectation", re.sub(r"^expected (\d+);.*", r"expected \1", step.expectation),
                    "", index, case)
            if step.error:
                add("error", step.error, "", index, case)
    rows = sorted(groups.values(), key=lambda r: (-r["count"], r["kind"], r["what"]))
    for row in rows:
        row["cases"] = [{"id": k, "anchor": v} for k, v in row["cases"].items()]
    return rows


def _step_view(s: StepResult, lanes: list[str], base_url: str,
               case: CaseResult | None = None) -> dict[str, Any]:
    paths = [d.path for d in s.differences + s.undeclared_noise]
    rows = []
    for noise, deltas in ((False, s.differences), (True, s.undeclared_noise)):
        pair = _lane_pair(s, noise)
        for d in deltas:
            values = dict.fromkeys(lanes, "")
            for lane, value in zip(pair, (d.left, d.right), strict=True):
                values[lane] = show(value)
            for lane in lanes:
                if lane not in pair and not noise and lane != pair[0]:
                    values[lane] = "as " + pair[0]
            rows.append({"path": printable(d.path), "kind": ("undeclared noise" if noise
                                                             else f"difference ({d.kind})"),
                         "noise": noise, "values": [values[lane] for lane in lanes]})
    differing = _differing_headers(s)
    first = next(iter(s.requests), None)  # None: a step of side effects alone (unclaimed)
    raw = raw_of(case, s) if case is not None else None
    wire_lines: dict[str, list[tuple[str, str]]] = {}
    if raw is not None:  # its answers and end first, where a lane's differing headers go
        wire_lines = {name: [("wire-answers", r.headers.get("wire-answers", "(none)")),
                             ("wire-end", r.headers.get("wire-end", "(unknown)"))]
                      for name, r in s.responses.items()}
    return {
        "step": {"step": s.step, "method": s.method, "path": s.path,
                 "expectation": s.expectation, "error": s.error,
                 "violations": list(s.violations)},
        "failed": s.failed,
        "rows": rows,
        "lanes": [{"name": name, "status": r.status,
                   "differing_headers": wire_lines.get(name, [])
                   + sorted((k, v) for k, v in r.headers.items() if k in differing)
                   + sorted((k, "(absent)") for k in differing if k not in r.headers),
                   "headers": sorted(r.headers.items()),
                   "body": _highlight(_pretty(r), paths),
                   "error": r.error,
                   "elapsed": round(r.elapsed_ms, 1)}
                  for name, r in s.responses.items()],
        "request": raw_request_text(raw) if raw is not None else json.dumps(
            s.requests[first].to_dict(), indent=2, ensure_ascii=False)[:20000]
        if first is not None else "(no request: side effects read at the end of the run)",
        "curl": raw_shell(base_url, raw, {**case.case.variables, "case": case.case.slug})
        if raw is not None and case is not None else curl(base_url, s, first)
        if first is not None else "",
        "known": [(delta_dict(d, _lane_pair(s, False)), k.reason, k.owner, str(k.expires))
                  for d, k in s.known],
    }


def raw_request_text(raw: RawRequest) -> str:
    """A raw step's writes, one a line, escaped ({{host}} and {{api_key}}: each lane's own)."""
    lines = [f"raw step: {len(raw.writes)} write(s) on one connection"
             + (", then half-close" if raw.half_close else "")
             + f"; answers read for {raw.read_timeout:g} s of silence"]
    lines += [f"  {text}" for text in wire.describe(raw.encoded())]
    return "\n".join(lines)[:20000]


def _run_differences(summary: dict[str, Any], lanes: list[str]) -> dict[str, list[Any]]:
    """Run-level differences (CloudWatch, Prometheus, tables): values under lane names."""
    between: list[dict[str, Any]] = []
    lost: list[dict[str, Any]] = []
    for d in summary.get("cloudwatch_differences", []):
        if d.get("kind") == "served-vs-cloudwatch":
            lost.append({"lane": d.get("lane", ""), "path": d["path"],
                         "served": show(d.get("blue")), "cloudwatch": show(d.get("other"))})
            continue
        values = dict.fromkeys(lanes, "")
        values[lanes[0]] = show(d.get("blue"))
        values[d.get("lane") or lanes[-1]] = show(d.get("other"))
        between.append({"path": d["path"], "kind": d.get("kind", ""),
                        "values": [values.get(lane, "") for lane in lanes]})
    return {"between": between, "lost": lost}


def _checks_view(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": c["name"], "passed": c["passed"], "failures": c["failures"],
             "duration_s": c.get("duration_s"),
             "colors": [{"color": color, "figures": [(k, show(v)) for k, v in fig.items()]}
                        for color, fig in c["colors"].items()]} for c in checks]


def write_html(summary: dict[str, Any], results: list[CaseResult], urls: dict[str, str],
               out: Path, reproducers: dict[str, str] | None = None) -> None:
    """report.html. ``reproducers``: case id -> the reproducer's path relative to ``out``."""
    # the template is report.html.j2: autoescape on for .j2 too (select_autoescape(["html"])
    # alone leaves it off), and nothing holding data is marked safe
    env = Environment(loader=PackageLoader("parity_tests", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default=True))
    lanes = list(summary["lanes"])
    failing_results = [(i, c) for i, c in enumerate(c for c in results if c.failed)]
    failing = []
    for index, case in failing_results:
        steps = [_step_view(s, lanes, urls.get(next(iter(s.requests), ""), ""), case)
                 for s in case.steps if s.failed]
        failing.append({"anchor": anchor(index), "open": index < OPEN_CASES,
                        "number": index + 1,
                        "case": {"id": case.case.id,
                                 "source": relative(case.case.source) if case.case.source
                                 else "",
                                 "description": case.case.description},
                        "error": case.error, "steps": steps,
                        "failed_steps": sum(1 for s in case.steps if s.failed),
                        "total_steps": len(case.steps),
                        "reproducer": (reproducers or {}).get(case.case.id)})
    passing = [c.case.id for c in results if not c.failed]
    template = env.get_template("report.html.j2")
    page = template.render(
        summary=_clean(summary), failing=_clean(failing), urls=_clean(urls),
        lanes=lanes, overview=_clean(_overview(failing_results)), passing=_clean(passing),
        run_differences=_clean(_run_differences(summary, lanes)),
        checks=_clean(_checks_view(summary.get("checks", []))),
        open_cases=OPEN_CASES, overview_rows=OVERVIEW_ROWS, index_rows=INDEX_ROWS)
    (out / "report.html").write_text(page, encoding="utf-8", errors="backslashreplace")


def print_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="parity by endpoint")
    for col in ("endpoint", "steps", "differences", "contract", "noise", "failed steps"):
        table.add_column(col, justify="left" if col == "endpoint" else "right")
    for endpoint, row in summary["per_endpoint"].items():
        table.add_row(endpoint, str(row.get("steps", 0)), str(row.get("differences", 0)),
                      str(row.get("contract_violations", 0)), str(row.get("undeclared_noise", 0)),
                      str(row.get("failed_steps", 0)))
    console.print(table)
    lat = Table(title="latency over this run (ms)")
    for col in ("lane", "requests", "p50", "p90", "p99"):
        lat.add_column(col, justify="right")
    for lane, row in summary["latency_ms"].items():
        lat.add_row(lane, str(row["requests"]), str(row["p50_ms"]), str(row["p90_ms"]),
                    str(row["p99_ms"]))
    console.print(lat)
    cov = summary["coverage"]
    accepted = cov.get("accepted_holes", [])
    console.print(f"coverage: {cov['covered']}/{cov['documented']} documented route x status "
                  f"pairs exercised (steps and run-level checks); {len(cov['holes'])} holes, "
                  f"{len(accepted)} accepted (parity_tests/accepted_holes.yaml)", markup=False)
    for hole in cov["holes"]:
        console.print(f"  hole: {hole}", markup=False)
    for stale in cov.get("stale_accepted_holes", []):
        console.print(f"  accepted but exercised now (delete the entry): {stale['pair']}",
                      markup=False)
    for note in summary["notes"]:
        console.print(f"note: {note}")
    print_checks(summary.get("checks", []), console)
    skipped = summary.get("skipped", [])
    if skipped:
        by_class = ", ".join(f"{k} {v}" for k, v in summary.get("skipped_by_class", {}).items())
        console.print(f"skipped {len(skipped)} cases the targets cannot honour ({by_class}):")
        for skip in skipped:
            console.print(f"  skipped {skip['case']}: {skip['reason']}", markup=False)
    for problem in summary.get("errors_detail", []):
        console.print(f"run error: {problem}", markup=False)
    failures = summary.get("first_failures", [])
    if failures:
        console.print(f"first failing cases ({len({f['case'] for f in failures})} of "
                      f"{summary['failed_cases']}):")
    for f in failures:
        where = f"{f['case']}" + (f" step {f['step']}" if f.get("step") else "")
        if "path" in f:
            console.print(f"  {where}: {f['path']} blue={_json(f['blue'])} "
                          f"other={_json(f['other'])}", markup=False)
        else:
            console.print(f"  {where}: {printable(str(f['problem']))}", markup=False)
        if f.get("wire"):  # a raw step: its bytes (escaped) and each lane's answers and end
            console.print(f"    raw: {printable(f['wire']['sent'])[:500]}", markup=False)
            for lane, seen in f["wire"]["lanes"].items():
                console.print(f"    {lane}: {printable(seen['answers'])}; connection "
                              f"{printable(seen['end'])}", markup=False)
    ident = summary.get("identity") or {}
    if ident:
        dirty = {True: " (dirty tree)", False: ""}.get(bool(ident["git_dirty"]), "") \
            if ident.get("git_dirty") is not None else " (tree unknown)"
        console.print(f"run: {ident.get('date')} commit {(ident.get('git_commit') or '?')[:12]}"
                      f"{dirty}, seed {ident.get('seed') if ident.get('seed') is not None else '-'}"
                      f", generated {ident.get('generated')}, "
                      f"corpus {ident.get('corpus_hash')}", markup=False)
    verdict = "[bold green]PASS[/]" if summary["passed"] else "[bold red]FAIL[/]"
    console.print(
        f"{verdict} {summary['cases']} cases, {summary['steps']} steps in "
        f"{summary['duration_s']} s ({phases(summary)}): "
        f"{summary['differences']} differences, {summary['contract_violations']} contract "
        f"violations, {summary['undeclared_noise']} undeclared noise, "
        f"{summary['expired_known_differences']} expired known differences, "
        f"{summary['expectation_failures']} expectation failures, {summary['errors']} errors, "
        f"{summary['known_differences']} known differences, "
        f"{summary.get('failed_checks', 0)}/{len(summary.get('checks', []))} checks failed")


def phases(summary: dict[str, Any]) -> str:
    """Where a run's time went, e.g. ``boot 8.1 s, corpus 30.2 s (6 at once), ...``."""
    spent = summary.get("phases_s") or {"boot": summary.get("boot_s", 0.0)}
    parts = []
    for name, seconds in spent.items():
        part = f"{name.replace('_', ' ')} {seconds} s"
        if name == "corpus" and summary.get("concurrency", 1) > 1:
            part += f" ({summary['concurrency']} cases at once)"
        parts.append(part)
    return ", ".join(parts)


CHECK_FIGURES = ("sent", "accepted", "refused", "statuses", "error_codes", "detailed_checks",
                 "in_flight_at_sigterm", "lost_responses", "datums_expected", "datums_lost",
                 "datums_extra", "exit_s")


def print_checks(checks: list[dict[str, Any]], console: Console) -> None:
    """One row per check and color: the figures that decide it, then its failures."""
    if not checks:
        return
    table = Table(title="run-level checks")
    for col in ("check", "color", "figures", "verdict"):
        table.add_column(col)
    for check in checks:
        for color, figures in check["colors"].items():
            shown = ", ".join(f"{k} {figures[k]:g}" if isinstance(figures[k], float)
                              else f"{k} {_json(figures[k])}" for k in CHECK_FIGURES
                              if k in figures)
            table.add_row(check["name"], color, Text(printable(shown)),
                          "[green]pass[/]" if check["passed"] else "[red]FAIL[/]")
        if not check["colors"]:
            table.add_row(check["name"], "", "", "[red]FAIL[/]")
    console.print(table)
    for check in checks:
        for failure in check["failures"]:
            console.print(f"  [red]{check['name']}[/]: {failure}")

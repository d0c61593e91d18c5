"""Reproducers: one self-contained Python script per failing case, written into the report dir.

A script replays every step of its case, in order, against targets given at run time (``BLUE_URL``,
``GREEN_URL``, optionally ``BLUE_AA_URL``; key ``PARITY_API_KEY``, ``PARITY_API_KEY_2`` for
``key: 2`` steps). Each target gets the case's requests *as templates*: ``{{case}}`` and the
case's ``vars`` are filled in, and every ``capture:`` is taken from that target's own answer, as
the runner does, so a session created by step 1 is the one step 2 reads. It prints each step's
status per target and the field paths where the answers differ, and says for each difference the
run found whether it is still there. Exit code: 1 when a difference or an expectation failure of
the run shows again, 0 when none does, 2 for bad arguments.

Python rather than curl: captured variables need each answer's JSON parsed (curl alone cannot, and
jq is not everywhere), raw bodies (invalid UTF-8, lone surrogates, megabyte bodies) must be sent
byte for byte, and the answers are compared. The script needs only the standard library (any
Python 3.9+), so QA can run it anywhere, against local lanes (``--keep-lanes``) or staging.

Control steps (fault switches) are applied through ``PARITY_FAULTS_URL`` (the devstack fault
injector, printed by ``--keep-lanes``) when it is set, and skipped with a warning otherwise.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from parity_tests.harness.model import _VAR, ABSENT, Case, Request
from parity_tests.harness.rules import NoiseRule, _compile
from parity_tests.harness.runner import COMPARED_HEADERS, CaseResult, route_of

LANE_ENV = {"blue": "BLUE_URL", "blue-aa": "BLUE_AA_URL", "green": "GREEN_URL"}
DIRECTORY = "reproducers"


def _request(request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {"method": request.method, "path": request.path,
                           "headers": dict(request.headers),
                           "query": [list(q) for q in request.query],
                           "auth": request.auth, "key": request.key}
    if request.json is not ABSENT:
        out["json"] = request.json
    if request.body is not None:
        out["body"] = request.body
    return out


def case_plan(case: Case) -> dict[str, Any]:
    """What the script replays: the case's steps as templates, with captures and expectations."""
    steps: list[dict[str, Any]] = []
    for step in case.steps:
        if step.control is not None:
            steps.append({"name": step.name, "control": step.control})
            continue
        route = route_of(step.request.method, _VAR.sub("x1", step.request.path))
        steps.append({"name": step.name, "request": _request(step.request),
                      "route": route.path if route else None,
                      "capture": dict(step.capture), "expect_status": step.expect_status})
    return {"id": case.id, "static": {**case.variables, "case": case.slug}, "steps": steps}


def found(result: CaseResult) -> list[dict[str, Any]]:
    """What the run found in the case, per step: the differing paths (with the lanes compared
    and their values) and failed expectations."""
    out: list[dict[str, Any]] = []
    for step in result.steps:
        names = list(step.responses)
        candidate = names[-1] if names else "green"
        for kind, deltas, right in (("difference", step.differences, candidate),
                                    ("undeclared noise", step.undeclared_noise, "blue-aa")):
            for d in deltas:
                v = d.to_dict()
                out.append({"step": step.step, "kind": kind, "path": v["path"],
                            "lanes": [names[0] if names else "blue", right],
                            "values": [v["blue"], v["other"]]})
        if step.expectation:
            out.append({"step": step.step, "kind": "expectation", "path": "status",
                        "lanes": names, "values": [], "text": step.expectation})
    return out


def noise_plan(rules: list[NoiseRule]) -> list[dict[str, Any]]:
    """The noise rules as the script applies them: a path regex, the kind, its route, the
    tolerance and (uuid) the value pattern."""
    return [{"regex": _compile(r.path).pattern, "kind": r.kind, "route": r.route,
             "tolerance": r.tolerance, "pattern": r.pattern} for r in rules]


def _literal(value: Any) -> str:
    """A Python literal for ``value``: JSON with every non-ASCII character escaped (so lone
    surrogates survive), read back with json.loads."""
    return "json.loads(" + repr(json.dumps(value, ensure_ascii=True, default=str)) + ")"


def script(result: CaseResult, urls: dict[str, str], api_keys: tuple[str, ...],
           faults_url: str | None = None, noise: list[NoiseRule] | None = None) -> str:
    """The reproducer's source for one case."""
    case = result.case
    lanes = list(result.steps[0].responses) if result.steps else ["blue", "green"]
    lanes = [lane for lane in lanes if lane in LANE_ENV] or ["blue", "green"]
    env_lines = [f"#   {LANE_ENV[lane]}={urls.get(lane, '')}" for lane in lanes]
    keys = [f"#   PARITY_API_KEY={api_keys[0] if api_keys else ''}"] + [
        f"#   PARITY_API_KEY_{i}={k}" for i, k in enumerate(api_keys[1:], 2)]
    controls = any(s.control is not None for s in case.steps)
    doc_faults = ([f"#   PARITY_FAULTS_URL={faults_url or ''}   (control steps: the fault "
                   "injector)"] if controls else [])
    steps = len(case.steps)
    header = "\n".join([
        "#!/usr/bin/env python3",
        f"# Reproducer for parity case {case.id}"
        + (f" ({case.source})" if case.source else ""),
        f"# {steps} step{'s' if steps != 1 else ''}, replayed in order against every target;"
        " captured variables are",
        "# taken from each target's own answer. Standard library only (Python 3.9+).",
        "#",
        "# Run it with the targets and the API key (values of the run that wrote it):",
        *env_lines, *keys, *doc_faults,
        "#   (BLUE_AA_URL is optional; PARITY_CASE=other-slug fills {{case}} with fresh users)",
        "#",
        "#   " + " ".join(f"{LANE_ENV[lane]}={urls.get(lane, '...')}" for lane in lanes
                         if lane != "blue-aa")
        + f" PARITY_API_KEY={api_keys[0] if api_keys else '...'} python3 THIS_FILE",
        "#",
        "# Exit code 1: a difference or expectation failure of the run shows again; 0: none;"
        " 2: bad arguments.",
        "# Generated by parity_tests/harness/reproduce.py; the case file is the source of truth.",
    ])
    return (header + "\nimport json\n\n"
            f"PLAN = {_literal(case_plan(case))}\n"
            f"FOUND = {_literal(found(result))}\n"
            f"LANES = {_literal(lanes)}\n"
            f"NOISE = {_literal(noise_plan(noise or []))}\n"
            f"HEADERS = {_literal(list(COMPARED_HEADERS))}\n"
            + _RUNTIME)


def write_reproducers(results: list[CaseResult], out: Path, urls: dict[str, str],
                      api_keys: tuple[str, ...], faults_url: str | None = None,
                      noise: list[NoiseRule] | None = None) -> dict[str, str]:
    """One script per failing case under ``out/reproducers/``; case id -> path relative to
    ``out`` (for report.html's links)."""
    directory = out / DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.py"):
        old.unlink()
    written: dict[str, str] = {}
    for index, result in enumerate(r for r in results if r.failed):
        name = f"{index + 1:03d}-{re.sub(r'[^0-9a-zA-Z]+', '-', result.case.id).strip('-')[:80]}.py"
        path = directory / name
        path.write_text(script(result, urls, api_keys, faults_url, noise), encoding="utf-8")
        path.chmod(0o755)
        written[result.case.id] = f"{DIRECTORY}/{name}"
    return written


# The script's body: kept as text (it runs without this package), tested through write_reproducers.
_RUNTIME = r'''
import gzip
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

ENV = {"blue": "BLUE_URL", "blue-aa": "BLUE_AA_URL", "green": "GREEN_URL"}
VAR = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)\s*}}")


def fill(text, variables):
    def repl(match):
        if match.group(1) not in variables:
            raise KeyError("variable {{%s}} is not defined (yet)" % match.group(1))
        return variables[match.group(1)]
    return VAR.sub(repl, text)


def fill_json(value, variables):
    if isinstance(value, str):
        return fill(value, variables)
    if isinstance(value, list):
        return [fill_json(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: fill_json(v, variables) for k, v in value.items()}
    return value


def get_path(document, path):
    node = document
    for part in path.split("."):
        if isinstance(node, list) and part.lstrip("-").isdigit():
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(path)
    return node


def flatten(value, prefix, out):
    if isinstance(value, dict) and value:
        for k, v in value.items():
            flatten(v, prefix + "." + str(k).replace("%", "%25").replace(".", "%2E"), out)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            flatten(v, "%s.%d" % (prefix, i), out)
    else:
        out[prefix] = value
    return out


def alias(value, tokens):
    """Generated ids (the noise file's uuid patterns) as <idK:N>, by first appearance."""
    if isinstance(value, str):
        for kind, rule in enumerate([r for r in NOISE if r["kind"] == "uuid"], 1):
            def repl(m, kind=kind):
                if m.group(0) not in tokens:
                    n = sum(1 for k in tokens.values() if k[1] == kind) + 1
                    tokens[m.group(0)] = ("<id%s:%d>" % (kind if kind > 1 else "", n), kind)
                return tokens[m.group(0)][0]
            value = re.sub(rule["pattern"], repl, value)
        return value
    if isinstance(value, list):
        return [alias(v, tokens) for v in value]
    if isinstance(value, dict):
        return {alias(k, tokens): alias(v, tokens) for k, v in value.items()}
    return value


ISO = re.compile(r"^\d{4}-\d\d-\d\d([T ][0-9:.]+)?(Z|[+-]\d\d:?\d\d)?$")


def number(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def explained(path, route, a, b):
    """Whether the noise file accounts for this pair (as the harness decides)."""
    for rule in NOISE:
        if rule["kind"] == "uuid" or (rule["route"] and rule["route"] != route):
            continue
        if not re.match(rule["regex"], path):
            continue
        if rule["kind"] == "ignore":
            return True
        if rule["kind"] == "iso-timestamp":
            return all(isinstance(v, str) and ISO.match(v) for v in (a, b))
        x, y = number(a), number(b)
        return x is not None and y is not None and abs(x - y) <= rule["tolerance"]
    return False


def api_key(number):
    name = "PARITY_API_KEY" if number == 1 else "PARITY_API_KEY_%d" % number
    value = os.environ.get(name)
    if not value:
        sys.exit("set %s (the top of this file has the run's value)" % name)
    return value


def send(base, request, variables):
    path = fill(request["path"], variables)
    query = [(k, fill(v, variables)) for k, v in request["query"]]
    url = base.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    headers = {k: fill(v, variables) for k, v in request["headers"].items()}
    lower = {k.lower() for k in headers}
    if request["auth"] and "x-api-key" not in lower:
        headers["X-API-Key"] = api_key(request["key"])
    data = None
    if "body" in request:
        data = fill(request["body"], variables).encode("utf-8", "surrogatepass")
    elif "json" in request:
        data = json.dumps(fill_json(request["json"], variables), ensure_ascii=False).encode(
            "utf-8", "surrogatepass")
        if "content-type" not in lower:
            headers["Content-Type"] = "application/json"
    if "accept-encoding" not in lower:
        headers["Accept-Encoding"] = "gzip, deflate"
    req = urllib.request.Request(url, data=data, method=request["method"], headers=headers)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, head, body = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, head, body = exc.code, exc.headers, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return {"status": 0, "headers": {}, "body": None, "error": str(exc), "ms": 0}
    encoding = (head.get("Content-Encoding") or "").lower()
    if encoding == "gzip":
        body = gzip.decompress(body)
    elif encoding == "deflate":
        body = zlib.decompress(body)
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = body.decode("utf-8", "replace")
    return {"status": status, "headers": {k.lower(): v for k, v in head.items()},
            "body": parsed, "error": None, "ms": round((time.perf_counter() - started) * 1000, 1)}


def control(step, faults_url):
    config = {k: v for k, v in step["control"].items() if k != "await"}
    if not faults_url:
        print("  control step %s skipped: set PARITY_FAULTS_URL to apply %s"
              % (step["name"], json.dumps(step["control"])))
        return
    if config:
        req = urllib.request.Request(faults_url.rstrip("/") + "/_faults/config",
                                     data=json.dumps(config).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()
    if step["control"].get("await"):
        time.sleep(3)  # a flush meets the outage (the harness polls the injector instead)
    print("  control step %s applied: %s" % (step["name"], json.dumps(step["control"])))


def shown(value):
    if value == "(absent)":
        return value
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 300 else text[:300] + "..."


def main():
    targets = [(lane, os.environ.get(ENV[lane])) for lane in LANES]
    targets = [(lane, url) for lane, url in targets if url]
    if len(targets) < 2 and not os.environ.get("PARITY_ONE_TARGET"):
        print("give at least two targets: " + ", ".join(ENV[l] for l in LANES), file=sys.stderr)
        return 2
    static = dict(PLAN["static"])
    if os.environ.get("PARITY_CASE"):
        static["case"] = os.environ["PARITY_CASE"]
    variables = {lane: dict(static) for lane, _ in targets}
    tokens = {lane: {} for lane, _ in targets}  # per lane and case, as the harness aliases
    faults_url = os.environ.get("PARITY_FAULTS_URL")
    names = [lane for lane, _ in targets]
    seen = {}
    missed = []
    print("case %s against %s" % (PLAN["id"], ", ".join("%s %s" % t for t in targets)))
    try:
        for step in PLAN["steps"]:
            if "control" in step:
                control(step, faults_url)
                continue
            answers = {}
            for lane, url in targets:
                answers[lane] = send(url, step["request"], variables[lane])
            first = step["request"]["method"] + " " + fill(step["request"]["path"],
                                                         variables[names[0]])
            print("step %s: %s" % (step["name"], first))
            for lane in names:
                a = answers[lane]
                print("  %-8s %s in %s ms%s" % (lane, a["status"], a["ms"],
                                               " (" + a["error"] + ")" if a["error"] else ""))
            sent_id = any(k.lower() == "x-request-id" for k in step["request"]["headers"])
            docs = {}
            for lane, a in answers.items():
                head = {k: v for k, v in a["headers"].items()
                        if k in HEADERS or (sent_id and k == "x-request-id")}
                raw = alias({"status": a["status"], "headers": head, "body": a["body"]},
                            tokens[lane])
                docs[lane] = flatten(raw["body"], "body", flatten(
                    raw["headers"], "headers", {"status": raw["status"]}))
            seen[step["name"]] = docs
            base = docs[names[0]]
            for other in names[1:]:
                doc = docs[other]
                for path in sorted(set(base) | set(doc)):
                    a, b = base.get(path, "(absent)"), doc.get(path, "(absent)")
                    if a != b and not explained(path, step.get("route"), a, b):
                        print("  differs %s: %s=%s %s=%s" % (path, names[0], shown(a), other,
                                                            shown(b)))
            expected = step.get("expect_status")
            if expected is not None:
                wrong = ["%s answered %s" % (l, a["status"]) for l, a in answers.items()
                         if a["status"] != expected]
                if wrong:
                    missed.append(step["name"])
                    print("  expected %s; %s" % (expected, ", ".join(wrong)))
            for name, path in step.get("capture", {}).items():
                for lane in names:
                    try:
                        variables[lane][name] = str(get_path(answers[lane]["body"], path))
                    except (KeyError, IndexError, TypeError):
                        print("  capture %s from %s: absent in %s's answer; stopping"
                              % (name, path, lane))
                        return 1
    finally:
        if faults_url and any("control" in s for s in PLAN["steps"]):
            urllib.request.urlopen(urllib.request.Request(
                faults_url.rstrip("/") + "/_faults/config", method="DELETE"), timeout=10).read()
    again = 0
    print("what the run found, and whether it shows again:")
    for f in FOUND:
        if f["kind"] == "expectation":
            hit = f["step"] in missed
            print("  %s step %s: %s" % ("AGAIN" if hit else "gone ", f["step"], f["text"]))
            again += hit
            continue
        docs = seen.get(f["step"], {})
        left, right = f["lanes"]
        path = f["path"]
        if path.split(".")[0] not in ("status", "headers", "body"):
            print("  n/a   step %s: %s (%s=%s %s=%s; compare side effects or ids by hand)"
                  % (f["step"], path, left, shown(f["values"][0]), right, shown(f["values"][1])))
            continue
        if left not in docs or right not in docs:
            print("  n/a   step %s: %s (%s or %s not given)" % (f["step"], path, left, right))
            continue
        a, b = docs[left].get(path, "(absent)"), docs[right].get(path, "(absent)")
        route = next((s.get("route") for s in PLAN["steps"] if s["name"] == f["step"]), None)
        hit = a != b and not explained(path, route, a, b)
        again += hit
        print("  %s step %s: %s %s=%s %s=%s" % ("AGAIN" if hit else "gone ", f["step"], path,
                                               left, shown(a), right, shown(b)))
    print("REPRODUCED" if again else "NOT REPRODUCED")
    return 1 if again else 0


if __name__ == "__main__":
    sys.exit(main())
'''

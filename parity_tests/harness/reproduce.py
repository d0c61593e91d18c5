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

Raw steps (``raw:``, :mod:`parity_tests.harness.wire`) are sent as the runner sends them: their
exact bytes on one socket per target (host and port from the target's URL, which must be
``http://``), the writes, pauses and half-close in order, ``{{host}}`` and ``{{api_key}}`` filled
at run time; every answer is printed raw (escaped) and compared as the runner compares it: the
first answer's status, each answer's ``status error_code`` (or ``non-envelope``) and how the
connection ended (``answered``, ``closed``, ``reset``, ``timeout``).
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
        if step.raw is not None:  # bytes on a socket, as parity_tests/harness/wire.py sends them
            method, path = step.raw.request_line
            route = route_of(method, _VAR.sub("x1", path))
            steps.append({"name": step.name, "raw": {"writes": list(step.raw.writes),
                                                     "half_close": step.raw.half_close,
                                                     "read_timeout": step.raw.read_timeout},
                          "route": route.path if route else None, "capture": {},
                          "expect_status": step.expect_status, "expect_end": step.expect_end})
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
import errno
import gzip
import os
import re
import select
import socket
import sys
import threading
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


# --- raw steps: the same reading of the wire as parity_tests/harness/wire.py ---------------

STATUS_LINE = re.compile(rb"^HTTP/(\d(?:\.\d)?) (\d{3})")


def escape(data, limit=2000):
    text = data[:limit].decode("latin-1").encode("unicode_escape").decode("ascii")
    return text + ("... (%d bytes)" % len(data) if len(data) > limit else "")


def raw_writes(raw, base, variables):
    """The step's writes as bytes (or pause seconds), {{host}} and {{api_key}} filled."""
    parsed = urllib.parse.urlsplit(base)
    values = dict(variables, host="%s:%d" % (parsed.hostname, parsed.port or 80))
    texts = [w if isinstance(w, str) else w.get("repeat", "") for w in raw["writes"]]
    if any("api_key" in VAR.findall(t) for t in texts):
        values["api_key"] = api_key(1)
    out = []
    for w in raw["writes"]:
        if isinstance(w, str):
            out.append(fill(w, values).encode("latin-1"))
        elif "pause" in w:
            out.append(float(w["pause"]))
        else:
            out.append(fill(w["repeat"], values).encode("latin-1") * int(w["times"]))
    return out


def describe(writes):
    return " ".join("(pause %g s)" % w if isinstance(w, float) else escape(w, 300)
                    for w in writes)


def peek_end(sock):
    if not select.select([sock], [], [], 0)[0]:
        return None
    try:
        return "closed" if sock.recv(1, socket.MSG_PEEK) == b"" else None
    except OSError:
        return "reset"


def send_raw(base, writes, half_close, read_timeout):
    parsed = urllib.parse.urlsplit(base)
    out = {"answers": [], "end": "timeout", "raw": b"", "error": None, "ms": 0}
    if parsed.scheme != "http":
        out["error"] = "raw steps need a plain http target, not %s" % base
        return out
    started = time.perf_counter()
    try:
        sock = socket.create_connection((parsed.hostname, parsed.port or 80), timeout=5)
    except OSError as exc:
        out["error"] = "connect: %s" % exc
        return out
    buffer = bytearray()
    ended = None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for item in writes:
            if isinstance(item, float):
                time.sleep(item)
                ended = peek_end(sock)
                if ended == "reset":
                    break
                continue
            try:
                sock.sendall(item)
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    ended = "reset"
                    break
                raise
        if half_close and ended is None:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                ended = "reset"
        out["end"] = read_all(sock, buffer, read_timeout)
        if ended == "reset":
            out["end"] = "reset"
    finally:
        sock.close()
        out["ms"] = round((time.perf_counter() - started) * 1000, 1)
    out["raw"] = bytes(buffer)
    out["answers"] = parse_answers(out["raw"])
    if out["end"] == "open" and (not out["answers"] or not out["answers"][-1]["complete"]):
        out["end"] = "timeout"
    return out


def read_all(sock, buffer, read_timeout):
    deadline = time.monotonic() + read_timeout
    while len(buffer) < 4 * 1024 * 1024:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "open"
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return "open"
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                return "reset"
            raise
        if not data:
            return "closed"
        buffer += data
        answers = parse_answers(bytes(buffer))
        if answers and answers[-1]["complete"] and answers[-1]["status"] >= 200:
            # as the runner (wire.KEEPALIVE_GRACE_S): a close or a pipelined answer follows at
            # once; past a second of silence the connection is kept open
            deadline = min(deadline, time.monotonic() + 1.0)
    return "closed"


def parse_answers(data):
    answers = []
    pos = 0
    while pos < len(data):
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            if data[pos:].strip():
                m = STATUS_LINE.match(data[pos:])
                answers.append({"status": int(m.group(2)) if m else 0, "headers": [],
                                "body": data[pos:], "complete": False, "version": "1.1"})
            break
        lines = data[pos:head_end].split(b"\r\n")
        m = STATUS_LINE.match(lines[0])
        status, version = (int(m.group(2)), m.group(1).decode()) if m else (0, "1.1")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1").strip(), value.decode("latin-1").strip()))
        pos = head_end + 4
        answer = {"status": status, "headers": headers, "body": b"", "complete": True,
                  "version": version}
        answers.append(answer)
        if 100 <= status < 200 or status in (204, 304):
            continue
        names = dict((k.lower(), v) for k, v in headers)
        if "chunked" in names.get("transfer-encoding", "").lower():
            answer["body"], pos, answer["complete"] = chunked(data, pos)
        elif names.get("content-length", "").isdigit():
            length = int(names["content-length"])
            answer["body"] = data[pos:pos + length]
            answer["complete"] = len(data) - pos >= length
            pos += length
        else:
            answer["body"], pos = data[pos:], len(data)
        if not answer["complete"]:
            break
    return answers


def chunked(data, pos):
    body = bytearray()
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return bytes(body), len(data), False
        try:
            size = int(data[pos:line_end].split(b";", 1)[0].strip(), 16)
        except ValueError:
            return bytes(body), len(data), False
        pos = line_end + 2
        if size == 0:
            end = data.find(b"\r\n", pos)
            while end >= 0 and end != pos:
                pos = end + 2
                end = data.find(b"\r\n", pos)
            if end < 0:
                return bytes(body), len(data), False
            return bytes(body), end + 2, True
        if len(data) < pos + size + 2:
            body += data[pos:pos + size]
            return bytes(body), len(data), False
        body += data[pos:pos + size]
        pos += size + 2


def error_code(body):
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    code = doc.get("error_code") if isinstance(doc, dict) else None
    return code if isinstance(code, str) and "error" in doc and "request_id" in doc else None


def summary(answer):
    code = error_code(answer["body"])
    text = ("%s %s" % (answer["status"], code) if code else "%s non-envelope" % answer["status"]
            if answer["body"].strip() else str(answer["status"]))
    return text + ("" if answer["complete"] else " (cut short)")


def announced_close(answer):
    connection = dict((k.lower(), v) for k, v in answer["headers"]).get("connection", "").lower()
    return "close" in connection or (answer["version"] == "1.0"
                                     and "keep-alive" not in connection)


def raw_documents(exchanges):
    """Per lane what the runner compares (parity_tests.harness.wire.documents)."""
    cut = None
    for ex in exchanges.values():
        if ex["end"] == "closed" and ex["answers"] and announced_close(ex["answers"][-1]):
            cut = len(ex["answers"]) if cut is None else min(cut, len(ex["answers"]))
    out = {}
    for lane, ex in exchanges.items():
        answers = ex["answers"]
        end = ex["end"]
        if end == "open" or (end == "closed" and answers and answers[-1]["complete"]
                             and announced_close(answers[-1])):
            end = "answered"
        summaries = [summary(a) for a in answers]
        if cut is not None and len(summaries) > cut:
            summaries, end = summaries[:cut], "answered"
        out[lane] = {"status": answers[0]["status"] if answers else 0, "answers": summaries,
                     "end": end}
    return out


def raw_step(step, targets, variables):
    """Send the step to every target at once; print what each sent back, raw."""
    writes = {lane: raw_writes(step["raw"], url, variables[lane]) for lane, url in targets}
    exchanges = {}

    def run(lane, url):
        exchanges[lane] = send_raw(url, writes[lane], step["raw"]["half_close"],
                                   step["raw"]["read_timeout"])

    threads = [threading.Thread(target=run, args=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first = targets[0][0]
    print("step %s: raw %s%s" % (step["name"], describe(writes[first]),
                                 " (then half-close)" if step["raw"]["half_close"] else ""))
    docs = raw_documents(exchanges)
    for lane, _ in targets:
        ex, doc = exchanges[lane], docs[lane]
        print("  %-8s %s in %s ms: %s; connection %s (%s)%s"
              % (lane, doc["status"], ex["ms"], " | ".join(doc["answers"]) or "(no answer)",
                 doc["end"], ex["end"], " (" + ex["error"] + ")" if ex["error"] else ""))
        if ex["raw"]:
            print("           raw answer: %s" % escape(ex["raw"]))
    return {lane: {"status": docs[lane]["status"]} for lane in docs}, docs


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


def plain_step(step, targets, variables, tokens, names):
    answers = {}
    for lane, url in targets:
        answers[lane] = send(url, step["request"], variables[lane])
    first = step["request"]["method"] + " " + fill(step["request"]["path"], variables[names[0]])
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
        raw = alias({"status": a["status"], "headers": head, "body": a["body"]}, tokens[lane])
        docs[lane] = flatten(raw["body"], "body", flatten(
            raw["headers"], "headers", {"status": raw["status"]}))
    return answers, docs


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
            if "raw" in step:
                answers, compared = raw_step(step, targets, variables)
                docs = {}
                for lane, doc in compared.items():
                    docs[lane] = {}
                    for key, value in alias(doc, tokens[lane]).items():
                        flatten(value, key, docs[lane])
            else:
                answers, docs = plain_step(step, targets, variables, tokens, names)
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
            expected_end = step.get("expect_end")
            if expected_end is not None:
                wrong = ["%s ended %s" % (l, d["end"]) for l, d in docs.items()
                         if d["end"] != expected_end]
                if wrong:
                    missed.append(step["name"])
                    print("  expected the connection %s; %s" % (expected_end, ", ".join(wrong)))
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
        if path.split(".")[0] not in ("status", "headers", "body", "answers", "end"):
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

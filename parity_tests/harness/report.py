"""What a run tells QA and CI: summary.json, junit.xml, report.html and the terminal summary."""

from __future__ import annotations

import json
import re
import shlex
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from rich.console import Console
from rich.table import Table

from parity_tests.harness.runner import CaseResult, LaneResponse, StepResult
from shared.perfwindow import percentile
from shared.routes import ROUTES

UNROUTED = "(no route)"


def coverage(results: list[CaseResult], baseline: str) -> dict[str, Any]:
    seen: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for case in results:
        for step in case.steps:
            resp = step.responses.get(baseline)
            if resp is None or resp.error:
                continue
            key = f"{step.method if step.method != 'HEAD' else 'GET'} {step.route}" \
                if step.route else UNROUTED
            seen[key][resp.status] += 1
    matrix: dict[str, dict[str, int]] = {}
    holes: list[str] = []
    for route in ROUTES:
        key = f"{route.method} {route.path}"
        row = {str(s): seen.get(key, {}).get(s, 0) for s in route.statuses}
        for status, count in seen.get(key, {}).items():
            row.setdefault(str(status), count)
        matrix[key] = dict(sorted(row.items()))
        holes.extend(f"{key} -> {s}" for s in route.statuses if not seen.get(key, {}).get(s))
    if UNROUTED in seen:
        matrix[UNROUTED] = {str(s): n for s, n in sorted(seen[UNROUTED].items())}
    documented = sum(len(r.statuses) for r in ROUTES)
    return {"matrix": matrix, "holes": holes, "documented": documented,
            "covered": documented - len(holes)}


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
    steps = [s for c in results for s in c.steps]
    lanes = info["lanes"]
    summary = {
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
        "mode": info["mode"],
        "side_effects_checked": info["mode"] == "local",
        "aa_baseline": "blue-aa" in lanes,
        "lanes": lanes,
        "sources": info.get("sources", {}),
        "latency_ms": latency(results),
        "per_endpoint": per_endpoint(results),
        "coverage": coverage(results, lanes[0]),
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
        "errors_detail": info.get("run_errors", []),
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
            for d in step.differences + step.undeclared_noise:
                v = d.to_dict()
                items.append({"case": case.case.id, "step": step.step, "path": v["path"],
                              "blue": v["blue"], "other": v["other"]})
            for problem in [*step.violations, step.expectation, step.error]:
                if problem:
                    items.append({"case": case.case.id, "step": step.step, "problem": problem})
        out += items[:5]
    return out


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

def write_json(summary: dict[str, Any], results: list[CaseResult], out: Path) -> None:
    failing = []
    for case in results:
        if not case.failed:
            continue
        failing.append({"case": case.case.id, "error": case.error, "steps": [
            {"step": s.step, "method": s.method, "path": s.path,
             "statuses": {k: v.status for k, v in s.responses.items()},
             "differences": [d.to_dict() for d in s.differences],
             "undeclared_noise": [d.to_dict() for d in s.undeclared_noise],
             "contract_violations": s.violations, "expectation": s.expectation,
             "error": s.error} for s in case.steps if s.failed]})
    (out / "summary.json").write_text(json.dumps({**summary, "failing": failing}, indent=2,
                                                 default=str), encoding="utf-8")


def write_junit(results: list[CaseResult], summary: dict[str, Any], out: Path) -> None:
    suite = ET.Element("testsuite", name="parity", tests=str(len(results)),
                       failures=str(summary["failed_cases"]), time=str(summary["duration_s"]))
    for case in results:
        stem, _, name = case.case.id.partition("/")
        elapsed = sum(max(r.elapsed_ms for r in s.responses.values()) for s in case.steps)
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


def write_html(summary: dict[str, Any], results: list[CaseResult], urls: dict[str, str],
               out: Path) -> None:
    # the template is report.html.j2: autoescape on for .j2 too (select_autoescape(["html"])
    # alone leaves it off), and nothing holding data is marked safe
    env = Environment(loader=PackageLoader("parity_tests", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default=True))
    failing = []
    for case in results:
        if not case.failed:
            continue
        steps = []
        for s in case.steps:
            paths = [d.path for d in s.differences + s.undeclared_noise]
            steps.append({
                "step": {"step": s.step, "method": s.method, "path": s.path,
                         "expectation": s.expectation, "error": s.error,
                         "violations": list(s.violations)},
                "failed": s.failed,
                "lanes": [{"name": name, "status": r.status,
                           "headers": sorted(r.headers.items()),
                           "body": _highlight(_pretty(r), paths),
                           "curl": curl(urls.get(name, ""), s, name),
                           "elapsed": round(r.elapsed_ms, 1)}
                          for name, r in s.responses.items()],
                "request": json.dumps(s.requests[next(iter(s.requests))].to_dict(), indent=2,
                                      ensure_ascii=False)[:20000],
                "differences": [d.to_dict() for d in s.differences],
                "noise": [d.to_dict() for d in s.undeclared_noise],
                "known": [(d.to_dict(), k.reason, k.owner, str(k.expires)) for d, k in s.known],
            })
        failing.append({"case": {"id": case.case.id, "source": case.case.source,
                                 "description": case.case.description},
                        "error": case.error, "steps": steps})
    template = env.get_template("report.html.j2")
    page = template.render(summary=_clean(summary), failing=_clean(failing), urls=_clean(urls))
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
    console.print(f"coverage: {cov['covered']}/{cov['documented']} documented route x status "
                  f"pairs exercised")
    for hole in cov["holes"]:
        console.print(f"  hole: {hole}")
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
    verdict = "[bold green]PASS[/]" if summary["passed"] else "[bold red]FAIL[/]"
    console.print(
        f"{verdict} {summary['cases']} cases, {summary['steps']} steps in "
        f"{summary['duration_s']} s (boot {summary['boot_s']} s): "
        f"{summary['differences']} differences, {summary['contract_violations']} contract "
        f"violations, {summary['undeclared_noise']} undeclared noise, "
        f"{summary['expired_known_differences']} expired known differences, "
        f"{summary['expectation_failures']} expectation failures, {summary['errors']} errors, "
        f"{summary['known_differences']} known differences, "
        f"{summary.get('failed_checks', 0)}/{len(summary.get('checks', []))} checks failed")


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
                              else f"{k} {figures[k]}" for k in CHECK_FIGURES if k in figures)
            table.add_row(check["name"], color, shown,
                          "[green]pass[/]" if check["passed"] else "[red]FAIL[/]")
        if not check["colors"]:
            table.add_row(check["name"], "", "", "[red]FAIL[/]")
    console.print(table)
    for check in checks:
        for failure in check["failures"]:
            console.print(f"  [red]{check['name']}[/]: {failure}")

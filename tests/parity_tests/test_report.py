"""The parity report on crafted results: identity, the overview of differences, the failing-case
index, collapsed details, lane-named columns, JSON values, run-level checks in the coverage,
accepted holes apart from real ones, and the terminal off a terminal."""

from __future__ import annotations

import html
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from parity_tests.harness import report
from parity_tests.harness.cli import make_console
from parity_tests.harness.compare import MISSING, Delta
from parity_tests.harness.model import Case, Request, Step
from parity_tests.harness.report import AcceptedHole, load_accepted_holes
from parity_tests.harness.reproduce import write_reproducers
from parity_tests.harness.runner import CaseResult, LaneResponse, StepResult
from shared.routes import ROUTES

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
LANES = ["blue", "blue-aa", "green"]
DOCUMENTED = {f"{r.method} {r.path} -> {s}" for r in ROUTES for s in r.statuses}


def _result(i: int, wrong: bool = True, lanes: list[str] = LANES) -> CaseResult:
    request = Request(method="GET", path=f"/api/v1/chat/sessions/s-{i}")
    case = Case(id=f"sessions/case-{i}", steps=(Step(name="get", request=request),),
                source=str(ROOT / "parity_tests" / "cases" / "sessions.yaml"))
    body = json.dumps({"session_id": f"s-{i}", "message_count": 2}).encode()
    green = json.dumps({"session_id": f"s-{i}", "message_count": None}).encode()
    responses = {lane: LaneResponse(200, {"content-type": "application/json",
                                          "x-ratelimit-remaining": "5" if lane != "green"
                                          else "4"}, green if lane == "green" and wrong
                                    else body, 1.0) for lane in lanes}
    step = StepResult(case.id, "get", 0, "GET", request.path,
                      "/api/v1/chat/sessions/{session_id}",
                      dict.fromkeys(lanes, request), responses,
                      differences=[Delta("body.message_count", 2, None)] if wrong else [])
    return CaseResult(case, [step])


def _summary(results: list[CaseResult], **info: Any) -> dict[str, Any]:
    return report.summarize(results, {"lanes": LANES, "mode": "local", "duration_s": 1.0,
                                      "seed": 7, "sources": {"corpus": len(results),
                                                             "generated": 3}, **info})


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.details: list[bool] = []
        self.headers: list[str] = []
        self._th = False
        self.ids: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "details":
            self.details.append("open" in named)
        self._th = tag == "th"
        if named.get("id"):
            self.ids.append(str(named["id"]))
        if tag == "a" and named.get("href"):
            self.links.append(str(named["href"]))

    def handle_data(self, data: str) -> None:
        if self._th:
            self.headers.append(data.strip())
            self._th = False


def test_one_wrong_field_in_many_cases_is_one_overview_row(tmp_path: Path) -> None:
    results = [_result(i) for i in range(40)] + [_result(99, wrong=False)]
    summary = _summary(results)
    report.write_html(summary, results, {"blue": "http://b", "green": "http://g"}, tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    parsed = _Text()
    parsed.feed(page)
    # verdict and identity at the top, before anything else
    assert page.index("Parity FAIL") < page.index("git commit") < page.index("What differs")
    assert page.index("What differs") < page.index("Failing cases (40)")
    assert page.index("Failing cases (40)") < page.index("Failing cases in detail")
    # one overview row for the path, counting every case
    row = re.search(r"<tr class=\"bad\"><td>body.message_count</td><td>difference</td>"
                    r"<td class=\"nowrap\">blue vs green</td><td>40</td>", page)
    assert row, page[:3000]
    # an index entry and an anchor per failing case; only the first few details open
    assert [f"case-{i}" for i in range(1, 41)] == [i for i in parsed.ids if i.startswith("case")]
    assert sum(1 for i in range(1, 41) if f"#case-{i}" in parsed.links) == 40
    opened = [o for o in parsed.details if o]
    assert len(opened) == report.OPEN_CASES
    # columns named by lane, never "other"; values as JSON
    assert "other" not in parsed.headers
    assert {"blue", "blue-aa", "green"} <= set(parsed.headers)
    assert "<td>2</td><td>as blue</td><td>null</td>" in page
    assert "None" not in re.sub(r"<[^>]+>", "", page).split("Passing cases")[0]
    # headers shown where they differ, all of them only in a collapsed block
    assert "x-ratelimit-remaining: 4" in page
    assert "Passing cases (1)" in page
    assert "sessions/case-99" in page
    # paths relative to the repo
    assert "parity_tests/cases/sessions.yaml" in page
    assert str(ROOT) not in page


def test_summary_json_carries_the_identity_and_lane_names(tmp_path: Path) -> None:
    results = [_result(1)]
    summary = _summary(results)
    report.write_json(summary, results, tmp_path)
    data = json.loads((tmp_path / "summary.json").read_text())
    ident = data["identity"]
    assert set(ident) >= {"date", "git_commit", "git_dirty", "seed", "generated",
                          "corpus_hash", "packages"}
    assert ident["seed"] == 7
    assert ident["generated"] == 3
    assert re.fullmatch(r"[0-9a-f]{40}", ident["git_commit"])
    assert isinstance(ident["git_dirty"], bool)
    assert re.fullmatch(r"[0-9a-f]{16}", ident["corpus_hash"])
    assert ident["packages"]["flask"]
    assert ident["packages"]["fastapi"]
    diff = data["failing"][0]["steps"][0]["differences"][0]
    assert diff == {"path": "body.message_count", "kind": "changed", "lanes": ["blue", "green"],
                    "blue": 2, "green": None}
    assert data["failing"][0]["source"] == "parity_tests/cases/sessions.yaml"


def test_an_absent_value_reads_absent_not_a_string() -> None:
    assert report.show(MISSING) == "(absent)"
    assert report.show(None) == "null"
    assert report.show("<missing>") == '"<missing>"'
    assert report.show({"a": [1, True]}) == '{"a": [1, true]}'


# --- coverage ----------------------------------------------------------------------------------

BURST = {"name": "rate_limit_burst", "passed": True, "failures": [], "duration_s": 1.0,
         "colors": {"blue": {"limit": 20, "sent": 35, "accepted": 20, "refused": 15,
                             "statuses": {"200": 20, "429": 15}},
                    "green": {"limit": 20, "sent": 35, "accepted": 20, "refused": 15,
                              "statuses": {"200": 20, "429": 15}}}}
DOWN = {"name": "dependency_down", "passed": True, "failures": [], "duration_s": 1.0,
        "colors": {"blue": {"statuses": [503, 404, 503, 200],
                            "error_codes": ["AGENT_UNAVAILABLE", "SESSION_NOT_FOUND", None, None],
                            "detailed_checks": {"dynamodb": "up", "agent": "down"}}}}


def test_run_level_checks_count_toward_the_matrix() -> None:
    without = report.coverage([], "blue", [], [])
    assert "POST /api/v1/chat -> 429" in without["holes"]
    cov = report.coverage([], "blue", [BURST, DOWN], [])
    assert cov["matrix"]["POST /api/v1/chat"]["429"] == 15
    assert cov["matrix"]["POST /api/v1/chat"]["503"] == 1
    assert cov["matrix"]["GET /health/detailed"]["503"] == 1
    assert cov["matrix"]["GET /api/v1/chat/sessions/{session_id}"]["404"] == 1
    assert "POST /api/v1/chat -> 429" not in cov["holes"]
    assert cov["from_checks"]["POST /api/v1/chat"]["429"] == ["rate_limit_burst"]
    assert cov["covered"] == without["covered"] + 6


def test_accepted_holes_are_apart_from_real_holes_and_stale_ones_are_named() -> None:
    accepted = [AcceptedHole("GET /health", 500, "needs a bug", "qa"),
                AcceptedHole("POST /api/v1/chat", 429, "burst", "qa")]
    cov = report.coverage([], "blue", [BURST], accepted)
    assert [h["pair"] for h in cov["accepted_holes"]] == ["GET /health -> 500"]
    assert "GET /health -> 500" not in cov["holes"]
    assert [h["pair"] for h in cov["stale_accepted_holes"]] == ["POST /api/v1/chat -> 429"]
    assert cov["covered"] + len(cov["holes"]) + len(cov["accepted_holes"]) == cov["documented"]
    bad = AcceptedHole("GET /health", 999, "x", "qa")
    summary = _summary([], checks=[BURST], accepted_holes=[*accepted, bad])
    assert not summary["passed"]
    assert any("GET /health -> 999" in e for e in summary["errors_detail"])


def test_the_accepted_holes_file_is_valid_and_names_documented_pairs() -> None:
    holes = load_accepted_holes()
    assert holes, "parity_tests/accepted_holes.yaml lists the reviewed holes"
    assert {h.key for h in holes} <= DOCUMENTED
    assert all(h.reason and h.owner for h in holes)
    assert "POST /api/v1/chat -> 500" not in {h.key for h in holes}  # covered by a fault


@pytest.mark.parametrize(("text", "message"), [
    ("holes: {}\n", "'holes' list"),
    ("holes:\n  - {route: GET /health, status: 500, reason: r}\n", "missing \\['owner'\\]"),
    ("holes:\n  - {route: GET /health, status: '500', reason: r, owner: o}\n", "integer"),
    ("holes:\n  - {route: GET /health, status: 500, reason: '', owner: o}\n", "empty"),
])
def test_a_bad_accepted_holes_file_names_the_entry(tmp_path: Path, text: str,
                                                   message: str) -> None:
    path = tmp_path / "holes.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_accepted_holes(path)


def test_the_report_shows_accepted_holes_and_every_check_figure(tmp_path: Path) -> None:
    summary = _summary([], checks=[BURST, DOWN],
                       accepted_holes=[AcceptedHole("GET /health", 500, "needs a bug", "qa")])
    report.write_html(summary, [], {}, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "Accepted holes (1)" in page
    assert "needs a bug" in page
    assert 'statuses={&#34;200&#34;: 20, &#34;429&#34;: 15}' in page
    assert "detailed_checks={&#34;dynamodb&#34;: &#34;up&#34;, &#34;agent&#34;: &#34;down&#34;}" \
        in page
    assert "error_codes=[&#34;AGENT_UNAVAILABLE&#34;, &#34;SESSION_NOT_FOUND&#34;, null, null]" \
        in page
    out = io.StringIO()
    report.print_summary(summary, Console(file=out, soft_wrap=True, width=200, no_color=True))
    text = out.getvalue()
    assert "1 accepted (parity_tests/accepted_holes.yaml)" in text
    assert "hole: GET /health -> 500" not in text


def test_reproducers_are_linked_from_the_report(tmp_path: Path) -> None:
    results = [_result(1), _result(2, wrong=False)]
    written = write_reproducers(results, tmp_path, {"blue": "http://b", "green": "http://g"},
                                ("key-1", "key-2"))
    assert list(written) == ["sessions/case-1"]
    script = tmp_path / written["sessions/case-1"]
    assert script.read_text().startswith("#!/usr/bin/env python3")
    assert "#   PARITY_API_KEY=key-1" in script.read_text()
    report.write_html(_summary(results), results, {}, tmp_path, written)
    assert f'href="{written["sessions/case-1"]}"' in (tmp_path / "report.html").read_text()


# --- the terminal off a terminal ---------------------------------------------------------------

def test_off_a_terminal_long_lines_and_tables_are_never_cut(capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    console = make_console()  # pytest captures stdout: not a terminal
    assert not console.is_terminal
    long_check = {**BURST, "colors": {"blue": {"statuses": {str(s): 1 for s in range(200, 260)},
                                               "sent": 60}}}
    summary = _summary([_result(i) for i in range(3)], checks=[long_check],
                       notes=["n" * 400])
    report.print_summary(summary, console)
    text = capsys.readouterr().out
    assert "note: " + "n" * 400 in text.splitlines()
    figures = [line for line in text.splitlines() if "rate_limit_burst" in line and "sent" in line]
    assert len(figures) == 1
    assert '"259": 1}' in figures[0]
    assert "\x1b[" not in text


# --- raw steps ---------------------------------------------------------------------------------

HOSTILE = "<script>alert(1)</script>"


def _raw_result() -> tuple[CaseResult, bytes]:
    """A failing raw step whose bytes and answers carry markup, a NUL and a Latin-1 byte; the
    runner's requests hold the key the run filled in (never shown)."""
    from parity_tests.harness.model import case_from_dict

    case = case_from_dict({"name": "raw-markup", "vars": {"who": "v1"}, "raw": {"send": [
        {"head": ["GET /health?x=" + HOSTILE + " HTTP/1.1", "Host: {{host}}",
                  "X-API-Key: {{api_key}}", "X-A: 100% \\ 'q' \x00\xff {{who}}-{{case}}"]},
        {"pause": 0.5}, "tail"], "half_close": True}, "expect_end": "answered"},
        "cases/wire_x.yaml", 0)
    step = case.steps[0]
    assert step.raw is not None
    rendered = step.raw.render({"host": "127.0.0.1:8001", "api_key": "secret-key-value",
                                "who": "v1", "case": case.slug})
    request = Request(method="GET", path="/health", body=rendered.text(), auth=False)
    sent = b"".join(w for w in rendered.encoded() if isinstance(w, bytes))
    responses = {lane: LaneResponse(400, {"content-type": "text/html", "x-evil": HOSTILE,
                                          "wire-answers": f"400 non-envelope | {HOSTILE}",
                                          "wire-end": "closed" if lane == "blue" else "open"},
                                    f"<h1>{HOSTILE}</h1>".encode() + b"\xff", 1.0)
                 for lane in LANES}
    result = StepResult(case.id, step.name, 0, "GET", "/health", "/health",
                        dict.fromkeys(LANES, request), responses,
                        differences=[Delta("end", "answered", "closed")],
                        violations=[f"green: {HOSTILE}"])
    return CaseResult(case, [result]), sent


def test_a_raw_step_shows_its_bytes_and_answers_as_text(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    import subprocess

    result, sent = _raw_result()
    summary = _summary([result])
    urls = {"blue": "http://127.0.0.1:8001", "green": "http://127.0.0.1:8002"}
    report.write_html(summary, [result], urls, tmp_path)
    report.write_json(summary, [result], tmp_path)
    report.write_junit([result], summary, tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    parser = _Text()
    parser.feed(page)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "secret-key-value" not in page  # the case's {{api_key}}, never the run's key
    # the bytes, escaped as wire.escape does: CRLF, NUL and the Latin-1 byte visible
    assert "X-API-Key: {{api_key}}\\r\\nX-A: 100% \\\\ &#39;q&#39; \\x00\\xff {{who}}" in page
    assert "(pause 0.5 s)" in page
    assert "then half-close" in page
    assert "wire-answers: 400 non-envelope | &lt;script&gt;" in page
    assert "wire-end: closed" in page
    assert "wire-end: open" in page
    # the shell form, with this run's host and the case's variables, sends the same bytes
    line = next(x for x in page.splitlines() if x.startswith("{ printf "))
    line = html.unescape(line.removesuffix("</pre></details>"))
    assert line.endswith("| nc -N 127.0.0.1 8001")
    shell = line.rsplit("|", 1)[0].replace("sleep 0.5", "true")
    done = subprocess.run(["bash", "-c", shell], capture_output=True, timeout=10, check=True,
                          env={"PARITY_API_KEY": "secret-key-value", "PATH": "/usr/bin:/bin"})
    assert done.stdout == sent
    # the terminal and summary.json: the bytes and each lane's answers, no markup rendered
    report.print_summary(summary, make_console())
    text = capsys.readouterr().out
    assert f"    raw: GET /health?x={HOSTILE} HTTP/1.1\\r\\n" in text
    assert f"    blue: 400 non-envelope | {HOSTILE}; connection closed" in text
    assert "secret-key-value" not in text
    first = json.loads((tmp_path / "summary.json").read_text())["first_failures"][0]
    assert first["wire"]["lanes"]["green"] == {"answers": f"400 non-envelope | {HOSTILE}",
                                               "end": "open"}
    assert first["wire"]["half_close"] is True


def test_a_raw_step_shell_form_defers_to_the_reproducer_when_it_cannot() -> None:
    result, _ = _raw_result()
    raw = result.case.steps[0].raw
    assert raw is not None
    assert report.raw_shell("https://b.example", raw, {}).startswith(
        "# raw step: needs a plain http target")
    from parity_tests.harness.model import RawRequest
    big = RawRequest(({"repeat": "a", "times": 1 << 20},))
    assert "Python reproducer" in report.raw_shell("http://127.0.0.1:1", big, {})
    assert report.raw_of(CaseResult(result.case, []), _result(1).steps[0]) is None

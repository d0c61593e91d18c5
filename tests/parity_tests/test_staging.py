"""Staging mode's pure parts: profiles, case needs, per-lane ids, pacing, the report's escaping,
and run_staging's verdict when a target is down."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from devstack.procs import free_port
from parity_tests.harness import report
from parity_tests.harness.compare import Delta
from parity_tests.harness.model import (
    SETTING_KINDS,
    Case,
    CaseError,
    Request,
    Step,
    case_from_dict,
    load_corpus,
)
from parity_tests.harness.runner import CaseResult, LaneResponse, StepResult
from parity_tests.harness.staging import (
    Pacer,
    StagingProfile,
    TargetSettings,
    agent_shapes,
    lane_prefixes,
    prefix_ids,
    profile_named,
    run_staging,
    select,
    stage_id,
    unprefix,
    valid_id,
)

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
MAKE_RUN = ROOT / "parity_tests" / "profiles" / "make-run.yaml"
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
SURROGATE = "\ud800"


def _case(**raw: Any) -> Case:
    return case_from_dict({"name": "c", **raw}, "cases/x.yaml", 0)


# --- the report's escaping ---------------------------------------------------------------------

class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_html_renders_markup_and_surrogates_as_text(tmp_path: Path) -> None:
    hostile = f"{SCRIPT} {IMG} {SURROGATE}"
    request = Request(method="POST", path="/api/v1/chat?x=" + SCRIPT,
                      headers={"X-Evil": IMG}, json={"message": hostile})
    case = Case(id=f"x/{SCRIPT}", steps=(Step(name=IMG, request=request),),
                description=hostile, source=f"{IMG}.yaml")
    body = json.dumps({"response": hostile, "tokens_used": 1}).encode()
    responses = {
        "blue": LaneResponse(200, {"x-evil": IMG, "content-type": SCRIPT}, body, 1.0),
        "green": LaneResponse(500, {}, f"{IMG}{SCRIPT}".encode() + b"\xff", 2.0),
    }
    step = StepResult(case.id, IMG, 0, "POST", request.path, None,
                      {"blue": request, "green": request}, responses,
                      differences=[Delta(f"body.{SCRIPT}", hostile, IMG)],
                      violations=[f"green: {SCRIPT}"], expectation=hostile, error=IMG)
    results = [CaseResult(case, [step], error=hostile)]
    summary = report.summarize(results, {
        "lanes": ["blue", "green"], "mode": "staging", "duration_s": 1.0,
        "notes": [hostile], "skipped": [{"case": SCRIPT, "class": IMG, "reason": hostile}],
        "run_errors": [hostile]})
    report.write_html(summary, results, {"blue": "http://b", "green": "http://g"}, tmp_path)
    report.write_json(summary, results, tmp_path)
    report.write_junit(results, summary, tmp_path)

    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(page)
    assert "script" not in parser.tags
    assert "img" not in parser.tags
    assert not [a for a in parser.attrs if a.lower().startswith("on")]
    text = "".join(parser.text)
    assert SCRIPT in text
    assert IMG in text
    assert "\\ud800" in text
    assert json.loads((tmp_path / "summary.json").read_text())["failing"][0]["case"] == case.id
    assert "skipped" in (tmp_path / "junit.xml").read_text(encoding="utf-8")


# --- profiles ----------------------------------------------------------------------------------

def test_make_run_profile_loads_and_by_name() -> None:
    profile = StagingProfile.load(MAKE_RUN)
    assert profile == profile_named("make-run")
    assert profile.agent == "emulator"
    assert profile.store_faults
    assert profile.settings.api_keys == 1
    assert profile.settings.cors_origins == []


def test_a_bad_profile_names_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("agent: robot\nsettings: {api_key: secret}\n")
    with pytest.raises(ValueError, match=r"p\.yaml.*\n.*agent.*\n.*settings\.api_key"):
        StagingProfile.load(path)
    with pytest.raises(ValueError, match="no staging profile"):
        profile_named("no-such-profile")


def test_profile_settings_are_the_settings_cases_may_need() -> None:
    assert set(TargetSettings.model_fields) == set(SETTING_KINDS)


# --- needs -------------------------------------------------------------------------------------

CHAT = {"method": "POST", "path": "/api/v1/chat"}


@pytest.mark.parametrize(("raw", "message"), [
    ({"needs": ["teleport"]}, "unknown need 'teleport'"),
    ({"needs": "emulator-faults"}, "needs is a list"),
    ({"needs": [{"settings": {"colour": 1}}]}, "unknown setting 'colour'"),
    ({"needs": [{"settings": {"agent_read_timeout_s": {"below": 1}}}]}, "number or"),
    ({"needs": [{"settings": {"api_keys": 0}}]}, "is a count"),
    ({"needs": [{"settings": {"cors_origins": "https://a"}}]}, "list of origins"),
    ({"request": {**CHAT, "json": {"message": "x [[fault:throttle]]"}}}, "'emulator-faults'"),
    ({"request": {**CHAT, "json": {"message": "x", "session_id": "s-ddb:throttle:GetItem"}}},
     "'store-faults'"),
    ({"request": {**CHAT, "key": 2, "json": {"message": "x"}}}, "api_keys: 2"),
    ({"steps": [{"control": {"cloudwatch": "down"}}]}, "'store-control'"),
])
def test_needs_are_validated_naming_file_and_case(raw: dict[str, Any], message: str) -> None:
    raw.setdefault("request", {"method": "GET", "path": "/health"}) if "steps" not in raw \
        else None
    with pytest.raises(CaseError, match=r"cases/x\.yaml: c") as info:
        _case(**raw)
    assert message in str(info.value)


def test_skip_reasons_by_class() -> None:
    profile = StagingProfile(agent="real", settings=TargetSettings(
        api_keys=2, cors_origins=["https://app.example.com"], agent_read_timeout_s=30))
    cases = [
        _case(name="fault", needs=["emulator-faults"],
              request={**CHAT, "json": {"message": "[[fault:throttle]]"}}),
        _case(name="store", needs=["store-faults"], request={"method": "GET", "path": "/"}),
        _case(name="slow", needs=[{"settings": {"agent_read_timeout_s": {"max": 5}}}],
              request={"method": "GET", "path": "/"}),
        _case(name="keys", needs=[{"settings": {"api_keys": 2}}],
              request={"method": "GET", "path": "/", "key": 2}),
        _case(name="cors", needs=[{"settings": {"cors_origins": ["https://app.example.com/"]}}],
              request={"method": "GET", "path": "/"}),
        _case(name="body", needs=[{"settings": {"max_body_bytes": 1024}}],
              request={"method": "GET", "path": "/"}),
    ]
    run, skipped = select(cases, profile, keys=1)
    assert [c.id for c in run] == ["x/cors"]
    assert [(s["case"], s["class"]) for s in skipped] == [
        ("x/fault", "emulator-faults"), ("x/store", "store-faults"),
        ("x/slow", "settings.agent_read_timeout_s"), ("x/keys", "settings.api_keys"),
        ("x/body", "settings.max_body_bytes")]
    assert "the profile does not say" in skipped[-1]["reason"]
    assert select(cases[3:4], profile, keys=2)[1] == []


def test_make_run_skips_only_what_it_cannot_honour() -> None:
    cases = load_corpus(ROOT / "parity_tests" / "cases")
    run, skipped = select(cases, StagingProfile.load(MAKE_RUN), keys=1)
    classes = {s["class"] for s in skipped}
    assert classes == {"store-control", "settings.cors_origins", "settings.api_keys",
                       "settings.agent_read_timeout_s",
                       # the slow-client wire cases need the parity lanes' short bounds
                       "settings.client_header_timeout_s", "settings.client_body_timeout_s"}
    assert all(s["reason"] for s in skipped)
    assert len(run) + len(skipped) == len(cases)


REHEARSAL = ROOT / "parity_tests" / "profiles" / "rehearsal.yaml"
RAW = {"raw": {"send": [{"head": ["GET /health HTTP/1.1", "Host: {{host}}"]}]}}


def test_a_raw_step_needs_raw_wire_by_itself_once() -> None:
    assert [n.kind for n in _case(**RAW).needs] == ["raw-wire"]
    declared = _case(needs=["raw-wire", "emulator-faults"], **RAW)
    assert [n.kind for n in declared.needs] == ["raw-wire", "emulator-faults"]
    assert _case(request={"method": "GET", "path": "/health"}).needs == ()
    steps = _case(steps=[{"request": {"method": "GET", "path": "/health"}}, RAW])
    assert [n.kind for n in steps.needs] == ["raw-wire"]


def test_raw_cases_run_against_the_servers_and_are_skipped_behind_a_proxy() -> None:
    cases = [c for c in load_corpus(ROOT / "parity_tests" / "cases")
             if c.id.startswith("wire_")]
    assert len(cases) > 10
    assert all(any(s.raw for s in c.steps) for c in cases)
    bounds = {"settings.client_header_timeout_s", "settings.client_body_timeout_s"}
    run, skipped = select(cases, StagingProfile.load(MAKE_RUN), keys=1)
    assert {s["class"] for s in skipped} == bounds  # make run's bounds are the defaults
    assert len(run) == len(cases) - len(skipped)
    for profile in (StagingProfile.load(REHEARSAL), StagingProfile()):
        run, skipped = select(cases, profile, keys=1)
        assert run == []
        assert {s["class"] for s in skipped} <= {"raw-wire"} | bounds
        assert all("raw_wire: false" in s["reason"] for s in skipped
                   if s["class"] == "raw-wire")
    run, skipped = select(cases, StagingProfile.load(MAKE_RUN), keys=1, plain_http=False)
    assert run == []
    assert all("https://" in s["reason"] for s in skipped if s["class"] not in bounds)
    # a raw case built in code, without the need, is judged the same
    bare = Case(id="x/bare", steps=cases[0].steps)
    why = StagingProfile().skip_reason(bare)
    assert bare.needs == ()
    assert why is not None
    assert why[0] == "raw-wire"
    assert StagingProfile.load(MAKE_RUN).skip_reason(bare) is None


def test_slow_client_raw_cases_can_need_the_parity_lanes_wire_bounds() -> None:
    slow = _case(needs=[{"settings": {"client_header_timeout_s": {"max": 2}}}],
                 raw={"send": ["GET /hea"], "read_timeout": 4})
    assert [n.kind for n in slow.needs] == ["setting", "raw-wire"]
    why = StagingProfile.load(MAKE_RUN).skip_reason(slow)
    assert why == ("settings.client_header_timeout_s",
                   "needs client_header_timeout_s <= 2; the targets have 10")
    fast = StagingProfile.load(MAKE_RUN).model_copy(update={
        "settings": TargetSettings(client_header_timeout_s=2)})
    assert fast.skip_reason(slow) is None


def test_skipped_raw_cases_are_listed_in_every_report(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    result = run_staging(down, down, profile=StagingProfile.load(REHEARSAL),
                         report_dir=tmp_path, case_filter="wire_headers/")
    skipped = result.summary["skipped"]
    assert skipped
    assert {s["class"] for s in skipped} == {"raw-wire"}
    assert result.summary["skipped_by_class"] == {"raw-wire": len(skipped)}
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["skipped"] == skipped
    junit = (tmp_path / "junit.xml").read_text(encoding="utf-8")
    assert junit.count("<skipped") == len(skipped)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert all(s["case"] in page for s in skipped)
    assert "raw_wire: false" in page
    terminal = capsys.readouterr().out
    assert f"skipped {len(skipped)} cases the targets cannot honour (raw-wire" in terminal
    assert f"  skipped {skipped[0]['case']}: raw steps" in terminal


# --- per-lane ids ------------------------------------------------------------------------------

STATIC = {"case": "chat-x"}


def test_literal_and_case_ids_get_the_lane_prefix() -> None:
    request = Request(method="POST", path="/api/v1/chat",
                      json={"message": "hi", "session_id": "sess-{{case}}", "user_id": "ann"})
    staged = prefix_ids(request, "bq1w2-", STATIC).render(STATIC)
    assert staged.json == {"message": "hi", "session_id": "bq1w2-sess-chat-x",
                           "user_id": "bq1w2-ann"}
    get = prefix_ids(Request(method="GET", path="/api/v1/chat/sessions/sess-{{case}}"),
                     "g1-", STATIC)
    assert get.path == "/api/v1/chat/sessions/g1-sess-chat-x"
    users = prefix_ids(Request(method="GET", path="/api/v1/users/u@x/sessions"), "g1-", STATIC)
    assert users.path == "/api/v1/users/g1-u@x/sessions"


def test_captured_refused_and_encoded_ids_are_sent_unchanged() -> None:
    assert stage_id("session_id", "{{sid}}", "b1-", STATIC) == "{{sid}}"
    for refused in ("a", "...", "a b", "x" * 101, ""):
        assert stage_id("session_id", refused, "b1-", STATIC) == refused
    assert stage_id("user_id", "u" * 129, "b1-", STATIC) == "u" * 129
    request = Request(method="GET", path="/api/v1/chat/sessions/a%20b")
    assert prefix_ids(request, "b1-", STATIC).path == request.path


def test_ids_at_their_length_limit_keep_their_exact_length() -> None:
    session, user = "s" * 100, "u" * 128
    staged_session = stage_id("session_id", session, "bq1w2-", STATIC)
    staged_user = stage_id("user_id", user, "bq1w2-", STATIC)
    assert (len(staged_session), len(staged_user)) == (100, 128)
    assert staged_session.startswith("bq1w2-")
    assert staged_user.startswith("bq1w2-")
    assert valid_id("session_id", staged_session)
    assert valid_id("user_id", staged_user)


def test_raw_bodies_keep_their_bytes_but_the_ids() -> None:
    body = '{"message": "\\u00e9", "session_id" : "s-{{case}}", "user_id": "a\\u0041"}'
    staged = prefix_ids(Request(method="POST", path="/api/v1/chat", body=body), "b1-", STATIC)
    assert staged.body == ('{"message": "\\u00e9", "session_id" : "b1-s-chat-x", '
                           '"user_id": "a\\u0041"}')


def test_prefixes_differ_per_lane_and_run_and_alias_back() -> None:
    one, two = lane_prefixes(["blue", "green"]), lane_prefixes(["blue", "green"])
    assert one["blue"] != one["green"]
    assert one != two
    assert all(len(p) <= 7 for p in one.values())
    blue = unprefix({"session_id": one["blue"] + "s-1", one["blue"] + "k": [one["blue"]]},
                    one["blue"])
    green = unprefix({"session_id": one["green"] + "s-1", one["green"] + "k": [one["green"]]},
                     one["green"])
    assert blue == green == {"session_id": "<lane>-s-1", "<lane>-k": ["<lane>-"]}


def test_a_real_agent_is_compared_by_type() -> None:
    chat = agent_shapes("/api/v1/chat", {"body": {"response": "Hi!", "tokens_used": 7,
                                                  "session_id": "s"}})
    assert chat["body"] == {"response": "<text>", "tokens_used": "<integer>", "session_id": "s"}
    session = agent_shapes("/api/v1/chat/sessions/{session_id}", {"body": {"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}})
    assert session["body"]["messages"] == [{"role": "user", "content": "q"},
                                           {"role": "assistant", "content": "<blank text>"}]


def test_pacer_counts_per_window() -> None:
    pacer = Pacer(requests=100, window_s=60)
    assert pacer.budget == 90
    for _ in range(45):
        assert pacer.take(2, now=120.0) == 0.0
    assert pacer.count == 90
    assert pacer.take(2, now=180.0) == 0.0
    assert pacer.count == 2


# --- the verdict -------------------------------------------------------------------------------

def test_a_target_that_is_down_is_a_failed_verdict(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    result = run_staging(down, down, profile=StagingProfile.load(MAKE_RUN),
                         report_dir=tmp_path, case_filter="health/")
    assert not result.passed
    assert any("unreachable" in p for p in result.summary["errors_detail"])
    assert json.loads((tmp_path / "summary.json").read_text())["passed"] is False
    assert result.report_dir == tmp_path
    assert (tmp_path / "report.html").exists()


def test_bad_arguments_raise_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="blue_url"):
        run_staging("localhost:1", "http://x", report_dir=tmp_path)
    with pytest.raises(ValueError, match="generated"):
        run_staging("http://a", "http://b", generated=-1, report_dir=tmp_path)


def test_terminal_names_first_failures_as_json_in_unwrapped_lines(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    request = Request(method="GET", path="/health")
    case = Case(id="x/long", steps=(Step(name="s", request=request),))
    long_value = "v" * 300
    step = StepResult(case.id, "s", 0, "GET", "/health", "/health", {"blue": request},
                      {"blue": LaneResponse(200, {}, b"{}", 1.0)},
                      differences=[Delta("body.status", long_value, None)])
    results = [CaseResult(case, [step])]
    summary = report.summarize(results, {"lanes": ["blue", "green"], "mode": "staging",
                                         "duration_s": 1.0})
    out = StringIO()
    report.print_summary(summary, Console(file=out, soft_wrap=True, width=200, no_color=True))
    lines = out.getvalue().splitlines()
    assert f'  x/long step s: body.status blue="{long_value}" other=null' in lines

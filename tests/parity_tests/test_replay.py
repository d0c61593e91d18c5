"""Capture in both colors, then replay: the cases reproduce what was sent, and no key leaks."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from parity_tests.harness.model import ABSENT, Case
from parity_tests.harness.replay import load_capture, read_capture
from tests.conftest import COLORS, ColorClient, unique

pytestmark = pytest.mark.integration
KEY = "k1"
CHAT = "/api/v1/chat"
NOT_UTF8 = b'{"message": "\xff\xfe"}'


def traffic(user: str) -> list[dict[str, Any]]:
    """The requests sent to each color: what a replayed case must give back."""
    auth = {"X-API-Key": KEY}
    json_ct = {"Content-Type": "application/json"}
    return [
        {"method": "GET", "path": "/health", "query": [("b", "2"), ("a", "1"), ("b", "")],
         "headers": {"X-Request-ID": "replay-health-1"}, "body": None, "auth": False},
        {"method": "POST", "path": CHAT, "query": [], "headers": {**auth, **json_ct},
         "body": json.dumps({"message": "hello from the capture test", "user_id": user}),
         "auth": True},
        {"method": "POST", "path": CHAT, "query": [], "headers": {**auth, **json_ct},
         "body": '{"message": ', "auth": True},  # malformed JSON: 400
        {"method": "GET", "path": f"/api/v1/users/{user}/sessions",
         "query": [("limit", "5")], "headers": {**auth, "Cookie": f"s={KEY}",
                                                 "Authorization": f"Bearer {KEY}",
                                                 "X-Session-Token": "tok",
                                                 "X-Note": f"key is {KEY}"},
         "body": None, "auth": True},
        {"method": "GET", "path": f"/api/v1/users/{user}/sessions", "query": [],
         "headers": {}, "body": None, "auth": False},  # no key: 401
        {"method": "POST", "path": CHAT, "query": [], "headers": {**auth, **json_ct},
         "body": NOT_UTF8, "auth": True},  # not UTF-8: captured as base64, skipped on replay
    ]


def send(client: ColorClient, req: dict[str, Any]) -> int:
    body = req["body"]
    content = body.encode() if isinstance(body, str) else body
    url = req["path"] + ("?" + urlencode(req["query"]) if req["query"] else "")
    resp = client.request(req["method"], url, headers=req["headers"], content=content)
    return int(resp.status_code)


@pytest.fixture(scope="module")
def user() -> str:
    return unique("replayuser")


@pytest.fixture
def captured(make_client: Callable[..., ColorClient], tmp_path: Path,
             user: str) -> dict[str, tuple[Path, list[int]]]:
    out = {}
    for color in COLORS:
        path = tmp_path / f"{color}.jsonl"
        client = make_client(color, capture_path=str(path), api_keys=KEY)
        out[color] = (path, [send(client, req) for req in traffic(user)])
        if color == "green":  # green writes its lines from a thread (no file I/O on the loop)
            assert client.app.state.runtime.capture.flush()
    return out


def test_both_colors_capture_the_same_lines(captured: dict[str, tuple[Path, list[int]]]
                                            ) -> None:
    (blue_path, blue_status), (green_path, green_status) = captured["blue"], captured["green"]
    assert blue_status == green_status == [200, 200, 400, 200, 401, 400]
    blue = [json.loads(line) for line in blue_path.read_text().splitlines()]
    green = [json.loads(line) for line in green_path.read_text().splitlines()]
    assert len(blue) == len(green) == len(blue_status)
    for b, g in zip(blue, green, strict=True):
        assert b.keys() == g.keys()  # identical field sets
        assert b["headers"].keys() == g["headers"].keys()
        assert b["response_headers"].keys() == g["response_headers"].keys()
        assert (b["color"], g["color"]) == ("blue", "green")
        for name in ("method", "path", "query", "headers", "body", "body_size",
                     "body_truncated", "status"):
            assert b[name] == g[name], name
    assert blue[0]["query"] == [["b", "2"], ["a", "1"], ["b", ""]]
    assert blue[0]["request_id"] == "replay-health-1"
    assert blue[3]["headers"]["x-api-key"] == "[REDACTED]"
    assert blue[3]["headers"]["authorization"] == "[REDACTED]"
    assert blue[3]["headers"]["cookie"] == "[REDACTED]"
    assert blue[3]["headers"]["x-session-token"] == "[REDACTED]"
    assert blue[3]["headers"]["x-note"] == "key is [REDACTED]"
    assert base64.b64decode(blue[5]["body"]["base64"]) == NOT_UTF8


def test_the_key_is_never_written(captured: dict[str, tuple[Path, list[int]]]) -> None:
    for path, _ in captured.values():
        raw = path.read_bytes()
        assert raw  # something was captured
        assert KEY.encode() not in raw
        assert base64.b64encode(KEY.encode()) not in raw


def _as_sent(case: Case) -> dict[str, Any]:
    (step,) = case.steps
    req = step.request
    assert req.json is ABSENT
    assert step.expect_status is None
    return {"method": req.method, "path": req.path, "query": req.query, "body": req.body,
            "auth": req.auth}


def test_replay_reproduces_the_requests(captured: dict[str, tuple[Path, list[int]]],
                                        user: str, caplog: pytest.LogCaptureFixture) -> None:
    sent = traffic(user)
    for path, _ in captured.values():
        with caplog.at_level(logging.WARNING, logger="parity.replay"):
            cases = load_capture(path)
        assert "1 non-UTF-8 bodies" in caplog.text
        result = read_capture(path)
        assert result.skipped == [(6, "body is not UTF-8: Request.body cannot carry it")]
        assert (result.malformed, result.non_utf8, result.truncated) == (0, 1, 0)
        assert [c.id for c in cases] == [c.id for c in result.cases]
        assert [_as_sent(c) for c in cases] == [
            {k: req[k] for k in ("method", "path", "query", "body", "auth")}
            for req in sent[:5]]
        assert cases[1].id == "replay/00002-POST-api-v1-chat"
        assert cases[3].id.startswith("replay/00004-GET-api-v1-users-")
        for case in cases:
            assert case.source == str(path)
            assert case.tags == ("replay",)
            headers = case.steps[0].request.headers
            assert not {"x-api-key", "authorization", "cookie", "x-session-token", "host",
                        "content-length", "user-agent", "connection"} & set(headers)
            assert "accept-encoding" in headers
        assert cases[0].steps[0].request.headers["x-request-id"] == "replay-health-1"
        assert cases[1].steps[0].request.headers["content-type"] == "application/json"
        assert cases[3].steps[0].request.headers["x-note"] == "key is [REDACTED]"


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    good = {"method": "post", "path": "/api/v1/chat", "query": [["a", "{{x}}"]],
            "headers": {"X-API-Key": "[REDACTED]", "Content-Type": "application/json",
                        "Host": "h"},
            "body": {"base64": base64.b64encode("{\"message\": \"héllo\"}".encode()).decode()},
            "body_truncated": True, "status": 200}
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join([
        json.dumps(good), "", "not json", "[1, 2]", json.dumps({"path": "/x"}),
        json.dumps({**good, "path": "relative"}), json.dumps({**good, "query": [["a"]]}),
        json.dumps({**good, "headers": {"a": 1}}), json.dumps({**good, "body": {"base64": "!"}}),
        json.dumps({**good, "body": 3}), '{"method": "GET", "pa',
    ]))
    result = read_capture(path)
    assert [n for n, _ in result.skipped] == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert (result.malformed, result.non_utf8, result.truncated) == (9, 0, 1)
    (case,) = result.cases
    req = case.steps[0].request
    assert case.id == "replay/00001-POST-api-v1-chat"
    assert (req.method, req.body, req.auth) == ("POST", '{"message": "héllo"}', True)
    assert req.headers == {"content-type": "application/json"}
    # a captured "{{x}}" renders back to itself
    assert req.render({**case.variables, "case": "c"}).query == [("a", "{{x}}")]

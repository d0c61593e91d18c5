"""Blind spots of the parity harness, each closed as a class: a green with one planted bug of
that class must be reported at the right case and field path (the way of
``test_harness_catches_bugs.py``: in-process lanes on devstack, the real runner, side-effect
reads and comparison), and green as shipped must report nothing on the same cases."""

from __future__ import annotations

import contextlib
import gzip
import json
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parity_tests.harness.model import Case, case_from_dict, load_file
from parity_tests.harness.runner import CaseResult, Runner
from shared.contracts import MESSAGE_MAX_CHARS
from shared.settings import Settings
from tests.parity_tests.test_harness_catches_bugs import (
    NOISE,
    Asgi,
    Lanes,
    findings,
    rewrite,
)

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("parity-self-test")]
CASES = Path("parity_tests/cases")
GZIP_MIN_BYTES = int(Settings.model_fields["gzip_min_bytes"].default)


def run(built: Lanes, cases: list[Case]) -> list[CaseResult]:
    return Runner(built.lanes, NOISE, [], built.effects).run(cases)


def corpus_file(name: str, *names: str) -> list[Case]:
    cases = load_file(CASES / name)
    return [c for c in cases if not names or c.id.split("/", 1)[1] in names]


# --- planted bugs --------------------------------------------------------------------------

def ignores_expiry(runtime: Any) -> None:
    """Green reads an expired item as live (its expires_at seen as a day ahead)."""
    execute = runtime.execute

    async def wrong(call: Any) -> Any:
        if getattr(call, "operation", "") == "query":  # the list's expiry filter, dropped
            call.params["ExpressionAttributeValues"][":now"] = {"N": "0"}
        out = await execute(call)
        items = [out.get("Item"), out.get("Attributes")] if isinstance(out, dict) else []
        items += list(out.get("Items", [])) if isinstance(out, dict) else []
        for item in items:
            if item and "expires_at" in item:
                item["expires_at"] = {"N": str(int(time.time()) + 86_400)}
        return out

    runtime.execute = wrong


def unconditional_writes(runtime: Any) -> None:
    """Green writes sessions without the version condition (a lost update)."""
    execute = runtime.execute

    async def wrong(call: Any) -> Any:
        if getattr(call, "operation", "") == "put_item":
            call.params.pop("ConditionExpression", None)
            call.params.pop("ExpressionAttributeValues", None)
            call.params.pop("ExpressionAttributeNames", None)
        return await execute(call)

    runtime.execute = wrong


def normalises_message(app: Asgi) -> Asgi:
    """Green strips and NFC-normalises the chat message before anything else sees it."""
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/api/v1/chat":
            await app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            doc = json.loads(body)
            doc["message"] = unicodedata.normalize("NFC", doc["message"].strip())
            body = json.dumps(doc, ensure_ascii=False).encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return dict(await receive())
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)

    return wrapped


def offset_zone(start: dict[str, Any], body: list[bytes]) -> None:
    """Green writes its answer times with ``+00:00`` instead of ``Z`` (same instant)."""
    if start["scope"]["path"] == "/api/v1/chat" and start["status"] == 200:
        body[:] = [b"".join(body).replace(b'Z"', b'+00:00"')]


def extra_field(start: dict[str, Any], body: list[bytes]) -> None:
    """Green adds a field the contract does not have."""
    if start["scope"]["path"] == "/api/v1/chat" and start["status"] == 200:
        doc = json.loads(b"".join(body))
        doc["model"] = "claude"
        body[:] = [json.dumps(doc).encode()]


# --- 2. time -------------------------------------------------------------------------------

TIME = ("read-an-expired-session", "chat-on-an-expired-session", "list-with-expired-sessions",
        "delete-an-expired-session")


def test_expired_sessions_agree_as_shipped(lanes: Callable[..., Lanes]) -> None:
    assert findings(run(lanes(), corpus_file("time.yaml", *TIME))) == {}


def test_a_green_that_ignores_expiry_is_caught(lanes: Callable[..., Lanes]) -> None:
    found = findings(run(lanes(patch_runtime=ignores_expiry), corpus_file("time.yaml", *TIME)))
    assert "status" in found[("time/read-an-expired-session", "get")]
    assert "body.sessions.0.session_id" in found[("time/list-with-expired-sessions", "list")]
    assert "status" in found[("time/delete-an-expired-session", "delete")]
    chat = found[("time/chat-on-an-expired-session", "chat")]
    assert any(p.startswith("dynamodb.sessions.") and p.endswith("message_count")
               for p in chat)


# --- 3. two requests at once ---------------------------------------------------------------

CONCURRENT = ("two-chats-at-once-on-a-new-session",
              "three-chats-at-once-on-an-existing-session")


def test_concurrent_chats_agree_as_shipped(lanes: Callable[..., Lanes]) -> None:
    results = run(lanes(), corpus_file("concurrency.yaml", *CONCURRENT))
    assert findings(results) == {}
    step = results[0].steps[0]
    assert step.step == "both"
    assert step.violations == []


def test_a_lost_update_is_caught(lanes: Callable[..., Lanes]) -> None:
    results = run(lanes(patch_runtime=unconditional_writes),
                  corpus_file("concurrency.yaml", *CONCURRENT))
    found = findings(results)
    both = found[("concurrency/two-chats-at-once-on-a-new-session", "both")]
    assert "answers.200" in both
    assert "answers.409 SESSION_CONFLICT" in both
    assert any(p.startswith("contract:green: invariant: session sess-") for p in both)
    three = found[("concurrency/three-chats-at-once-on-an-existing-session", "three")]
    assert any("invariant" in p and "for 3 chats answered 200" in p for p in three)


# --- 4. what green sends upstream ----------------------------------------------------------

def test_a_green_that_normalises_the_message_is_caught(lanes: Callable[..., Lanes]) -> None:
    cases = corpus_file("upstream_text.yaml")
    assert findings(run(lanes(), cases)) == {}
    found = findings(run(lanes(wrap=normalises_message), cases))
    for name in ("leading-and-trailing-whitespace", "crlf-line-endings", "unicode-nfd",
                 "leading-and-trailing-newlines"):
        assert "agent_calls.0.input_text" in found[(f"upstream_text/{name}", name)], name
    assert ("upstream_text/unicode-nfc", "unicode-nfc") not in found  # NFC already


# --- 6. noise that hides a format ----------------------------------------------------------

LIFECYCLE = case_from_dict({"name": "chat", "request": {
    "method": "POST", "path": "/api/v1/chat",
    "json": {"message": "hello", "session_id": "sess-{{case}}"}}}, "selftest.yaml", 0)


def test_a_timestamp_of_another_format_is_caught(lanes: Callable[..., Lanes]) -> None:
    found = findings(run(lanes(wrap=lambda app: rewrite(app, offset_zone)), [LIFECYCLE]))
    assert found == {("selftest/chat", "chat"): ["body.timestamp"]}


# --- 8. a closed contract ------------------------------------------------------------------

def test_an_extra_field_is_a_contract_violation(lanes: Callable[..., Lanes]) -> None:
    found = findings(run(lanes(wrap=lambda app: rewrite(app, extra_field)), [LIFECYCLE]))
    paths = found[("selftest/chat", "chat")]
    assert "body.model" in paths
    assert any(p.startswith("contract:green: body does not match ChatResponse: ('model',)")
               for p in paths)


# --- 1. limits at their edges --------------------------------------------------------------

def limit_cases_named(*names: str) -> list[Case]:
    from parity_tests.harness.generate import limit_cases

    return [c for c in limit_cases() if c.id.split("/", 1)[1] in names]


def test_limit_cases_follow_their_definitions() -> None:
    """Read from the definitions, not written down: another setting, other cases."""
    from parity_tests.harness.generate import limit_cases
    from shared import web
    from shared.contracts import MESSAGE_MAX_CHARS

    ids = {c.id for c in limit_cases()}
    assert {f"limits/message-{MESSAGE_MAX_CHARS}-chars-at",
            f"limits/message-{MESSAGE_MAX_CHARS + 1}-chars-past",
            f"limits/header-line-{web.MAX_HEADER_LINE_BYTES + 1}-bytes-past",
            "limits/list-limit-100", "limits/list-limit-101", "limits/gzip-at-min-bytes",
            "limits/body-past-max-body-bytes"} <= ids
    other = {c.id: c for c in limit_cases({"SESSION_HISTORY_LIMIT": "6",
                                           "GZIP_MIN_BYTES": "1500"})}
    assert len(other["limits/history-past-limit-6"].steps) == 4 + 1
    assert "limits/gzip-at-min-bytes" in other


def message_limit_off_by_one(app: Asgi) -> Asgi:
    """Green counts a message one character longer than it is (its limit is off by one)."""
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/api/v1/chat":
            await app(scope, receive, send)
            return
        message = await receive()
        body = message.get("body", b"")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            doc = json.loads(body)
            if len(doc["message"]) == MESSAGE_MAX_CHARS:
                doc["message"] += "!"
                body = json.dumps(doc).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)

    return wrapped


def gzip_threshold_off_by_one(start: dict[str, Any], body: list[bytes]) -> None:
    """Green gzips only bodies over GZIP_MIN_BYTES (not at it)."""
    headers = dict(start["headers"])
    raw = b"".join(body)
    if headers.get(b"content-encoding") == b"gzip":
        plain = gzip.decompress(raw)
        if len(plain) == GZIP_MIN_BYTES:
            start["headers"] = [(k, v) for k, v in start["headers"]
                                if k not in (b"content-encoding", b"vary")]
            body[:] = [plain]


def test_a_limit_off_by_one_is_caught(lanes: Callable[..., Lanes]) -> None:
    names = ("message-4000-chars-at", "message-4001-chars-past", "gzip-at-min-bytes",
             "gzip-below-min-bytes")
    assert findings(run(lanes(), limit_cases_named(*names))) == {}
    found = findings(run(lanes(wrap=lambda app: rewrite(
        message_limit_off_by_one(app), gzip_threshold_off_by_one)), limit_cases_named(*names)))
    assert "status" in found[("limits/message-4000-chars-at", "chat")]
    assert "headers.content-encoding" in found[("limits/gzip-at-min-bytes", "read-gzip")]
    assert set(found) == {("limits/message-4000-chars-at", "chat"),
                          ("limits/gzip-at-min-bytes", "read-gzip")}


# --- 5. the shape of a metric --------------------------------------------------------------

def datum_changed(runtime: Any) -> None:
    """Green sends its latency at high resolution with one more dimension (the same counts)."""
    buffer = runtime.flusher.telemetry.buffer
    call_for = buffer.call_for

    def changed(batch: Any) -> Any:
        call = call_for(batch)
        for datum in call.params["MetricData"]:
            if datum["MetricName"] == "RequestLatency":
                datum["StorageResolution"] = 1
                datum["Dimensions"] = [*datum["Dimensions"], {"Name": "Color", "Value": "green"}]
        return call

    buffer.call_for = changed


def metric_shapes(lanes: Callable[..., Lanes], monkeypatch: pytest.MonkeyPatch,
                  stack: Any, **kwargs: Any) -> set[str]:
    from parity_tests.harness.cli import cloudwatch_deltas
    from parity_tests.harness.lanes import MetricRecorder, cloudwatch_totals

    recorder = MetricRecorder(stack.moto_url).start()
    try:
        settings = stack.settings
        monkeypatch.setattr(stack, "settings", lambda **kw: settings(
            **{"cloudwatch_endpoint_url": recorder.url, **kw}))
        built = lanes(**kwargs)
        results = run(built, [LIFECYCLE])
        for flush in built.flushers:
            flush()
        assert findings(results) == {}
        return {d["path"] for d in cloudwatch_deltas(cloudwatch_totals(built.lanes, recorder))}
    finally:
        recorder.stop()


def test_a_metric_of_another_shape_is_caught(lanes: Callable[..., Lanes],
                                             monkeypatch: pytest.MonkeyPatch,
                                             stack: Any) -> None:
    assert metric_shapes(lanes, monkeypatch, stack) == set()
    paths = metric_shapes(lanes, monkeypatch, stack, patch_runtime=datum_changed)
    chat = "Endpoint=/api/v1/chat"
    assert f"cloudwatch.datum:RequestLatency|{chat}|Milliseconds|60|Values+Counts" in paths
    assert (f"cloudwatch.datum:RequestLatency|{chat},Color=green|Milliseconds|1|Values+Counts"
            in paths)
    assert not any("RequestCount" in p for p in paths)  # the counts are the same

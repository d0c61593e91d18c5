"""The InvokeAgent emulator over the wire, with the real SDKs: boto3 and aioboto3."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aioboto3
import aiohttp
import boto3
import httpx
import pytest
import urllib3.exceptions
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer, ParserError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EventStreamError,
    ReadTimeoutError,
)

from devstack.agent_emulator import (
    ERROR_FAULTS,
    FAULT_KINDS,
    STREAM_FAULTS,
    AgentEmulator,
    parse_markers,
    reply_for,
    strip_markers,
    usage_for,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FAULT_TIMEOUT_S = 4.0
READ_TIMEOUT_S = 1.0
AGENT, ALIAS = "AGENT12345", "ALIAS1"
CREDS = {"region_name": "us-east-1", "aws_access_key_id": "testing",
         "aws_secret_access_key": "testing"}
T = TypeVar("T")


def sdk_config(read_timeout: float = READ_TIMEOUT_S) -> Config:
    return Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout,
                  connect_timeout=2)


def boto3_client(url: str, read_timeout: float = READ_TIMEOUT_S) -> Any:
    return boto3.client("bedrock-agent-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=sdk_config(read_timeout))


@pytest.fixture(scope="module")
def emulator() -> Iterator[AgentEmulator]:
    with AgentEmulator(fault_timeout_s=FAULT_TIMEOUT_S) as emu:
        yield emu


@pytest.fixture(scope="module")
def sync_client(emulator: AgentEmulator) -> Iterator[Any]:
    client = boto3_client(emulator.url)
    yield client
    client.close()


def new_session() -> str:
    return f"sess-{uuid.uuid4().hex[:16]}"


def invoke_sync(client: Any, text: str, events: list[dict[str, Any]] | None = None,
                session_id: str | None = None, **kwargs: Any) -> tuple[dict[str, Any], list[Any]]:
    """Invoke and read the whole stream into *events* (kept if iterating raises)."""
    events = [] if events is None else events
    resp = client.invoke_agent(agentId=AGENT, agentAliasId=ALIAS,
                               sessionId=session_id or new_session(), inputText=text, **kwargs)
    try:
        events.extend(resp["completion"])
    finally:
        resp["completion"].close()
    return resp, events


async def invoke_async(client: Any, text: str, events: list[dict[str, Any]] | None = None,
                       session_id: str | None = None,
                       **kwargs: Any) -> tuple[dict[str, Any], list[Any]]:
    events = [] if events is None else events
    resp = await client.invoke_agent(agentId=AGENT, agentAliasId=ALIAS,
                                     sessionId=session_id or new_session(), inputText=text,
                                     **kwargs)
    try:
        async for event in resp["completion"]:
            events.append(event)
    finally:
        resp["completion"].close()
    return resp, events


def with_async_client(url: str, body: Callable[[Any], Awaitable[T]],
                      read_timeout: float = READ_TIMEOUT_S) -> T:
    async def run() -> T:
        session = aioboto3.Session()
        async with session.client("bedrock-agent-runtime", endpoint_url=url,
                                  config=sdk_config(read_timeout), **CREDS) as client:
            return await body(client)
    return asyncio.run(run())


def text_of(events: list[dict[str, Any]]) -> str:
    return b"".join(e["chunk"]["bytes"] for e in events if "chunk" in e).decode("utf-8")


def chunks_of(events: list[dict[str, Any]]) -> list[bytes]:
    return [e["chunk"]["bytes"] for e in events if "chunk" in e]


# --- the pure reply -----------------------------------------------------------------------------

def test_reply_for_is_deterministic_and_input_dependent() -> None:
    assert reply_for("hello") == reply_for("hello")
    assert reply_for("hello") != reply_for("hello!")
    assert reply_for("hello") != reply_for("Hello")
    assert "hello" in reply_for("hello")
    long = "x" * 500
    assert "x" * 200 in reply_for(long)
    assert "x" * 201 not in reply_for(long)
    assert "[[" not in reply_for("hi [[fault:throttle]] [[latency:5]] [[chunks:2]]")
    assert strip_markers("a [[chunks:2]]b") == "a b"
    for odd in ("", " ", "\x00", "\U0001f600\u200d\U0001f4bb", "\u05e9\u05dc\u05d5\u05dd",
                "\ud800 lone surrogate", "\u202e\u202d"):
        reply_for(odd).encode("utf-8")  # always valid UTF-8
    assert usage_for("one two  three") == (3, len(reply_for("one two  three").split()))


def test_parse_markers() -> None:
    markers = parse_markers("x [[ fault : Throttle ]] [[latency:250]] [[chunks:4]] [[fault:x]]")
    assert (markers.fault, markers.latency_ms, markers.chunks) == ("throttle", 250, 4)
    assert parse_markers("no markers").fault is None
    for bad in ("[[latency:-1]]", "[[latency:abc]]", "[[chunks:0]]", "[[chunks:10001]]"):
        with pytest.raises(ValueError):
            parse_markers(bad)


# --- replies through both SDKs ------------------------------------------------------------------

def test_reply_boto3(sync_client: Any) -> None:
    session_id = new_session()
    resp, events = invoke_sync(sync_client, "hello over boto3", session_id=session_id)
    assert len(events) == 1  # one final chunk, as the service sends by default
    assert text_of(events) == reply_for("hello over boto3")
    assert resp["sessionId"] == session_id
    assert resp["contentType"] == "application/json"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["ResponseMetadata"]["RequestId"]


def test_reply_aioboto3(emulator: AgentEmulator) -> None:
    session_id = new_session()

    async def body(client: Any) -> tuple[dict[str, Any], list[Any]]:
        return await invoke_async(client, "hello over aioboto3", session_id=session_id)

    resp, events = with_async_client(emulator.url, body)
    assert len(events) == 1
    assert text_of(events) == reply_for("hello over aioboto3")
    assert resp["sessionId"] == session_id
    assert resp["contentType"] == "application/json"
    assert resp["ResponseMetadata"]["RequestId"]


UNICODE_INPUTS = ["\U0001f600 emoji \U0001f469\u200d\U0001f4bb",
                  "\u05e9\u05dc\u05d5\u05dd RTL \u202eabc",
                  "NUL \x00 inside", "  ", ""]


def test_unicode_inputs_both_sdks(sync_client: Any, emulator: AgentEmulator) -> None:
    for text in UNICODE_INPUTS:
        _, events = invoke_sync(sync_client, text)
        assert text_of(events) == reply_for(text)

    async def body(client: Any) -> list[str]:
        return [text_of((await invoke_async(client, text))[1]) for text in UNICODE_INPUTS]

    assert with_async_client(emulator.url, body) == [reply_for(t) for t in UNICODE_INPUTS]


def test_lone_surrogate_over_raw_http(emulator: AgentEmulator) -> None:
    # the SDKs cannot encode a lone surrogate; JSON can carry one as an escape
    body = b'{"inputText": "bad \\ud800 half"}'
    resp = httpx.post(f"{emulator.url}/agents/A/agentAliases/B/sessions/s1/text", content=body)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/vnd.amazon.eventstream"
    buffer = EventStreamBuffer()
    buffer.add_data(resp.content)
    (message,) = list(buffer)
    text = base64.b64decode(json.loads(message.payload)["bytes"]).decode("utf-8")
    assert text == reply_for("bad \ud800 half")


@pytest.mark.parametrize(("text", "kwargs", "count"), [
    ("[[chunks:4]] split me please", {}, 4),
    ("[[chunks:1]] one piece", {}, 1),
    ("streamed", {"streamingConfigurations": {"streamFinalResponse": True}}, 3),
    ("[[chunks:5]] marker wins", {"streamingConfigurations": {"streamFinalResponse": True}}, 5),
    ("[[chunks:10000]] ab", {}, len(reply_for("[[chunks:10000]] ab"))),  # one per character
])
def test_chunks_join_both_sdks(sync_client: Any, emulator: AgentEmulator, text: str,
                               kwargs: dict[str, Any], count: int) -> None:
    _, events = invoke_sync(sync_client, text, **kwargs)
    assert len(chunks_of(events)) == count
    assert all(chunks_of(events))  # no empty chunk
    assert text_of(events) == reply_for(text)

    async def body(client: Any) -> list[Any]:
        return (await invoke_async(client, text, **kwargs))[1]

    async_events = with_async_client(emulator.url, body)
    assert chunks_of(async_events) == chunks_of(events)


def test_chunks_are_separate_http_chunks(emulator: AgentEmulator) -> None:
    """Each chunk event is its own ASGI body message, hence its own HTTP/1.1 chunk."""
    payload = json.dumps({"inputText": "[[chunks:3]] abcdefghijkl", "enableTrace": True})
    request = (f"POST /agents/A/agentAliases/B/sessions/s1/text HTTP/1.1\r\n"
               f"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n{payload}")
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as sock:
        sock.sendall(request.encode())
        raw = b""
        while data := sock.recv(65536):
            raw += data
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    sizes = []
    while True:
        line, _, body = body.partition(b"\r\n")
        size = int(line, 16)
        if size == 0:
            break
        sizes.append(size)
        body = body[size + 2:]
    assert len(sizes) == 4  # the trace event, then three chunk events


def test_trace_usage_both_sdks(sync_client: Any, emulator: AgentEmulator) -> None:
    text = "how many tokens is this [[chunks:2]]"
    session_id = new_session()
    expected_usage = dict(zip(("inputTokens", "outputTokens"), usage_for(text), strict=True))

    def check(events: list[dict[str, Any]]) -> None:
        assert "trace" in events[0]
        part = events[0]["trace"]
        assert (part["agentId"], part["agentAliasId"], part["sessionId"]) == (
            AGENT, ALIAS, session_id)
        output = part["trace"]["orchestrationTrace"]["modelInvocationOutput"]
        assert output["metadata"]["usage"] == expected_usage
        assert output["traceId"]
        assert text_of(events) == reply_for(text)

    _, events = invoke_sync(sync_client, text, session_id=session_id, enableTrace=True)
    check(events)

    async def body(client: Any) -> list[Any]:
        return (await invoke_async(client, text, session_id=session_id, enableTrace=True))[1]

    check(with_async_client(emulator.url, body))
    _, plain = invoke_sync(sync_client, text)
    assert not any("trace" in e for e in plain)


# --- faults -------------------------------------------------------------------------------------

def test_fault_tables_cover_the_brief() -> None:
    assert set(FAULT_KINDS) >= {
        "throttle", "validation", "access-denied", "not-found", "conflict", "dependency",
        "quota", "internal", "bad-gateway", "unavailable", "timeout", "midstream",
        "midstream-throttle", "malformed", "empty", "stall", "disconnect"}
    assert set(ERROR_FAULTS).isdisjoint(STREAM_FAULTS)


ERROR_CASES = sorted((kind, status, code) for kind, (status, code) in ERROR_FAULTS.items())
MODELED = {"ThrottlingException", "ValidationException", "AccessDeniedException",
           "ResourceNotFoundException", "ConflictException", "DependencyFailedException",
           "ModelNotReadyException", "ServiceQuotaExceededException", "InternalServerException",
           "BadGatewayException"}


def check_error(client: Any, exc: ClientError, status: int, code: str) -> None:
    assert exc.response["Error"]["Code"] == code
    assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert exc.response["ResponseMetadata"]["RequestId"]
    if code in MODELED:
        assert isinstance(exc, getattr(client.exceptions, code))
    else:
        assert type(exc) is ClientError


@pytest.mark.parametrize(("kind", "status", "code"), ERROR_CASES)
def test_error_faults_boto3(sync_client: Any, kind: str, status: int, code: str) -> None:
    with pytest.raises(ClientError) as caught:
        invoke_sync(sync_client, f"please [[fault:{kind}]]")
    check_error(sync_client, caught.value, status, code)


@pytest.mark.parametrize(("kind", "status", "code"), ERROR_CASES)
def test_error_faults_aioboto3(emulator: AgentEmulator, kind: str, status: int,
                               code: str) -> None:
    async def body(client: Any) -> None:
        with pytest.raises(ClientError) as caught:
            await invoke_async(client, f"please [[fault:{kind}]]")
        check_error(client, caught.value, status, code)

    with_async_client(emulator.url, body)


def test_unknown_fault_is_a_validation_error(sync_client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        invoke_sync(sync_client, "[[fault:no-such-fault]]")
    check_error(sync_client, caught.value, 400, "ValidationException")
    assert "no-such-fault" in caught.value.response["Error"]["Message"]
    assert "unknown" in caught.value.response["Error"]["Message"].lower()


def check_stream_fault(kind: str, events: list[Any], exc: BaseException | None,
                       sdk: str) -> None:
    text = f"stream fault [[fault:{kind}]]"
    first_half = reply_for(text)[:len(reply_for(text)) // 2]
    if kind == "empty":
        assert exc is None
        assert events == []
        return
    assert exc is not None, f"{kind} raised nothing"
    if kind in ("midstream", "midstream-throttle"):
        assert isinstance(exc, EventStreamError)
        expected = "internalServerException" if kind == "midstream" else "throttlingException"
        assert exc.response["Error"]["Code"] == expected
        assert text_of(events) == first_half
    elif kind == "malformed":
        assert isinstance(exc, ChecksumMismatch)
        assert isinstance(exc, ParserError)
        assert not isinstance(exc, BotoCoreError | ClientError)
        assert text_of(events) == first_half
    elif kind == "timeout":
        assert isinstance(exc, ReadTimeoutError)
        assert events == []
    elif kind == "stall":
        if sdk == "boto3":  # urllib3's own, not wrapped by botocore
            assert isinstance(exc, urllib3.exceptions.ReadTimeoutError)
            assert not isinstance(exc, BotoCoreError | TimeoutError)
        else:  # aiohttp's own, not wrapped by aiobotocore
            assert isinstance(exc, aiohttp.ServerTimeoutError)
            assert isinstance(exc, TimeoutError)
        assert text_of(events) == first_half
    elif kind == "disconnect":
        assert isinstance(exc, ConnectionClosedError)
        assert events == []
    else:  # pragma: no cover
        pytest.fail(f"no expectation for {kind}")


@pytest.mark.parametrize("kind", sorted(STREAM_FAULTS))
def test_stream_faults_boto3(sync_client: Any, kind: str) -> None:
    events: list[Any] = []
    exc: BaseException | None = None
    try:
        invoke_sync(sync_client, f"stream fault [[fault:{kind}]]", events)
    except Exception as caught:
        exc = caught
    check_stream_fault(kind, events, exc, "boto3")


@pytest.mark.parametrize("kind", sorted(STREAM_FAULTS))
def test_stream_faults_aioboto3(emulator: AgentEmulator, kind: str) -> None:
    events: list[Any] = []

    async def body(client: Any) -> BaseException | None:
        try:
            await invoke_async(client, f"stream fault [[fault:{kind}]]", events)
        except Exception as caught:
            return caught
        return None

    check_stream_fault(kind, events, with_async_client(emulator.url, body), "aioboto3")


def test_client_still_works_after_faults(sync_client: Any) -> None:
    for kind in ("disconnect", "malformed", "throttle"):
        with pytest.raises(Exception):  # noqa: B017 - any failure; the next call must work
            invoke_sync(sync_client, f"[[fault:{kind}]]")
        _, events = invoke_sync(sync_client, "after the fault")
        assert text_of(events) == reply_for("after the fault")


# --- validation and routing ---------------------------------------------------------------------

def test_bad_ids_are_validation_errors(sync_client: Any) -> None:
    cases = [
        {"agentId": "A" * 11, "agentAliasId": ALIAS, "sessionId": "s1"},
        {"agentId": "bad-id", "agentAliasId": ALIAS, "sessionId": "s1"},
        {"agentId": AGENT, "agentAliasId": "ali as", "sessionId": "s1"},
        {"agentId": AGENT, "agentAliasId": ALIAS, "sessionId": "bad session!"},
        {"agentId": AGENT, "agentAliasId": ALIAS, "sessionId": "s" * 101},
        {"agentId": AGENT, "agentAliasId": ALIAS, "sessionId": "a/b"},
    ]
    for params in cases:
        with pytest.raises(ClientError) as caught:
            sync_client.invoke_agent(inputText="hi", **params)
        check_error(sync_client, caught.value, 400, "ValidationException")
    _, events = invoke_sync(sync_client, "ok", session_id="a.b_c:d-e")
    assert text_of(events) == reply_for("ok")


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[1, 2]", b'{"inputText": 5}', b'{"other": "x"}',
    b'{"inputText": "x", "enableTrace": "yes"}', b'{"inputText": "[[latency:abc]]"}',
    b'{"inputText": "[[chunks:0]]"}', b"\xff\xfe garbage",
])
def test_bad_bodies_are_validation_errors(emulator: AgentEmulator, body: bytes) -> None:
    resp = httpx.post(f"{emulator.url}/agents/A/agentAliases/B/sessions/s1/text", content=body)
    assert resp.status_code == 400
    assert resp.headers["x-amzn-errortype"] == "ValidationException"
    assert resp.headers["x-amzn-requestid"]
    assert isinstance(resp.json()["message"], str)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/agents/A/agentAliases/B/sessions/s1/text"),
    ("POST", "/agents/A/agentAliases/B/sessions/s1/textx"),
    ("POST", "/model/x/converse"),
    ("GET", "/"),
    ("GET", "/_emulator/nope"),
    ("PUT", "/_emulator/calls"),
])
def test_unknown_routes(emulator: AgentEmulator, method: str, path: str) -> None:
    resp = httpx.request(method, emulator.url + path, content=b"{}")
    assert resp.status_code == 404
    assert resp.headers["x-amzn-errortype"] == "UnknownOperationException"
    assert resp.headers["x-amzn-requestid"]


# --- call log and control endpoints -------------------------------------------------------------

def test_call_log_records_and_clears(emulator: AgentEmulator, sync_client: Any) -> None:
    session_id = new_session()
    invoke_sync(sync_client, "logged one", session_id=session_id, enableTrace=True)
    with pytest.raises(ClientError):
        invoke_sync(sync_client, "logged [[fault:throttle]]", session_id=session_id)
    with pytest.raises(ClientError):
        sync_client.invoke_agent(agentId="bad-id", agentAliasId=ALIAS, sessionId=session_id,
                                 inputText="invalid")
    mine = [c for c in emulator.calls() if c["session_id"] == session_id]
    assert [c["input_text"] for c in mine] == ["logged one", "logged [[fault:throttle]]",
                                               "invalid"]
    first = mine[0]
    assert set(first) == {"agent_id", "agent_alias_id", "session_id", "input_text",
                          "enable_trace", "fault", "ts"}
    assert (first["agent_id"], first["agent_alias_id"], first["enable_trace"],
            first["fault"]) == (AGENT, ALIAS, True, None)
    assert mine[1]["fault"] == "throttle"
    assert mine[1]["enable_trace"] is False
    assert mine[2]["agent_id"] == "bad-id"
    assert abs(first["ts"] - time.time()) < 60

    page = httpx.get(f"{emulator.url}/_emulator/calls").json()
    over_http = page["calls"]
    assert [c for c in over_http if c["session_id"] == session_id] == mine
    assert page["total"] == len(over_http)
    since = httpx.get(f"{emulator.url}/_emulator/calls", params={"since": page["total"] - 1})
    assert since.json() == {"calls": over_http[-1:], "total": page["total"]}

    cleared = httpx.delete(f"{emulator.url}/_emulator/calls").json()["cleared"]
    assert cleared >= 3
    assert emulator.calls() == []
    invoke_sync(sync_client, "after clear", session_id=session_id)
    assert [c["input_text"] for c in emulator.calls()] == ["after clear"]
    assert emulator.clear_calls() == 1
    assert httpx.get(f"{emulator.url}/_emulator/calls").json() == {"calls": [], "total": 0}


def test_call_log_is_bounded() -> None:
    with AgentEmulator(max_calls=3) as emu:
        for i in range(5):
            resp = httpx.post(f"{emu.url}/agents/A/agentAliases/B/sessions/s1/text",
                              json={"inputText": f"m{i}"})
            assert resp.status_code == 200
        assert [c["input_text"] for c in emu.calls()] == ["m2", "m3", "m4"]
        stats = httpx.get(f"{emu.url}/_emulator/stats").json()
        assert stats == {"in_flight": 0, "requests_total": 5, "calls_logged": 3}


def test_health_and_config_endpoints(emulator: AgentEmulator) -> None:
    assert httpx.get(f"{emulator.url}/_emulator/health").json() == {"status": "ok"}
    config = httpx.get(f"{emulator.url}/_emulator/config").json()
    assert config["latency_ms"] == 0
    assert config["fault_timeout_s"] == FAULT_TIMEOUT_S
    for bad in ({"latency_ms": -1}, {"latency_ms": "5"}, {"latency_ms": True}, {"nope": 1}, {},
                [1]):
        resp = httpx.post(f"{emulator.url}/_emulator/config", json=bad)
        assert resp.status_code == 400, bad
        assert resp.headers["x-amzn-errortype"] == "ValidationException"
    assert httpx.get(f"{emulator.url}/_emulator/config").json() == config


def test_latency_marker_delays(sync_client: Any) -> None:
    start = time.monotonic()
    _, events = invoke_sync(sync_client, "slow [[latency:400]]")
    assert time.monotonic() - start >= 0.4
    assert text_of(events) == reply_for("slow [[latency:400]]")


def test_latency_marker_delays_aioboto3(emulator: AgentEmulator) -> None:
    async def body(client: Any) -> float:
        start = time.monotonic()
        await asyncio.gather(*(invoke_async(client, f"slow {i} [[latency:300]]")
                               for i in range(5)))
        return time.monotonic() - start

    assert with_async_client(emulator.url, body) >= 0.3


def test_runtime_latency_change(emulator: AgentEmulator, sync_client: Any) -> None:
    try:
        resp = httpx.post(f"{emulator.url}/_emulator/config", json={"latency_ms": 350})
        assert resp.status_code == 200
        assert resp.json()["latency_ms"] == 350
        assert emulator.latency_ms == 350
        start = time.monotonic()
        invoke_sync(sync_client, "default latency applies")
        assert time.monotonic() - start >= 0.35
        emulator.latency_ms = 300
        assert httpx.get(f"{emulator.url}/_emulator/config").json()["latency_ms"] == 300
        start = time.monotonic()
        invoke_sync(sync_client, "the marker overrides it [[latency:0]]")
        elapsed_override = time.monotonic() - start
        start = time.monotonic()
        invoke_sync(sync_client, "python setter applies")
        assert time.monotonic() - start >= 0.3
        assert elapsed_override < 10  # sanity only: no tight timing
    finally:
        emulator.latency_ms = 0
    with pytest.raises(ValueError):
        emulator.latency_ms = -5


def test_trace_marker_bad_usage_reaches_both_sdks_unparsed(emulator: AgentEmulator,
                                                          sync_client: Any) -> None:
    """``[[trace:bad-usage]]``: a trace first (enableTrace not asked) whose token counts are
    text, then the normal reply; neither SDK refuses it, so the client is the one that fails."""
    text = "count me [[trace:bad-usage]]"
    _, events = invoke_sync(sync_client, text)
    usage = events[0]["trace"]["trace"]["orchestrationTrace"]["modelInvocationOutput"][
        "metadata"]["usage"]
    assert usage == {"inputTokens": "many", "outputTokens": "many"}
    assert text_of(events) == reply_for(text)

    async def body(client: Any) -> list[Any]:
        seen: list[Any] = []
        await invoke_async(client, text, seen)
        return seen

    async_events = with_async_client(emulator.url, body)
    assert async_events[0]["trace"]["trace"]["orchestrationTrace"]["modelInvocationOutput"][
        "metadata"]["usage"]["inputTokens"] == "many"
    from shared.agent import CompletionAccumulator
    with pytest.raises(ValueError):
        CompletionAccumulator().add(async_events[0])
    assert parse_markers(text).trace == "bad-usage"
    with pytest.raises(ValueError, match="trace"):
        parse_markers("[[trace:nope]]")
    assert strip_markers(text) == "count me "


# --- lifecycle ----------------------------------------------------------------------------------

def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_pending_fault_ends_when_the_client_disconnects() -> None:
    with AgentEmulator(fault_timeout_s=60) as emu:
        client = boto3_client(emu.url, read_timeout=0.5)
        try:
            for kind in ("timeout", "stall"):
                with pytest.raises((ReadTimeoutError, urllib3.exceptions.ReadTimeoutError)):
                    invoke_sync(client, f"[[fault:{kind}]]")
                # the server-side wait ended long before its 60 s
                assert wait_for(lambda: emu.app.in_flight == 0, 10), kind
        finally:
            client.close()


def test_stop_is_prompt_with_pending_faults() -> None:
    emu = AgentEmulator(fault_timeout_s=120).start()
    errors: list[BaseException] = []
    client = boto3_client(emu.url, read_timeout=120)

    def call(kind: str) -> None:
        try:
            invoke_sync(client, f"[[fault:{kind}]]")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(kind,)) for kind in ("timeout", "stall")]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: emu.app.in_flight == 2, 10)
        start = time.monotonic()
        emu.stop()
        assert time.monotonic() - start < 2.5  # uvicorn's 3 s graceful backstop is not needed
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
        assert len(errors) == 2  # both calls failed: the connections were closed
    finally:
        emu.stop()
        client.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{emu.url}/_emulator/health")


def test_start_stop_restart_and_port() -> None:
    emu = AgentEmulator()
    with pytest.raises(RuntimeError):
        _ = emu.url
    with emu:
        port = emu.port
        assert emu.url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{emu.url}/_emulator/health").status_code == 200
        with pytest.raises(RuntimeError):
            emu.start()
    emu.stop()  # idempotent
    with AgentEmulator(port=port) as again:  # the port is free again
        assert again.port == port
        assert httpx.get(f"{again.url}/_emulator/health").json() == {"status": "ok"}


def test_cli_serves_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.agent_emulator", "--host", "127.0.0.1", "--port", "0",
         "--latency-ms", "7", "--fault-timeout-s", "2.5"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        url = ready["url"]
        assert url.startswith("http://127.0.0.1:")
        assert not url.endswith(":0")
        assert httpx.get(f"{url}/_emulator/config").json()["latency_ms"] == 7
        assert httpx.get(f"{url}/_emulator/config").json()["fault_timeout_s"] == 2.5
        resp = httpx.post(f"{url}/agents/A/agentAliases/B/sessions/s1/text",
                          json={"inputText": "cli"})
        assert resp.status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert [line["event"] for line in lines] == ["agent_emulator.started",
                                                 "agent_emulator.stopped"]

"""The wire rules both servers apply (shared/wire.py)."""

from __future__ import annotations

import pytest

from shared import wire
from shared.settings import SettingsError, load_settings


@pytest.mark.parametrize("data", [b"GET /", b"GE", b"\r\nPOST /x", b"M-SEARCH *", b"PATCH"])
def test_a_known_method_may_begin_a_request(data: bytes) -> None:
    assert not wire.bad_request_start(data)


@pytest.mark.parametrize("data", [b"\x16\x03\x01", b"get /", b"FOO /", b"GET/", b"BREW "])
def test_bytes_that_cannot_begin_a_request_are_refused_at_once(data: bytes) -> None:
    assert wire.bad_request_start(data)


@pytest.mark.parametrize(("target", "empty"), [
    ("//health", True), ("/api//v1/chat", True), ("/health", False),
    ("/api/v1/chat?next=//x", False), ("http://elsewhere.example/health", False),
    ("http://elsewhere.example//health", True)])
def test_a_path_with_an_empty_segment_matches_no_route(target: str, empty: bool) -> None:
    assert wire.has_empty_segment(target) is empty


@pytest.mark.parametrize(("value", "unknown"), [
    ("chunked", False), ("gzip, chunked", False), ("Chunked", False), ("identity", False),
    ("xchunked", True), ("chunked, x-custom", True), ("chunked\x0b", True)])
def test_only_the_codings_gunicorn_knows_pass(value: str, unknown: bool) -> None:
    assert wire.unknown_transfer_coding(value) is unknown


def test_only_100_continue_is_met() -> None:
    assert wire.expectation_ok("100-Continue")
    assert not wire.expectation_ok("bogus")


def test_a_body_short_of_its_length_is_cut_short() -> None:
    assert wire.body_cut_short("52", 42)
    assert not wire.body_cut_short("42", 42)
    assert not wire.body_cut_short(None, 0)


def test_keep_alive_outlasts_the_alb_idle_timeout() -> None:
    settings = load_settings()
    assert settings.keepalive_timeout_s > wire.ALB_IDLE_TIMEOUT_S
    with pytest.raises(SettingsError, match="KEEPALIVE_TIMEOUT_S"):
        load_settings(keepalive_timeout_s=wire.ALB_IDLE_TIMEOUT_S)


def test_green_serves_with_the_wire_protocol_and_the_alb_keep_alive(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from fastapi_app import serve
    from fastapi_app.protocol import WireProtocol

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    monkeypatch.setattr(serve, "uvicorn", uvicorn)
    serve.main()
    assert seen["http"] is WireProtocol
    assert seen["ws"] == "none"
    assert seen["timeout_keep_alive"] == load_settings().keepalive_timeout_s


def test_the_discard_bound_follows_the_body_limit() -> None:
    assert wire.discard_limit(load_settings(max_body_bytes=4096)) == 4 * 4096

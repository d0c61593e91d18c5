"""Security rules in both colors: auth on every /api route (from the route table), the same
security headers on every kind of answer, error bodies without exception text or paths."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from shared.routes import ROUTES
from shared.web import SECURITY_HEADERS
from tests.conftest import ColorClient

pytestmark = pytest.mark.integration
KEY = "sec-test-key"
API_ROUTES = [r for r in ROUTES if r.path.startswith("/api/")]
LEAKS = ("Traceback", 'File "', ".py", "/work", "site-packages", "Error:", "Exception")


def concrete(path: str) -> str:
    return path.replace("{session_id}", "sess-1").replace("{user_id}", "u1")


@pytest.mark.parametrize("route", API_ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("key", [None, "wrong", KEY + " ", KEY.upper()])
def test_every_api_route_refuses_a_missing_or_wrong_key(
        make_client: Callable[..., ColorClient], color: str, route: object, key: str | None
) -> None:
    client = make_client(color, api_keys=f"other-key,{KEY}")
    headers = {"X-API-Key": key} if key is not None else {}
    resp = client.request(route.method, concrete(route.path), headers=headers,  # type: ignore[attr-defined]
                          json={"message": "hi"} if route.body else None)  # type: ignore[attr-defined]
    assert resp.status_code == 401, resp.text
    assert resp.json()["error_code"] == "UNAUTHORIZED"


def test_security_headers_and_clean_error_bodies(
        make_client: Callable[..., ColorClient], color: str) -> None:
    client = make_client(color, api_keys=KEY, cors_origins="https://app.example.com")
    answers = {
        "ok": client.get("/health"),
        "head": client.head("/health"),
        "404": client.get("/nope"),
        "405": client.put("/api/v1/chat", headers={"X-API-Key": KEY}),
        "401": client.get("/api/v1/users/u1/sessions"),
        "415": client.post("/api/v1/chat", content=b"x", headers={"X-API-Key": KEY}),
        "400": client.post("/api/v1/chat", content=b"{", headers={
            "X-API-Key": KEY, "Content-Type": "application/json"}),
        "422": client.post("/api/v1/chat", json={"message": ""}, headers={"X-API-Key": KEY}),
        "502": client.post("/api/v1/chat", json={"message": "[[fault:internal]]"},
                           headers={"X-API-Key": KEY}),
        "503-agent": client.post("/api/v1/chat", json={"message": "[[fault:throttle]]"},
                                 headers={"X-API-Key": KEY}),
        "503-store": client.get("/api/v1/chat/sessions/s-1-ddb:internal:GetItem",
                                headers={"X-API-Key": KEY}),
        "504": client.post("/api/v1/chat", json={"message": "[[fault:stall]]"},
                           headers={"X-API-Key": KEY}),
        "413": client.post("/api/v1/chat", content=b"{" + b" " * (2 << 20) + b"}", headers={
            "X-API-Key": KEY, "Content-Type": "application/json"}),
        "414": client.get("/api/v1/users/" + "u" * 3000 + "/sessions",
                          headers={"X-API-Key": KEY}),
        "431": client.get("/health", headers={"X-Big": "b" * 9000}),
        "preflight": client.options("/api/v1/chat", headers={
            "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}),
        "403": client.options("/api/v1/chat", headers={
            "Origin": "https://evil.test", "Access-Control-Request-Method": "POST"}),
    }
    for kind, resp in answers.items():
        if kind[:3].isdigit():
            assert resp.status_code == int(kind[:3]), (kind, resp.text)
        for name, value in SECURITY_HEADERS.items():
            assert resp.headers.get(name) == value, (kind, name)
        if resp.status_code >= 400 and kind != "head":
            body = resp.json()
            assert set(body) <= {"error", "error_code", "timestamp", "request_id", "details"}
            text = json.dumps(body)
            assert not [leak for leak in LEAKS if leak in text], (kind, text)

"""METRICS_ACCESS in both colors, in process: off answers /metrics and /metrics/performance
404 NOT_FOUND (the envelope, as for no route), key wants its bearer token (401 otherwise), open
is every request; the same status, code and headers in blue and green. Real servers with
METRICS_ACCESS=key: tests/e2e/test_production_defaults.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import ColorClient

pytestmark = pytest.mark.integration
PATHS = ("/metrics", "/metrics/performance")


@pytest.mark.parametrize("path", PATHS)
def test_off_is_not_found(make_client: Callable[..., ColorClient], color: str,
                          path: str) -> None:
    client = make_client(color, metrics_access="off")
    for method in ("GET", "HEAD"):
        resp = client.request(method, path, headers={"Authorization": "Bearer anything"})
        assert resp.status_code == 404, resp.text
        assert resp.headers["x-app-color"] == color
    body = client.get(path).json()
    assert body["error_code"] == "NOT_FOUND"
    assert set(body) == {"error", "error_code", "timestamp", "request_id"}
    assert client.get("/health").status_code == 200  # nothing else is off


@pytest.mark.parametrize("path", PATHS)
def test_key_wants_its_bearer_token(make_client: Callable[..., ColorClient], color: str,
                                    path: str) -> None:
    client = make_client(color, metrics_access="key", metrics_api_key="scrape-1",
                         api_keys="api-1")
    for headers in ({}, {"X-API-Key": "api-1"}, {"Authorization": "Bearer api-1"},
                    {"Authorization": "Basic scrape-1"}):
        resp = client.get(path, headers=headers)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.json()["error_code"] == "UNAUTHORIZED"
        assert resp.headers["www-authenticate"] == "Bearer"
    assert client.get(path, headers={"Authorization": "Bearer scrape-1"}).status_code == 200


def test_open_is_the_default(make_client: Callable[..., ColorClient], color: str) -> None:
    client = make_client(color)
    for path in PATHS:
        assert client.get(path).status_code == 200

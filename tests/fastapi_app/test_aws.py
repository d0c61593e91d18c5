"""Green's aioboto3 clients: entered once in the lifespan, never per request."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import aioboto3
import pytest

from tests.conftest import ColorClient

pytestmark = pytest.mark.integration


def test_clients_are_made_in_the_lifespan_only(
        make_client: Callable[..., ColorClient], monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = aioboto3.Session.client

    def counting(self: Any, name: str, **kwargs: Any) -> Any:
        made.append(name)
        return real(self, name, **kwargs)

    monkeypatch.setattr(aioboto3.Session, "client", counting)
    client = make_client("green")
    assert sorted(made) == ["bedrock-agent-runtime", "cloudwatch", "dynamodb"]
    for _ in range(5):
        assert client.post("/api/v1/chat", json={"message": "hi"}).status_code == 200
    client.get("/health/detailed")
    assert len(made) == 3


def test_ca_bundle_is_loaded_in_the_lifespan_not_on_a_request(
        make_client: Callable[..., ColorClient], monkeypatch: pytest.MonkeyPatch) -> None:
    """aiobotocore makes each client's HTTP session on its first call, loading the CA bundle:
    a blocking call on the event loop. Green makes them before it serves."""
    loads: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    client = make_client("green")
    assert len(loads) == 3  # one per client, at start-up
    for _ in range(3):
        assert client.post("/api/v1/chat", json={"message": "hi"}).status_code == 200
    client.get("/health/detailed")
    assert client.flush_metrics() >= 0  # the CloudWatch client's first call
    assert len(loads) == 3

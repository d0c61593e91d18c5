"""Green's aioboto3 clients: entered once in the lifespan, never per request."""

from __future__ import annotations

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

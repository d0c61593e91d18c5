"""Blue's boto3 clients: created once per process, rebuilt once after a fork, never per request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest

from tests.conftest import ColorClient

pytestmark = pytest.mark.integration


def test_clients_are_made_once_not_per_request(
        make_client: Callable[..., ColorClient], monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = boto3.session.Session.client

    def counting(self: Any, name: str, **kwargs: Any) -> Any:
        made.append(name)
        return real(self, name, **kwargs)

    monkeypatch.setattr(boto3.session.Session, "client", counting)
    client = make_client("blue")
    assert sorted(made) == ["bedrock-agent-runtime", "cloudwatch", "dynamodb"]
    for _ in range(5):
        assert client.post("/api/v1/chat", json={"message": "hi"}).status_code == 200
    client.get("/health/detailed")
    assert len(made) == 3

    aws = client.app.extensions["chatbot"].aws
    aws._pid = -1  # as seen from a forked child: the parent's clients are not reused
    assert client.get("/health/detailed").status_code == 200
    assert len(made) == 6
    assert client.get("/health/detailed").status_code == 200
    assert len(made) == 6

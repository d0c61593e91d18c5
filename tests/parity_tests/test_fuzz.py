"""Schemathesis in-process: both colors, built by their app factories on devstack, every check.

A small budget of positive and negative cases per operation is sent through each color's
in-process client (``tests/conftest.py``: WSGI for blue, ASGI with the lifespan entered for
green) by a requests adapter, so Schemathesis' own probes (``ignored_auth`` sends the request
without and with a wrong key) take the same way. ``make fuzz`` runs the full budget against real
servers; this keeps the same rules in ``make test``. The self-test shows a 500 is caught.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from requests.adapters import BaseAdapter
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.generation import GenerationMode
from urllib3 import HTTPHeaderDict, HTTPResponse

import parity_tests.fuzz_hooks  # noqa: F401 - registers the documented cursor hook
from parity_tests.fuzz import CONFIG, EXCLUDED_CHECKS
from shared.openapi import openapi_document
from tests.conftest import ColorClient

pytestmark = [pytest.mark.integration]
KEY = "fuzz-test-key"
EXAMPLES = 8  # per operation and mode


class ToClient(BaseAdapter):
    """Send a prepared requests.Request through a ColorClient (httpx, in-process)."""

    def __init__(self, client: ColorClient, corrupt: bool = False) -> None:
        super().__init__()
        self.client = client
        self.corrupt = corrupt

    def send(self, request: requests.PreparedRequest, **_: Any) -> requests.Response:
        body = request.body.encode() if isinstance(request.body, str) else request.body
        answer = self.client.request(request.method or "GET", str(request.url),
                                     headers=dict(request.headers), content=body or b"")
        resp = requests.Response()
        resp.status_code = answer.status_code
        if self.corrupt and answer.status_code == 422:
            resp.status_code = 500  # the deliberately broken variant: a refusal becomes a 500
        headers = HTTPHeaderDict()
        for name, value in answer.headers.multi_items():
            if name != "content-encoding":  # httpx already decoded the body
                headers.add(name, value)
        resp.headers.update(headers)
        resp.raw = HTTPResponse(body=io.BytesIO(answer.content), headers=headers,
                                status=resp.status_code, preload_content=False)
        resp._content = answer.content
        resp.url = str(request.url)
        resp.request = request
        resp.reason = "OK"
        resp.encoding = "utf-8"
        return resp

    def close(self) -> None:
        pass


def checks() -> list[Any]:
    load_all_checks()
    return [c for c in CHECKS.get_all() if getattr(c, "__name__", "") not in EXCLUDED_CHECKS]


def route_testserver(monkeypatch: pytest.MonkeyPatch, adapter: ToClient) -> None:
    """Schemathesis' probes (ignored_auth, content-type) open sessions of their own: every
    requests session sends http://testserver to the in-process client too."""
    real = requests.Session.get_adapter

    def get_adapter(self: requests.Session, url: str) -> BaseAdapter:
        return adapter if url.startswith("http://testserver") else real(self, url)

    monkeypatch.setattr(requests.Session, "get_adapter", get_adapter)


def fuzz(client: ColorClient, monkeypatch: pytest.MonkeyPatch, corrupt: bool = False,
         examples: int = EXAMPLES, only: str | None = None) -> int:
    # make fuzz's config, plus ASCII strings: httpx's WSGITransport puts a decoded, non-latin-1
    # PATH_INFO into the environ (PEP 3333 wants latin-1), which werkzeug cannot read; the real
    # servers get full Unicode from make fuzz
    config = schemathesis.config.SchemathesisConfig.from_str(
        CONFIG + '\n[generation]\ncodec = "ascii"\n'
        + f'\n[auth.openapi.ApiKeyAuth]\napi_key = "{KEY}"\n')
    schema = schemathesis.openapi.from_dict(openapi_document(), config=config)
    route_testserver(monkeypatch, ToClient(client, corrupt))
    session = requests.Session()
    all_checks = checks()
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/openapi.json" or (only and operation.path != only):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
            def run(case: Any) -> None:
                nonlocal sent
                sent += 1
                case.call_and_validate(base_url="http://testserver", session=session,
                                       checks=all_checks)

            try:
                run()
            except Unsatisfiable:  # no parameter and no body: nothing negative to send
                assert mode is GenerationMode.NEGATIVE, operation.label
    return sent


def test_every_check_passes_in_both_colors(make_client: Callable[..., ColorClient],
                                           color: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(color, api_keys=KEY)
    assert len(checks()) >= 14 - len(EXCLUDED_CHECKS)  # "all": every check Schemathesis has
    sent = fuzz(client, monkeypatch)
    assert sent >= 8 * 4 + 4 * 4  # every operation positive, the ones with inputs negative


def test_a_broken_variant_is_caught(make_client: Callable[..., ColorClient],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client("blue", api_keys=KEY)
    with pytest.raises(FailureGroup) as err:
        fuzz(client, monkeypatch, corrupt=True, examples=5, only="/api/v1/users/{user_id}/sessions")
    assert any(isinstance(e, ServerError) for e in err.value.exceptions)

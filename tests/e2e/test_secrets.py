"""API keys never reach a real server's log or its capture file, wherever a client puts them.

Each color runs as shipped (gunicorn / uvicorn, two workers) with ``API_KEYS`` and
``CAPTURE_PATH`` set and ``LOG_LEVEL=DEBUG`` (the most a log ever says). The keys are sent in
``X-API-Key`` (right and wrong), as a Bearer token, in a cookie, in the query string and in the
JSON body; after SIGTERM (so every line is written) neither file holds any of them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.run import Server
from devstack.stack import DevStack

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
PORTS = {"blue": 18411, "green": 18412}


@pytest.fixture(scope="module")
def secrets_stack() -> Iterator[DevStack]:
    with DevStack() as s:
        yield s


@pytest.mark.parametrize("color", ["blue", "green"])
def test_keys_never_reach_logs_or_captures(color: str, secrets_stack: DevStack,
                                           tmp_path: Path) -> None:
    keys = [f"k1-{uuid.uuid4().hex}", f"k2-{uuid.uuid4().hex}"]
    wrong = f"wrong-{uuid.uuid4().hex}"
    capture = tmp_path / "capture.jsonl"
    log = tmp_path / "server.log"
    env = {**secrets_stack.env(), "API_KEYS": ",".join(keys), "CAPTURE_PATH": str(capture),
           "LOG_LEVEL": "DEBUG", "METRICS_NAMESPACE": f"E2E/{uuid.uuid4().hex}"}
    srv = Server(color, PORTS[color], env, workers=2, log_path=log).start()
    statuses: list[int] = []
    try:
        srv.wait_healthy(30)
        with httpx.Client(base_url=srv.url, timeout=10) as http:
            good = {"X-API-Key": keys[0]}
            requests = [
                http.build_request("POST", "/api/v1/chat", headers=good,
                                   json={"message": f"my key is {keys[1]}", "user_id": "sec"}),
                http.build_request("GET", f"/api/v1/users/sec/sessions?api_key={keys[1]}",
                                   headers={"X-API-Key": keys[1]}),
                http.build_request("GET", "/api/v1/users/sec/sessions",
                                   headers={"X-API-Key": wrong}),
                http.build_request("GET", "/api/v1/users/sec/sessions",
                                   headers={"Authorization": f"Bearer {keys[0]}"}),
                http.build_request("GET", "/api/v1/users/sec/sessions",
                                   headers={**good, "Cookie": f"session={keys[1]}"}),
                http.build_request("POST", "/api/v1/chat", headers=good,
                                   content=f'{{"message": "{keys[0]}"'.encode(),  # malformed
                                   ),
            ]
            for request in requests:
                request.headers["Content-Type"] = "application/json"
                statuses.append(http.send(request).status_code)
    finally:
        assert srv.stop() == 0
    # the requests did what they should: the key authenticates wherever it is X-API-Key
    assert statuses == [200, 200, 401, 401, 200, 400]
    lines = capture.read_text().splitlines()
    api_lines = [json.loads(line) for line in lines if '"/api/' in line]
    assert len(api_lines) == len(statuses), "every /api request was captured"
    logged = log.read_text()
    assert '"status": 401' in logged or '"status":401' in logged  # the access log is there
    for secret in [*keys, wrong]:
        assert secret not in logged, f"a key reached the {color} log"
        assert secret not in capture.read_text(), f"a key reached the {color} capture"

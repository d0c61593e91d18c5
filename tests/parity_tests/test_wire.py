"""The raw step kind: bytes on a socket, answers and the connection's end compared per lane."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from parity_tests.harness import wire
from parity_tests.harness.lanes import Lane
from parity_tests.harness.model import CaseError, case_from_dict
from parity_tests.harness.runner import Runner

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n" \
     b'{"status":"ok"}'
REFUSED = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad"


class FakeServer:
    """A tiny HTTP/1.1 server on 127.0.0.1: answers every request with ``answer``, then closes
    (``close``) or keeps the connection (``keep``)."""

    def __init__(self, answer: bytes, close: bool) -> None:
        self.answer, self.close = answer, close
        self.heads: list[bytes] = []  # every request head received
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.heads.append(data)
            conn.sendall(self.answer)
            if not self.close:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(1)


@pytest.fixture
def servers() -> Iterator[dict[str, FakeServer]]:
    made = {"blue": FakeServer(OK, close=False), "green": FakeServer(REFUSED, close=True)}
    yield made
    for server in made.values():
        server.sock.close()


def _lane(name: str, server: FakeServer) -> Lane:
    url = f"http://127.0.0.1:{server.port}"
    return Lane(name=name, color=name, url=url, http=httpx.Client(base_url=url))


CASE = {"name": "repeated-host", "raw": {
    "send": [{"head": ["GET /metrics HTTP/1.1", "Host: {{host}}", "Host: other"]}],
    "read_timeout": 0.5}}


def test_the_raw_step_catches_a_lane_that_answers_differently(
        servers: dict[str, FakeServer]) -> None:
    case = case_from_dict(CASE, "wire_headers.yaml", 0)
    runner = Runner([_lane("blue", servers["blue"]), _lane("green", servers["green"])], [], [],
                    None)
    result = runner.run_case(case)
    step = result.steps[0]
    paths = {d.path: (d.left, d.right) for d in step.differences}
    assert result.case.id == "wire_headers/repeated-host"
    assert paths["status"] == (200, 400)
    assert paths["answers.0"] == ("200 non-envelope", "400 non-envelope")
    assert step.failed


def test_the_same_answers_compare_equal(servers: dict[str, FakeServer]) -> None:
    case = case_from_dict({**CASE, "expect_status": 200, "expect_end": "answered"},
                          "wire_headers.yaml", 0)
    runner = Runner([_lane("blue", servers["blue"]), _lane("green", servers["blue"])], [], [],
                    None)
    step = runner.run_case(case).steps[0]
    assert not step.failed, (step.differences, step.expectation, step.violations)


def test_a_declared_end_is_checked(servers: dict[str, FakeServer]) -> None:
    case = case_from_dict({**CASE, "expect_end": "reset"}, "wire_headers.yaml", 0)
    runner = Runner([_lane("blue", servers["green"]), _lane("green", servers["green"])], [],
                    [], None)
    step = runner.run_case(case).steps[0]
    assert step.expectation
    assert "expected the connection reset" in step.expectation


def test_answers_are_parsed_in_order_and_a_cut_short_one_is_marked() -> None:
    answers = wire.parse_answers(b"HTTP/1.1 100 Continue\r\n\r\n" + OK + OK[:-3])
    assert [a.status for a in answers] == [100, 200, 200]
    assert [a.complete for a in answers] == [True, True, False]


def test_a_silent_server_is_a_hang() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        ex = wire.send_raw("127.0.0.1", server.getsockname()[1], [b"GET / HTTP/1.1\r\n\r\n"],
                           read_timeout=0.3)
    assert ex.end == "timeout"
    assert wire.violations(ex)


def test_a_bad_write_is_refused_when_the_file_is_read() -> None:
    with pytest.raises(CaseError, match="a write is"):
        case_from_dict({"name": "x", "raw": {"send": [{"bogus": 1}]}}, "wire_x.yaml", 0)


def test_the_lanes_key_is_sent_but_never_kept(servers: dict[str, FakeServer]) -> None:
    """A raw step sends each lane's real key; the step's recorded request (what the report,
    summary.json and junit show) keeps the placeholder."""
    case = case_from_dict({"name": "keyed", "raw": {
        "send": [{"head": ["GET /api/v1/users/u-1/sessions HTTP/1.1", "Host: {{host}}",
                           "X-API-Key: {{api_key}}"]}], "read_timeout": 0.5}},
        "wire_headers.yaml", 0)
    lanes = [_lane("blue", servers["blue"]), _lane("green", servers["blue"])]
    for lane in lanes:
        lane.api_key = "secret-key-of-the-lane"
    step = Runner(lanes, [], [], None).run_case(case).steps[0]
    assert any(b"X-API-Key: secret-key-of-the-lane" in h for h in servers["blue"].heads)
    for request in step.requests.values():
        assert "secret-key-of-the-lane" not in (request.body or "")
        assert "X-API-Key: {{api_key}}" in (request.body or "")

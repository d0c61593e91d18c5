from __future__ import annotations

import base64
import hashlib
import json
import logging
import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers as StarletteHeaders
from werkzeug.datastructures import EnvironHeaders

from shared import capture as cap
from shared.capture import REDACTED, CaptureWriter, build_record, encode_body, sampled
from shared.pipeline import Exchange, Response
from shared.settings import Settings

pytestmark = pytest.mark.unit
KEY = "sekrit-key-123"


def record(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "color": "blue", "request_id": "r-1", "method": "POST", "path": "/api/v1/chat",
        "query_string": b"", "headers": {}, "body": b"", "status": 200,
        "response_headers": None, "duration_ms": 1.23456, "started_at": 0.0}
    args.update(overrides)
    return build_record(**args)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the record -------------------------------------------------------------------------------

def test_record_fields_and_query_order() -> None:
    rec = record(query_string=b"b=2&a=1&b=3&empty=&sp=a%20b+c", headers={"Content-Type": "x/y"},
                 body=b'{"message": "hi"}', response_headers={"X-Request-ID": "r-1"})
    assert list(rec) == ["ts", "color", "request_id", "method", "path", "query", "headers",
                         "body", "body_size", "body_truncated", "status", "response_headers",
                         "duration_ms"]
    assert rec["ts"] == "1970-01-01T00:00:00.000Z"
    assert rec["query"] == [["b", "2"], ["a", "1"], ["b", "3"], ["empty", ""], ["sp", "a b c"]]
    assert rec["headers"] == {"content-type": "x/y"}
    assert rec["response_headers"] == {"x-request-id": "r-1"}
    assert rec["body"] == '{"message": "hi"}'
    assert (rec["body_size"], rec["body_truncated"], rec["duration_ms"]) == (17, False, 1.235)
    assert "response_headers" not in record()


@pytest.mark.parametrize("name", ["X-API-Key", "authorization", "Cookie", "Set-Cookie",
                                  "Proxy-Authorization", "X-Auth-Token", "x-csrftoken",
                                  "X-Client-Secret", "TOKEN"])
def test_secret_headers_are_redacted(name: str) -> None:
    rec = record(headers={name: "value-1", "Accept": "*/*"},
                 response_headers={name: "value-2", "Vary": "Origin"})
    assert rec["headers"] == {name.lower(): REDACTED, "accept": "*/*"}
    assert rec["response_headers"] == {name.lower(): REDACTED, "vary": "Origin"}


def test_repeated_headers_are_joined() -> None:
    pairs = StarletteHeaders(raw=[(b"accept", b"a"), (b"x-api-key", b"1"), (b"Accept", b"b"),
                                  (b"x-api-key", b"2")])
    assert record(headers=pairs)["headers"] == {"accept": "a, b", "x-api-key": REDACTED}


def test_configured_keys_are_scrubbed_everywhere(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path / "c.jsonl", color="blue", secrets=[KEY, "other-key"])
    writer.capture(request_id=KEY, method="POST", path=f"/x/{KEY}",
                   query_string=f"k={KEY}".encode(),
                   headers={"X-Other": f"Bearer {KEY}", KEY: "header named by the key"},
                   body=f'{{"message": "my key is {KEY}"}}'.encode(), status=200,
                   response_headers={"X-Echo": KEY}, duration_ms=1.0)
    # a key inside a body that is not UTF-8 is scrubbed before base64 could hide it
    writer.capture(request_id="r-2", method="POST", path="/", query_string=b"",
                   headers={}, body=b"\xff" + KEY.encode(), status=200, response_headers={},
                   duration_ms=1.0)
    # a key cut by truncation is scrubbed before the cut
    writer.max_body = len("padding ") + 3
    writer.capture(request_id="r-3", method="POST", path="/", query_string=b"",
                   headers={}, body=f"padding {KEY}".encode(), status=200, response_headers={},
                   duration_ms=1.0)
    raw = (tmp_path / "c.jsonl").read_text()
    assert KEY not in raw
    assert KEY[:3] not in raw
    first, second, third = lines(tmp_path / "c.jsonl")
    assert first["body"] == f'{{"message": "my key is {REDACTED}"}}'
    assert first["query"] == [["k", REDACTED]]
    assert (first["path"], first["request_id"]) == (f"/x/{REDACTED}", REDACTED)
    assert first["headers"] == {"x-other": f"Bearer {REDACTED}",
                                REDACTED: "header named by the key"}
    assert first["response_headers"] == {"x-echo": REDACTED}
    assert base64.b64decode(second["body"]["base64"]) == b"\xff" + REDACTED.encode()
    assert third["body"] == "padding [RE"
    assert writer.errors == 0


def test_non_utf8_body_is_base64() -> None:
    body = b"\xff\xfe\x00binary"
    assert record(body=body)["body"] == {"base64": base64.b64encode(body).decode()}


def test_truncation() -> None:
    text, truncated = encode_body(b"a" * 100, limit=10)
    assert (text, truncated) == ("a" * 10, True)
    assert encode_body(b"a" * 10, limit=10) == ("a" * 10, False)
    # a cut through a multi-byte character keeps the text before it
    assert encode_body("ab€".encode(), limit=3) == ("ab", True)
    rec = record(body=b"x" * (cap.MAX_CAPTURED_BODY + 5))
    assert rec["body_truncated"] is True
    assert rec["body_size"] == cap.MAX_CAPTURED_BODY + 5
    assert len(rec["body"]) == cap.MAX_CAPTURED_BODY


def test_sampling_is_deterministic() -> None:
    ids = [f"req-{i}" for i in range(4000)]
    first = [sampled(i, 0.25) for i in ids]
    assert first == [sampled(i, 0.25) for i in ids]
    assert 0.22 < sum(first) / len(ids) < 0.28
    # a request kept at a low rate is kept at every higher rate
    assert all(sampled(i, 0.5) for i, kept in zip(ids, first, strict=True) if kept)
    assert all(sampled(i, 1.0) for i in ids)
    assert not any(sampled(i, 0.0) for i in ids)
    # not salted per process (unlike hash()): the same in every worker and every run
    digest = hashlib.blake2b(b"fixed-id", digest_size=8).digest()
    assert sampled("fixed-id", 0.5) is (int.from_bytes(digest, "big") < 1 << 63)


def test_sampled_out_requests_are_not_written(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path / "c.jsonl", color="blue", sample_rate=0.3)
    for i in range(300):
        writer.capture(request_id=f"id-{i}", method="GET", path="/health", query_string=b"",
                       headers={}, body=b"", status=200, response_headers={}, duration_ms=1.0)
    ids = [line["request_id"] for line in lines(tmp_path / "c.jsonl")]
    assert ids == [f"id-{i}" for i in range(300) if sampled(f"id-{i}", 0.3)]


# --- the writer -------------------------------------------------------------------------------

def _write_many(writer: CaptureWriter, who: str, count: int) -> None:
    for n in range(count):
        writer.write({"who": who, "n": n, "pad": "x" * (n * 37 % 9000)})


def test_threads_write_whole_lines(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path / "c.jsonl", color="green")
    threads = [threading.Thread(target=_write_many, args=(writer, f"t{i}", 300))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = lines(tmp_path / "c.jsonl")  # every line parses: none interleaved
    assert len(got) == 8 * 300 == writer.lines
    for i in range(8):
        assert [r["n"] for r in got if r["who"] == f"t{i}"] == list(range(300))
    assert writer.errors == 0


def _child(writer: CaptureWriter, who: str) -> None:
    _write_many(writer, who, 200)


def test_forked_processes_append_to_one_file(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path / "c.jsonl", color="blue")
    writer.write({"who": "parent", "n": 0, "pad": ""})  # opened before the fork: inherited
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_child, args=(writer, f"p{i}")) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    writer.write({"who": "parent", "n": 1, "pad": ""})
    got = lines(tmp_path / "c.jsonl")
    assert len(got) == 2 + 3 * 200
    for i in range(3):
        assert [r["n"] for r in got if r["who"] == f"p{i}"] == list(range(200))
    assert [r["n"] for r in got if r["who"] == "parent"] == [0, 1]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_failing_path_never_raises(tmp_path: Path) -> None:
    handler = _Collect()
    cap.log.addHandler(handler)
    try:
        writer = CaptureWriter(tmp_path / "missing-dir" / "c.jsonl", color="blue")
        before = cap.CAPTURE_ERRORS.labels("blue")._value.get()
        for _ in range(3):
            writer.capture(request_id="r", method="GET", path="/health", query_string=b"",
                           headers={}, body=b"", status=200, response_headers={},
                           duration_ms=1.0)
        writer.write({"a": object()})  # not serializable: counted too
    finally:
        cap.log.removeHandler(handler)
    assert writer.errors == 4
    assert writer.lines == 0
    assert cap.CAPTURE_ERRORS.labels("blue")._value.get() == before + 4
    assert len(handler.records) == 1  # logged once


def test_a_line_that_would_hold_a_key_is_withheld(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path / "c.jsonl", color="blue", secrets=["200"])
    writer.capture(request_id="r", method="GET", path="/health", query_string=b"", headers={},
                   body=b"", status=200, response_headers={}, duration_ms=1.0)
    assert (writer.errors, writer.lines) == (1, 0)
    assert not (tmp_path / "c.jsonl").exists()  # nothing written, not even opened


def test_close_and_reopen(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path / "c.jsonl", color="blue")
    writer.write({"n": 1})
    writer.close()
    writer.write({"n": 2})
    writer.close()
    assert lines(tmp_path / "c.jsonl") == [{"n": 1}, {"n": 2}]


def test_from_settings() -> None:
    assert CaptureWriter.from_settings(Settings(), "blue") is None
    writer = CaptureWriter.from_settings(
        Settings(capture_path="/tmp/x.jsonl", capture_sample_rate=0.5, api_keys="a,bb"),
        "green")
    assert writer is not None
    assert (writer.path, writer.color, writer.sample_rate) == ("/tmp/x.jsonl", "green", 0.5)
    assert set(writer.secrets) == {"a", "bb"}
    with pytest.raises(ValueError, match="capture_sample_rate"):
        Settings(capture_sample_rate=1.5)


# --- through the pipeline: both colors' header objects give the same line ---------------------

def _exchange_line(tmp_path: Path, headers: Any, name: str) -> dict[str, Any]:
    settings = Settings(api_keys=KEY, rate_limit_enabled=False, metrics_enabled=False)
    writer = CaptureWriter(tmp_path / name, color="blue", secrets=[KEY])
    ex = Exchange(settings, "blue", "POST", "/api/v1/chat", headers, "127.0.0.1",
                  capture=writer, query_string=b"a=1&b=&a=2")
    ex.admit()
    ex.body = b'{"message": "hi"}'
    ex.finish(Response(200, b"{}"))
    (line,) = lines(tmp_path / name)
    return line


def test_exchange_writes_the_same_line_for_werkzeug_and_starlette(tmp_path: Path) -> None:
    sent = [("Content-Type", "application/json"), ("X-API-Key", KEY), ("X-Request-ID", "r-7"),
            ("Content-Length", "17"), ("Accept", "*/*")]
    environ = {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "17",
               **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in sent
                  if k not in ("Content-Type", "Content-Length")}}
    blue = _exchange_line(tmp_path, EnvironHeaders(environ), "blue.jsonl")
    green = _exchange_line(tmp_path, StarletteHeaders(
        raw=[(k.lower().encode(), v.encode()) for k, v in sent]), "green.jsonl")
    for line in (blue, green):
        del line["ts"], line["duration_ms"]
    assert blue == green
    assert blue["headers"] == {"content-type": "application/json", "x-api-key": REDACTED,
                               "x-request-id": "r-7", "content-length": "17", "accept": "*/*"}
    assert blue["query"] == [["a", "1"], ["b", ""], ["a", "2"]]
    assert blue["body"] == '{"message": "hi"}'
    assert blue["request_id"] == "r-7"
    assert blue["response_headers"]["x-app-color"] == "blue"
    assert KEY not in (tmp_path / "blue.jsonl").read_text()


def test_no_capture_no_file(tmp_path: Path) -> None:
    ex = Exchange(Settings(metrics_enabled=False), "green", "GET", "/health",
                  StarletteHeaders(raw=[]), None)
    assert ex.capture is None
    ex.finish(Response(200, b"{}"))
    assert list(tmp_path.iterdir()) == []


def test_queued_writer_writes_off_the_caller_and_drains_on_close(tmp_path: Path) -> None:
    from shared.capture import QueuedCaptureWriter

    path = tmp_path / "queued.jsonl"
    writer = QueuedCaptureWriter(path, color="green")
    for i in range(100):
        writer.write({"n": i})
    assert writer.flush()
    assert len(path.read_text().splitlines()) == 100
    for i in range(100, 200):
        writer.write({"n": i})
    writer.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines] == list(range(200))
    assert writer._thread is None

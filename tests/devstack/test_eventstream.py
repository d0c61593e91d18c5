"""The event-stream encoder, checked against botocore's own decoder (``EventStreamBuffer``)."""

from __future__ import annotations

import base64
import json
import random
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.eventstream import (
    ChecksumMismatch,
    EventStream,
    EventStreamBuffer,
    EventStreamMessage,
)
from botocore.exceptions import EventStreamError
from botocore.loaders import Loader
from botocore.model import ServiceModel
from botocore.parsers import EventStreamJSONParser

from devstack.eventstream import (
    MAX_HEADERS_LENGTH,
    Int8,
    Int16,
    Int32,
    Int64,
    Timestamp,
    corrupt_message_crc,
    encode_headers,
    encode_message,
    event_message,
    exception_message,
    lower_camel,
)

pytestmark = pytest.mark.unit

SIZES = (1, 3, 7, 13)


def pieces_fixed(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def pieces_random(data: bytes, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    start = 0
    while start < len(data):
        step = rng.randint(1, 40)
        yield data[start:start + step]
        start += step


def decode(stream: Iterator[bytes]) -> list[Any]:  # EventStreamMessage (stubs mistype it)
    buffer = EventStreamBuffer()
    messages: list[EventStreamMessage] = []
    for piece in stream:
        buffer.add_data(piece)
        messages.extend(buffer)
    return messages


def split_ways(data: bytes) -> Iterator[tuple[str, Iterator[bytes]]]:
    yield "whole", iter([data])
    for size in SIZES:
        yield f"size {size}", pieces_fixed(data, size)
    for seed in range(5):
        yield f"seed {seed}", pieces_random(data, seed)


ALL_TYPES: dict[str, Any] = {
    "t": True,
    "f": False,
    "i8": Int8(-128),
    "i16": Int16(32767),
    "i32": Int32(-(2**31)),
    "i64": Int64(2**63 - 1),
    "small-int": 42,
    "big-int": 2**40,
    "bytes": b"\x00\x01\xff",
    "string": "h\u00e9llo \U0001f600 \u05e9\u05dc\u05d5\u05dd \x00 end",
    "ts-dt": datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
    "ts-offset": datetime(2024, 5, 6, 9, 8, 9, 123000, tzinfo=timezone(timedelta(hours=2))),
    "ts-raw": Timestamp(1_700_000_000_123),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}
EXPECTED: dict[str, Any] = {
    "t": True,
    "f": False,
    "i8": -128,
    "i16": 32767,
    "i32": -(2**31),
    "i64": 2**63 - 1,
    "small-int": 42,
    "big-int": 2**40,
    "bytes": b"\x00\x01\xff",
    "string": "h\u00e9llo \U0001f600 \u05e9\u05dc\u05d5\u05dd \x00 end",
    "ts-dt": 1714979289123,
    "ts-offset": 1714979289123,
    "ts-raw": 1_700_000_000_123,
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678").bytes,
}


def test_known_vector_empty_message() -> None:
    # the AWS event-stream test vector "empty_message"
    assert encode_message({}, b"").hex() == "000000100000000005c248eb7d98c8ff"


def test_every_header_type_round_trips_in_any_split() -> None:
    payload = bytes(range(256)) * 3
    message = encode_message(ALL_TYPES, payload)
    stream = message + encode_message({"second": "yes"}, b"") + message
    for label, parts in split_ways(stream):
        decoded = decode(parts)
        assert len(decoded) == 3, label
        assert decoded[0].headers == EXPECTED, label
        assert decoded[0].payload == payload, label
        assert decoded[1].headers == {"second": "yes"}, label
        assert decoded[1].payload == b"", label
        assert decoded[2].headers == EXPECTED, label


def test_int_width_choice() -> None:
    # plain ints: int32 when they fit (5 bytes on the wire), int64 otherwise (9 bytes)
    # layout: name_len u8 | name | type u8 | value
    assert encode_headers({"n": 2**31 - 1}) == b"\x01n\x04\x7f\xff\xff\xff"
    assert encode_headers({"n": 2**31})[2] == 5
    assert encode_headers({"n": -(2**31) - 1})[2] == 5
    assert encode_headers({"b": True}) == b"\x01b\x00"
    assert encode_headers({"b": False}) == b"\x01b\x01"


def test_event_message_decodes_with_headers_and_json() -> None:
    text = "r\u00e9ponse \U0001f44b \u202eRTL\u202c \x00"
    data = base64.b64encode(text.encode("utf-8")).decode("ascii")
    stream = event_message("chunk", {"bytes": data}) + event_message("trace", {"n": 1})
    for label, parts in split_ways(stream):
        chunk, trace = decode(parts)
        assert chunk.headers == {":message-type": "event", ":event-type": "chunk",
                                 ":content-type": "application/json"}, label
        assert base64.b64decode(json.loads(chunk.payload)["bytes"]).decode("utf-8") == text
        assert trace.headers[":event-type"] == "trace", label
        assert json.loads(trace.payload) == {"n": 1}, label
        assert chunk.to_response_dict()["status_code"] == 200


def test_exception_message_is_lower_camel_and_an_error_status() -> None:
    for given in ("ThrottlingException", "throttlingException"):
        (message,) = decode(iter([exception_message(given, "slow down")]))
        assert message.headers == {":message-type": "exception",
                                   ":exception-type": "throttlingException",
                                   ":content-type": "application/json"}
        assert json.loads(message.payload) == {"message": "slow down"}
        assert message.to_response_dict()["status_code"] == 400
    assert lower_camel("InternalServerException") == "internalServerException"


@pytest.mark.parametrize("offset", [-1, -4, 8, 11, 13])
def test_corrupt_crc_is_rejected(offset: int) -> None:
    good = event_message("chunk", {"bytes": "aGk="})
    bad = bytearray(good)
    bad[offset] ^= 0x01  # the message CRC (-1, -4), the prelude CRC (8, 11), a header (13)
    for _, parts in split_ways(bytes(bad)):
        with pytest.raises(ChecksumMismatch):
            decode(parts)


def test_corrupt_message_crc_helper() -> None:
    good = event_message("chunk", {"bytes": "aGk="})
    bad = corrupt_message_crc(good)
    assert bad[:-4] == good[:-4]
    assert bad[-4:] != good[-4:]
    assert len(decode(iter([good]))) == 1
    with pytest.raises(ChecksumMismatch):
        decode(iter([good, bad]))
    with pytest.raises(ValueError):
        corrupt_message_crc(b"short")


def test_crc_layout_matches_the_spec() -> None:
    message = encode_message({"a": "b"}, b"payload")
    total, headers_len = int.from_bytes(message[:4], "big"), int.from_bytes(message[4:8], "big")
    assert total == len(message)
    assert headers_len == len(encode_headers({"a": "b"}))
    assert int.from_bytes(message[8:12], "big") == zlib.crc32(message[:8])
    assert int.from_bytes(message[-4:], "big") == zlib.crc32(message[:-4])


@pytest.mark.parametrize(("headers", "error"), [
    ([("dup", "a"), ("dup", "b")], ValueError),
    ({"": "empty name"}, ValueError),
    ({"x" * 256: "long name"}, ValueError),
    ({"s": "x" * 65536}, ValueError),
    ({"b": b"x" * 65536}, ValueError),
    ({"n": 2**63}, ValueError),
    ({"n": Int8(128)}, ValueError),
    ({"n": Int16(-(2**15) - 1)}, ValueError),
    ({"n": Int32(2**31)}, ValueError),
    ({"ts": datetime(2024, 1, 1)}, ValueError),
    ({"f": 1.5}, TypeError),
    ({"n": Int8(True)}, TypeError),
])
def test_invalid_headers_are_refused(headers: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_headers(headers)


def test_header_and_payload_limits() -> None:
    many = {f"h{i:05d}": "x" * 60_000 for i in range(3)}  # ~180 KiB > 128 KiB
    with pytest.raises(ValueError, match="headers"):
        encode_headers(many)
    assert len(encode_headers({"h": "x" * 60_000, "i": "y" * 60_000})) < MAX_HEADERS_LENGTH
    with pytest.raises(ValueError, match="payload"):
        encode_message({}, b"\x00" * (24 * 1024 * 1024 + 1))


def _invoke_agent_event_stream(raw: bytes) -> Any:
    """botocore's own EventStream for InvokeAgent's ``completion``, over *raw* bytes."""
    model = ServiceModel(Loader().load_service_model("bedrock-agent-runtime", "service-2"),
                         "bedrock-agent-runtime")
    operation = model.operation_model("InvokeAgent")
    output_shape = operation.output_shape
    assert output_shape is not None
    stream_shape = output_shape.members["completion"]

    class Raw:
        def stream(self) -> Iterator[bytes]:
            return pieces_random(raw, 7)

        def close(self) -> None:
            pass

    return EventStream(Raw(), stream_shape, EventStreamJSONParser(),  # type: ignore[arg-type]
                       "InvokeAgent")


def test_botocore_parses_chunks_and_raises_for_exception_events() -> None:
    text = "hello \U0001f600"
    raw = (event_message("chunk", {"bytes": base64.b64encode(text.encode()).decode()})
           + exception_message("throttlingException", "slow down"))
    events = _invoke_agent_event_stream(raw)
    iterator = iter(events)
    assert next(iterator) == {"chunk": {"bytes": text.encode("utf-8")}}
    with pytest.raises(EventStreamError) as caught:
        next(iterator)
    assert caught.value.response["Error"]["Code"] == "throttlingException"
    assert caught.value.response["Error"]["Message"] == "slow down"

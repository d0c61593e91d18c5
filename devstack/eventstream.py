"""Encoder for ``application/vnd.amazon.eventstream`` messages (the AWS event-stream framing).

A message is, with every integer big-endian::

    total_len u32 | headers_len u32 | prelude_crc u32 | headers | payload | message_crc u32

``prelude_crc`` is the CRC32 of the first 8 bytes and ``message_crc`` the CRC32 of every byte
before it. A header is ``name_len u8 | name (UTF-8) | type u8 | value``; the value types are
0 true, 1 false, 2 int8, 3 int16, 4 int32, 5 int64, 6 bytes (u16 length), 7 string (u16 length,
UTF-8), 8 timestamp (int64 milliseconds since the epoch) and 9 uuid (16 bytes).

Python values map to header types as follows: ``bool`` -> true/false, ``int`` -> int32 when it
fits and int64 otherwise (wrap it in :class:`Int8`, :class:`Int16`, :class:`Int32` or
:class:`Int64` to choose), ``bytes``/``bytearray``/``memoryview`` -> bytes, ``str`` -> string,
an aware :class:`~datetime.datetime` or a :class:`Timestamp` -> timestamp, :class:`uuid.UUID`
-> uuid.

The limits are botocore's decoder's: headers at most 128 KiB, payload at most 24 MiB. Header
names must be unique (botocore rejects a duplicate), non-empty and at most 255 UTF-8 bytes.

Only the standard library is used; :mod:`botocore.eventstream` is the decoder the tests check
this encoder against.
"""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

__all__ = [
    "MAX_HEADERS_LENGTH",
    "MAX_PAYLOAD_LENGTH",
    "HeaderValue",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "Timestamp",
    "corrupt_message_crc",
    "encode_headers",
    "encode_message",
    "event_message",
    "exception_message",
    "lower_camel",
]

MAX_HEADERS_LENGTH: Final = 128 * 1024
MAX_PAYLOAD_LENGTH: Final = 24 * 1024 * 1024
_PRELUDE_LENGTH: Final = 12
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)

_U32 = struct.Struct("!I")
_PRELUDE = struct.Struct("!II")

# header value type tags
_TRUE, _FALSE, _INT8, _INT16, _INT32, _INT64, _BYTES, _STRING, _TIMESTAMP, _UUID = range(10)


@dataclass(frozen=True, slots=True)
class Int8:
    """An int header sent as type 2 (signed 8-bit)."""

    value: int


@dataclass(frozen=True, slots=True)
class Int16:
    """An int header sent as type 3 (signed 16-bit)."""

    value: int


@dataclass(frozen=True, slots=True)
class Int32:
    """An int header sent as type 4 (signed 32-bit)."""

    value: int


@dataclass(frozen=True, slots=True)
class Int64:
    """An int header sent as type 5 (signed 64-bit)."""

    value: int


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A timestamp header (type 8) given directly as milliseconds since the epoch."""

    millis: int


HeaderValue = (
    bool | int | str | bytes | bytearray | memoryview | Int8 | Int16 | Int32 | Int64 | Timestamp
    | datetime | uuid.UUID
)
Headers = Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]]

_INT_STRUCTS: Final = {
    _INT8: (struct.Struct("!b"), -(2**7), 2**7 - 1),
    _INT16: (struct.Struct("!h"), -(2**15), 2**15 - 1),
    _INT32: (struct.Struct("!i"), -(2**31), 2**31 - 1),
    _INT64: (struct.Struct("!q"), -(2**63), 2**63 - 1),
}


def _int_value(tag: int, value: int, name: str) -> bytes:
    packer, low, high = _INT_STRUCTS[tag]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"header {name!r}: expected an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"header {name!r}: {value} does not fit the header's integer type")
    return bytes((tag,)) + packer.pack(value)


def _length_prefixed(tag: int, data: bytes, name: str) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError(f"header {name!r}: value of {len(data)} bytes exceeds 65535")
    return bytes((tag,)) + struct.pack("!H", len(data)) + data


def _encode_value(name: str, value: HeaderValue) -> bytes:
    # bool before int: bool is a subclass of int
    if isinstance(value, bool):
        return bytes((_TRUE if value else _FALSE,))
    if isinstance(value, str):
        return _length_prefixed(_STRING, value.encode("utf-8"), name)
    if isinstance(value, bytes | bytearray | memoryview):
        return _length_prefixed(_BYTES, bytes(value), name)
    if isinstance(value, int):
        tag = _INT32 if -(2**31) <= value <= 2**31 - 1 else _INT64
        return _int_value(tag, value, name)
    if isinstance(value, Int8):
        return _int_value(_INT8, value.value, name)
    if isinstance(value, Int16):
        return _int_value(_INT16, value.value, name)
    if isinstance(value, Int32):
        return _int_value(_INT32, value.value, name)
    if isinstance(value, Int64):
        return _int_value(_INT64, value.value, name)
    if isinstance(value, Timestamp):
        return bytes((_TIMESTAMP,)) + _int_value(_INT64, value.millis, name)[1:]
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"header {name!r}: a timestamp needs a timezone-aware datetime")
        millis = (value - _EPOCH) // _ONE_MS
        return bytes((_TIMESTAMP,)) + _int_value(_INT64, millis, name)[1:]
    if isinstance(value, uuid.UUID):
        return bytes((_UUID,)) + value.bytes
    raise TypeError(f"header {name!r}: unsupported value type {type(value).__name__}")


def encode_headers(headers: Headers) -> bytes:
    """The headers section of a message. Raises ValueError/TypeError for what botocore rejects."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    seen: set[str] = set()
    parts: list[bytes] = []
    for name, value in items:
        if not isinstance(name, str):
            raise TypeError(f"header name must be a str, got {type(name).__name__}")
        if name in seen:
            raise ValueError(f"duplicate header {name!r}")
        seen.add(name)
        raw_name = name.encode("utf-8")
        if not 1 <= len(raw_name) <= 255:
            raise ValueError(f"header name {name!r} must be 1-255 UTF-8 bytes")
        parts.append(bytes((len(raw_name),)) + raw_name + _encode_value(name, value))
    encoded = b"".join(parts)
    if len(encoded) > MAX_HEADERS_LENGTH:
        raise ValueError(f"headers of {len(encoded)} bytes exceed {MAX_HEADERS_LENGTH}")
    return encoded


def _frame(header_bytes: bytes, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD_LENGTH:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_LENGTH}")
    total = _PRELUDE_LENGTH + len(header_bytes) + len(payload) + 4
    prelude = _PRELUDE.pack(total, len(header_bytes))
    head = prelude + _U32.pack(zlib.crc32(prelude))
    crc = zlib.crc32(payload, zlib.crc32(header_bytes, zlib.crc32(head)))
    return b"".join((head, header_bytes, payload, _U32.pack(crc)))


def encode_message(headers: Headers, payload: bytes) -> bytes:
    """One complete event-stream message (prelude, headers, payload and both CRCs)."""
    return _frame(encode_headers(headers), bytes(payload))


def _json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


_event_headers_cache: dict[str, bytes] = {}


def event_message(event_type: str, payload: Mapping[str, Any]) -> bytes:
    """An ``event`` message: ``:event-type`` = *event_type*, JSON *payload*.

    Blob members of the event shape (``chunk.bytes``) must already be base64 text.
    """
    header_bytes = _event_headers_cache.get(event_type)
    if header_bytes is None:
        header_bytes = encode_headers({
            ":message-type": "event",
            ":event-type": event_type,
            ":content-type": "application/json",
        })
        if len(_event_headers_cache) < 64:
            _event_headers_cache[event_type] = header_bytes
    return _frame(header_bytes, _json(payload))


def lower_camel(name: str) -> str:
    """``ThrottlingException`` -> ``throttlingException`` (the event-stream member name)."""
    return name[:1].lower() + name[1:]


def exception_message(exception_type: str, message: str) -> bytes:
    """An ``exception`` message; botocore raises ``EventStreamError`` with this code.

    *exception_type* may be the shape name (``ThrottlingException``) or the member name
    (``throttlingException``); it is sent lowerCamel, as the service does.
    """
    header_bytes = encode_headers({
        ":message-type": "exception",
        ":exception-type": lower_camel(exception_type),
        ":content-type": "application/json",
    })
    return _frame(header_bytes, _json({"message": message}))


def corrupt_message_crc(message: bytes) -> bytes:
    """*message* with its trailing message CRC flipped (decoders raise a checksum mismatch)."""
    if len(message) < _PRELUDE_LENGTH + 4:
        raise ValueError("not an event-stream message")
    return message[:-4] + bytes(b ^ 0xFF for b in message[-4:])

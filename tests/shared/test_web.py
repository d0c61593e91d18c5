"""Request parsing and validation rules (no I/O)."""

from __future__ import annotations

import gzip
import json

import pytest

from shared import web as w
from shared.errors import ApiError, ErrorCode
from shared.settings import Settings

pytestmark = pytest.mark.unit
JSON = "application/json"


def code_of(content_type: str | None, body: bytes) -> tuple[ErrorCode, ApiError]:
    with pytest.raises(ApiError) as err:
        w.parse_chat_request(content_type, body)
    return err.value.code, err.value


def test_valid_request() -> None:
    req = w.parse_chat_request("application/json; charset=utf-8",
                               b'{"message": "hi", "session_id": "s-1", "extra": 1}')
    assert req.message == "hi"
    assert req.session_id == "s-1"


@pytest.mark.parametrize(("content_type", "body", "code"), [
    (None, b'{"message":"x"}', ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    ("text/plain", b'{"message":"x"}', ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    (JSON, b"", ErrorCode.MALFORMED_JSON),
    (JSON, b"   ", ErrorCode.MALFORMED_JSON),
    (JSON, b'{"message": "x"', ErrorCode.MALFORMED_JSON),
    (JSON, b'{"message": "x", "message": "y"}', ErrorCode.MALFORMED_JSON),
    (JSON, b'\xff\xfe{"message": "x"}', ErrorCode.MALFORMED_JSON),
    (JSON, b'{"message": NaN}', ErrorCode.MALFORMED_JSON),
    (JSON, b"[" * 5000 + b"]" * 5000, ErrorCode.MALFORMED_JSON),
    (JSON, b'{"a":' * 40 + b"1" + b"}" * 40, ErrorCode.MALFORMED_JSON),
    (JSON, b'{"message": 1' + b"0" * 5000 + b"}", ErrorCode.MALFORMED_JSON),
    (JSON, b"[]", ErrorCode.VALIDATION_ERROR),
    (JSON, b'"hello"', ErrorCode.VALIDATION_ERROR),
    (JSON, b"{}", ErrorCode.VALIDATION_ERROR),
    (JSON, b'{"message": ""}', ErrorCode.VALIDATION_ERROR),
    (JSON, b'{"message": " \\n\\t "}', ErrorCode.VALIDATION_ERROR),
    (JSON, b'{"message": null}', ErrorCode.VALIDATION_ERROR),
    (JSON, b'{"message": 42}', ErrorCode.VALIDATION_ERROR),
    (JSON, b'{"message": "a\\u0000b"}', ErrorCode.VALIDATION_ERROR),
    (JSON, json.dumps({"message": "x" * 4001}).encode(), ErrorCode.VALIDATION_ERROR),
    (JSON, b'{"message": "x", "session_id": "a"}', ErrorCode.VALIDATION_ERROR),
    (JSON, b'{"message": "x", "session_id": "../etc"}', ErrorCode.VALIDATION_ERROR),
    (JSON, b'{"message": "x", "session_id": "a/b"}', ErrorCode.VALIDATION_ERROR),
])
def test_bad_bodies(content_type: str | None, body: bytes, code: ErrorCode) -> None:
    got, err = code_of(content_type, body)
    assert got is code
    assert err.status == {ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415, ErrorCode.MALFORMED_JSON: 400,
                          ErrorCode.VALIDATION_ERROR: 422}[code]


def test_validation_details_name_the_field_and_echo_no_input() -> None:
    _, err = code_of(JSON, b'{"message": "", "session_id": "x"}')
    assert err.details is not None
    locs = sorted(tuple(d.loc) for d in err.details)
    assert locs == [("body", "message"), ("body", "session_id")]
    dumped = json.dumps([d.model_dump() for d in err.details])
    assert '"input"' not in dumped


def test_unicode_messages_are_accepted() -> None:
    for text in ["héllo 👋", "مرحبا بالعالم", "<script>alert(1)</script>"]:
        assert w.parse_chat_request(JSON, json.dumps({"message": text}).encode()).message == text


@pytest.mark.parametrize(("incoming", "echoed"), [
    ("abc-123", True), ("a" * 128, True), ("a" * 129, False), ("bad id", False),
    ("x\r\ny", False), ("", False), (None, False),
])
def test_request_id(incoming: str | None, echoed: bool) -> None:
    rid = w.request_id(incoming)
    assert (rid == incoming) is echoed
    assert w.request_id(None) != w.request_id(None)


@pytest.mark.parametrize(("query", "ok"), [
    ([], True), ([("limit", "5")], True), ([("limit", "0")], False), ([("limit", "abc")], False),
    ([("limit", "100000")], False), ([("limit", "5"), ("limit", "abc")], True),
    ([("cursor", "x" * 2000)], False),
])
def test_list_query(query: list[tuple[str, str]], ok: bool) -> None:
    if ok:
        assert w.list_query(query).limit in (5, 20)
    else:
        with pytest.raises(ApiError) as err:
            w.list_query(query)
        assert err.value.status == 422
        assert err.value.details
        assert err.value.details[0].loc[0] == "query"


def test_path_params() -> None:
    assert w.session_id_param("s-1.2:3_x") == "s-1.2:3_x"
    for bad in ["a", "x" * 101, "..", "a b"]:
        with pytest.raises(ApiError) as err:
            w.session_id_param(bad)
        assert err.value.details
        assert err.value.details[0].loc[:2] == ["path", "session_id"]


@pytest.mark.parametrize("dots", [".", "..", "...", ":", "@", "-_"])
def test_user_ids_need_a_letter_or_digit(dots: str) -> None:
    # fuzz finding: user_id "." or ".." matched the pattern, but URL clients rewrite
    # /users/../sessions to /sessions, so the id was valid yet unreachable (404)
    with pytest.raises(ApiError) as err:
        w.user_id_param(dots)
    assert err.value.details is not None
    assert err.value.details[0].loc[:2] == ["path", "user_id"]
    assert err.value.details[0].msg.endswith("user_id must contain a letter or a digit")
    assert w.user_id_param(f"{dots}a") == f"{dots}a"
    with pytest.raises(ApiError):
        w.parse_chat_request(JSON, json.dumps({"message": "hi", "user_id": dots}).encode())


def test_request_target_limit() -> None:
    # fuzz finding: gunicorn refused request lines over 8190 bytes with its own HTML 414 while
    # green answered them; the shared rule now answers 414 first, in both colors
    assert not w.uri_too_long("/api/v1/users/u/sessions", b"cursor=" + b"a" * 7900)
    assert w.uri_too_long("/api/v1/users/u/sessions", b"cursor=" + b"a" * 8000)
    assert w.uri_too_long("/" + "a" * 2048, b"")
    assert not w.uri_too_long("/" + "a" * 2047, b"")
    # the target counts as sent: a non-ASCII path is percent-encoded (3 bytes per UTF-8 byte)
    assert w.target_bytes("/\u00e9", b"") == len("/%C3%A9")
    assert w.target_bytes("/a", b"x=1") == len("/a?x=1")
    assert w.uri_too_long("/" + "\U0001f600" * 700, b"")  # 700 chars, 8400 bytes sent


def test_header_limits() -> None:
    line = w.MAX_HEADER_LINE_BYTES - len("X-Big: ")
    assert not w.headers_too_large([("X-Big", "a" * line)])
    assert w.headers_too_large([("X-Big", "a" * (line + 1))])
    many = [(f"X-H{i}", "v") for i in range(w.MAX_HEADER_FIELDS)]
    assert not w.headers_too_large(many)
    assert w.headers_too_large([*many, ("X-One-More", "v")])
    # a repeated name is one line, joined with "," as WSGI joins it: the same verdict whether
    # the server hands the values over apart (green) or joined (blue)
    apart = [("X-Rep", "a" * 4000), ("x-rep", "b" * 4000), ("X-REP", "c" * 200)]
    joined = [("X-Rep", ",".join(v for _, v in apart))]
    assert w.headers_too_large(apart) == w.headers_too_large(joined) is True
    assert not w.headers_too_large([("X-Rep", "v")] * (w.MAX_HEADER_FIELDS + 5))


def test_api_key_check() -> None:
    open_settings = Settings()
    assert w.check_api_key(open_settings, None) is None
    locked = Settings(api_keys="k1,k2")
    assert w.check_api_key(locked, "k2") == "k2"
    for bad in [None, "", "k3", "k1 "]:
        with pytest.raises(ApiError) as err:
            w.check_api_key(locked, bad)
        assert err.value.status == 401


@pytest.mark.parametrize("provided", ["k1", "k2", "k3", "wrong", "", None])
def test_api_key_check_compares_every_key_without_early_exit(
        monkeypatch: pytest.MonkeyPatch, provided: str | None) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = w.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(w.hmac, "compare_digest", counting)
    locked = Settings(api_keys="k1,k2,k3")
    if provided in ("k1", "k2", "k3"):
        assert w.check_api_key(locked, provided) == provided
    else:
        with pytest.raises(ApiError) as err:
            w.check_api_key(locked, provided)
        assert err.value.code is ErrorCode.UNAUTHORIZED
    # every configured key is compared, whichever matched (or none): no early exit, no ==
    assert sorted(b for _, b in calls) == [b"k1", b"k2", b"k3"]
    assert all(a == (provided or "").encode() for a, _ in calls)


def test_cors_rules() -> None:
    s = Settings(cors_origins="https://app.example.com")
    assert w.cors(s, "GET", None, None, None).headers == {}
    ok = w.cors(s, "GET", "https://app.example.com", None, None)
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Access-Control-Allow-Credentials" not in ok.headers
    assert "Access-Control-Allow-Origin" not in w.cors(s, "GET", "https://evil.test", None,
                                                       None).headers
    pre = w.cors(s, "OPTIONS", "https://app.example.com", "POST", "Content-Type, X-API-Key")
    assert pre.preflight
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    with pytest.raises(ApiError) as err:
        w.cors(s, "OPTIONS", "https://evil.test", "POST", None)
    assert err.value.status == 403


def test_gzip_threshold_and_negotiation() -> None:
    s = Settings(gzip_min_bytes=1000)
    small, h = w.maybe_gzip(b"x" * 999, "gzip", s)
    assert small == b"x" * 999
    assert h == {}
    big, h = w.maybe_gzip(b"x" * 1000, "gzip, br", s)
    assert h["Content-Encoding"] == "gzip"
    assert gzip.decompress(big) == b"x" * 1000
    _same, h = w.maybe_gzip(b"x" * 1000, "gzip;q=0", s)
    assert "Content-Encoding" not in h
    assert h["Vary"] == "Accept-Encoding"
    assert w.accepts_gzip("identity, gzip;q=0.5")
    assert not w.accepts_gzip("gzip;q=abc")


def test_merge_vary() -> None:
    assert w.merge_vary("Origin", None, "accept-encoding, origin") == "Origin, accept-encoding"


# --- client address (TRUST_FORWARDED_FOR, TRUSTED_PROXY_HOPS) --------------------------------

def test_client_ip_ignores_forwarded_for_unless_trusted() -> None:
    s = Settings()
    assert w.client_ip(s, "10.0.0.9", "6.6.6.6, 10.0.0.1") == "10.0.0.9"
    assert w.client_ip(s, None, None) == "unknown"


@pytest.mark.parametrize(("hops", "header", "expected"), [
    # the ALB appends the address it was connected from: the last hop
    (1, "203.0.113.7", "203.0.113.7"),
    # a client forging the header writes to the left of it: never used
    (1, "6.6.6.6, 203.0.113.7", "203.0.113.7"),
    (1, "6.6.6.6,1.1.1.1,203.0.113.7", "203.0.113.7"),
    # two proxies (a CDN, then the ALB): the CDN's hop is the client
    (2, "6.6.6.6, 203.0.113.7, 198.51.100.2", "203.0.113.7"),
    # fewer hops than trusted proxies: the request bypassed one, so the peer address
    (2, "203.0.113.7", "10.0.0.9"),
    (1, "", "10.0.0.9"),
    (1, "6.6.6.6, ", "10.0.0.9"),  # an empty last hop is no address
])
def test_client_ip_takes_the_hop_the_trusted_proxies_wrote(hops: int, header: str,
                                                           expected: str) -> None:
    s = Settings(trust_forwarded_for=True, trusted_proxy_hops=hops)
    assert w.client_ip(s, "10.0.0.9", header) == expected


def test_forwarded_for_joins_repeated_headers_in_order() -> None:
    # Starlette hands repeated headers apart, a WSGI server joins them: the same hops either way
    apart = [("Host", "x"), ("X-Forwarded-For", "6.6.6.6"), ("x-forwarded-for", "203.0.113.7")]
    joined = [("Host", "x"), ("X-Forwarded-For", "6.6.6.6,203.0.113.7")]
    assert w.forwarded_for(apart) == w.forwarded_for(joined) == "6.6.6.6,203.0.113.7"
    assert w.forwarded_for([("Host", "x")]) is None
    s = Settings(trust_forwarded_for=True)
    assert w.client_ip(s, "10.0.0.9", w.forwarded_for(apart)) == "203.0.113.7"


# --- /metrics access (METRICS_ACCESS, METRICS_API_KEY) ---------------------------------------

@pytest.mark.parametrize("path", ["/metrics", "/metrics/performance"])
def test_metrics_access(path: str) -> None:
    w.check_metrics_access(Settings(), path, None)  # open by default
    with pytest.raises(ApiError) as off:
        w.check_metrics_access(Settings(metrics_access="off"), path, "Bearer anything")
    assert off.value.code is ErrorCode.NOT_FOUND
    assert off.value.status == 404
    keyed = Settings(metrics_access="key", metrics_api_key="scrape-token")
    w.check_metrics_access(keyed, path, "Bearer scrape-token")
    w.check_metrics_access(keyed, path, "bearer  scrape-token ")
    for bad in (None, "", "scrape-token", "Bearer", "Bearer scrape-tokeN", "Basic scrape-token",
                "Bearer scrape-token2"):
        with pytest.raises(ApiError) as refused:
            w.check_metrics_access(keyed, path, bad)
        assert refused.value.code is ErrorCode.UNAUTHORIZED
        assert refused.value.status == 401
        assert refused.value.headers["WWW-Authenticate"] == "Bearer"


def test_metrics_access_leaves_other_paths_alone() -> None:
    for settings in (Settings(metrics_access="off"),
                     Settings(metrics_access="key", metrics_api_key="scrape-token")):
        for path in ("/health", "/api/v1/chat", "/metrics/", "/metricsx", "/openapi.json"):
            w.check_metrics_access(settings, path, None)

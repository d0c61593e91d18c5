"""moto in server mode behind a fault injector: DynamoDB and CloudWatch faults on the real wire.

The agent emulator takes its faults from markers in the chat message; this does the same for
DynamoDB, in front of moto, so both colors can be given the same store fault:

- **a marker in any string of a DynamoDB request**, ``ddb:KIND:Operation``, fails that operation
  only (``Operation`` is the ``X-Amz-Target`` operation: ``GetItem``, ``PutItem``,
  ``DeleteItem``, ``Query``, ``UpdateItem``). Session ids (``^[0-9a-zA-Z._:-]{2,100}$``) and
  user ids can carry one: ``s-1-ddb:throughput:GetItem`` fails the chat's read,
  ``s-1-ddb:internal:PutItem`` its write after the agent answered, ``u-1-ddb:throttle:Query`` a
  user's session list. Every attempt of that request fails the same way, so the SDK's retries
  end in the final failure, as with a persistent fault;
- **a run-time switch**, ``POST /_faults/config``, for what no request can carry a marker for
  (the rate limiter's ``UpdateItem`` key is a hash, the readiness check reads a fixed key, a
  CloudWatch batch holds no user text)::

      {"dynamodb": {"UpdateItem": "throttle"}}   # one operation ("*": every app operation)
      {"dynamodb": {}}                           # DynamoDB healthy again
      {"cloudwatch": "down"}                     # PutMetricData connections dropped; "up"
      {"cloudwatch_delay_s": 3}                  # each PutMetricData held 3 s, then stored,
                                                 # unless its client left meanwhile (then it
                                                 # never arrived); 0: not held

  ``GET /_faults/config`` shows the switches and the faults injected so far, per table and per
  CloudWatch namespace, ``held``: the PutMetricData calls being held now, and ``abandoned``:
  those whose client closed the connection while held (not stored), per namespace;
  ``DELETE /_faults/config`` puts every switch back to healthy.

Each KIND answers what real DynamoDB answers (JSON 1.0 error, ``__type``, ``x-amzn-RequestId``,
``x-amz-crc32``), or fails the connection:

==================  =========================================================================
``throughput``      400 ``ProvisionedThroughputExceededException``
``throttle``        400 ``ThrottlingException``
``request-limit``   400 ``RequestLimitExceeded``
``missing-table``   400 ``ResourceNotFoundException`` (the table does not exist)
``internal``        500 ``InternalServerError``
``unavailable``     503 ``ServiceUnavailable``
``disconnect``      the connection is dropped without an answer (unreachable)
``timeout``         nothing for ``fault_timeout_s``, then the connection is dropped
==================  =========================================================================

CloudWatch's read path, ``GetMetricData`` and ``GetMetricStatistics``, is answered by
:class:`devstack.cloudwatch_front.CloudWatchFront` from moto's stored datums (percentiles, exact
namespaces and dimensions, which moto lacks); the outage switch drops those calls too.
Everything else goes to moto unchanged. Run it alone with
``python -m devstack.moto_faults --port 5000``; :class:`FaultyMotoServer` runs it in a thread.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from devstack.cloudwatch_front import CloudWatchFront
from devstack.moto_atomic import install as install_atomic_writes

log = logging.getLogger("devstack.moto_faults")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

DYNAMODB_TARGET = "DynamoDB_20120810."
# the operations the apps use; "*" in a switch means these (never the harness's streams, scans
# or table descriptions, so a switch never breaks what observes the lanes)
APP_OPERATIONS = ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query")
MARKER = re.compile(r"ddb:(?P<kind>[a-z][a-z-]*):(?P<op>[A-Z][A-Za-z]*)")
_DDB = "com.amazonaws.dynamodb.v20120810#"
_CORAL = "com.amazon.coral.availability#"


@dataclass(frozen=True)
class ErrorFault:
    status: int
    type: str  # the body's __type, as DynamoDB sends it
    message: str

    @property
    def code(self) -> str:
        return self.type.rsplit("#", 1)[-1]


ERROR_FAULTS: dict[str, ErrorFault] = {
    "throughput": ErrorFault(400, _DDB + "ProvisionedThroughputExceededException",
                             "The level of configured provisioned throughput for the table was "
                             "exceeded. Consider increasing your provisioning level with the "
                             "UpdateTable API."),
    "throttle": ErrorFault(400, _CORAL + "ThrottlingException",
                           "Rate of requests exceeds the allowed throughput."),
    "request-limit": ErrorFault(400, _DDB + "RequestLimitExceeded",
                                "Throughput exceeds the current throughput limit for your "
                                "account."),
    "missing-table": ErrorFault(400, _DDB + "ResourceNotFoundException",
                                "Requested resource not found"),
    "internal": ErrorFault(500, _DDB + "InternalServerError", "Internal server error"),
    "unavailable": ErrorFault(503, _CORAL + "ServiceUnavailableException",
                              "Service unavailable"),
}
CONNECTION_FAULTS = ("disconnect", "timeout")
FAULT_KINDS = (*ERROR_FAULTS, *CONNECTION_FAULTS)
_REASONS = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}
_SCOPE = re.compile(r"Credential=[^/,]+/[^/,]+/[^/,]+/([^/,]+)/")


def _service(environ: dict[str, Any]) -> str:
    """The signing name in the SigV4 credential scope (``dynamodb``, ``monitoring``, ...)."""
    match = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return match.group(1) if match else ""


@dataclass
class Switches:
    """The run-time switches and the faults injected so far (thread-safe)."""

    dynamodb: dict[str, str] = field(default_factory=dict)  # operation or "*" -> kind
    cloudwatch: str = "up"
    cloudwatch_delay_s: float = 0.0  # how long each PutMetricData is held before moto stores it
    held: dict[str, int] = field(default_factory=dict)  # namespace -> PutMetricData held now
    abandoned: dict[str, int] = field(default_factory=dict)  # namespace -> left while held
    injected: dict[str, dict[str, int]] = field(
        default_factory=lambda: {"dynamodb": {}, "cloudwatch": {}})
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, raw: Any) -> None:
        """Apply a ``POST /_faults/config`` body; ValueError names what is wrong."""
        if not isinstance(raw, dict) or set(raw) - {"dynamodb", "cloudwatch",
                                                    "cloudwatch_delay_s"}:
            raise ValueError("expected {\"dynamodb\": {operation: kind}, \"cloudwatch\": "
                             "\"up\"|\"down\", \"cloudwatch_delay_s\": seconds}")
        dynamodb = raw.get("dynamodb", None)
        if dynamodb is not None:
            if not isinstance(dynamodb, dict):
                raise ValueError("dynamodb: a mapping of operation (or \"*\") to a fault kind")
            for op, kind in dynamodb.items():
                if op != "*" and op not in APP_OPERATIONS:
                    raise ValueError(f"dynamodb: unknown operation {op!r}; one of "
                                     f"{', '.join(APP_OPERATIONS)} or *")
                if kind not in FAULT_KINDS:
                    raise ValueError(f"dynamodb: unknown fault {kind!r}; one of "
                                     f"{', '.join(FAULT_KINDS)}")
        cloudwatch = raw.get("cloudwatch", None)
        if cloudwatch is not None and cloudwatch not in ("up", "down"):
            raise ValueError("cloudwatch: \"up\" or \"down\"")
        delay = raw.get("cloudwatch_delay_s", None)
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int | float)
                                  or not 0 <= delay <= 60):
            raise ValueError("cloudwatch_delay_s: seconds, 0 to 60")
        with self._lock:
            if dynamodb is not None:
                self.dynamodb = {str(k): str(v) for k, v in dynamodb.items()}
            if cloudwatch is not None:
                self.cloudwatch = cloudwatch
            if delay is not None:
                self.cloudwatch_delay_s = float(delay)

    def reset(self) -> None:
        with self._lock:
            self.dynamodb = {}
            self.cloudwatch = "up"
            self.cloudwatch_delay_s = 0.0

    def count(self, service: str, scope: str) -> None:
        with self._lock:
            per = self.injected[service]
            per[scope] = per.get(scope, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"dynamodb": dict(self.dynamodb), "cloudwatch": self.cloudwatch,
                    "cloudwatch_delay_s": self.cloudwatch_delay_s, "held": dict(self.held),
                    "abandoned": dict(self.abandoned),
                    "injected": {k: dict(v) for k, v in self.injected.items()}}

    def hold(self, namespace: str) -> bool:
        """Hold one PutMetricData for ``cloudwatch_delay_s`` (counted in ``held`` meanwhile).
        Returns whether it was held."""
        with self._lock:
            delay = self.cloudwatch_delay_s
            if delay <= 0:
                return False
            self.held[namespace] = self.held.get(namespace, 0) + 1
        try:
            time.sleep(delay)
        finally:
            with self._lock:
                self.held[namespace] -= 1
        return True

    def abandon(self, namespace: str) -> None:
        with self._lock:
            self.abandoned[namespace] = self.abandoned.get(namespace, 0) + 1


def dynamodb_fault(operation: str, body: str, switches: dict[str, str]) -> str | None:
    """The fault KIND for one DynamoDB request: its marker for this operation, else a switch."""
    for match in MARKER.finditer(body):
        if match.group("op") == operation:
            return match.group("kind")
    if operation in APP_OPERATIONS:
        return switches.get(operation) or switches.get("*")
    return None


class FaultInjector:
    """WSGI middleware in front of moto's dispatcher."""

    def __init__(self, app: WSGIApp, fault_timeout_s: float = 30.0) -> None:
        self.app = app
        self.fault_timeout_s = fault_timeout_s
        self.switches = Switches()
        self.cloudwatch_front = CloudWatchFront()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/_faults/config":
            return self._control(environ, start_response)
        service = _service(environ)
        if service not in ("dynamodb", "monitoring"):
            return self.app(environ, start_response)
        body = self._read_body(environ)
        if "gzip" in environ.get("HTTP_CONTENT_ENCODING", "").lower():
            # botocore gzips PutMetricData bodies from 10 KiB on; moto is handed them as sent
            with contextlib.suppress(OSError, EOFError):
                body = gzip.decompress(body)
        text = body.decode("utf-8", errors="replace")
        if service == "dynamodb":
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            if target.startswith(DYNAMODB_TARGET):
                operation = target[len(DYNAMODB_TARGET):]
                kind = dynamodb_fault(operation, text, self.switches.dynamodb)
                if kind is not None:
                    self.switches.count("dynamodb", _table(text))
                    return self._fail(kind, environ, start_response)
        elif self.switches.cloudwatch == "down":
            self.switches.count("cloudwatch", _namespace(text, environ))
            return self._fail("disconnect", environ, start_response)
        elif self.switches.cloudwatch_delay_s > 0 and _is_put_metric_data(text, environ):
            namespace = _namespace(text, environ)
            if self.switches.hold(namespace) and _client_left(environ):
                # given up while held (a cancelled flush closes its connection): never stored,
                # as a call that had not reached CloudWatch yet
                self.switches.abandon(namespace)
                return self._fail("disconnect", environ, start_response)
        else:
            answer = self.cloudwatch_front(environ, text)
            if answer is not None:  # GetMetricData, GetMetricStatistics
                status, headers, payload = answer
                start_response(status, headers)
                return [payload]
        return self.app(environ, start_response)

    @staticmethod
    def _read_body(environ: dict[str, Any]) -> bytes:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
        return bytes(body)

    def _fail(self, kind: str, environ: dict[str, Any], start_response: Callable[..., Any]
              ) -> Iterable[bytes]:
        fault = ERROR_FAULTS.get(kind)
        if fault is None and kind not in CONNECTION_FAULTS:
            # a typo in a marker must be visible, not a silent success
            fault = ErrorFault(400, _DDB + "ValidationException",
                               f"devstack: unknown fault marker {kind!r}; one of "
                               f"{', '.join(FAULT_KINDS)}")
        if fault is not None:
            payload = json.dumps({"__type": fault.type, "message": fault.message}).encode()
            start_response(f"{fault.status} {_REASONS.get(fault.status, 'Error')}", [
                ("Content-Type", "application/x-amz-json-1.0"),
                ("Content-Length", str(len(payload))),
                ("x-amzn-RequestId", uuid.uuid4().hex.upper()),
                ("x-amz-crc32", str(zlib.crc32(payload))),
            ])
            return [payload]
        if kind == "timeout":
            time.sleep(self.fault_timeout_s)
        # no answer at all: the client sees the connection close (werkzeug's write of the
        # status line then fails, which it treats as a dropped connection)
        start_response("500 Internal Server Error", [("Content-Length", "0")])
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return []

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        status = "200 OK"
        payload = b""
        if method == "POST":
            try:
                self.switches.update(json.loads(self._read_body(environ) or b"{}"))
            except ValueError as exc:
                status = "400 Bad Request"
                payload = json.dumps({"error": str(exc)}).encode()
        elif method == "DELETE":
            self.switches.reset()
        elif method != "GET":
            status = "405 Method Not Allowed"
        if status == "200 OK":
            payload = json.dumps(self.switches.snapshot()).encode()
            log.info("faults", extra={"method": method, "config": payload.decode()})
        elif status.startswith("405"):
            payload = b'{"error": "GET, POST or DELETE"}'
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(payload)))])
        return [payload]


def _table(body: str) -> str:
    try:
        return str(json.loads(body).get("TableName", ""))
    except (ValueError, AttributeError):
        return ""


def _client_left(environ: dict[str, Any]) -> bool:
    """Whether the client closed its connection (a peek reads its end, or a reset)."""
    sock = environ.get("werkzeug.socket")
    if sock is None:
        return False
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"")
    except BlockingIOError:
        return False  # still connected, nothing more sent
    except OSError:
        return True


def _is_put_metric_data(body: str, environ: dict[str, Any]) -> bool:
    if environ.get("HTTP_X_AMZ_TARGET", "").endswith(".PutMetricData"):  # the JSON protocol
        return True
    return "json" not in environ.get("CONTENT_TYPE", "") and \
        parse_qs(body).get("Action", [""])[0] == "PutMetricData"


def _namespace(body: str, environ: dict[str, Any]) -> str:
    if "json" in environ.get("CONTENT_TYPE", ""):  # CloudWatch's JSON protocol (botocore 1.42.7+)
        try:
            return str(json.loads(body).get("Namespace", ""))
        except (ValueError, AttributeError):
            return ""
    return parse_qs(body).get("Namespace", [""])[0]  # the query protocol


def build_app(fault_timeout_s: float = 30.0) -> FaultInjector:
    return FaultInjector(DomainDispatcherApplication(create_backend_app),
                         fault_timeout_s=fault_timeout_s)


class FaultyMotoServer:
    """moto behind the injector, served by werkzeug in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 fault_timeout_s: float = 30.0) -> None:
        self.app = build_app(fault_timeout_s)
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def switches(self) -> Switches:
        return self.app.switches

    def start(self) -> FaultyMotoServer:
        self._server = make_server(self._host, self._port, self.app,
                                   threaded=True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="moto-faults", daemon=True)
        self._thread.start()
        return self

    def get_host_and_port(self) -> tuple[str, int]:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"  # noqa: S104

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.moto_faults",
        description="Serve moto (DynamoDB, CloudWatch, ...) behind the fault injector.")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("MOTO_PORT", 5000)))
    parser.add_argument("--fault-timeout-s", type=float, default=30.0,
                        help="how long a 'timeout' fault stays silent before dropping")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    install_atomic_writes()  # as devstack's in-process moto has them
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    server = FaultyMotoServer(args.host, args.port, args.fault_timeout_s).start()
    print(json.dumps({"url": server.url, "pid": os.getpid()}), flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The property-based case generator: deterministic, complete, bounded, and both colors agree."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import httpx
import pytest

from parity_tests.harness.generate import (
    FORBIDDEN,
    MAX_BODY_BYTES,
    MAX_STRING_CHARS,
    generate_cases,
    operations,
)
from parity_tests.harness.model import ABSENT, Case, Request
from shared.contracts import ChatRequest
from shared.openapi import openapi_document
from tests.conftest import COLORS, ColorClient

pytestmark = pytest.mark.unit

SEED = 20_240_601
COUNT = 120
ROOT = Path(__file__).resolve().parents[2]
API_KEY = "parity-key-1"


@cache
def _cases(count: int = COUNT, seed: int = SEED) -> tuple[Case, ...]:
    return tuple(generate_cases(openapi_document(), count, seed))


def _dump(cases: Iterator[Case] | tuple[Case, ...] | list[Case]) -> str:
    """Every field of every case as JSON (``ABSENT`` has no stable repr)."""
    return json.dumps([{
        "id": c.id, "description": c.description, "source": c.source, "tags": c.tags,
        "variables": c.variables, "unordered": c.unordered,
        "steps": [{"name": s.name, "capture": s.capture, "expect_status": s.expect_status,
                   "request": s.request.to_dict(), "auth": s.request.auth} for s in c.steps],
    } for c in cases], sort_keys=True)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


def _operation_of(case: Case) -> str:
    match = re.fullmatch(r"generated/(\w+)-(\d{4})", case.id)
    assert match, case.id
    return match.group(1)


def _schemas() -> dict[str, Any]:
    return {op.operation_id: op for op in operations(openapi_document())}


# --- determinism ----------------------------------------------------------------------------------

def test_same_seed_same_cases() -> None:
    again = generate_cases(openapi_document(), COUNT, SEED)
    assert list(_cases()) == again
    assert _dump(_cases()) == _dump(again)


def test_different_seeds_differ() -> None:
    other = generate_cases(openapi_document(), COUNT, SEED + 1)
    assert _dump(other) != _dump(_cases())
    assert [c.id for c in other] == [c.id for c in _cases()]


_CHILD = """
import hashlib, json, sys
if sys.argv[1] == "more":  # other project modules loaded: must not change anything
    import devstack.agent_emulator, fastapi_app, legacy_flask, shared.flows  # noqa: F401
from parity_tests.harness.generate import generate_cases
from shared.openapi import openapi_document
cases = generate_cases(openapi_document(), 40, 7)
print(json.dumps([[c.id, c.description, c.steps[0].request.to_dict()] for c in cases],
                 sort_keys=True))
"""


def test_same_seed_same_cases_in_other_processes() -> None:
    """Hash randomisation and the set of imported modules change nothing."""
    runs = []
    for hash_seed, imports in (("0", "few"), ("12345", "more")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        runs.append(subprocess.Popen([sys.executable, "-c", _CHILD, imports], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True))
    outputs = []
    for run in runs:
        out, err = run.communicate(timeout=100)
        assert run.returncode == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1]
    assert len(json.loads(outputs[0])) == 40


# --- coverage and shape ---------------------------------------------------------------------------

def test_every_operation_gets_its_round_robin_share() -> None:
    document = openapi_document()
    ids = [op.get("operationId") for item in document["paths"].values()
           for op in item.values()]
    assert ids == list(_schemas())
    cases = _cases()
    assert len(cases) == COUNT
    assert len({c.id for c in cases}) == COUNT
    # round-robin: the first len(ids) cases are one per operation, in document order
    assert [_operation_of(c) for c in cases[:len(ids)]] == ids
    shares = {op: sum(_operation_of(c) == op for c in cases) for op in ids}
    assert max(shares.values()) - min(shares.values()) <= 1, shares
    for op in ids:
        numbers = [c.id for c in cases if _operation_of(c) == op]
        assert numbers == [f"generated/{op}-{n:04d}" for n in range(1, shares[op] + 1)]


def test_valid_and_invalid_for_every_operation() -> None:
    tags = {(_operation_of(c), c.tags[1]) for c in _cases()}
    for op in _schemas():
        assert (op, "valid") in tags, op
        assert (op, "invalid") in tags, op


@pytest.mark.parametrize("count", [0, 1, 5, 9, 18, 19])
def test_small_counts(count: int) -> None:
    cases = generate_cases(openapi_document(), count, SEED)
    ops = list(_schemas())
    assert len(cases) == count
    assert [_operation_of(c) for c in cases] == (ops * 3)[:count]
    if count >= 2 * len(ops):
        assert {(_operation_of(c), c.tags[1]) for c in cases} == {
            (op, v) for op in ops for v in ("valid", "invalid")}


def test_case_shape() -> None:
    document = openapi_document()
    for case in _cases():
        assert case.source == "generated"
        assert case.tags in {("generated", "valid"), ("generated", "invalid")}
        assert len(case.steps) == 1
        step = case.steps[0]
        assert step.expect_status is None
        assert step.capture == {}
        req = step.request
        assert req.auth is True
        op = _schemas()[_operation_of(case)]
        assert req.method == op.method
        assert op.method.lower() in document["paths"][op.path]
        # a parameter stays one path segment: the template's segment count
        assert req.path.count("/") == op.path.count("/"), req.path
        assert re.fullmatch(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(op.path)), req.path)
        assert req.json is ABSENT or req.body is None


def test_no_markers_or_variables_anywhere() -> None:
    for case in _cases(200, 99):
        req = case.steps[0].request
        for text in _strings(req.to_dict()):
            assert not any(marker in text for marker in FORBIDDEN), (case.id, text)
        for text in (case.id, case.description):
            assert not any(marker in text for marker in FORBIDDEN), text


def test_sizes_are_bounded() -> None:
    longest_message = 0
    for case in _cases(200, 99):
        req = case.steps[0].request
        content = req.content()
        assert content is None or len(content) <= MAX_BODY_BYTES, case.id
        for text in _strings(req.to_dict()):
            assert len(text) <= MAX_STRING_CHARS, case.id
        if req.json is not ABSENT and isinstance(req.json, dict) and isinstance(
                req.json.get("message"), str):
            longest_message = max(longest_message, len(req.json["message"]))
    assert longest_message <= 4100


# --- valid means valid, invalid means invalid -----------------------------------------------------

def _path_values(op_path: str, path: str) -> dict[str, str]:
    return {tpl[1:-1]: unquote(seg) for tpl, seg in zip(op_path.split("/"), path.split("/"),
                                                         strict=True) if tpl.startswith("{")}


def test_valid_cases_satisfy_the_documents_schemas() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    ops = _schemas()
    chat_bodies = 0
    for case in _cases(200, 5):
        if case.tags[1] != "valid":
            continue
        op = ops[_operation_of(case)]
        req = case.steps[0].request
        values = _path_values(op.path, req.path)
        for p in op.path_params:
            jsonschema.validate(values[p.name], p.schema, cls=jsonschema.Draft202012Validator)
        for name, text in req.query:
            schema = next(p.schema for p in op.query_params if p.name == name)
            value: Any = int(text) if schema.get("type") == "integer" else text
            jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)
        if op.body_schema is None:
            assert req.json is ABSENT
            assert req.body is None
            continue
        chat_bodies += 1
        jsonschema.validate(req.json, op.body_schema, cls=jsonschema.Draft202012Validator)
        assert req.headers == {"Content-Type": "application/json"}
        message = req.json["message"]
        if message.strip() and "\x00" not in message:  # what JSON schema cannot say
            ChatRequest.model_validate(req.json)
    assert chat_bodies >= 5


def test_invalid_cases_break_something() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    ops = _schemas()
    kinds = set()
    for case in _cases(200, 5):
        if case.tags[1] != "invalid":
            continue
        op = ops[_operation_of(case)]
        req = case.steps[0].request
        what = case.description.split(": ", 1)[1].split(" (", 1)[0]
        kinds.add(what.split(" ", 2)[0] if what.startswith(("path", "query")) else what)
        if what.startswith("path parameter"):
            name = what.split()[2]
            value = _path_values(op.path, req.path)[name]
            schema = next(p.schema for p in op.path_params if p.name == name)
            assert value not in ("", ".", "..")
            assert "/" not in value
            assert not jsonschema.Draft202012Validator(schema).is_valid(value), value
        elif what.startswith("body") and req.json is not ABSENT and "breaks" in what:
            assert not jsonschema.Draft202012Validator(op.body_schema).is_valid(req.json)
        elif what.startswith("malformed JSON"):
            assert req.body is not None
            with pytest.raises(ValueError):
                json.loads(req.body, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    assert {"path", "query", "body breaks its schema", "undocumented query parameters",
            "an unexpected JSON body"} <= kinds, kinds
    assert any(k.startswith("malformed JSON") for k in kinds), kinds
    assert any(k.startswith("body sent as") for k in kinds), kinds


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


# --- blue and green agree -------------------------------------------------------------------------

def _pep3333(app: Any) -> Any:
    """httpx's WSGITransport puts the decoded path in PATH_INFO as is; a WSGI server (PEP 3333)
    gives its UTF-8 bytes as latin-1, which is what Flask expects (else: UnicodeEncodeError
    in werkzeug for a path character above U+00FF, before the app runs)."""
    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        environ["PATH_INFO"] = environ["PATH_INFO"].encode("utf-8").decode("latin-1")
        return app(environ, start_response)

    return wsgi


def _send(client: Any, req: Request) -> Any:
    url = req.path + (f"?{urlencode(req.query, quote_via=quote)}" if req.query else "")
    headers = {"X-API-Key": API_KEY, **req.headers}
    return client.request(req.method, url, headers=headers, content=req.content())


@pytest.mark.integration
def test_blue_and_green_answer_generated_cases_alike(
        make_client: Callable[..., ColorClient], stack: Any) -> None:
    with ExitStack() as exits:
        _blue_and_green_alike(make_client, stack, exits)


def _blue_and_green_alike(make_client: Callable[..., ColorClient], stack: Any,
                          exits: ExitStack) -> None:
    from devstack.stack import create_tables

    clients: dict[str, Any] = {}
    for color in COLORS:  # each color its own tables, as in a parity run
        tables = (f"gen_{color}_{uuid.uuid4().hex[:8]}", f"gen_rl_{color}_{uuid.uuid4().hex[:8]}")
        create_tables(stack.moto_url, *tables)
        client = make_client(color, api_keys=API_KEY, sessions_table=tables[0],
                             rate_limit_table=tables[1])
        clients[color] = client if color != "blue" else exits.enter_context(httpx.Client(
            transport=httpx.WSGITransport(app=_pep3333(client.app)),
            base_url="http://testserver"))
    document = openapi_document()
    mismatches, failures = [], []
    for case in generate_cases(document, 40, SEED):
        req = case.steps[0].request
        op = _schemas()[_operation_of(case)]
        documented = set(document["paths"][op.path][op.method.lower()]["responses"])
        statuses = {color: _send(client, req).status_code for color, client in clients.items()}
        if len(set(statuses.values())) > 1:
            mismatches.append((case.id, statuses, req.to_dict()))
        for color, status in statuses.items():
            if status >= 500 and (status == 500 or str(status) not in documented):
                failures.append((case.id, color, status, req.to_dict()))
    assert not mismatches, mismatches
    assert not failures, failures

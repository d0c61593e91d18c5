"""Property-based cases for every operation of an OpenAPI document, valid and invalid.

``generate_cases(document, count, seed)`` reads the operations (every path x method) of the
document both colors serve and asks Hypothesis, through ``hypothesis_jsonschema.from_schema``,
for requests built from the document's own schemas (path and query parameters, request body;
``$ref`` into ``#/components/schemas`` resolved):

valid
    every parameter and the body satisfy their schemas (the JSON schema cannot say everything:
    a "valid" chat message may still be blank, so some valid cases get a 422 - the harness
    compares the colors, it does not predict).
invalid
    one thing wrong at a time: a path parameter that breaks its schema (still one URL path
    segment: no ``/``, percent-encoded), a query parameter that breaks its schema (wrong type,
    out of range, too long), a body that breaks its schema (wrong type, a required property
    missing, a property of the wrong type or size), a body that is not JSON, a body with a
    wrong or missing content type; for operations that take no input at all, undocumented
    query parameters or an unexpected body.

``count`` cases are dealt round-robin over the operations (operation 1, 2, ..., n, 1, 2, ...),
and each operation alternates valid and invalid, so every operation gets both as soon as
``count >= 2 * len(operations)``. An operation whose valid inputs run out (``GET /health``
has exactly one) fills its share with invalid ones; its invalid share is spread evenly over
the ways of being wrong that apply to it (the first one rotating with the seed). Header and
cookie parameters are not generated (the document has none).

Determinism: every (operation, way of being valid or wrong) runs Hypothesis's generate phase
alone - no database, no shrinking, no replay, no health checks, the built-in default profile -
under ``@seed`` derived with SHA-256 from ``(seed, operationId, valid|invalid, kind,
attempt)``, with Hypothesis's "local constants" switched off: Hypothesis mixes in literals of
whatever project modules happen to be imported, so the same seed would otherwise give other
values in another process. Examples are taken in the order generated, deduplicated, and
filtered: no ``[[`` in any string (it asks the agent emulator for a fault), no ``{{`` (a
variable to the case model), strings of at most ``MAX_STRING_CHARS`` characters, a body of at
most ``MAX_BODY_BYTES``, and an identifier (a path parameter, a top-level string of a body)
used by one case only, so a case never sees a session another case created and user lists
stay empty.

hypothesis-jsonschema 0.23.1 cannot draw objects with Hypothesis 6.170 (it calls
``many.more()``, which is gone); until a fixed release is installed, objects are assembled
here from their ``properties``/``required``/``additionalProperties``, every value still drawn
by ``from_schema`` (see ``_from``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import jsonschema  # type: ignore[import-untyped]
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from parity_tests.harness.model import ABSENT, Case, Request, Step

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_STRING_CHARS",
    "GenerationError",
    "Operation",
    "Param",
    "generate_cases",
    "operations",
]

MAX_STRING_CHARS = 4100  # the chat message's 4000 plus room for "one too many" violations
MAX_BODY_BYTES = 20_000
MAX_SEGMENT_CHARS = 300  # a path parameter, before percent-encoding
FORBIDDEN = ("[[", "{{")  # agent-emulator fault markers; case-model variables
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
JSON_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")
_SCALAR = {"type": ["null", "boolean", "integer", "number", "string"]}
# Small values of each JSON type: what a value of the wrong type is drawn from.
_OF_TYPE: dict[str, dict[str, Any]] = {
    **{t: {"type": t} for t in JSON_TYPES},
    "array": {"type": "array", "maxItems": 3, "items": _SCALAR},
    "object": {"type": "object", "maxProperties": 3, "additionalProperties": _SCALAR},
}
# Content types an operation does not list (some of them a JSON parser would still accept).
OTHER_MEDIA_TYPES = (
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=generated",
    "application/xml",
    "application/octet-stream",
    "text/json",
    "application/jsonl",
    "application/problem+json",
    "json",
)
MALFORMATIONS = (
    "truncated",
    "trailing garbage",
    "single quotes",
    "trailing comma",
    "duplicate key",
    "non-finite number",
    "unquoted key",
    "byte order mark",
    "nested too deep",
    "whitespace only",
)

_ATTEMPTS = 4
_T = TypeVar("_T")
_LOCK = threading.Lock()

Example = tuple[str, Request]  # (what the case exercises, the request)
Kind = tuple[str, st.SearchStrategy[Example]]  # (label, its strategy)


class GenerationError(RuntimeError):
    """The document leaves an operation too few distinct inputs for its share of cases."""


@dataclass(frozen=True)
class Param:
    name: str
    location: str  # "path" | "query" | "header" | "cookie"
    schema: dict[str, Any]
    required: bool


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str  # upper case
    path: str  # the template, e.g. /api/v1/chat/sessions/{session_id}
    params: tuple[Param, ...]
    body_schema: dict[str, Any] | None
    body_required: bool
    media_types: tuple[str, ...]

    @property
    def path_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.location == "path")

    @property
    def query_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.location == "query")

    @property
    def takes_input(self) -> bool:
        return bool(self.path_params or self.query_params or self.body_schema is not None)


# --- reading the document ---------------------------------------------------------------------

def _pointer(document: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise ValueError(f"only local references are supported, not {ref!r}")
    node: Any = document
    for raw in ref[2:].split("/"):
        node = node[raw.replace("~1", "/").replace("~0", "~")]
    return node


def _resolve(document: dict[str, Any], node: Any, trail: tuple[str, ...] = ()) -> Any:
    """*node* with every ``$ref`` replaced by what it points to (recursion is refused)."""
    if isinstance(node, list):
        return [_resolve(document, item, trail) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if ref in trail:
            raise ValueError(f"recursive reference {ref!r} is not supported")
        target = _resolve(document, _pointer(document, ref), (*trail, ref))
        rest = {k: _resolve(document, v, trail) for k, v in node.items() if k != "$ref"}
        return {**target, **rest} if rest else target
    return {key: _resolve(document, value, trail) for key, value in node.items()}


def operations(document: dict[str, Any]) -> list[Operation]:
    """Every path x method of *document*, in document order, with schemas resolved."""
    found: list[Operation] = []
    for path, item in document.get("paths", {}).items():
        item = _resolve(document, item)
        shared = {(p["name"], p["in"]): p for p in item.get("parameters", [])}
        for method in (m for m in item if m in HTTP_METHODS):
            op = item[method]
            merged = {**shared, **{(p["name"], p["in"]): p for p in op.get("parameters", [])}}
            params = tuple(
                Param(name=p["name"], location=p["in"], schema=dict(p.get("schema", {})),
                      required=bool(p.get("required", p["in"] == "path")))
                for p in merged.values())
            body = op.get("requestBody")
            content = (body or {}).get("content", {})
            media_types = tuple(content)
            json_types = [m for m in media_types if _is_json_media(m)]
            body_schema = (dict(content[json_types[0]].get("schema", {}))
                           if json_types else None)
            found.append(Operation(
                operation_id=str(op.get("operationId")
                                 or re.sub(r"\W+", "-", f"{method}{path}").strip("-")),
                method=method.upper(), path=path, params=params, body_schema=body_schema,
                body_required=bool((body or {}).get("required", False)),
                media_types=media_types))
    return found


def _is_json_media(media: str) -> bool:
    base = media.split(";", 1)[0].strip().lower()
    return base == "application/json" or base.endswith("+json")


# --- schema helpers ---------------------------------------------------------------------------

def _objects_supported() -> bool:
    """hypothesis-jsonschema 0.23.1 draws objects with ``many.more()``, which newer Hypothesis
    (6.170) removed: ``from_schema`` then fails on every object schema, so objects are
    assembled here from their properties until a fixed hypothesis-jsonschema is installed."""
    from hypothesis.internal.conjecture import utils

    return hasattr(getattr(utils, "many", None), "more")


_OBJECTS_SUPPORTED = _objects_supported()


def _has_object(schema: Any) -> bool:
    if isinstance(schema, list):
        return any(_has_object(s) for s in schema)
    if not isinstance(schema, dict):
        return False
    declared = schema.get("type")
    if declared == "object" or (isinstance(declared, list) and "object" in declared):
        return True
    if "properties" in schema or "required" in schema:
        return True
    return any(_has_object(schema.get(k)) for k in
               ("anyOf", "oneOf", "allOf", "not", "items", "additionalProperties"))


def _from(schema: Any) -> st.SearchStrategy[Any]:
    """``from_schema``, with objects assembled here when it cannot draw them."""
    if _OBJECTS_SUPPORTED or not _has_object(schema):
        return from_schema(schema)
    return _assembled(schema)


def _assembled(schema: Any) -> st.SearchStrategy[Any]:
    if not isinstance(schema, dict):
        return from_schema(schema)
    is_valid = _validator(schema)
    if "not" in schema:
        rest = {k: v for k, v in schema.items() if k != "not"}
        refuse = _validator(schema["not"])
        return _from(rest or True).filter(lambda v: is_valid(v) and not refuse(v))
    if isinstance(schema.get("anyOf") or schema.get("oneOf"), list):
        return st.one_of([_from(b) for b in _branches(schema)]).filter(is_valid)
    declared = schema.get("type")
    if isinstance(declared, list):
        return st.one_of([_from({**schema, "type": t}) for t in declared]).filter(is_valid)
    if declared == "array":
        low = int(schema.get("minItems", 0))
        high = min(int(schema.get("maxItems", low + 5)), low + 5)
        items = schema.get("items", True)
        return st.lists(_from(items if isinstance(items, dict) else True),
                        min_size=low, max_size=high).filter(is_valid)
    if declared not in (None, "object") or "allOf" in schema or "patternProperties" in schema:
        return from_schema(schema)
    props: dict[str, Any] = schema.get("properties", {})
    required = [str(r) for r in schema.get("required", [])]
    base = st.fixed_dictionaries(
        {k: _from(props.get(k, True)) for k in required},
        optional={k: _from(v) for k, v in props.items() if k not in required})
    extra = schema.get("additionalProperties", True)
    if extra is False:
        return base.filter(is_valid)
    names = st.text(max_size=12).filter(lambda name: name not in props)
    extras = st.dictionaries(names, _from(extra if isinstance(extra, dict) else True),
                             max_size=3)
    return st.builds(lambda known, more: {**more, **known}, base, extras).filter(is_valid)


def _validator(schema: dict[str, Any]) -> Callable[[Any], bool]:
    check = jsonschema.Draft202012Validator(schema)
    return lambda value: bool(check.is_valid(value))


def _branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(alternatives, list):
        return [{**{k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}, **b}
                for b in alternatives if isinstance(b, dict)]
    return [schema]


def _types(schema: dict[str, Any]) -> set[str]:
    types: set[str] = set()
    for branch in _branches(schema):
        declared = branch.get("type")
        if declared is None:
            return set(JSON_TYPES)
        types.update([declared] if isinstance(declared, str) else declared)
    if "number" in types:
        types.add("integer")
    return types


def _as_text(value: Any) -> str:
    """How a JSON value travels in a URL (path segment or query value)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _readings(text: str) -> list[Any]:
    """What a server may make of *text*: the string itself, or the number it spells."""
    readings: list[Any] = [text]
    with contextlib.suppress(ValueError):
        number = json.loads(text.strip())
        if isinstance(number, int | float) and not isinstance(number, bool):
            readings.append(number)
    return readings


def _long_text(low: int, high: int) -> st.SearchStrategy[str]:
    """Text of *low*..*high* characters, cheaply: a short unit repeated."""
    @st.composite
    def build(draw: st.DrawFn) -> str:
        unit = draw(st.text(min_size=1, max_size=16))
        size = draw(st.integers(low, high))
        return (unit * math.ceil(size / len(unit)))[:size]

    return build()


def _inserted(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """A valid string with one foreign character inserted."""
    @st.composite
    def build(draw: st.DrawFn) -> str:
        value = _as_text(draw(valid))
        char = draw(st.characters(codec="utf-8"))
        at = draw(st.integers(0, len(value)))
        return value[:at] + char + value[at:]

    return build()


def _repeated(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """A valid string repeated past any length its pattern allows."""
    @st.composite
    def build(draw: st.DrawFn) -> str:
        value = _as_text(draw(valid)) or "0"
        size = draw(st.integers(len(value) + 1, max(len(value) + 1, MAX_SEGMENT_CHARS)))
        return (value * math.ceil(size / len(value)))[:size]

    return build()


def _violations(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """JSON values that break *schema*: wrong types, out of range, wrong size or pattern."""
    is_valid = _validator(schema)
    allowed = _types(schema)
    options: list[st.SearchStrategy[Any]] = [
        _from(_OF_TYPE[t]) for t in JSON_TYPES if t not in allowed or t == "number"]
    for branch in _branches(schema):
        integral = branch.get("type") == "integer"
        for key, below in (("minimum", True), ("exclusiveMinimum", True),
                           ("maximum", False), ("exclusiveMaximum", False)):
            bound = branch.get(key)
            if not isinstance(bound, int | float) or isinstance(bound, bool):
                continue
            exclusive = key.startswith("exclusive")  # then the bound itself is already out
            if integral and below:
                options.append(st.integers(max_value=math.ceil(bound) - (not exclusive)))
            elif integral:
                options.append(st.integers(min_value=math.floor(bound) + (not exclusive)))
            elif below:
                options.append(st.floats(max_value=bound, exclude_max=not exclusive,
                                         allow_nan=False, allow_infinity=False))
            else:
                options.append(st.floats(min_value=bound, exclude_min=not exclusive,
                                         allow_nan=False, allow_infinity=False))
        if isinstance(branch.get("minLength"), int) and branch["minLength"] > 0:
            options.append(st.text(max_size=branch["minLength"] - 1))
        if isinstance(branch.get("maxLength"), int):
            top = branch["maxLength"]
            options.append(_long_text(top + 1, top + 100))
        if "pattern" in branch:
            valid = _from(branch)
            options += [_inserted(valid), _repeated(valid), st.text(min_size=1, max_size=40)]
    if not options:  # nothing more specific to break: anything the schema refuses
        options.append(_from({"not": schema}))
    return st.one_of(options).filter(lambda value: not is_valid(value))


def _text_violations(schema: dict[str, Any], *, segment: bool) -> st.SearchStrategy[str]:
    """Violations of *schema* as URL text that no reading of the text makes valid."""
    is_valid = _validator(schema)

    def usable(text: str) -> bool:
        if segment and (not text or "/" in text or text in (".", "..")
                        or len(text) > MAX_SEGMENT_CHARS):
            return False
        return not any(is_valid(reading) for reading in _readings(text))

    return _violations(schema).map(_as_text).filter(usable)


def _valid_text(schema: dict[str, Any], *, segment: bool) -> st.SearchStrategy[str]:
    is_valid = _validator(schema)

    def usable(value: Any) -> bool:
        if value is None or not is_valid(value):
            return False  # null cannot travel in a URL
        text = _as_text(value)
        return not segment or (text not in ("", ".", "..") and "/" not in text)

    return _from(schema).filter(usable).map(_as_text)


# --- requests -----------------------------------------------------------------------------------

def _strict_json(text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate key")
        return dict(items)

    def constant(name: str) -> Any:
        raise ValueError(name)

    return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)


def _is_malformed(text: str) -> bool:
    try:
        _strict_json(text)
    except (ValueError, RecursionError):
        return True
    return False


def _malformed(draw: st.DrawFn, value: Any) -> tuple[str, str]:
    """(how, text): *value*'s JSON text broken in one of the MALFORMATIONS ways."""
    how = draw(st.sampled_from(MALFORMATIONS))
    text = _corrupted(draw, value, how)
    if not _is_malformed(text):  # the corruption happened to leave valid JSON
        how, text = "truncated", text[:-1]
    return how, text


def _corrupted(draw: st.DrawFn, value: Any, how: str) -> str:
    text = json.dumps(value, ensure_ascii=False)
    first = next(iter(value.items()), None) if isinstance(value, dict) else None
    key = first[0] if first else "x"
    if how == "truncated":
        return text[:draw(st.integers(0, max(0, len(text) - 1)))]
    if how == "trailing garbage":
        return text + draw(st.sampled_from(["}", "]", ",", "x", " true", "{}"]))
    if how == "single quotes":
        return text.replace('"', "'")
    if how == "trailing comma":
        return text[:-1] + "," + text[-1:]
    if how == "duplicate key":
        pair = json.dumps(key, ensure_ascii=False) + ":0"
        return "{" + pair + "," + (pair + "}" if first is None else text[1:])
    if how == "non-finite number":
        base = value if isinstance(value, dict) else {}
        number = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return json.dumps({**base, key: number}, ensure_ascii=False)
    if how == "unquoted key":
        rest = text[1 + len(json.dumps(key, ensure_ascii=False)):] if first else ":0}"
        return "{" + (key or "_") + rest
    if how == "byte order mark":
        return "\ufeff" + text
    if how == "nested too deep":
        depth = draw(st.integers(33, 64))
        opener = "{" + json.dumps(key, ensure_ascii=False) + ":"
        return opener * depth + "0" + "}" * depth
    return draw(st.sampled_from(["", " ", "\n", " \t\r\n "]))


def _fill_path(op: Operation, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: quote(values[m.group(1)], safe=":@"), op.path)


class _Strategies:
    """The Hypothesis strategies of one operation, built once from its schemas."""

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.path_valid = {p.name: _valid_text(p.schema, segment=True) for p in op.path_params}
        self.path_invalid = {p.name: _text_violations(p.schema, segment=True)
                             for p in op.path_params}
        self.query_valid = {p.name: _valid_text(p.schema, segment=False)
                            for p in op.query_params}
        self.query_invalid = {p.name: _text_violations(p.schema, segment=False)
                              for p in op.query_params}
        self.media = next((m for m in op.media_types if _is_json_media(m)), "application/json")
        schema = op.body_schema
        self.body_valid = _from(schema) if schema is not None else None
        self.body_invalid = _violations(schema) if schema is not None else None
        props: dict[str, Any] = (schema or {}).get("properties", {})
        self.property_invalid = {name: _violations(sub) for name, sub in props.items()}
        self.required = [str(r) for r in (schema or {}).get("required", [])]
        self.body_is_valid = _validator(schema) if schema is not None else None
        declared = {p.name for p in op.params}
        names = st.text(min_size=1, max_size=12).filter(lambda n: n not in declared)
        self.extra_query = st.lists(st.tuples(names, st.text(max_size=30)), min_size=1,
                                    max_size=3)
        self.unexpected_body = _from(_OF_TYPE["object"])

    # parts drawn valid -----------------------------------------------------------------------
    def _path(self, draw: st.DrawFn, broken: str | None = None) -> str:
        values = {name: draw(self.path_invalid[name] if name == broken else strategy)
                  for name, strategy in self.path_valid.items()}
        return _fill_path(self.op, values)

    def _query(self, draw: st.DrawFn, broken: str | None = None) -> list[tuple[str, str]]:
        query: list[tuple[str, str]] = []
        for p in self.op.query_params:
            if p.name == broken:
                query.append((p.name, draw(self.query_invalid[p.name])))
            elif p.required or draw(st.booleans()):
                query.append((p.name, draw(self.query_valid[p.name])))
        return query

    def _request(self, draw: st.DrawFn, *, path: str | None = None,
                 query: list[tuple[str, str]] | None = None, **kw: Any) -> Request:
        return Request(method=self.op.method, path=self._path(draw) if path is None else path,
                       query=self._query(draw) if query is None else query, auth=True, **kw)

    # the two kinds -----------------------------------------------------------------------------
    def valid(self) -> list[Kind]:
        @st.composite
        def build(draw: st.DrawFn) -> Example:
            if self.body_valid is None or (not self.op.body_required and draw(st.booleans())):
                return "valid request", self._request(draw)
            return "valid request", self._request(
                draw, headers={"Content-Type": self.media}, json=draw(self.body_valid))

        return [("valid", build())]

    def invalid(self) -> list[Kind]:
        """One strategy per way of being wrong, so that every way gets its turn."""
        kinds: list[tuple[str, str]] = [("path", p.name) for p in self.op.path_params]
        kinds += [("query", p.name) for p in self.op.query_params]
        if self.body_valid is not None:
            kinds += [("body", "schema"), ("body", "malformed"), ("body", "content type"),
                      ("body", "no content type")]
            kinds += [("required", name) for name in self.required]
            kinds += [("property", name) for name in self.property_invalid]
            if self.op.body_required:
                kinds.append(("body", "missing"))
        if not kinds:
            kinds = [("undocumented", "query"), ("undocumented", "body")]

        @st.composite
        def build(draw: st.DrawFn, kind: str, name: str) -> Example:
            if kind == "path":
                return (f"path parameter {name} breaks its schema",
                        self._request(draw, path=self._path(draw, broken=name)))
            if kind == "query":
                return (f"query parameter {name} breaks its schema",
                        self._request(draw, query=self._query(draw, broken=name)))
            if kind == "undocumented":
                return self._undocumented(draw, name)
            return self._bad_body(draw, kind, name)

        return [(f"{kind}:{name}", build(kind, name)) for kind, name in kinds]

    def _undocumented(self, draw: st.DrawFn, what: str) -> Example:
        if what == "query":
            return "undocumented query parameters", self._request(
                draw, query=draw(self.extra_query))
        value = draw(self.unexpected_body)
        return "an unexpected JSON body", self._request(
            draw, headers={"Content-Type": "application/json"},
            body=json.dumps(value, ensure_ascii=False))

    def _bad_body(self, draw: st.DrawFn, kind: str, name: str) -> Example:
        assert self.body_valid is not None
        assert self.body_invalid is not None
        assert self.body_is_valid is not None
        json_header = {"Content-Type": self.media}
        if kind == "required":
            body = dict(draw(self.body_valid))
            body.pop(name, None)
            return (f"body misses required property {name}",
                    self._request(draw, headers=json_header, json=body))
        if kind == "property":
            body = {**draw(self.body_valid), name: draw(self.property_invalid[name])}
            if self.body_is_valid(body):  # e.g. an anyOf elsewhere lets it through
                body = draw(self.body_invalid)
            return (f"body property {name} breaks its schema",
                    self._request(draw, headers=json_header, json=body))
        if name == "schema":
            return ("body breaks its schema",
                    self._request(draw, headers=json_header, json=draw(self.body_invalid)))
        if name == "malformed":
            how, text = _malformed(draw, draw(self.body_valid))
            return (f"malformed JSON body ({how})",
                    self._request(draw, headers=json_header, body=text))
        if name == "missing":
            return "no body", self._request(draw, headers=json_header)
        text = json.dumps(draw(self.body_valid), ensure_ascii=False)
        if name == "no content type":
            return "body without a content type", self._request(draw, body=text)
        media = draw(st.sampled_from(
            [m for m in OTHER_MEDIA_TYPES if m not in self.op.media_types]))
        return (f"body sent as {media}",
                self._request(draw, headers={"Content-Type": media}, body=text))


# --- running Hypothesis deterministically ----------------------------------------------------

@contextlib.contextmanager
def _without_local_constants() -> Iterator[None]:
    """Stop Hypothesis from mixing in literals of whatever local modules are imported."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - a Hypothesis without local constants
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    constants = getattr(providers, "Constants", None)
    if original is None or cache is None or constants is None:  # pragma: no cover
        yield
        return
    empty = constants()
    setattr(providers, "_get_local_constants", lambda: empty)  # noqa: B010
    cache.cache.clear()
    try:
        yield
    finally:
        setattr(providers, "_get_local_constants", original)  # noqa: B010
        cache.cache.clear()


def _derive(seed: int, *parts: object) -> int:
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _run(strategy: st.SearchStrategy[Example], n: int, seed: int) -> list[Example]:
    """The first *n* examples of Hypothesis's generate phase for *seed*, in order."""
    found: list[Example] = []

    @settings(parent=settings.get_profile("default"), max_examples=n, database=None,
              derandomize=False, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet,
              report_multiple_bugs=False, print_blob=False)
    @hypothesis_seed(seed)
    @given(strategy)
    def collect(example: Example) -> None:
        found.append(example)

    with _LOCK, _without_local_constants():
        collect()
    return found


# --- the cases ---------------------------------------------------------------------------------

def _acceptable(req: Request) -> bool:
    """No marker in any string (key or value), bounded sizes, UTF-8 all through."""
    try:
        texts = list(_strings(req.to_dict()))
        content = req.content()
        for text in texts:
            text.encode("utf-8")
    except (UnicodeError, ValueError, RecursionError):
        return False
    if content is not None and len(content) > MAX_BODY_BYTES:
        return False
    return all(len(text) <= MAX_STRING_CHARS and not any(m in text for m in FORBIDDEN)
               for text in texts)


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, item in node.items():
                yield key
                stack.append(item)


def _identifiers(op: Operation, req: Request) -> set[str]:
    """The values a case could share with another: path parameters, top-level body strings."""
    found = {unquote(seg) for tpl, seg in zip(op.path.split("/"), req.path.split("/"),
                                               strict=False)
             if tpl.startswith("{") and tpl.endswith("}")}
    body: Any = req.json
    if body is ABSENT and req.body is not None:
        try:
            body = _strict_json(req.body)
        except (ValueError, RecursionError):
            body = None
    if isinstance(body, dict):
        found.update(v for v in body.values() if isinstance(v, str))
    return {v for v in found if v}


class _Collector:
    """Accepts examples across every operation: unique requests, unshared identifiers."""

    def __init__(self) -> None:
        self.requests: set[str] = set()
        self.identifiers: set[str] = set()

    def accept(self, op: Operation, example: Example) -> bool:
        req = example[1]
        if not _acceptable(req):
            return False
        key = json.dumps(req.to_dict(), sort_keys=True, allow_nan=True)
        ids = _identifiers(op, req)
        if key in self.requests or ids & self.identifiers:
            return False
        self.requests.add(key)
        self.identifiers |= ids
        return True


def _pool(kinds: list[Kind], want: int, seed: int, label: tuple[str, str],
          accept: Callable[[Example], bool]) -> list[Example]:
    """*want* accepted examples spread evenly over *kinds*, in round-robin order of kinds.

    Each kind runs alone, seeded by (seed, label, kind, attempt); the kind that comes first
    rotates with the seed. A kind whose inputs run out (Hypothesis stops short) or that keeps
    being refused leaves its share to the others.
    """
    start = _derive(seed, *label) % len(kinds)
    kinds = kinds[start:] + kinds[:start]
    got: dict[str, list[Example]] = {name: [] for name, _ in kinds}
    attempts = dict.fromkeys(got, 0)
    done: set[str] = set()
    while (missing := want - sum(map(len, got.values()))) > 0:
        active = [(name, strategy) for name, strategy in kinds if name not in done]
        if not active:
            break
        for i, (name, strategy) in enumerate(active):
            share = missing // len(active) + (1 if i < missing % len(active) else 0)
            if share == 0:
                continue
            n = (share + share // 4 + 4) * 2 ** attempts[name]
            raw = _run(strategy, n, _derive(seed, *label, name, attempts[name]))
            attempts[name] += 1
            for example in raw:
                if share == 0:
                    break
                if accept(example):
                    got[name].append(example)
                    share -= 1
            if len(raw) < n or attempts[name] >= _ATTEMPTS:
                done.add(name)
    order: list[Example] = []
    for round_ in range(max((len(v) for v in got.values()), default=0)):
        order += [examples[round_] for examples in got.values() if round_ < len(examples)]
    return order[:want]


def _interleave(first: Sequence[_T], second: Sequence[_T]) -> list[_T]:
    out: list[_T] = []
    for i in range(max(len(first), len(second))):
        out += [*first[i:i + 1], *second[i:i + 1]]
    return out


def generate_cases(document: dict[str, Any], count: int, seed: int) -> list[Case]:
    """*count* single-request cases over every operation of *document*; the same for a seed.

    Case ids are ``generated/{operationId}-{n:04d}`` (n counts from 1 per operation); the
    list is ordered round-robin over the operations in document order.
    """
    ops = operations(document)
    if count <= 0 or not ops:
        return []
    shares = [count // len(ops) + (1 if i < count % len(ops) else 0) for i in range(len(ops))]
    collector = _Collector()
    per_op: list[list[tuple[str, Example]]] = []
    for op, share in zip(ops, shares, strict=True):
        if share == 0:
            per_op.append([])
            continue
        strategies = _Strategies(op)

        def accept(example: Example, op: Operation = op) -> bool:
            return collector.accept(op, example)

        valid = _pool(strategies.valid(), (share + 1) // 2, seed,
                      (op.operation_id, "valid"), accept)
        invalid = _pool(strategies.invalid(), share - len(valid), seed,
                        (op.operation_id, "invalid"), accept)
        if len(valid) + len(invalid) < share:
            raise GenerationError(
                f"{op.operation_id}: only {len(valid) + len(invalid)} distinct requests "
                f"for a share of {share} cases")
        tagged = _interleave([("valid", e) for e in valid], [("invalid", e) for e in invalid])
        per_op.append(tagged)

    cases: list[Case] = []
    for round_ in range(max(shares)):
        for op, tagged in zip(ops, per_op, strict=True):
            if round_ >= len(tagged):
                continue
            validity, (what, request) = tagged[round_]
            cases.append(Case(
                id=f"generated/{op.operation_id}-{round_ + 1:04d}",
                steps=(Step(name=op.operation_id, request=request, expect_status=None),),
                description=f"{validity}: {what} ({op.method} {op.path}, seed {seed})",
                source="generated",
                tags=("generated", validity),
            ))
    return cases


# --- limits at their edges ---------------------------------------------------------------------

_QUANTIFIER = re.compile(r"\{(\d+),(\d+)\}\$$")


def _pattern_bounds(pattern: str) -> tuple[int, int]:
    """``{min,max}`` of an id pattern such as ``^[0-9a-z]{2,100}$``."""
    match = _QUANTIFIER.search(pattern)
    if not match:
        raise GenerationError(f"no {{min,max}} length in the id pattern {pattern!r}")
    return int(match.group(1)), int(match.group(2))


def _bounds(model: Any, name: str) -> tuple[int | None, int | None]:
    """(ge/min_length, le/max_length) of a pydantic field, from its own metadata."""
    low: int | None = None
    high: int | None = None
    for item in model.model_fields[name].metadata:
        for attr in ("ge", "min_length"):
            low = getattr(item, attr, None) if getattr(item, attr, None) is not None else low
        for attr in ("le", "max_length"):
            high = getattr(item, attr, None) if getattr(item, attr, None) is not None else high
    return low, high


def effective_settings(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Each setting's value in the local lanes: its default, or the lanes' environment."""
    from parity_tests.harness.lanes import PARITY_ENV
    from shared.settings import Settings

    env = PARITY_ENV if env is None else env
    out: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        raw = env.get(name.upper())
        default = info.default if info.default_factory is None else None
        out[name] = default if raw is None else type(default)(raw) if isinstance(
            default, int | float) and not isinstance(default, bool) else raw
    return out


_SOURCE = "limits.generated"


def _case(name: str, steps: list[dict[str, Any]], description: str,
          needs: list[Any] | None = None) -> Case:
    from parity_tests.harness.model import case_from_dict

    raw: dict[str, Any] = {"name": name, "description": description, "tags": ["limits"],
                           "steps": steps}
    if needs:
        raw["needs"] = needs
    return case_from_dict(raw, _SOURCE, 0)


def _chat(message: str, **extra: str) -> dict[str, Any]:
    return {"method": "POST", "path": "/api/v1/chat", "json": {"message": message, **extra}}


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "-", f"limits/{name}").strip("-").lower()[:60]


def _padded_id(prefix: str, length: int) -> str:
    """An id of exactly ``length`` characters: ``prefix`` then digits (at least one letter)."""
    if length <= len(prefix):
        return ("x" * length)[:length]
    return prefix + ("0123456789" * (length // 10 + 1))[:length - len(prefix)]


def _gzip_message(threshold: int, session_id: str, user_id: str) -> str | None:
    """A message whose stored session, read back, is exactly ``threshold`` bytes of JSON (the
    record as both colors serialise it: ``model_dump_json`` of a SessionRecord, with the
    emulator's deterministic reply), or None when no message length reaches it exactly."""
    import datetime as dt

    from devstack.agent_emulator import reply_for
    from shared.contracts import ChatMessage, SessionRecord

    when = dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)

    def size(n: int) -> int:
        text = "g" * n
        record = SessionRecord(
            session_id=session_id, user_id=user_id, created_at=when, updated_at=when,
            expires_at=when.replace(microsecond=0), message_count=2,
            messages=[ChatMessage(role="user", content=text, timestamp=when),
                      ChatMessage(role="assistant", content=reply_for(text), timestamp=when)])
        return len(record.model_dump_json())

    from shared.contracts import MESSAGE_MAX_CHARS

    for n in range(1, MESSAGE_MAX_CHARS + 1):
        if size(n) == threshold:
            return "g" * n
        if size(n) > threshold:
            return None
    return None


def limit_cases(env: dict[str, str] | None = None) -> list[Case]:
    """A case at each numeric limit and one past it, derived from the definitions themselves
    (``shared.contracts``, ``shared.web``, ``shared.settings`` as the lanes run them): a new or
    changed limit gets its cases on the next run. Ids are concrete (their length is the point),
    each case's own."""
    from shared import web
    from shared.contracts import SESSION_ID_PATTERN, USER_ID_PATTERN, ChatRequest

    settings = effective_settings(env)
    cases: list[Case] = []
    schema = ChatRequest.model_json_schema()["properties"]["message"]
    low, high = int(schema.get("minLength", 1)), int(schema["maxLength"])
    for n, label in ((high, "at"), (high + 1, "past"), (low, "at-min")):
        name = f"message-{n}-chars-{label}"
        ok = 200 if label != "past" else 422
        cases.append(_case(name, [{"name": "chat", "request": _chat(
            "m" * n, session_id=f"s-{_slug(name)}"[:100]), "expect_status": ok}],
            f"A message of {n} characters (MESSAGE_MAX_CHARS {high})."))
        if label != "at-min":
            wide = f"message-{n}-wide-chars-{label}"
            cases.append(_case(wide, [{"name": "chat", "request": _chat(
                "\u00e9" * n, session_id=f"s-{_slug(wide)}"[:100]), "expect_status": ok}],
                f"{n} two-byte characters: the limit counts characters, not bytes."))
    for field_name, pattern in (("session_id", SESSION_ID_PATTERN),
                                ("user_id", USER_ID_PATTERN)):
        least, most = _pattern_bounds(pattern)
        for n, label in ((most, "at"), (most + 1, "past"), (least, "at-min"),
                         (least - 1, "below-min")):
            name = f"{field_name.replace('_', '-')}-{n}-chars-{label}"
            ident = _padded_id("l" + hashlib.sha256(name.encode()).hexdigest()[:4] + "-", n)
            ok = 200 if label.startswith("at") else 422
            steps: list[dict[str, Any]] = [{"name": "chat", "request": _chat(
                "hello", **{field_name: ident}), "expect_status": ok}]
            if field_name == "session_id" and n:
                steps += [{"name": "get", "request": {
                    "method": "GET", "path": f"/api/v1/chat/sessions/{ident}"},
                    "expect_status": ok},
                    {"name": "delete", "request": {
                        "method": "DELETE", "path": f"/api/v1/chat/sessions/{ident}"},
                     "expect_status": ok}]
            elif n:
                steps.append({"name": "list", "request": {
                    "method": "GET", "path": f"/api/v1/users/{ident}/sessions"},
                    "expect_status": ok})
            cases.append(_case(name, steps, f"A {field_name} of {n} characters "
                               f"(pattern {pattern})."))
    bounds = _bounds(web.ListQuery, "limit")
    if bounds[0] is None or bounds[1] is None:
        raise GenerationError("ListQuery.limit has no ge/le bounds")
    least, most = bounds[0], bounds[1]
    for n in (least - 1, least, most, most + 1):
        name = f"list-limit-{n}"
        cases.append(_case(name, [{"name": "list", "request": {
            "method": "GET", "path": f"/api/v1/users/u-{_slug(name)}/sessions",
            "query": {"limit": str(n)}}, "expect_status": 200 if least <= n <= most else 422}],
            f"?limit={n} (ListQuery: {least}..{most})."))
    history = int(settings["session_history_limit"])
    for turns, label in ((history // 2, "at"), (history // 2 + 1, "past")):
        name = f"history-{label}-limit-{history}"
        sid = f"h-{_slug(name)}"[:100]
        steps = [{"name": f"turn-{t + 1}", "request": _chat(f"turn {t + 1}", session_id=sid),
                  "expect_status": 200} for t in range(max(turns, 1))]
        steps.append({"name": "read-back", "expect_status": 200,
                      "request": {"method": "GET", "path": f"/api/v1/chat/sessions/{sid}"}})
        cases.append(_case(name, steps, f"{2 * turns} messages against "
                           f"SESSION_HISTORY_LIMIT={history}.",
                           [{"settings": {"session_history_limit": history}}]))
    max_body = int(settings["max_body_bytes"])
    for n, label in ((max_body, "at"), (max_body + 1, "past")):
        name = f"body-{label}-max-body-bytes"
        # no id in the body: staging prefixes ids per lane, which would move the length
        head = json.dumps({"message": "big", "pad": ""})[:-2]
        body = head + "p" * (n - len(head) - 2) + '"}'
        assert len(body.encode()) == n
        cases.append(_case(name, [{"name": "chat", "request": {
            "method": "POST", "path": "/api/v1/chat", "body": body,
            "headers": {"Content-Type": "application/json"}},
            "expect_status": 200 if label == "at" else 413}],
            f"A body of {n} bytes (MAX_BODY_BYTES {max_body}).",
            [{"settings": {"max_body_bytes": max_body}}]))
    threshold = int(settings["gzip_min_bytes"])
    for n, label in ((threshold, "at"), (threshold - 1, "below")):
        name = f"gzip-{label}-min-bytes"
        sid, uid = f"gz-{_slug(name)}"[:100], f"u-{_slug(name)}"[:128]
        message = _gzip_message(n, sid, uid)
        if message is None:
            continue
        cases.append(_case(name, [
            {"name": "chat", "request": _chat(message, session_id=sid, user_id=uid),
             "expect_status": 200},
            {"name": "read-gzip", "request": {"method": "GET",
                                              "path": f"/api/v1/chat/sessions/{sid}",
                                              "headers": {"Accept-Encoding": "gzip"}},
             "expect_status": 200}],
            f"A {n}-byte answer against GZIP_MIN_BYTES={threshold}.",
            [{"settings": {"gzip_min_bytes": threshold}}]))
    line = web.MAX_HEADER_LINE_BYTES
    for n, label in ((line, "at"), (line + 1, "past")):
        name = f"header-line-{n}-bytes-{label}"
        cases.append(_case(name, [{"name": "health", "request": {
            "method": "GET", "path": "/health", "auth": False,
            "headers": {"X-Pad": "v" * (n - len("X-Pad: "))}},
            "expect_status": 200 if label == "at" else 431}],
            f"One header line of {n} bytes (MAX_HEADER_LINE_BYTES {line})."))
    fields = web.MAX_HEADER_FIELDS
    sent_by_client = len(httpx_default_headers()) + 1  # + Host
    for n, label in ((fields, "at"), (fields + 1, "past")):
        name = f"header-fields-{n}-{label}"
        cases.append(_case(name, [{"name": "health", "request": {
            "method": "GET", "path": "/health", "auth": False,
            "headers": {f"X-Field-{i}": "f" for i in range(n - sent_by_client)}},
            "expect_status": 200 if label == "at" else 431}],
            f"{n} header names (MAX_HEADER_FIELDS {fields}), the client's own included.",
            # a proxy in front (an ALB adds X-Forwarded-For/-Proto/-Port, X-Amzn-Trace-Id)
            # takes its share of the limit: the case at it needs none
            [{"settings": {"proxy_added_headers": 0}}] if label == "at" else None))
    for n, label in ((web.MAX_PATH_CHARS, "at"), (web.MAX_PATH_CHARS + 1, "past")):
        name = f"path-{n}-chars-{label}"
        prefix = "/api/v1/users/"
        cases.append(_case(name, [{"name": "list", "request": {
            "method": "GET", "path": prefix + "p" * (n - len(prefix) - len("/sessions"))
            + "/sessions"}, "expect_status": 422 if label == "at" else 414}],
            f"A path of {n} characters (MAX_PATH_CHARS; at it, the user id is too long)."))
    for n, label in ((web.MAX_TARGET_BYTES, "at"), (web.MAX_TARGET_BYTES + 1, "past")):
        name = f"target-{n}-bytes-{label}"
        path = "/health"  # no id in the target: staging's per-lane prefixes would lengthen it
        query = "x" * (n - len(path) - len("?q="))
        cases.append(_case(name, [{"name": "health", "request": {
            "method": "GET", "path": path, "query": [["q", query]], "auth": False},
            "expect_status": 200 if label == "at" else 414}],
            f"A request target of {n} bytes (MAX_TARGET_BYTES)."))
    depth = web.MAX_JSON_DEPTH
    for n, label in ((depth, "at"), (depth + 1, "past")):
        name = f"json-depth-{n}-{label}"
        nested = '{"message": "deep", "x": ' + "[" * (n - 1) + "]" * (n - 1) + "}"
        cases.append(_case(name, [{"name": "chat", "request": {
            "method": "POST", "path": "/api/v1/chat", "body": nested,
            "headers": {"Content-Type": "application/json"}},
            "expect_status": 200 if label == "at" else 400}],
            f"A body nested {n} levels (MAX_JSON_DEPTH {depth})."))
    return cases


def httpx_default_headers() -> dict[str, str]:
    """The headers an httpx client sends on every request (besides Host)."""
    import httpx

    with httpx.Client() as client:
        return dict(client.headers)

"""Structural comparison: documents become ``{dotted path: leaf}`` maps, declared noise is
applied per path, and what is left is a list of :class:`Delta`.

Generated identifiers (noise kind ``uuid``) are not ignored: each lane replaces them with
``<id:N>`` in order of first appearance, so the *relations* between ids (the id a chat returned is
the id later stored, listed and deleted) are still compared.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from parity_tests.harness.rules import NoiseRule, path_matches

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>"})()


def escape(segment: str) -> str:
    """Keys become path segments: '.' and '%' are percent-encoded."""
    return segment.replace("%", "%25").replace(".", "%2E")


@dataclass
class Aliases:
    """Per-lane, per-case map from generated ids to stable tokens, by order of first appearance.
    Each uuid rule has its own counter (``<id1:N>``, ``<id2:N>``), so one extra id of one kind
    does not shift the numbering of another."""

    tokens: dict[str, str] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)

    def token(self, value: str, kind: int = 1) -> str:
        if value not in self.tokens:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.tokens[value] = f"<id{kind if kind > 1 else ''}:{self.counts[kind]}>"
        return self.tokens[value]


def _replace(match: re.Match[str], aliases: Aliases, kind: int) -> str:
    return aliases.token(match.group(0), kind)


def alias_ids(value: Any, rules: list[NoiseRule], aliases: Aliases, path: str = "") -> Any:
    """Replace every generated id (uuid rules' patterns) inside ``value`` with its alias."""
    patterns = [(i, re.compile(pattern)) for i, pattern in
                enumerate((r.pattern for r in rules if r.kind == "uuid" and r.pattern), 1)]
    if not patterns:
        return value

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            for kind, rx in patterns:
                node = rx.sub(partial(_replace, aliases=aliases, kind=kind), node)
            return node
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, dict):
            return {walk(k): walk(v) for k, v in node.items()}
        return node

    return walk(value)


def flatten(value: Any, prefix: str, unordered: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if not node:
                out[path] = {}
            for key, child in node.items():
                walk(child, f"{path}.{escape(str(key))}")
        elif isinstance(node, list):
            if not node:
                out[path] = []
            items = node
            if any(path_matches(p, path) for p in unordered):
                items = sorted(node, key=lambda v: json.dumps(v, sort_keys=True, default=str))
            for i, child in enumerate(items):
                walk(child, f"{path}.{i}")
        else:
            out[path] = node

    walk(value, prefix)
    return out


@dataclass(frozen=True)
class Delta:
    path: str
    left: Any
    right: Any

    @property
    def kind(self) -> str:
        if self.left is MISSING:
            return "extra"
        if self.right is MISSING:
            return "missing"
        return "changed"

    def to_dict(self) -> dict[str, Any]:
        def show(v: Any) -> Any:
            return "<missing>" if v is MISSING else v
        return {"path": self.path, "kind": self.kind, "blue": show(self.left),
                "other": show(self.right)}


def _iso(value: Any) -> bool:
    if not isinstance(value, str) or len(value) < 10:
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


_DIGIT = re.compile(r"[0-9]")


def json_type(value: Any) -> str:
    """A value's JSON type (int and float are both numbers; MISSING is its own type)."""
    if value is MISSING:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def shape(value: Any) -> str:
    """The format of a value, which no noise rule may neutralise: its JSON type, and for a
    string every digit as ``0`` (so ``...:05.123456Z``, ``...:05.123Z`` and ``...:05+00:00``
    are three shapes), for a number whether it is integral."""
    kind = json_type(value)
    if kind == "string":
        return "string:" + _DIGIT.sub("0", value)
    if kind == "number":
        return "number:" + ("int" if isinstance(value, int) else "float")
    return kind


def explained(rule: NoiseRule, left: Any, right: Any) -> bool:
    """Whether ``rule`` accounts for this pair of values. A rule neutralises a value, never its
    format: two values of another type, or two timestamps of another shape (precision, zone
    notation), are a difference whatever the rule."""
    if rule.kind == "ignore":
        return json_type(left) == json_type(right)
    if rule.kind == "iso-timestamp":
        return _iso(left) and _iso(right) and shape(left) == shape(right)
    if rule.kind == "number-within-tolerance":
        a, b = _number(left), _number(right)
        return (a is not None and b is not None and abs(a - b) <= rule.tolerance
                and shape(left) == shape(right))
    return False  # uuid values were aliased already: a remaining mismatch is real


def neutralised(document: dict[str, Any], rules: list[NoiseRule], route: str | None
                ) -> dict[str, Any]:
    """A flat document with every value a noise rule covers replaced by its :func:`shape`
    (what two answers may still be compared on when they are not paired one to one)."""
    out: dict[str, Any] = {}
    for path, value in document.items():
        rule = next((r for r in rules if r.kind != "uuid" and r.applies(path, route)), None)
        out[path] = value if rule is None else f"<{rule.kind}:{shape(value)}>"
    return out


def diff(left: dict[str, Any], right: dict[str, Any], rules: list[NoiseRule],
         route: str | None, used: set[int] | None = None) -> list[Delta]:
    deltas = []
    for path in sorted(set(left) | set(right)):
        a, b = left.get(path, MISSING), right.get(path, MISSING)
        if a == b and type(a) is type(b):
            continue
        rule_index = next((i for i, r in enumerate(rules)
                           if r.kind != "uuid" and r.applies(path, route)), None)
        if rule_index is not None and explained(rules[rule_index], a, b):
            if used is not None:
                used.add(rule_index)
            continue
        deltas.append(Delta(path, a, b))
    return deltas

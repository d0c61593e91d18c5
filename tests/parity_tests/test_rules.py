"""Noise rules, known differences, path matching and the structural diff (no I/O)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from parity_tests.harness.cli import main
from parity_tests.harness.compare import Aliases, alias_ids, diff, flatten
from parity_tests.harness.rules import (
    KnownDifference,
    NoiseRule,
    RuleError,
    load_known,
    load_noise,
    path_matches,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("pattern", "path", "hit"), [
    ("body.timestamp", "body.timestamp", True),
    ("body.*", "body.a.b", False),
    ("body.**", "body.a.b", True),
    ("**.created_at", "dynamodb.sessions.k.created_at", True),
    ("body.messages.*.timestamp", "body.messages.3.timestamp", True),
    ("body.messages.*.timestamp", "body.messages.3.content", False),
    ("headers.x-*", "headers.x-request-id", True),
])
def test_path_matching(pattern: str, path: str, hit: bool) -> None:
    assert path_matches(pattern, path) is hit


def test_noise_kinds() -> None:
    rules = [NoiseRule("body.t", "iso-timestamp", "r"), NoiseRule("body.n", "ignore", "r"),
             NoiseRule("body.x", "number-within-tolerance", "r", tolerance=2)]
    left = flatten({"t": "2026-01-01T00:00:00Z", "n": 1, "x": 10, "y": 1}, "body")
    right = flatten({"t": "2026-01-01T00:00:09Z", "n": 2, "x": 12, "y": 2}, "body")
    assert [d.path for d in diff(left, right, rules, None)] == ["body.y"]
    far = flatten({"t": "not a time", "n": 1, "x": 13, "y": 1}, "body")
    assert [d.path for d in diff(left, far, rules, None)] == ["body.t", "body.x"]


def test_ids_are_compared_by_relation() -> None:
    rules = [NoiseRule("**", "uuid", "r", pattern=r"sess_[0-9a-f]{4}")]
    blue = alias_ids({"a": "sess_aaaa", "b": "sess_aaaa"}, rules, Aliases())
    green_same = alias_ids({"a": "sess_bbbb", "b": "sess_bbbb"}, rules, Aliases())
    green_broken = alias_ids({"a": "sess_bbbb", "b": "sess_cccc"}, rules, Aliases())
    assert diff(flatten(blue, "x"), flatten(green_same, "x"), rules, None) == []
    assert [d.path for d in diff(flatten(blue, "x"), flatten(green_broken, "x"), rules,
                                 None)] == ["x.b"]


def test_unordered_arrays() -> None:
    a, b = {"s": [1, 2, 3]}, {"s": [3, 1, 2]}
    assert diff(flatten(a, "body"), flatten(b, "body"), [], None)
    assert diff(flatten(a, "body", ("body.s",)), flatten(b, "body", ("body.s",)), [], None) == []


def test_rule_files_are_validated(tmp_path: Path) -> None:
    bad = tmp_path / "noise.yaml"
    bad.write_text("rules:\n  - {path: body.x, kind: fuzzy, reason: r}\n")
    with pytest.raises(RuleError, match="kind"):
        load_noise(bad)
    bad.write_text("rules:\n  - {path: body.x, kind: ignore}\n")
    with pytest.raises(RuleError, match="reason"):
        load_noise(bad)
    known = tmp_path / "known.yaml"
    known.write_text("differences:\n  - {path: body.x, reason: r, owner: qa}\n")
    with pytest.raises(RuleError, match="expires"):
        load_known(known)
    assert load_noise(Path("parity_tests/noise.yaml"))  # the shipped file is valid


def test_known_difference_scope_and_expiry() -> None:
    entry = KnownDifference("headers.allow", "r", "qa", dt.date(2026, 1, 31), case="errors/*")
    assert entry.covers("errors/wrong-method", "headers.allow")
    assert not entry.covers("chat/x", "headers.allow")
    assert not entry.expired(dt.date(2026, 1, 31))
    assert entry.expired(dt.date(2026, 2, 1))


def test_an_expired_entry_fails_the_run(tmp_path: Path) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "none.yaml").write_text("cases: []\n")
    known = tmp_path / "known.yaml"
    known.write_text("differences:\n  - {path: body.x, reason: r, owner: qa, "
                     "expires: 2020-01-01}\n")
    # remote mode against a closed port: no case runs, only the rule files are judged
    code = main(["--cases", str(cases), "--generated", "0", "--known", str(known),
                 "--blue-url", "http://127.0.0.1:9", "--green-url", "http://127.0.0.1:9",
                 "--report-dir", str(tmp_path / "out")])
    assert code == 1
    summary = (tmp_path / "out" / "summary.json").read_text()
    assert '"expired_known_differences": 1' in summary


def test_mode_scoped_rules_hold_in_their_mode_only() -> None:
    shipped = Path("parity_tests/noise.yaml")
    local = {(r.path, r.kind) for r in load_noise(shipped)}
    remote = {(r.path, r.kind) for r in load_noise(shipped, "remote")}
    assert ("headers.x-ratelimit-remaining", "ignore") in remote - local

"""The reviewed rule files: ``noise.yaml`` (what is genuinely non-deterministic) and
``known_differences.yaml`` (differences accepted for now, each with an owner and an expiry).

Paths are dotted, over one document per step and lane::

    status
    headers.<lower-case name>
    body.<field>.<index>...
    dynamodb.<table>.<item key>.<attribute>
    agent_calls.<n>.<field>
    prometheus.<series>
    cloudwatch.<metric>|<endpoint>

``*`` matches one segment and ``**`` any number of segments.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml

Kind = Literal["iso-timestamp", "uuid", "number-within-tolerance", "ignore"]
KINDS: tuple[str, ...] = ("iso-timestamp", "uuid", "number-within-tolerance", "ignore")


class RuleError(ValueError):
    pass


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    parts = []
    for segment in pattern.split("."):
        if segment == "**":
            parts.append(r"(?:[^.]+(?:\.[^.]+)*)?")
        else:
            parts.append(fnmatch.translate(segment).removeprefix("(?s:").removesuffix(")\\Z")
                         .replace(".*", "[^.]*"))
    regex = r"\.".join(parts).replace(r"(?:[^.]+(?:\.[^.]+)*)?\.", r"(?:[^.]+\.)*")
    return re.compile(rf"^{regex}$")


def path_matches(pattern: str, path: str) -> bool:
    return bool(_compile(pattern).match(path))


@dataclass(frozen=True)
class NoiseRule:
    path: str
    kind: Kind
    reason: str
    route: str | None = None  # only for steps on this route template
    tolerance: float = 0.0
    pattern: str | None = None  # uuid: the shape of the generated value
    only: str | None = None  # "local" or "remote": the rule holds in that mode only

    def applies(self, path: str, route: str | None) -> bool:
        return (self.route is None or self.route == route) and path_matches(self.path, path)


@dataclass(frozen=True)
class KnownDifference:
    path: str
    reason: str
    owner: str
    expires: dt.date
    case: str = "*"

    def expired(self, today: dt.date) -> bool:
        return self.expires < today

    def covers(self, case_id: str, path: str) -> bool:
        return fnmatch.fnmatchcase(case_id, self.case) and path_matches(self.path, path)


def _load_yaml(path: Path, key: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    items = data.get(key, []) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise RuleError(f"{path}: expected a mapping with a '{key}' list")
    return items


def load_noise(path: Path, mode: Literal["local", "remote"] = "local") -> list[NoiseRule]:
    """The rules that hold in ``mode`` (a rule with ``only:`` holds in that mode alone)."""
    rules = []
    for i, raw in enumerate(_load_yaml(path, "rules")):
        where = f"{path} rule #{i + 1}"
        missing = {"path", "kind", "reason"} - set(raw)
        if missing:
            raise RuleError(f"{where}: missing {sorted(missing)}")
        if raw["kind"] not in KINDS:
            raise RuleError(f"{where}: kind must be one of {KINDS}")
        if not str(raw["reason"]).strip():
            raise RuleError(f"{where}: a rule needs a reason")
        if raw.get("only") not in (None, "local", "remote"):
            raise RuleError(f"{where}: only must be local or remote")
        if raw["kind"] == "uuid" and not raw.get("pattern"):
            raise RuleError(f"{where}: a uuid rule needs a pattern")
        rules.append(NoiseRule(path=str(raw["path"]), kind=raw["kind"],
                               reason=str(raw["reason"]), route=raw.get("route"),
                               tolerance=float(raw.get("tolerance", 0)),
                               pattern=raw.get("pattern"), only=raw.get("only")))
    return [r for r in rules if r.only in (None, mode)]


def load_known(path: Path) -> list[KnownDifference]:
    known = []
    for i, raw in enumerate(_load_yaml(path, "differences")):
        where = f"{path} entry #{i + 1}"
        missing = {"path", "reason", "owner", "expires"} - set(raw)
        if missing:
            raise RuleError(f"{where}: missing {sorted(missing)}")
        expires = raw["expires"]
        if isinstance(expires, str):
            expires = dt.date.fromisoformat(expires)
        if not isinstance(expires, dt.date):
            raise RuleError(f"{where}: expires must be a date (YYYY-MM-DD)")
        known.append(KnownDifference(path=str(raw["path"]), reason=str(raw["reason"]),
                                     owner=str(raw["owner"]), expires=expires,
                                     case=str(raw.get("case", "*"))))
    return known

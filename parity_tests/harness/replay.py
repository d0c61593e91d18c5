"""Captured traffic as parity cases: each line of a ``CAPTURE_PATH`` file becomes one case.

The apps write the file (``shared/capture.py`` documents a line); :func:`load_capture` turns it
back into single-step :class:`Case` objects the runner sends to both colors::

    cases = load_capture(Path("capture.jsonl"))   # replay/00001-POST-api-v1-chat, ...

What a replayed request keeps and drops:

- method, path, query (pairs, order kept) and body as captured. ``expect_status`` is None: the
  harness compares blue with green, not with what the capturing color answered then (that status
  is in the case's description).
- Headers: the redacted ones (``x-api-key``, ``authorization``, cookies, any ``*token*`` or
  ``*secret*``) are dropped, and so are hop-by-hop and volatile ones (:data:`DROPPED_HEADERS`:
  ``host``, ``content-length``, ``connection``, ``user-agent``, ...). ``accept-encoding`` and
  ``x-request-id`` are kept. The runner adds its own valid key: ``auth=True`` when the captured
  request carried ``x-api-key`` (whether or not that key was valid then), else ``auth=False``.
- Bodies: text bodies are replayed as they are. A body captured as ``{"base64": ...}`` is
  restored when it decodes as UTF-8; otherwise the line is **skipped** and counted
  (``Request.body`` is text sent as UTF-8, so other bytes cannot be reproduced exactly, and a
  near copy would test something else). A body the capture cut (``body_truncated``) is replayed
  as the captured prefix and counted in :attr:`ReplayLoad.truncated`.
- ``{{name}}`` in captured text would be read as a case variable: such a case gets
  ``variables[name]`` set to the placeholder's own text, so rendering gives the text back (only
  ``{{case}}``, which the runner fills, cannot be preserved).

Lines that are not a capture record (bad JSON, missing method/path, wrong types, a partial last
line) are skipped. :func:`read_capture` returns every skip with its line number and reason;
:func:`load_capture` logs one warning with the counts and returns the cases.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parity_tests.harness.model import Case, Request, Step
from shared.capture import REDACTED, is_secret_header

log = logging.getLogger("parity.replay")

DROPPED_HEADERS = frozenset({
    # hop-by-hop, or recomputed by the client
    "host", "content-length", "connection", "keep-alive", "proxy-connection", "transfer-encoding",
    "te", "trailer", "upgrade", "expect",
    # volatile
    "user-agent",
})
_PLACEHOLDER = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)\s*}}")


class _Skip(ValueError):
    """A line that cannot become a case; the message is the reason."""


@dataclass
class ReplayLoad:
    cases: list[Case] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    truncated: int = 0  # cases whose body the capture cut: replayed as the captured prefix

    @property
    def malformed(self) -> int:
        """Lines that are not a capture record at all."""
        return sum(1 for _, reason in self.skipped if not reason.startswith("body "))

    @property
    def non_utf8(self) -> int:
        """Well-formed lines skipped because their body is not UTF-8."""
        return sum(1 for _, reason in self.skipped if reason.startswith("body "))


def slug(path: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "-", path).strip("-").lower()[:48] or "root"


def _str(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise _Skip(f"{key!r} must be a non-empty string")
    return value


def _query(record: dict[str, Any]) -> list[tuple[str, str]]:
    raw = record.get("query", [])
    if not isinstance(raw, list):
        raise _Skip("'query' must be a list of [name, value] pairs")
    pairs = []
    for item in raw:
        if (not isinstance(item, list | tuple) or len(item) != 2
                or not all(isinstance(part, str) for part in item)):
            raise _Skip("'query' must be a list of [name, value] pairs")
        pairs.append((item[0], item[1]))
    return pairs


def _headers(record: dict[str, Any]) -> tuple[dict[str, str], bool]:
    """Headers to replay, and whether the captured request carried an API key."""
    raw = record.get("headers", {})
    if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise _Skip("'headers' must map names to strings")
    had_key = any(k.lower() == "x-api-key" for k in raw)
    kept = {k.lower(): v for k, v in raw.items()
            if k.lower() not in DROPPED_HEADERS and not is_secret_header(k.lower())
            and v != REDACTED}
    return kept, had_key


def _body(record: dict[str, Any]) -> str | None:
    raw = record.get("body", "")
    if isinstance(raw, dict) and set(raw) == {"base64"} and isinstance(raw["base64"], str):
        try:
            data = base64.b64decode(raw["base64"], validate=True)
        except (binascii.Error, ValueError):
            raise _Skip("'body' holds invalid base64") from None
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Skip("body is not UTF-8: Request.body cannot carry it") from None
    if not isinstance(raw, str):
        raise _Skip("'body' must be a string or {\"base64\": ...}")
    return raw or None


def _escapes(texts: list[str]) -> dict[str, str]:
    """For each ``{{name}}`` in captured text, a variable that renders back to that text."""
    found: dict[str, str] = {}
    for text in texts:
        for match in _PLACEHOLDER.finditer(text):
            found.setdefault(match.group(1), match.group(0))
    return found


def case_from_record(record: Any, source: str, line_no: int) -> tuple[Case, bool]:
    """One capture record as a case, and whether its body was truncated at capture."""
    if not isinstance(record, dict):
        raise _Skip("not a JSON object")
    method = _str(record, "method").upper()
    path = _str(record, "path")
    if not path.startswith("/"):
        raise _Skip("'path' must start with /")
    query = _query(record)
    headers, had_key = _headers(record)
    body = _body(record)
    truncated = record.get("body_truncated") is True
    request = Request(method=method, path=path, headers=headers, query=query, body=body,
                      auth=had_key)
    variables = _escapes([path, *(v for _, v in query), *headers.values(), body or ""])
    about = (f"{record.get('color', '?')} answered {record.get('status', '?')} in "
             f"{record.get('duration_ms', '?')} ms (request {record.get('request_id', '?')}, "
             f"{record.get('ts', '?')})" + ("; body truncated at capture" if truncated else ""))
    case = Case(id=f"replay/{line_no:05d}-{method}-{slug(path)}",
                steps=(Step(name="replay", request=request, expect_status=None),),
                description=about, source=source, tags=("replay",), variables=variables)
    return case, truncated


def read_capture(path: Path) -> ReplayLoad:
    """Every case of a capture file, with what was skipped and why. Blank lines are ignored."""
    result = ReplayLoad()
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                try:
                    record = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise _Skip("not a JSON line") from None
                case, truncated = case_from_record(record, str(path), line_no)
            except _Skip as skip:
                result.skipped.append((line_no, str(skip)))
                continue
            result.cases.append(case)
            result.truncated += truncated
    return result


def load_capture(path: Path) -> list[Case]:
    """The cases of a capture file; one warning says how many lines were skipped and why."""
    result = read_capture(path)
    if result.skipped or result.truncated:
        log.warning(
            "%s: %d cases; skipped %d malformed lines and %d non-UTF-8 bodies; %d bodies "
            "truncated at capture (first skips: %s)", path, len(result.cases), result.malformed,
            result.non_utf8, result.truncated, result.skipped[:5])
    return result.cases

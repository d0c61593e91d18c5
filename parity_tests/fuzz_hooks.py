"""Schemathesis hooks for ``make fuzz`` and the in-process fuzz test.

The CLI loads this module through ``SCHEMATHESIS_HOOKS=parity_tests.fuzz_hooks``; the pytest face
imports it. One hook, for one documented decision:

A list cursor is an opaque token this API issued (``next_cursor``); any other string is
422 ``VALIDATION_ERROR`` "cursor is not one this API issued", as documented. A schema cannot
describe "a string this server made", so a *positive* case carrying a cursor the API did not
issue is sent without it (the first page). Negative cases keep their forged cursors, and the
stateful phase sends real ones through the ``NextPage`` link.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation

from shared.sessions import InvalidCursor, decode_cursor

LIST_PATH = "/api/v1/users/{user_id}/sessions"


def issued_cursor(cursor: Any, user_id: Any) -> bool:
    if not isinstance(cursor, str) or not isinstance(user_id, str):
        return False
    try:
        decode_cursor(cursor, user_id)
    except InvalidCursor:
        return False
    return True


def drop_forged_cursor(case: Any) -> Any:
    if case.operation.path != LIST_PATH or not case.query or "cursor" not in case.query:
        return case
    meta = case.meta
    if meta is not None and meta.is_negative_at(ParameterLocation.QUERY):
        return case
    user_id = (case.path_parameters or {}).get("user_id")
    if not issued_cursor(case.query["cursor"], user_id):
        case.query = {k: v for k, v in case.query.items() if k != "cursor"}
    return case


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    return drop_forged_cursor(case)

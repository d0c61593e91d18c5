"""Make moto's DynamoDB writes atomic, as DynamoDB's are.

moto's ``UpdateItem`` reads the item, then writes it back, with no lock; its server is threaded.
Two concurrent ``ADD request_count :one`` on a new rate-limit bucket both find no item, both
create one holding 1, and one increment is lost: a burst of limit+K requests then lets limit+1
or more through (seen with blue's five gunicorn workers), and the same race breaks conditional
writes. Real DynamoDB applies each write atomically, so devstack serializes moto's write
operations with one lock (reads are unaffected). The lock covers the whole request handler, not
only the backend call: moto builds the answer (``ReturnValues: UPDATED_NEW``) from the item after
the backend returned, and a concurrent ``ADD`` could change it in between (two requests were told
the same count).

:func:`install` patches the backend in this process (devstack's in-process moto calls it);
``python -m devstack.moto_atomic -H 127.0.0.1 -p 5000`` is ``moto_server`` with the patch.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
_LOCK = threading.RLock()
_MARK = "_devstack_atomic"


def install() -> None:
    """Serialize DynamoDB's write operations, answer included (idempotent)."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler

    for cls in (DynamoHandler, DynamoDBBackend):
        for name in WRITES:
            original = getattr(cls, name, None)
            if original is None or getattr(original, _MARK, False):
                continue

            def locked(self: Any, *args: Any, __original: Any = original, **kwargs: Any
                       ) -> Any:
                with _LOCK:
                    return __original(self, *args, **kwargs)

            wrapper = functools.wraps(original)(locked)
            setattr(wrapper, _MARK, True)
            setattr(cls, name, wrapper)


def main(argv: list[str] | None = None) -> None:
    install()
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main()

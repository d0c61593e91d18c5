"""legacy_flask/gunicorn_gevent.conf.py, read as gunicorn's master reads it (in a fresh
interpreter): gunicorn.conf.py's settings and hooks, the gevent worker class, and none of the
modules that must be imported only after the worker's monkey patch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parent.parent.parent
# imported before gevent's patch, these keep unpatched ssl/socket/threading names (urllib3's
# ``from ssl import SSLContext``): the worker then fails to boot (RecursionError) or blocks
MUST_WAIT = ("boto3", "botocore", "urllib3", "legacy_flask", "flask", "gevent.monkey")

READ = """
import json, runpy, sys
from gunicorn.config import Config
conf = runpy.run_path(sys.argv[2])
modules = sorted(sys.modules)
base = runpy.run_path(sys.argv[1])  # for the comparison only (after: it would import the app)
cfg = Config()
for k, v in conf.items():
    if k in cfg.settings:
        cfg.set(k.lower(), v)
print(json.dumps({
    "modules": modules,
    "worker_class": cfg.worker_class_str, "worker_connections": cfg.worker_connections,
    "workers": cfg.workers, "same": sorted(k for k in cfg.settings if k in base
                                           and k in conf and conf[k] == base[k]),
    "hooks": sorted(k for k in ("on_starting", "worker_exit", "child_exit")
                    if callable(conf.get(k))),
}))
"""


def read(env: dict[str, str] | None = None) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", READ, str(ROOT / "legacy_flask" / "gunicorn.conf.py"),
         str(ROOT / "legacy_flask" / "gunicorn_gevent.conf.py")],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})})
    data: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return data


def test_the_master_imports_nothing_the_patch_must_come_before() -> None:
    data = read()
    modules = data["modules"]
    assert isinstance(modules, list)
    early = [m for m in modules if any(m == p or m.startswith(p + ".") for p in MUST_WAIT)]
    assert early == [], f"imported in the master, before the worker's monkey patch: {early}"


def test_it_is_gunicorn_conf_under_gevent_workers() -> None:
    data = read({"WEB_CONCURRENCY": "3", "GUNICORN_WORKER_CONNECTIONS": "250"})
    assert data["worker_class"] == "gevent"
    assert data["worker_connections"] == 250
    assert data["workers"] == 3
    same = data["same"]
    assert isinstance(same, list)
    for name in ("bind", "timeout", "graceful_timeout", "keepalive", "limit_request_line",
                 "limit_request_field_size", "limit_request_fields", "preload_app", "accesslog",
                 "errorlog", "loglevel"):
        assert name in same, name
    assert data["hooks"] == ["child_exit", "on_starting", "worker_exit"]

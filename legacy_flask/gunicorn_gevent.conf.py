"""gunicorn settings for blue under gevent workers: the same Flask app and boto3 code, cooperative.

This is the cheap alternative a team tries before a rewrite (``gunicorn -k gevent``), run by
``make bench`` as ``blue-gevent``; blue ships with gunicorn.conf.py (sync workers). Every setting
of gunicorn.conf.py is reused (bind, timeouts, request limits, logging, the metrics directory and
the hooks: ``worker_exit`` flushes a worker's buffered metrics); only the worker model differs.

Monkey patching, and why nothing here imports the app:

- gunicorn's gevent worker calls ``gevent.monkey.patch_all()`` when the worker starts, after the
  fork and before it loads ``legacy_flask.wsgi`` (and so boto3, botocore and urllib3). Modules
  imported before the patch keep what they took from ``ssl``, ``socket`` and ``threading``
  (urllib3 does ``from ssl import SSLContext, ...``): HTTPS calls to AWS would then block the whole
  worker, and gevent warns "Monkey-patching ssl after ssl has already been imported". So the
  master must not import them: gunicorn.conf.py skips its import of ``legacy_flask.app`` (meant to
  speed up forking) when the worker class is gevent, ``preload_app`` stays off, and this file
  imports only the standard library. gunicorn itself imports ``ssl`` in the master, but takes no
  names from it that boto3 uses; gevent patches the module in place, so what urllib3 imports later
  is gevent's. The master is not patched: it forks and reaps workers with real signals.
- After the patch, ``threading.Thread`` is a greenlet: blue's per-worker metrics flusher
  (legacy_flask/telemetry.py) runs as one, its ``Event.wait`` and its PutMetricData are
  cooperative, and ``worker_exit`` stops and joins it as before. Its locks and the boto3 clients'
  lock are gevent locks (made after the patch, in the worker).
- boto3 clients are made per worker after the fork, as with the other worker classes.

Sizing, as a team would pick it:

- ``workers``: gunicorn.conf.py's ``2 x cores + 1`` (``WEB_CONCURRENCY``). Each gevent worker is
  one process on one core at a time; the extra workers keep a core busy while another worker runs
  its garbage collector, and cost ~80 MB each (docs/performance.md compares 1 per core).
- ``worker_connections``: gunicorn's default, 1,000 greenlets per worker
  (``GUNICORN_WORKER_CONNECTIONS``): far above what one core can serve at 200 ms per chat.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

# read by gunicorn.conf.py: no import of the app in the master (see above)
os.environ["GUNICORN_WORKER_CLASS"] = "gevent"

_base = runpy.run_path(str(Path(__file__).with_name("gunicorn.conf.py")))
globals().update({k: v for k, v in _base.items() if not k.startswith("_")})

worker_class = "gevent"
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
threads = 1  # ignored by the gevent worker; concurrency is worker_connections

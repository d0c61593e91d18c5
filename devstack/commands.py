"""The exact server commands, shared by `make run`, the e2e tests and the Docker images.

tests/docker checks that each image's CMD is the command here, so what ships is what is tested.
"""

BLUE_CMD = ["gunicorn", "-c", "legacy_flask/gunicorn.conf.py", "legacy_flask.wsgi:app"]
# not shipped: blue under gevent workers, the peer `make bench` compares green with
BLUE_GEVENT_CMD = ["gunicorn", "-c", "legacy_flask/gunicorn_gevent.conf.py",
                   "legacy_flask.wsgi:app"]
GREEN_CMD = ["python", "-m", "fastapi_app.serve"]
DEVSTACK_CMD = ["python", "-m", "devstack"]

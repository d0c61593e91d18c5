"""The WSGI entry point gunicorn loads in each worker, after the fork."""

from legacy_flask.app import create_app

app = create_app()

"""Blue: the legacy Flask app (gunicorn, boto3)."""

from legacy_flask.app import create_app

__all__ = ["create_app"]

"""Green: the async FastAPI app (uvicorn, aioboto3)."""

from fastapi_app.app import create_app

__all__ = ["create_app"]

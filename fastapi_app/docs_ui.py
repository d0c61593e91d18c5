"""Green's /docs (Swagger UI) and /redoc (ReDoc), served from this package, never from a CDN.

FastAPI's default pages load their scripts from cdn.jsdelivr.net, so they are blank offline or
behind an egress firewall. The assets live in ``fastapi_app/static`` (vendored from the npm
packages, with their licences): Swagger UI 5 (swagger-ui-dist; FastAPI's OpenAPI 3.1 needs 5.x,
the PyPI swagger-ui-bundle ships 4.x, which cannot render it) and ReDoc 2 (redoc's standalone
bundle). To update them: ``npm pack swagger-ui-dist@5 redoc@2`` and copy the same files from
the tarballs (the versions are in :data:`VERSIONS`; a test reads them from the bundles).

The pages carry a Content-Security-Policy that allows this origin only, so a browser would
refuse any asset that was still fetched from elsewhere.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import Response

STATIC = Path(__file__).resolve().parent / "static"
ASSET_PREFIX = "/docs/assets/"
VERSIONS = {"swagger-ui-dist": "5.35.0", "redoc": "2.5.2"}
# name served under ASSET_PREFIX -> (file under STATIC, content type)
ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css; charset=utf-8"),
    "favicon.png": ("swagger-ui/favicon-32x32.png", "image/png"),
    "redoc.standalone.js": ("redoc/redoc.standalone.js", "text/javascript; charset=utf-8"),
}
# the pages' inline start-up script and styles; ReDoc runs its search in a blob: worker
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
            "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'")
TITLE = "Chatbot API"
OPENAPI_URL = "/openapi.json"


@cache
def asset(name: str) -> tuple[bytes, str] | None:
    """The bytes and content type of one asset (read once per process), or None."""
    entry = ASSETS.get(name)
    if entry is None:
        return None
    path, content_type = entry
    return (STATIC / path).read_bytes(), content_type


def _with_csp(page: Response) -> Response:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def swagger_page() -> Response:
    return _with_csp(get_swagger_ui_html(
        openapi_url=OPENAPI_URL, title=TITLE,
        swagger_js_url=ASSET_PREFIX + "swagger-ui-bundle.js",
        swagger_css_url=ASSET_PREFIX + "swagger-ui.css",
        swagger_favicon_url=ASSET_PREFIX + "favicon.png",
        # no badge image from validator.swagger.io
        swagger_ui_parameters={"validatorUrl": None}))


def redoc_page() -> Response:
    return _with_csp(get_redoc_html(
        openapi_url=OPENAPI_URL, title=TITLE,
        redoc_js_url=ASSET_PREFIX + "redoc.standalone.js",
        redoc_favicon_url=ASSET_PREFIX + "favicon.png", with_google_fonts=False))

"""Green's /docs and /redoc work offline: every script, style and image they reference is served
by green itself, from the package (Swagger UI 5, which renders OpenAPI 3.1, and ReDoc 2), and a
Content-Security-Policy keeps the browser from fetching anything from another origin."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from fastapi_app import docs_ui
from fastapi_app.app import create_app
from shared.settings import Settings

pytestmark = pytest.mark.unit
REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(metrics_enabled=False))  # no lifespan: these routes need no AWS
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        yield client


def references(html: str) -> list[str]:
    return [a or b for a, b in REFERENCE.findall(html)]


@pytest.mark.asyncio
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_every_asset_of_the_page_is_served_here(http: httpx.AsyncClient,
                                                      page: str) -> None:
    resp = await http.get(page)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.headers["content-security-policy"] == docs_ui.DOCS_CSP
    assert "default-src 'self'" in docs_ui.DOCS_CSP
    refs = references(resp.text)
    assert "/openapi.json" in refs
    assets = [r for r in refs if r != "/openapi.json"]
    assert len(assets) >= 2  # a script and a favicon at least
    for ref in assets:
        assert ref.startswith(docs_ui.ASSET_PREFIX), f"{page} loads {ref} from elsewhere"
        asset = await http.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 500, ref
    assert "cdn." not in resp.text
    assert "fonts.googleapis" not in resp.text


@pytest.mark.asyncio
async def test_the_assets_are_the_versions_named(http: httpx.AsyncClient) -> None:
    swagger = await http.get(docs_ui.ASSET_PREFIX + "swagger-ui-bundle.js")
    assert swagger.headers["content-type"].startswith("text/javascript")
    # Swagger UI 5 renders OpenAPI 3.1 (what FastAPI and shared/openapi.py emit); 4.x cannot
    assert docs_ui.VERSIONS["swagger-ui-dist"].startswith("5.")
    assert f'"{docs_ui.VERSIONS["swagger-ui-dist"]}"' in swagger.text
    css = await http.get(docs_ui.ASSET_PREFIX + "swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css")
    redoc = await http.get(docs_ui.ASSET_PREFIX + "redoc.standalone.js")
    assert docs_ui.VERSIONS["redoc"] in redoc.text
    for licence in ("swagger-ui/LICENSE", "redoc/LICENSE"):
        assert (docs_ui.STATIC / licence).stat().st_size > 0


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["nope.js", "LICENSE", "..%2F..%2Fapp.py", "swagger-ui/LICENSE"])
async def test_anything_else_under_the_assets_is_the_404_envelope(http: httpx.AsyncClient,
                                                                  name: str) -> None:
    resp = await http.get(docs_ui.ASSET_PREFIX + name)
    assert resp.status_code == 404
    assert resp.json()["error_code"] == "NOT_FOUND"

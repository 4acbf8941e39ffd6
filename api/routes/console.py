"""The web console (docs/console.md): static HTML, CSS and ES modules from ``api/console/static``,
served at ``/console`` by the API itself, so there is no build step and no second server.

Every answer carries a strict Content-Security-Policy: the page may load and call only its own
origin, so "no external network requests" is enforced by the browser, not just by convention.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parents[1] / "console" / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The assets change with the code, not with a version in their names: always revalidate.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


class _ConsoleAssets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


@router.get("/console")
async def console_root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console/")
async def console_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


def install(app: FastAPI) -> None:
    """Serve the console at ``/console/`` (its assets under ``/console/static/``); not in OpenAPI."""
    app.include_router(router)
    app.mount("/console/static", _ConsoleAssets(directory=STATIC_DIR), name="console-static")

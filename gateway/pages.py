"""The admin pages at BASE/torrent/ui: server-rendered shells plus small ES modules and a stylesheet.

The shells carry no data, so they are public like the OpenAPI document; the scripts fetch everything
from the /torrent API with the admin's Jellyfin token in the Authorization header (never a cookie, so
no CSRF surface, and never a URL). A strict Content-Security-Policy forbids inline scripts and styles:
an apibay name such as ``<img src=x onerror=...>`` stays text.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import __version__
from .auth import public
from .settings import Settings


def _templates_dir() -> Path:
    """templates/ inside the package (an installed wheel: setup.cfg maps it there), else beside it.

    A checkout, editable install included, keeps templates/ at the top of the repository. When neither
    exists, the installed location is named, so start-up fails saying which folder is missing.
    """
    package = Path(__file__).resolve().parent
    installed, checkout = package / "templates", package.parent / "templates"
    return checkout if not installed.is_dir() and checkout.is_dir() else installed


TEMPLATES = _templates_dir()
STATIC = TEMPLATES / "static"
PAGES = ("search", "downloads", "libraries", "signin")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def add_pages(app: web.Application, settings: Settings) -> None:
    """Routes of the pages on the torrent sub-app (lowercase full paths, see routing.py)."""
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    prefix = settings.torrent_prefix
    ui = f"{prefix}/ui"
    context = {
        "api": prefix,
        "base": settings.base_path,
        "ui": ui,
        "static": f"{ui}/static",
        "version": __version__,
    }
    # Only files that exist at start, by exact name: no path from the request reaches the filesystem.
    assets = {path.name.lower(): path for path in STATIC.iterdir() if path.suffix in _TYPES}

    @public
    async def index(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{ui}/search")

    @public
    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info["page"]
        if name not in PAGES:
            raise web.HTTPNotFound()
        response = aiohttp_jinja2.render_template(f"{name}.html", request, {**context, "page": name})
        response.headers.update(_SECURITY_HEADERS)
        return response

    @public
    async def asset(request: web.Request) -> web.StreamResponse:
        path = assets.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={**_SECURITY_HEADERS, "Content-Type": _TYPES[path.suffix]})

    lowered = ui.lower()
    app.router.add_get(lowered, index)
    app.router.add_get(f"{lowered}/", index)
    app.router.add_get(lowered + "/{page}", page)
    app.router.add_get(lowered + "/static/{name}", asset)

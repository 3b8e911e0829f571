"""Case-insensitive mounting of a sub-application, as ASP.NET routes are matched.

Jellyfin clients may write ``/Torrent/Test1`` or ``/torrent/test1``; both must reach the gateway's
own API and never Jellyfin. aiohttp matches paths case-sensitively, so the sub-application registers
lowercase routes and is resolved against a lowercased copy of the request path.

Only documented aiohttp API is used, so that an upgrade cannot silently break the mount: a custom
resource (``AbstractResource`` registered with ``UrlDispatcher.register_resource``), the sub-app's
own router and signals, and a middleware that refuses a prefixed request the mount did not route.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

logger = logging.getLogger(__name__)


class _CaseInsensitiveSubApp(web.AbstractResource):
    """Resolves ``prefix`` and everything below it, in any letter case, in the sub-app's router."""

    def __init__(self, prefix: str, subapp: web.Application) -> None:
        super().__init__()
        self._prefix = prefix.lower().rstrip("/")
        self._subapp = subapp

    @property
    def app(self) -> web.Application:
        return self._subapp

    def matches(self, path: str) -> bool:
        lowered = path.lower()
        return lowered == self._prefix or lowered.startswith(self._prefix + "/")

    @property
    def canonical(self) -> str:
        """``/``: the router indexes resources by canonical path, case-sensitively.

        Indexed at the root, the mount is asked about every path (before the catch-all registered
        after it), since ``/TORRENT/x`` would never meet an index key of ``/torrent``.
        """
        return "/"

    def url_for(self, **kwargs: str) -> URL:
        raise RuntimeError("url_for() is not supported by a mounted sub-application; use its routes")

    async def resolve(self, request: web.Request) -> tuple[web.UrlMappingMatchInfo | None, set[str]]:
        path = request.rel_url.path
        if not self.matches(path):
            return None, set()
        lowered = path.lower()
        probe = request if lowered == path else request.clone(rel_url=request.rel_url.with_path(lowered))
        # A 404 or 405 from the sub-app is still its answer: its middlewares (JSON errors, the admin
        # check) run, and nothing under the prefix falls through to the proxy.
        match_info = await self._subapp.router.resolve(probe)
        match_info.add_app(self._subapp)
        error = match_info.http_exception
        allowed = set(error.allowed_methods) if isinstance(error, web.HTTPMethodNotAllowed) else set()
        return match_info, allowed

    def add_prefix(self, prefix: str) -> None:
        raise NotImplementedError("an app with a case-insensitive mount cannot itself be a sub-app")

    def get_info(self) -> Any:  # aiohttp types this with a private TypedDict
        return {"prefix": self._prefix, "app": self._subapp}

    def raw_match(self, path: str) -> bool:
        """Never: ``add_resource`` must not reuse the mount for the route registered after it."""
        return False

    def __len__(self) -> int:
        return len(self._subapp.router.routes())

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        return iter(self._subapp.router.routes())

    def __repr__(self) -> str:
        return f"<CaseInsensitiveSubApp {self._prefix} -> {self._subapp!r}>"


def _relay_signals(app: web.Application, subapp: web.Application) -> None:
    """Run the sub-app's startup, shutdown and cleanup with the parent's, as ``add_subapp`` does."""

    async def startup(_: web.Application) -> None:
        await subapp.on_startup.send(subapp)

    async def shutdown(_: web.Application) -> None:
        await subapp.on_shutdown.send(subapp)

    async def cleanup(_: web.Application) -> None:
        await subapp.on_cleanup.send(subapp)

    app.on_startup.append(startup)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)


def _never_past_the_mount(mount: _CaseInsensitiveSubApp) -> Middleware:
    """A prefixed request that did not resolve into the sub-app is refused, never proxied.

    That happens only if routing changed under us (another route registered before the mount, a new
    aiohttp); a 500 is loud where forwarding admin calls to Jellyfin would be silent. Being a parent
    middleware, it also keeps aiohttp running the sub-app's middlewares (it skips all of them when
    no app it knows of has one, and a custom resource's sub-app is not one it knows of).
    """

    @web.middleware
    async def never_past_the_mount(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Identity, not ``in``: applications compare equal by content.
        if not any(app is mount.app for app in request.match_info.apps) and mount.matches(
            request.rel_url.path
        ):
            logger.error("%s %s was not routed to %r; refused", request.method, request.rel_url.path, mount)
            raise web.HTTPInternalServerError(text="500: the gateway's own routes are misconfigured")
        return await handler(request)

    return never_past_the_mount


def mount_case_insensitive(
    app: web.Application, prefix: str, subapp: web.Application
) -> web.AbstractResource:
    """Serve ``prefix`` (any letter case) from ``subapp``, whose routes are lowercase full paths.

    Call it before registering a catch-all route: both sit at the root of the router's index, where
    the first registered is asked first. The sub-app must be complete: it is frozen here (aiohttp's
    own ``add_subapp`` likewise freezes a sub-app's routes when it is added).
    """
    if subapp.frozen:
        raise RuntimeError("the sub-application is already mounted (or frozen)")
    mount = _CaseInsensitiveSubApp(prefix, subapp)
    app.router.register_resource(mount)
    app.middlewares.append(_never_past_the_mount(mount))
    _relay_signals(app, subapp)
    subapp.freeze()
    return mount

"""Case-insensitive mounting of a sub-application, as ASP.NET routes are matched.

Jellyfin clients may write ``/Torrent/Test1`` or ``/torrent/test1``; both must reach the gateway's
own API and never Jellyfin. aiohttp matches paths case-sensitively, so the sub-application registers
lowercase routes and is resolved against a lowercased copy of the request path.
"""

from __future__ import annotations

from functools import partial

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRuleMatching, MatchedSubAppResource, _InfoDict, _Resolve


class _PathPrefix(AbstractRuleMatching):
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix.lower()

    def matches(self, path: str) -> bool:
        lowered = path.lower()
        return lowered == self._prefix or lowered.startswith(self._prefix + "/")

    async def match(self, request: web.Request) -> bool:
        return self.matches(request.rel_url.path)

    def get_info(self) -> _InfoDict:
        return {"prefix": self._prefix}

    @property
    def canonical(self) -> str:
        return self._prefix


class _CaseInsensitiveSubApp(MatchedSubAppResource):
    """Resolved before any path route of the parent, like aiohttp's domain-matched sub-apps."""

    async def resolve(self, request: web.Request) -> _Resolve:
        if not await self._rule.match(request):
            return None, set()
        path = request.rel_url.path
        lowered = path.lower()
        probe = request if lowered == path else request.clone(rel_url=request.rel_url.with_path(lowered))
        match_info = await self._app.router.resolve(probe)
        match_info.add_app(self._app)
        http_exception = match_info.http_exception
        methods = (
            http_exception.allowed_methods if isinstance(http_exception, web.HTTPMethodNotAllowed) else set()
        )
        return match_info, methods


def mount_case_insensitive(app: web.Application, prefix: str, subapp: web.Application) -> None:
    """Serve ``prefix`` (any letter case) from ``subapp``, whose routes are lowercase full paths.

    aiohttp has no public call to add a sub-application with a custom rule; ``_add_subapp`` is what
    ``add_domain`` uses, and it wires the sub-app's signals and middlewares as ``add_subapp`` does.
    """
    factory = partial(_CaseInsensitiveSubApp, _PathPrefix(prefix), subapp)
    app._add_subapp(factory, subapp)

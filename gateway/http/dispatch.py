"""Send callback requests straight to their route, in front of Starlette's routing.

Installed as the outermost middleware of the Starlette app: a request whose method and path a
callback route serves goes to that route's ASGI app (gateway.http.endpoints.CallbackRoute);
everything else (probes, metrics, unknown paths, wrong methods, lifespan) continues into
Starlette unchanged. Paths match exactly as Starlette's router matches them: the same compiled
pattern (``starlette.routing.compile_path``), against the path without the ``root_path``, and a
route that allows GET allows HEAD too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.http.endpoints import CallbackRoute

_NO_PARAMS: Final[Mapping[str, str]] = {}

# (path template, methods, route) as create_app declares them.
RouteSpec = tuple[str, Iterable[str], CallbackRoute]


def allowed_methods(methods: Iterable[str]) -> frozenset[str]:
    """The methods Starlette's Route serves for ``methods``: GET brings HEAD."""
    upper = {method.upper() for method in methods}
    return frozenset(upper | {"HEAD"} if "GET" in upper else upper)


def route_path(scope: Scope) -> str:
    """The path the router matches: scope path without the root_path (as Starlette does)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


class CallbackDispatch:
    """ASGI middleware: callback requests to their CallbackRoute, the rest to ``app``."""

    def __init__(self, app: ASGIApp, routes: Iterable[RouteSpec]) -> None:
        self.app = app
        self._exact: dict[tuple[str, str], CallbackRoute] = {}
        self._patterns: list[tuple[re.Pattern[str], frozenset[str], CallbackRoute]] = []
        for template, methods, route in routes:
            allowed = allowed_methods(methods)
            if "{" in template:
                regex, _format, _convertors = compile_path(template)
                self._patterns.append((regex, allowed, route))
            else:
                for method in allowed:
                    self._exact[(method, template)] = route

    def match(self, scope: Scope) -> tuple[CallbackRoute, Mapping[str, str]] | None:
        """The callback route serving this request and its path parameters, if any."""
        method: str = scope["method"]
        path = route_path(scope)
        route = self._exact.get((method, path))
        if route is not None:
            return route, _NO_PARAMS
        for regex, allowed, candidate in self._patterns:
            if method in allowed and (found := regex.match(path)) is not None:
                params: dict[str, str] = found.groupdict()
                return candidate, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (matched := self.match(scope)) is not None:
            route, params = matched
            await route(scope, receive, send, params)
            return
        await self.app(scope, receive, send)

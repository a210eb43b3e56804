"""How hookline's HTTP listeners are served: one uvicorn configuration for both of them.

The public listener (what providers call, ``hookline run|serve``) and the admin listener
(``/readyz``, ``/metrics``, the admin API; gateway.http.admin) are served with the same
options: uvloop and httptools when importable, the client limits of gateway.http.limits,
forwarded headers ignored (HOOKLINE_TRUSTED_PROXIES decides, in gateway.http.urls), no access
log (one structured line per request comes from the app), no Server header.
https://www.uvicorn.org/settings/
"""

from __future__ import annotations

import importlib.util
import socket
from typing import Any, Final

import uvicorn

from gateway.errors import ConfigError
from gateway.settings import ClientLimits

#: On SIGTERM uvicorn stops accepting and lets requests in flight finish (each is bounded by
#: the publish deadline plus a spool write, and the TwiML deadline) before the lifespan drains.
COMMON_OPTIONS: Final[dict[str, Any]] = {
    "log_config": None,
    "access_log": False,
    "proxy_headers": False,
    "server_header": False,
    "timeout_graceful_shutdown": 15,
    "ws": "none",
}


def server_config(
    app: Any, host: str, port: int, limits: ClientLimits, **options: Any
) -> uvicorn.Config:
    """A uvicorn Config for ``app`` (an ASGI app, or an import string with ``factory=True``)."""
    fast: dict[str, Any] = {}
    if importlib.util.find_spec("uvloop") is not None:
        fast["loop"] = "uvloop"
    if importlib.util.find_spec("httptools") is not None:
        from gateway.http.limits import GuardedHttpToolsProtocol

        fast["http"] = GuardedHttpToolsProtocol
    else:
        # uvicorn's h11 protocol bounds the head's size itself; the timeouts need httptools
        # (a dependency of uvicorn[standard] on CPython).
        fast.update(http="h11", h11_max_incomplete_event_size=limits.max_header_bytes)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        limit_concurrency=limits.max_connections,
        **{**COMMON_OPTIONS, **fast, **options},
    )
    from gateway.http.limits import LIMITS_ATTRIBUTE

    setattr(config, LIMITS_ATTRIBUTE, limits)
    return config


def bind(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """A listening-ready TCP socket on ``host:port``, or ConfigError in one clear sentence.

    ``shared`` sets SO_REUSEPORT, so that the processes of ``serve --workers N`` can each bind
    the admin listener (the kernel spreads connections among them).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock

"""Why a connection to RabbitMQ failed, in one plain sentence: the one classifier of hookline.

Every place that opens a broker connection (the gateway's publisher, ``hookline check``, the
workers, the TwiML RPC client, ``hookline tail``) reports a failure through ``connect_failure``,
so a wrong password reads "login refused for user 'x'" everywhere, instead of a client
library's exception name or a protocol frame. The URL's password never appears.

What the broker says, and how it arrives:

* a wrong user or password: ``connection.close`` 403 ACCESS_REFUSED during the handshake
  (https://www.rabbitmq.com/docs/access-control#authentication-failures); aiormq raises
  ``ProbableAuthenticationError``;
* a vhost that does not exist, or one the user has no permission on: ``connection.close``
  530 NOT_ALLOWED answering ``connection.open`` ("vhost x not found", "access to vhost 'x'
  refused for user 'y'", https://www.rabbitmq.com/docs/vhosts); aiormq reports only an
  ``InvalidFrameError`` (it expected ``Connection.OpenOk``), without the broker's text;
* nothing listening: the socket's ECONNREFUSED, possibly wrapped by aiormq.

aiormq's exceptions are recognised by name: the gateway's publisher does not load aiormq.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Final
from urllib.parse import unquote, urlsplit

from gateway.log import mask_url_password

_ACCESS_REFUSED: Final = 403
_NOT_ALLOWED: Final = 530
_LOGIN_REFUSED: Final = frozenset({"ProbableAuthenticationError", "AuthenticationError"})


def connect_failure(exc: BaseException, url: str, timeout: float | None = None) -> str:
    """One sentence saying why connecting to ``url`` failed with ``exc``; no secret in it."""
    host, port, user, vhost, password = _address(url)
    where = f"{host}:{port}"

    def scrub(text: str) -> str:  # what the broker or a library says may quote the URL
        return text.replace(password, "****") if password else text

    return f"{_classify(exc, where, user, vhost, timeout, scrub)} ({mask_url_password(url)})"


def _classify(
    exc: BaseException,
    where: str,
    user: str,
    vhost: str,
    timeout: float | None,
    scrub: Callable[[str], str],
) -> str:
    for cause in _chain(exc):
        names = {kind.__name__ for kind in type(cause).__mro__}
        code = getattr(cause, "reply_code", 0)
        text = scrub(str(getattr(cause, "reply_text", "")))
        if names & _LOGIN_REFUSED or (code == _ACCESS_REFUSED and "login" in text.lower()):
            return f"login refused for user {user!r} at {where}: wrong user name or password"
        if code == _NOT_ALLOWED or ("InvalidFrameError" in names and "OpenOk" in str(cause)):
            if "refused for user" in text:
                return f"user {user!r} has no permission on vhost {vhost!r} at {where}"
            if text or "Connection.Close" in str(cause):
                suffix = "" if text else f", or user {user!r} has no permission on it"
                return f"vhost {vhost!r} does not exist at {where}{suffix}"
        if code:
            return f"the broker at {where} closed the connection: {code} {text}"
        if "FrameError" in names:  # gateway.broker.wire's: the peer is not an AMQP broker
            return f"{where} does not answer in AMQP 0-9-1 ({scrub(str(cause))})"
        if isinstance(cause, ConnectionRefusedError) or _errno(cause) == errno.ECONNREFUSED:
            return f"connection refused at {where}: nothing listens there (is RabbitMQ running?)"
        if isinstance(cause, socket.gaierror) or _errno(cause) in _RESOLVE_ERRORS:
            return f"cannot resolve the broker's host name {where.rpartition(':')[0]!r}"
        if isinstance(cause, ssl.SSLError):
            # verify_message says why a certificate was refused (e.g. "Hostname mismatch").
            why = ": ".join(
                str(part) for part in (cause.reason, getattr(cause, "verify_message", None)) if part
            ) or str(cause)
            return f"TLS handshake with {where} failed: {scrub(why)}"
        if isinstance(cause, TimeoutError):
            within = f" within {timeout:g} s" if timeout else ""
            return f"no answer from the broker at {where}{within}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect to the broker at {where}: {exc.strerror}"
    text = scrub(str(exc))
    return f"cannot connect to the broker at {where}: {type(exc).__name__}" + (
        f": {text}" if text else ""
    )


_RESOLVE_ERRORS: Final = frozenset(
    {socket.EAI_NONAME, socket.EAI_AGAIN, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
)


def _errno(exc: BaseException) -> int | None:
    """The OS error number of an OSError, or of an aiormq error that copies its args."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, int) and not isinstance(first, bool) else None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and exceptions carried in args (aio-pika wraps the
    real failure in a CancelledError's args); each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [arg for arg in current.args if isinstance(arg, BaseException)]


def _address(url: str) -> tuple[str, int, str, str, str]:
    """(host, port, user, vhost, password) of an amqp(s) URL, leniently: a URL too broken to
    parse was refused by the settings before any connection was tried."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "?", 0, "?", "?", ""
    secure = parts.scheme.lower() == "amqps"
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return (
        parts.hostname or "localhost",
        port or (5671 if secure else 5672),
        unquote(parts.username) if parts.username is not None else "guest",
        vhost,
        unquote(parts.password) if parts.password else "",
    )

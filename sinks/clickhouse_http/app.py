"""The ASGI app serving :class:`~.interface.HttpInterface`.

A plain ASGI callable using Starlette's request and response primitives (headers, query
string, response framing), without a Starlette application: ClickHouse's protocol has one
handler and its own answers for everything (``/ping``, 404s, errors as ``Code: N ...``), so
routing and exception middleware would only answer some requests in a non-ClickHouse format.

The body is read in full, within ``max_body_bytes``, before the request is handed to the
interface on a thread of its own (the statement blocks on the engine): a body cut short (client
gone, connection closed early) is never run, an oversized one is answered 413.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response as StarletteResponse

from .errors import ClickHouseError
from .interface import HttpInterface
from .protocol import Request, Response

__all__ = ["ClickHouseApp"]

# Past the limit, up to this much more is read and dropped before the 413, so the client gets
# to read the answer instead of a connection reset; beyond it the connection is closed.
_MAX_DRAIN_BYTES = 64 * 1024 * 1024

_METHODS = ("GET", "POST", "HEAD")


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class ClickHouseApp:
    """ASGI app: ``interface`` answers, ``executor`` runs its blocking work.

    ``read_timeout`` bounds the wait for each piece of a request body: a stalled client is
    answered and dropped instead of holding its partial body forever.
    """

    def __init__(
        self, interface: HttpInterface, executor: Executor, *, read_timeout: float = 300.0
    ) -> None:
        self.interface = interface
        self.executor = executor
        self.read_timeout = read_timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # no lifespan or websocket business here
            return
        response = await self._respond(scope, receive)
        if response is None:
            return  # the client is gone: nobody to answer
        headers = dict(response.headers)
        if response.close:
            headers["Connection"] = "close"
        await StarletteResponse(response.body, response.status, headers)(scope, receive, send)

    async def _respond(self, scope: dict[str, Any], receive: Any) -> Response | None:
        interface = self.interface
        method = scope["method"]
        headers = Headers(scope=scope)
        # Last value wins for repeated parameters, as in ClickHouse.
        params = dict(QueryParams(scope["query_string"]))
        request = Request("GET" if method == "HEAD" else method, scope["path"], params, headers)
        if method not in _METHODS:
            return interface.handle_error(
                ClickHouseError(48, f"HTTP method {method} is not supported")
            )
        quick = interface.answer_without_engine(request)
        if quick is not None:
            return quick
        if method == "POST":
            try:
                request.body = await self._read_body(receive, headers)
            except _ClientGone:
                return None
            except _BodyTooLarge:
                response = interface.handle_error(
                    ClickHouseError(
                        229,
                        f"Request body is larger than the limit of "
                        f"{interface.max_body_bytes} bytes",
                    )
                )
                response.close = True
                return response
            except TimeoutError:
                response = interface.handle_error(
                    ClickHouseError(209, "Timeout exceeded while reading the request body")
                )
                response.close = True
                return response
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, interface.handle, request)

    async def _read_body(self, receive: Any, headers: Headers) -> bytes:
        """The whole body, or an exception: never a part of it."""
        limit = self.interface.max_body_bytes
        declared = headers.get("Content-Length")
        too_large = declared is not None and declared.isdigit() and int(declared) > limit
        if too_large and headers.get("Expect", "").lower() == "100-continue":
            raise _BodyTooLarge  # the client waits for our go: answer before it sends
        parts: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await asyncio.wait_for(receive(), self.read_timeout)
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            too_large = too_large or size > limit
            if too_large:
                parts.clear()
                if size > limit + _MAX_DRAIN_BYTES:
                    break
            else:
                parts.append(chunk)
        if too_large:
            raise _BodyTooLarge
        return b"".join(parts)

"""How a web process serves HTTP and WebSockets: uvicorn, configured once here, and the limits at
its edge that must hold before a byte is buffered.

- Request heads: the URL is at most AIWM_MAX_URL_BYTES (414 beyond) and the whole head at most
  AIWM_MAX_HEADER_BYTES (431 beyond), counted as the bytes arrive, so a client cannot make the
  server hold a megabyte of headers (httptools, uvicorn's fast parser, has no limit of its own).
- Request bodies: a declared Content-Length over the limit is a 413 at once, before the body is
  read; a chunked body is read until it crosses the limit and refused there (`BodyLimit`). Django
  (and daphne, which buffers whole bodies to a temp file before the app sees them) would
  otherwise hold or spool all of it first.
- WebSocket frames: up to twice AIWM_NODE_MAX_MESSAGE_BYTES reach the node protocol, which
  answers a frame over its limit with PAYLOAD_TOO_LARGE; beyond that the transport drops the
  connection (as python-engineio does for Socket.IO).

Answers given here carry the API's error body, like every other 4xx.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httptools
import uvicorn
from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aiwm_project.api.errors import error_document
from aiwm_project.correlation import CORRELATION_HEADER, accepted_correlation_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

APPLICATION = "aiwm_project.asgi:application"
SOCKET_IO_PREFIX = "/socket.io/"
BODY_HEADERS = (b"content-length", b"transfer-encoding")
# A lingering close reads (and drops) at most this much, for at most this long.
LINGER_BYTES = 64 * 1024 * 1024
LINGER_SECONDS = 5.0
REASONS = {400: "Bad Request", 413: "Content Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


def websocket_frame_limit() -> int:
    return 2 * settings.AIWM_NODE_MAX_MESSAGE_BYTES


def body_limit(path: str) -> int:
    # Engine.IO long-polling carries node messages in POST bodies: the WebSocket frame limit.
    return websocket_frame_limit() if path.startswith(SOCKET_IO_PREFIX) else settings.AIWM_MAX_BODY_BYTES


def uvicorn_config(host: str, port: int, *, workers: int = 1, app: Any = APPLICATION, **extra: Any) -> uvicorn.Config:
    """The server of `make run`, of production (`manage.py serve`) and of the live-server tests."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=workers,
        http="aiwm_project.server:BoundedHttpToolsProtocol",
        ws="websockets-sansio",
        ws_max_size=websocket_frame_limit() + 1024,  # + the Socket.IO packet's own framing
        # Per-message deflate costs memory on every node connection (ARCHITECTURE.md).
        ws_per_message_deflate=False,
        lifespan="off",
        # X-Forwarded-* are believed from these addresses only (a TLS proxy on this host by default).
        forwarded_allow_ips=settings.AIWM_FORWARDED_ALLOW_IPS,
        **extra,
    )


def error_bytes(status: int, message: str, path: str, correlation_id: str) -> bytes:
    return json.dumps(error_document(status, message, path, correlation_id)).encode()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request head, checked as bytes arrive, and
    a lingering close: a connection closed while the client is still sending (a refused upload)
    first reads and discards for a moment, so the client gets the answer rather than a TCP reset."""

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # In a head: from the first byte of a request (httptools' message begin) to its blank line.
        self._head_bytes, self._in_head, self._lingering, self._discarded = 0, False, False, 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes, self._in_head = 0, True

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > settings.AIWM_MAX_URL_BYTES:
            raise _HeadTooLarge(414, f"The URL is longer than {settings.AIWM_MAX_URL_BYTES} bytes")

    def on_headers_complete(self) -> None:
        self._in_head = False
        # A head that arrived whole in one read was not counted in data_received.
        _check_head_size(len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers))
        super().on_headers_complete()
        if self.cycle is not None and any(name in BODY_HEADERS for name, _ in self.headers):
            # The app may answer before reading the whole body (BodyLimit's 413).
            self.cycle.transport = _LingerOnClose(self)  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
            if self._in_head:
                # Still inside a head, which httptools keeps until it is complete: count it here.
                self._head_bytes += len(data)
                _check_head_size(self._head_bytes)
        except _HeadTooLarge as exc:
            self.refuse(exc.status, exc.message)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _HeadTooLarge):
                self.refuse(cause.status, cause.message)
            else:
                self.refuse(400, "Invalid HTTP request received.")
        except httptools.HttpParserError:
            self.refuse(400, "Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def refuse(self, status: int, message: str) -> None:
        """Answer with the API's error body and close: the rest of the request is never parsed."""
        self.logger.warning("%s: %s", status, message)
        body = error_bytes(status, message, _path_of(self.url), accepted_correlation_id(""))
        head = [f"HTTP/1.1 {status} {REASONS[status]}\r\n".encode()]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.linger_then_close()

    def linger_then_close(self) -> None:
        if self._lingering or self.transport.is_closing():
            return
        self._lingering = True
        try:
            self.transport.write_eof()  # the client reads the answer, then the end
        except (OSError, RuntimeError, NotImplementedError):
            self.transport.close()
            return
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


class _LingerOnClose:
    """The transport as a request/response cycle sees it, whose close() lingers."""

    def __init__(self, protocol: BoundedHttpToolsProtocol):
        self._protocol = protocol
        self._transport = protocol.transport

    def close(self) -> None:
        self._protocol.linger_then_close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _HeadTooLarge(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _check_head_size(size: int) -> None:
    if size > settings.AIWM_MAX_HEADER_BYTES:
        raise _HeadTooLarge(431, f"The request head is larger than {settings.AIWM_MAX_HEADER_BYTES} bytes")


def _path_of(url: bytes) -> str:
    path = url.split(b"?", 1)[0][:256]
    return path.decode("ascii", "replace") or "/"


class BodyLimit:
    """ASGI middleware: a request body over the limit is a 413 before it is buffered."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["path"])
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            # The server already refused a malformed Content-Length and never delivers more.
            if int(declared) > limit:
                await self.refuse(scope, headers, send, limit)
            else:
                await self.app(scope, receive, send)
            return
        # No length (chunked, or HTTP/2): read up to the limit, then hand the app the body with its
        # length, which Django and DRF need (without a Content-Length they read an empty body).
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await self.refuse(scope, headers, send, limit)
                return
            if not message.get("more_body"):
                break
        scope = {**scope, "headers": [*scope["headers"], (b"content-length", str(size).encode())]}

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def refuse(self, scope: Scope, headers: dict[bytes, bytes], send: Send, limit: int) -> None:
        supplied = headers.get(CORRELATION_HEADER.encode(), b"").decode("latin-1")
        correlation_id = accepted_correlation_id(supplied)
        body = error_bytes(413, f"Request body is larger than {limit} bytes", scope["path"], correlation_id)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (CORRELATION_HEADER.encode(), correlation_id.encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

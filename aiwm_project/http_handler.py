"""Django's HTTP requests under the ASGI server, each handled in one hop to a fixed pool of threads.

Every view of the service is synchronous (DRF, the admin). Django's own ASGIHandler runs such a
request through four hops between the event loop and threads (the request_started signal, the
middleware chain, the view, the response's close) and starts a new thread for each request (its
per-request ThreadSensitiveContext). On the node list that machinery cost about as much CPU as
the view itself (BENCHMARKS.md, "Node list against the machine's limit"). Here the body is read on
the event loop, then the whole request — signals, middleware, view, closing — runs on one of
`HTTP_WORKER_THREADS` long-lived threads, as under a WSGI server, and the response is written
from the event loop. The pool also bounds the requests in flight: past it they queue here instead
of each waiting on a thread of its own for a database connection.

A request that may hold its thread for minutes — `?wait=SECONDS` on a deployment's start or stop
waits for the workflow, a conversation's chat for the model — would take a pool thread from every
other request for that long: such requests go to Django's ASGIHandler, a thread each, as before.

What is not kept from ASGIHandler: a sync view cannot be interrupted, so a client that disconnects
mid-request is noticed when the response is written (the server drops it), not by cancelling.
A streaming response is sent while the client is listened to, and cancelled when it leaves (a
live events stream ends only so); its content may be an async iterator, which runs on the event
loop, so a stream holds no thread (console.events).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix


class PooledHTTPHandler(ASGIHandler):
    def __init__(self, threads: int):
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)  # the plain synchronous chain, as under WSGI
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="http")
        self.thread_per_request = ASGIHandler()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        if waits(scope):
            await self.thread_per_request(scope, receive, send)
            return
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        loop = asyncio.get_running_loop()
        # The request's context variables (the correlation id…) stay the request's own.
        run = contextvars.copy_context().run
        try:
            response = await loop.run_in_executor(self.executor, run, self.respond, scope, body_file)
        finally:
            body_file.close()
        try:
            if response.streaming:
                await self.stream_until_disconnect(response, receive, send)
            else:
                await self.send_response(response, send)
        finally:
            if response.streaming:  # its iterator was consumed just now: close it (and end the request)
                await loop.run_in_executor(self.executor, run, response.close)

    async def stream_until_disconnect(self, response: HttpResponseBase, receive: Any, send: Any) -> None:
        """Send a streaming response while listening for the client to leave: a stream that never
        ends by itself (the live events) is cancelled when its client disconnects, as
        ASGIHandler does, instead of writing keep-alives to nobody."""
        sending = asyncio.ensure_future(self.send_response(response, send))
        listening = asyncio.ensure_future(receive())
        try:
            while not sending.done():
                await asyncio.wait({sending, listening}, return_when=asyncio.FIRST_COMPLETED)
                if listening.done():
                    if listening.result().get("type") == "http.disconnect":
                        sending.cancel()
                        break
                    listening = asyncio.ensure_future(receive())
        finally:
            listening.cancel()
            if not sending.done():
                sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending

    def respond(self, scope: dict[str, Any], body_file: Any) -> HttpResponseBase:
        """The whole synchronous part of a request, on a pool thread."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__  # type: ignore[attr-defined]
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size  # the ASGI server chunks; as ASGIHandler does
        assert response is not None
        if not response.streaming:
            # The content is bytes already: end the request here (request_finished hands the
            # database connection back) rather than with another hop after the response is sent.
            response.close()
        return response


def waits(scope: dict[str, Any]) -> bool:
    """Whether the request may hold its thread for long: it asks to be answered only after a wait
    (`?wait=` other than 0), or it is a conversation's chat (a model's answer takes seconds, and
    the view waits for it on the server's event loop, which Django's handler lets it reach)."""
    path = scope.get("path", "")
    if path.startswith("/api/conversations/") and path.endswith("/chat"):
        return True
    query = scope.get("query_string", b"")
    if b"wait" not in query:
        return False
    values = parse_qs(query.decode("latin-1")).get("wait", [])
    return any(value.strip("0") for value in values)

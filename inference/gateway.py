"""The OpenAI-compatible gateway at /v1: an ASGI application of its own, ahead of Django.

Why not a Django view: every request here is a proxy hop whose cost is the latency it adds, and a
stream may stay open for minutes. On the event loop, with one shared aiohttp session (its C HTTP
parser; httpx's pure-Python one costs several times more CPU per request and per chunk), a
request costs a fraction of a millisecond and a stream holds no thread. The database is reached
only through caches refreshed in a worker thread (keys: inference.services, deployments:
inference.routing) and the write-behind usage recorder (inference.usage).

Errors use OpenAI's body, `{"error": {"message", "type", "code", "param"}}`, with its status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from django.conf import settings
from django.utils import timezone

from aiwm_project.auth import TokenError, authenticate_user_token, bearer_token
from aiwm_project.db import db_sync_to_async
from inference import usage
from inference.routing import NoModel, Router, Target
from inference.services import KEY_PREFIX, KEYS, KeyHolder, key_hash, key_holder_from_db

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
RETRIED_STATUSES = frozenset({502, 503, 504})  # a deployment that cannot answer now: another may
JSON_HEADERS = [(b"content-type", b"application/json")]


class GatewayError(Exception):
    def __init__(self, status: int, message: str, type: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()


@dataclass(frozen=True)
class Caller:
    org_id: str
    user_id: str
    api_key: KeyHolder | None = None

    def may_call(self, *names: str) -> bool:
        return self.api_key is None or self.api_key.may_call(*names)


@dataclass
class Exchange:
    """One request's bookkeeping, recorded when it ends."""

    caller: Caller
    endpoint: str
    model_name: str
    stream: bool = False
    started: float = field(default_factory=time.monotonic)
    first_byte: float | None = None
    target: Target | None = None
    model_id: str = ""
    status: int = 0
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_from: str = "none"


class Gateway:
    """One per process. Its router and HTTP session belong to the event loop serving it (a test
    server may run several loops one after another: a new loop gets new ones)."""

    def __init__(self) -> None:
        self.router = Router()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closer: AsyncGenerator[None, None] | None = None
        self._parked: asyncio.Future[None] | None = None

    def _on_this_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self.router, self._session = loop, Router(), None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=60, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
            # The server runs without ASGI lifespan events, so nothing says when its loop ends; the
            # loop's end does close its async generators (asyncio.Runner), and this one closes the
            # session then, instead of leaving it to a warning at garbage collection.
            self._closer = closed_with_the_loop(self._session)
            self._parked = asyncio.ensure_future(anext(self._closer))
        return self._session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._on_this_loop()
        path, method = scope["path"].rstrip("/"), scope["method"]
        try:
            caller = await self.authenticate(scope)
            if path == "/v1/models":
                if method != "GET":
                    raise GatewayError(405, f"{method} is not allowed on /v1/models", "invalid_request_error")
                await self.list_models(caller, send)
                return
            endpoint = ENDPOINTS.get(path)
            if endpoint is None:
                raise GatewayError(404, f"Unknown path {path}", "invalid_request_error", "not_found")
            if method != "POST":
                raise GatewayError(405, f"{method} is not allowed on {path}", "invalid_request_error")
            raw, body = await read_json(receive)
        except GatewayError as exc:
            await answer(send, exc.status, exc.body())
            return
        await self.proxy(caller, endpoint, path.removeprefix("/v1"), raw, body, receive, send)

    async def call(
        self, caller: Caller, endpoint: str, raw: bytes, body: dict[str, Any], receive: Receive, send: Send
    ) -> Exchange:
        """A request made inside the process (a conversation's turn: inference.chat), routed, answered
        and recorded as if it had come to /v1 from `caller`."""
        self._on_this_loop()
        suffix = next(path for path, name in ENDPOINTS.items() if name == endpoint).removeprefix("/v1")
        return await self.proxy(caller, endpoint, suffix, raw, body, receive, send)

    # --- who calls ---

    async def authenticate(self, scope: Scope) -> Caller:
        header = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        token = bearer_token(header)
        if not token:
            raise GatewayError(
                401, "Missing API key: send Authorization: Bearer <key>", "invalid_request_error", "invalid_api_key"
            )
        if token.startswith(KEY_PREFIX):
            digest = key_hash(token)
            known, holder = KEYS.lookup(digest)
            if not known:
                holder = await db_sync_to_async(key_holder_from_db)(digest)
                KEYS.store(digest, holder)
            if holder is None:
                raise GatewayError(
                    401, "Invalid API key (unknown or revoked)", "invalid_request_error", "invalid_api_key"
                )
            if holder.expires_at is not None and holder.expires_at <= timezone.now():
                raise GatewayError(401, "This API key has expired", "invalid_request_error", "invalid_api_key")
            usage.RECORDER.key_used(digest)
            return Caller(org_id=holder.org_id, user_id=holder.created_by, api_key=holder)
        try:
            principal = authenticate_user_token(token)
        except TokenError as exc:
            raise GatewayError(401, f"Invalid token: {exc}", "invalid_request_error", "invalid_api_key") from exc
        return Caller(org_id=principal.org_id, user_id=principal.user_id)

    # --- GET /v1/models ---

    async def list_models(self, caller: Caller, send: Send) -> None:
        rows = await db_sync_to_async(usage.served_models)(caller.org_id)
        data = [
            {"id": model_id, "object": "model", "created": int(created.timestamp()), "owned_by": caller.org_id}
            for model_id, created in rows
            if caller.may_call(model_id)
        ]
        await answer(send, 200, json.dumps({"object": "list", "data": data}).encode())

    # --- the proxied endpoints ---

    async def proxy(
        self, caller: Caller, endpoint: str, suffix: str, raw: bytes, body: dict[str, Any], receive: Receive, send: Send
    ) -> Exchange:
        """The request answered through `send` (an error too, as OpenAI's body); returns its bookkeeping."""
        name = body.get("model")
        exchange = Exchange(caller, endpoint, name if isinstance(name, str) else "", stream=body.get("stream") is True)
        try:
            if not isinstance(name, str) or not name:
                raise GatewayError(
                    400,
                    "model: a model id (or a deployment id) is required",
                    "invalid_request_error",
                    "model_required",
                    "model",
                )
            try:
                model_id, targets = await self.router.candidates(caller.org_id, name)
            except NoModel:
                raise GatewayError(
                    404, f"The model '{name}' does not exist", "invalid_request_error", "model_not_found", "model"
                ) from None
            exchange.model_id = model_id
            if not caller.may_call(name, model_id):
                raise GatewayError(
                    403, f"This API key may not call '{name}'", "permission_error", "model_not_allowed", "model"
                )
            if not targets:
                raise GatewayError(
                    503, f"No running deployment of '{model_id}' can answer now", "service_unavailable", "no_deployment"
                )
            # Sent on as it came (no second encoding) unless a deployment was named: then by its modelId.
            data = raw if name == model_id else json.dumps({**body, "model": model_id}).encode()
            await self.forward(exchange, targets, suffix, body, data, receive, send)
        except GatewayError as exc:
            exchange.status, exchange.error = exc.status, exc.message
            if exchange.first_byte is None:
                await answer(send, exc.status, exc.body())
        finally:
            if exchange.model_id:
                usage.RECORDER.record(exchange)
        return exchange

    async def forward(
        self,
        exchange: Exchange,
        targets: list[Target],
        suffix: str,
        body: dict[str, Any],
        data: bytes,
        receive: Receive,
        send: Send,
    ) -> None:
        """To the least busy deployment; to another one when it could not be reached or said it cannot
        answer now, as long as nothing was sent to the client."""
        tried: set[str] = set()
        last_error = "no deployment could be reached"
        while True:
            try:
                target = await self.router.acquire(targets, tried, settings.AIWM_GATEWAY_QUEUE_SECONDS)
            except TimeoutError:
                raise GatewayError(
                    503,
                    f"Every deployment of '{exchange.model_id}' is busy; try again",
                    "service_unavailable",
                    "overloaded",
                ) from None
            if target is None:
                raise GatewayError(
                    502,
                    f"No deployment of '{exchange.model_id}' could answer: {last_error}",
                    "service_unavailable",
                    "upstream_unreachable",
                )
            tried.add(target.deployment_id)
            exchange.target = target
            try:
                done = await self.exchange_with(target, exchange, suffix, body, data, receive, send)
            finally:
                await self.router.release(target)
            if done is None:
                return
            last_error = done

    async def exchange_with(
        self,
        target: Target,
        exchange: Exchange,
        suffix: str,
        body: dict[str, Any],
        data: bytes,
        receive: Receive,
        send: Send,
    ) -> str | None:
        """Sends the request to `target` and its answer to the client. Returns why another deployment
        should be tried (nothing was sent to the client), or None when the exchange is over."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.AIWM_GATEWAY_CONNECT_TIMEOUT, sock_read=settings.AIWM_GATEWAY_IDLE_TIMEOUT
        )
        request = self.session().post(
            target.base_url + suffix, data=data, headers={"Content-Type": "application/json"}, timeout=timeout
        )
        try:
            response = await asyncio.wait_for(request.__aenter__(), settings.AIWM_GATEWAY_FIRST_BYTE_TIMEOUT)
        except (aiohttp.ClientConnectionError, OSError) as exc:
            self.router.mark_down(target.deployment_id)
            return f"{target.deployment_id}: {type(exc).__name__}: {exc}"
        except TimeoutError:
            return f"{target.deployment_id}: no answer within {settings.AIWM_GATEWAY_FIRST_BYTE_TIMEOUT:g} s"
        try:
            if response.status in RETRIED_STATUSES:
                return f"{target.deployment_id} answered {response.status}"
            streaming = exchange.stream and response.content_type == "text/event-stream"
            if streaming:
                await self.relay_stream(target, exchange, body, response, receive, send)
            else:
                await self.relay_whole(target, exchange, response, send)
            return None
        finally:
            response.release()
            response.close()

    async def relay_whole(
        self, target: Target, exchange: Exchange, response: aiohttp.ClientResponse, send: Send
    ) -> None:
        try:
            content = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GatewayError(
                502, f"{target.deployment_id} broke off its answer: {exc}", "api_error", "upstream_error"
            ) from exc
        exchange.status = response.status
        exchange.first_byte = time.monotonic()
        if response.status < 400 and exchange.endpoint == "embeddings" and target.backend == "llama.cpp":
            content = await asyncio.to_thread(pooled_embeddings, content)
        if response.status < 400:
            usage.read_usage(exchange, content)
        else:
            exchange.error = content[:500].decode(errors="replace")
        await send(
            {"type": "http.response.start", "status": response.status, "headers": self.headers(response, target)}
        )
        await send({"type": "http.response.body", "body": content})

    async def relay_stream(
        self,
        target: Target,
        exchange: Exchange,
        body: dict[str, Any],
        response: aiohttp.ClientResponse,
        receive: Receive,
        send: Send,
    ) -> None:
        """Server-Sent Events passed on as they arrive (send() waits while the client reads slowly: the
        upstream is read no faster); a client that leaves closes the upstream connection, which the
        model server takes as a cancel."""
        exchange.status = response.status
        reader = usage.StreamReader()
        left = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            left.set()
            response.close()  # wakes the read below

        watcher = asyncio.ensure_future(watch())
        try:
            await send(
                {"type": "http.response.start", "status": response.status, "headers": self.headers(response, target)}
            )
            exchange.first_byte = time.monotonic()
            try:
                async for chunk in response.content.iter_any():
                    reader.feed(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                if not left.is_set():
                    exchange.status, exchange.error = 502, f"{target.deployment_id} broke off its stream: {exc}"
                    error = GatewayError(502, exchange.error, "api_error", "upstream_error")
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b"event: error\ndata: " + error.body() + b"\n\n",
                            "more_body": True,
                        }
                    )
            if left.is_set():
                exchange.status, exchange.error = 499, "the client went away"
            else:
                await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await usage.count_stream(self.session(), exchange, target, body, reader)

    @staticmethod
    def headers(response: aiohttp.ClientResponse, target: Target) -> list[tuple[bytes, bytes]]:
        out = [(b"content-type", (response.headers.get("Content-Type") or "application/json").encode())]
        if response.content_type == "text/event-stream":
            out += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        out.append((b"x-aiwm-deployment", target.deployment_id.encode()))
        return out


async def closed_with_the_loop(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await session.close()


def pooled_embeddings(content: bytes) -> bytes:
    """One vector per input, as OpenAI's API answers. llama.cpp's server returns a vector per token
    when the model's file names no pooling (SmolLM2's does not, and its server has no flag for it):
    such an answer is mean-pooled and scaled to unit length (OpenAI's embeddings are). Anything else
    is passed on as it came."""
    try:
        document = json.loads(content)
        rows = document["data"]
        if not any(row["embedding"] and isinstance(row["embedding"][0], list) for row in rows):
            return content
        for row in rows:
            vectors = row["embedding"]
            if vectors and isinstance(vectors[0], list):
                mean = [sum(column) / len(vectors) for column in zip(*vectors, strict=True)]
                norm = math.sqrt(sum(x * x for x in mean)) or 1.0
                row["embedding"] = [x / norm for x in mean]
    except (ValueError, KeyError, TypeError, IndexError):
        return content
    return json.dumps(document).encode()


async def read_json(receive: Receive) -> tuple[bytes, dict[str, Any]]:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(400, "the client went away", "invalid_request_error")
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GatewayError(400, f"The body is not JSON: {exc}", "invalid_request_error", "invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "The body must be a JSON object", "invalid_request_error", "invalid_json")
    return raw, body


async def answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})


GATEWAY = Gateway()

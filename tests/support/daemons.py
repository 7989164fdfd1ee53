"""Node daemons in the test process: python-socketio's AsyncClient and a plain WebSocket
(`websockets`), both against the live server, and the protocol's envelopes.

Synchronization: the messages of one connection are applied in order, so after messages that
get no reply a test sends a `barrier()` (a probe the protocol refuses) and, once its `error`
arrives, everything sent before has been applied. Only effects nothing replies to (a disconnect)
are polled, with `eventually`/`until`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import socketio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from aiwm_project.datetimes import iso_now
from nodes.models import Node
from tests.support.live_server import TIMEOUT, LiveGateway, until

NAMESPACE = "/ws/node"
# The server -> node envelope of the contract, exactly.
ENVELOPE_KEYS = {"type", "messageId", "timestamp", "resource", "data", "metadata"}
DOWNLOAD = {
    "type": "model.download",
    "resource": {"type": "model", "id": "llama-2-7b-v1"},
    "data": {"repository": "huggingface.co/meta-llama/Llama-2-7b-chat-hf", "fileName": "model.safetensors"},
    "metadata": {"executionId": "exec-deploy-llama-001", "stepIndex": 0, "timeout": 1800, "priority": "high"},
}


def message(type_: str, data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A node -> server envelope with a fresh messageId and the current time."""
    return {"type": type_, "messageId": str(uuid.uuid4()), "timestamp": iso_now(), "data": data or {}, **extra}


class NodeDaemon:
    """What both transports' daemons do the same way, on top of their `send` and `receive`."""

    async def send(self, body: Any) -> Any:
        raise NotImplementedError

    async def receive(self, expected: str) -> Any:
        """The next envelope, which must be of type `expected`."""
        raise NotImplementedError

    async def error(self, code: str | None = None) -> dict[str, Any]:
        """The next envelope must be an `error` (with this code); returns its data."""
        body = await self.receive("error")
        assert body["type"] == "error" and body["messageId"] and body["timestamp"], body
        if code is not None:
            assert body["data"]["code"] == code, body
        return body["data"]

    async def register(self, **data: Any) -> dict[str, Any]:
        await self.send(message("node.register", {"hostname": "gpu-server-01", **data}))
        return (await self.receive("register.ack"))["data"]

    async def barrier(self) -> None:
        """Return once every frame sent before has been applied (see the module docstring)."""
        probe = message("test.barrier")
        await self.send(probe)
        # Refused as UNKNOWN_TYPE (or RATE_LIMITED during a flood): either way, answered in order.
        assert (await self.error())["originalMessageId"] == probe["messageId"]


class Daemon(NodeDaemon):
    """A python-socketio AsyncClient that records every event it receives."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.connect_errors: list[Any] = []
        self.disconnected = asyncio.Event()

        @self.client.on("*", namespace=NAMESPACE)
        async def any_event(event: str, data: Any = None) -> None:
            await self.received.put((event, data))

        @self.client.on("connect_error", namespace=NAMESPACE)
        async def connect_error(data: Any = None) -> None:
            self.connect_errors.append(data)

        @self.client.on("disconnect", namespace=NAMESPACE)
        async def disconnect(*args: Any) -> None:
            self.disconnected.set()

    async def connect(self, url: str, auth: dict[str, Any] | None, transports: Sequence[str] = ("websocket",)) -> None:
        await self.client.connect(
            url, auth=auth, namespaces=[NAMESPACE], transports=list(transports), wait_timeout=TIMEOUT
        )

    async def emit(self, event: str, body: Any = None) -> None:
        await self.client.emit(event, body, namespace=NAMESPACE)

    async def send(self, body: dict[str, Any]) -> dict[str, Any]:
        """Emit an envelope under its own type; returns it (for its messageId)."""
        await self.emit(body["type"], body)
        return body

    async def next(self, expected: str | None = None, timeout: float = TIMEOUT) -> tuple[str, Any]:
        event, data = await asyncio.wait_for(self.received.get(), timeout)
        if expected is not None:
            assert event == expected, (event, data)
        return event, data

    async def expect(self, expected: str, timeout: float = TIMEOUT) -> Any:
        return (await self.next(expected, timeout))[1]

    async def receive(self, expected: str) -> Any:
        return await self.expect(expected)

    async def wait_disconnected(self, timeout: float = TIMEOUT) -> None:
        await asyncio.wait_for(self.disconnected.wait(), timeout)

    async def close(self) -> None:
        if self.client.connected or self.client.eio.state == "connected":
            await self.client.disconnect()


@asynccontextmanager
async def daemon_for(
    gateway: LiveGateway, auth: dict[str, Any], transports: Sequence[str] = ("websocket",), *, ack: bool = True
) -> AsyncIterator[Daemon]:
    """A connected daemon (its connection.ack consumed unless ack=False), disconnected on exit;
    on a clean exit, also waits until the server has recorded the disconnect."""
    daemon = Daemon()
    await daemon.connect(gateway.url, auth, transports)
    sid = daemon.client.get_sid(NAMESPACE)
    try:
        if ack:
            body = await daemon.expect("connection.ack")
            assert body["status"] == "success", body
        yield daemon
    finally:
        await daemon.close()
    assert await until(lambda: not Node.objects.filter(connection_id=sid, websocket_connected=True).exists())


class WsDaemon(NodeDaemon):
    """A plain-WebSocket daemon: JSON text frames in and out."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.node_id: str | None = None  # from its connection.ack

    async def send(self, body: Any) -> Any:
        await self.ws.send(json.dumps(body))
        return body

    async def send_raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def next(self, expected: str | None = None, timeout: float = TIMEOUT) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, str), frame
        body = json.loads(frame)
        if body.get("type") == "connection.ack":
            self.node_id = body["nodeId"]
        if expected is not None:
            assert body["type"] == expected, body
        return body

    async def receive(self, expected: str) -> Any:
        return await self.next(expected)

    async def close_code(self, timeout: float = TIMEOUT) -> tuple[int | None, list[dict[str, Any]]]:
        """Read until the server closes; returns its close code and the frames before it."""
        frames = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frames.append(json.loads(await self.ws.recv()))
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd else None), frames
        raise AssertionError("unreachable")  # pragma: no cover


@asynccontextmanager
async def ws_daemon(
    gateway: LiveGateway,
    token: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    query: str = "",
    first_frame: Any = None,
    ack: bool = True,
    settle: bool = True,
) -> AsyncIterator[WsDaemon]:
    """A plain-WebSocket daemon; authenticated by header (token) or first frame; ack consumed.

    With `settle`, a clean exit waits until the server has recorded the disconnect (the node is
    not connected any more: only right when no other connection of that node is open)."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    url = gateway.ws_url + (f"?{query}" if query else "")
    async with connect(url, additional_headers=all_headers, max_size=None, open_timeout=TIMEOUT) as ws:
        daemon = WsDaemon(ws)
        if first_frame is not None:
            await daemon.send(first_frame)
        if ack:
            body = await daemon.next("connection.ack")
            assert body["status"] == "success", body
        yield daemon
    node_id = daemon.node_id  # set once it was accepted
    if settle and node_id is not None:
        assert await until(lambda: not Node.objects.filter(node_id=node_id, websocket_connected=True).exists())

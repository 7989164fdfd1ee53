"""Plain-WebSocket transport for node daemons at /ws/node: the same JSON envelopes as text frames.

Auth: `Authorization: Bearer <token>` on the handshake (plus `X-Node-Id` or `?nodeId=` for a
user token), or a first frame `{"type": "auth", "data": {"token": ..., "nodeId": ...}}`.
A refused connection is closed with code 4401. A thin adapter over gateway.protocol.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from rest_framework.exceptions import ParseError

from aiwm_project import node_bus
from aiwm_project.auth import bearer_token
from aiwm_project.db import db_sync_to_async
from aiwm_project.parsers import loads_strict
from gateway import protocol
from gateway.identity import ConnectionRefused, authenticate_connection
from gateway.socketio_app import sio

CLOSE_UNAUTHORIZED = 4401
CLOSE_ABUSE = 4408
CLOSE_SUPERSEDED = 4409  # another connection authenticated for the node, or the node was deleted
AUTH_TIMEOUT_SECONDS = 10


class NodeConsumer(AsyncWebsocketConsumer):
    conn: protocol.Connection | None = None
    group: str | None = None
    connection_group: str | None = None
    auth_timer: asyncio.TimerHandle | None = None

    async def connect(self) -> None:
        # Commands are handed to this process's event loop (aiwm_project.node_bus): register it here too,
        # or a node on the plain WebSocket only hears of them on its next register.
        node_bus.register_local_server(sio, asyncio.get_running_loop())
        await self.accept()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.scope.get("headers", [])}
        token = bearer_token(headers.get("authorization", ""))
        if token is None:
            # No header: the first frame must authenticate, soon.
            self.auth_timer = asyncio.get_running_loop().call_later(
                AUTH_TIMEOUT_SECONDS, lambda: asyncio.ensure_future(self.close(code=CLOSE_UNAUTHORIZED))
            )
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        node_hint = headers.get("x-node-id") or (query.get("nodeId") or [None])[0]
        await self._authenticate(token, node_hint)

    async def _authenticate(self, token: Any, node_hint: Any) -> None:
        try:
            identity = await db_sync_to_async(authenticate_connection)(token, node_hint)
        except ConnectionRefused as exc:
            await self._send(protocol.error_reply("UNAUTHORIZED", str(exc)))
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        connection_id = f"{node_bus.PLAIN_WEBSOCKET_PREFIX}{uuid.uuid4().hex}"
        self.conn = protocol.Connection(
            identity=identity,
            connection_id=connection_id,
            current_only=True,
            remote_address=protocol.peer_address(self.scope),
        )
        self.group = node_bus.group_for(identity.org_id, identity.node_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        # Commands for this connection alone (node_bus.publish with the node's connection_id).
        self.connection_group = node_bus.group_for_connection(connection_id)
        await self.channel_layer.group_add(self.connection_group, self.channel_name)
        # The node's one current session from here on: an older one is sent SUPERSEDED and closed.
        await protocol.session_open(self.conn)
        await self._send(protocol.connection_ack(self.conn))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else (bytes_data or b"")
        size = len(raw.encode() if isinstance(raw, str) else raw)
        if self.conn is None:
            await self._first_frame(raw, size)
            return
        if size > settings.AIWM_NODE_MAX_MESSAGE_BYTES:
            message: Any = None  # not parsed at all: the protocol reports the size
        else:
            try:
                message = loads_strict(raw)
            except ParseError as exc:
                self.conn.errors += 1
                await self._send(protocol.error_reply("INVALID_JSON", str(exc.detail)))
                if self.conn.errors >= settings.AIWM_NODE_MAX_ERRORS:
                    await self.close(code=CLOSE_ABUSE)
                return
        event = message.get("type", "") if isinstance(message, dict) else ""
        replies, close = await protocol.handle_message(
            self.conn, event if isinstance(event, str) else "", message, size
        )
        for _, body in replies:
            await self._send(body)
        if close:
            await self.close(code=CLOSE_SUPERSEDED if self.conn.ended else CLOSE_ABUSE)

    async def _first_frame(self, raw: str | bytes, size: int) -> None:
        if self.auth_timer is not None:
            self.auth_timer.cancel()  # this frame decides, either way
        try:
            message = loads_strict(raw) if size <= 64 * 1024 else None
        except ParseError:
            message = None
        data = message.get("data") if isinstance(message, dict) and message.get("type") == "auth" else None
        if not isinstance(data, dict):
            await self._send(
                protocol.error_reply("UNAUTHORIZED", "the first frame must be {type: 'auth', data: {token}}")
            )
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        await self._authenticate(data.get("token"), data.get("nodeId"))

    async def node_deliver(self, event: dict[str, Any]) -> None:
        """A message for this node from the channel layer (see aiwm_project.node_bus)."""
        await self._send(event["payload"])

    async def node_close(self, event: dict[str, Any]) -> None:
        """This session was superseded (see gateway.protocol): say so and close."""
        if self.conn is not None:
            self.conn.ended = event["payload"].get("data", {}).get("code") or "SUPERSEDED"
        await self._send(event["payload"])
        await self.close(code=CLOSE_SUPERSEDED)

    async def disconnect(self, code: int) -> None:
        if self.auth_timer is not None:
            # Gone before authenticating: a close() on the dead socket would raise in a stray task.
            self.auth_timer.cancel()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.connection_group:
            await self.channel_layer.group_discard(self.connection_group, self.channel_name)
        if self.conn is not None:
            await protocol.session_close(self.conn)

    async def _send(self, body: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(body))

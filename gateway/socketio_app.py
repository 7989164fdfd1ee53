"""Socket.IO transport for node daemons: namespace /ws/node at path /socket.io/ (polling + websocket).

A thin adapter: authenticate the handshake, then hand every event to gateway.protocol.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import socketio
from django.conf import settings

from aiwm_project import node_bus
from aiwm_project.db import db_sync_to_async
from gateway import protocol
from gateway.identity import ConnectionRefused, authenticate_connection

logger = logging.getLogger("aiwm.gateway.socketio")


def _client_manager() -> socketio.AsyncManager | None:
    if settings.REDIS_URL:
        # Lets a command published by another web process or a Celery worker reach this process's sockets.
        return socketio.AsyncRedisManager(settings.REDIS_URL, channel=settings.AIWM_SOCKETIO_CHANNEL)
    return None


class NodeNamespace(socketio.AsyncNamespace):
    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        node_bus.register_local_server(self.server, asyncio.get_running_loop())
        auth = auth if isinstance(auth, dict) else {}
        try:
            identity = await db_sync_to_async(authenticate_connection)(auth.get("token"), auth.get("nodeId"))
        except ConnectionRefused as exc:
            # A client's connect_error gets err.message = the reason and err.data = {code, message}
            # (one dict argument would arrive as its Python repr in err.message).
            reason = str(exc)
            refusal = {"code": "UNAUTHORIZED", "message": reason}
            raise socketio.exceptions.ConnectionRefusedError(reason, refusal) from exc
        conn = protocol.Connection(
            identity=identity,
            connection_id=sid,
            current_only=True,
            remote_address=protocol.peer_address(environ.get("asgi.scope", {})),
        )
        await self.save_session(sid, {"conn": conn})
        await self.enter_room(sid, node_bus.group_for(identity.org_id, identity.node_id))
        # The node's one current session from here on: an older one is sent SUPERSEDED and closed.
        await protocol.session_open(conn)
        # Sent once the handshake has completed (emits inside the connect handler would race it).
        asyncio.get_running_loop().call_soon(
            lambda: asyncio.ensure_future(self.emit("connection.ack", protocol.connection_ack(conn), to=sid))
        )

    async def on_disconnect(self, sid: str, *args: Any) -> None:
        session = await self.get_session(sid)
        conn: protocol.Connection | None = session.get("conn") if session else None
        if conn is not None:
            await protocol.session_close(conn)

    async def trigger_event(self, event: str, *args: Any) -> Any:
        sid = args[0]
        # The server's own connect/disconnect run while the sid is pending (not yet, or no longer,
        # connected). A client can also emit events *named* "connect" or "disconnect" once it is
        # connected: those are frames like any other (refused by the protocol), or a daemon could
        # mark its node disconnected, or re-run the handshake to reset its abuse budget.
        if event in ("connect", "disconnect") and not self.server.manager.is_connected(sid, self.namespace):
            return await super().trigger_event(event, *args)
        session = await self.get_session(sid)
        conn: protocol.Connection = session["conn"]
        message = args[1] if len(args) > 1 else None
        replies, close = await protocol.handle_message(conn, event, message)
        for name, body in replies:
            await self.emit(name, body, to=sid)
        if close:
            await self.disconnect(sid)
        return None


sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=_client_manager(),
    cors_allowed_origins="*",
    # One node's messages are applied in the order it sent them (ack before result, register
    # before heartbeats); other connections are not held up, each has its own reader task.
    async_handlers=False,
    # Only the node namespace: python-socketio otherwise also accepts "/" (its default), where an
    # unauthenticated client would hold a connection that serves nothing.
    namespaces=[node_bus.NAMESPACE],
    # Frames up to twice the protocol's limit reach the protocol, which answers with an error;
    # beyond that the transport itself drops the connection.
    max_http_buffer_size=2 * settings.AIWM_NODE_MAX_MESSAGE_BYTES,
    logger=False,
    engineio_logger=False,
)
sio.register_namespace(NodeNamespace(node_bus.NAMESPACE))

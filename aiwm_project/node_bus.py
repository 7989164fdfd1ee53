"""The node bus: hand a message to whichever web process holds a node's socket (Socket.IO and
plain WebSocket), from any process.

Plumbing like the channel layer, and in the base package for the same reason: both sides use it
and it knows no app. The command outbox (`nodes.commands`) publishes on it after commit; the
gateway (`gateway.socketio_app`, `gateway.consumers`) receives: its sockets join the node's
room or group, and its server registers here as this process's local receiver.

With REDIS_URL: published through Redis (the Socket.IO Redis manager's channel and the
channels-redis layer), so a web process, a Celery worker or a shell reaches a node connected
anywhere. Without it (the embedded default, one process): handed to this process's event loop.
Delivery is at-most-once; the outbox (NodeCommand) is what makes commands durable.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from typing import Any

import socketio
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger("aiwm.node_bus")
NAMESPACE = "/ws/node"
# Set by the Socket.IO server when it starts serving in this process (embedded default).
_local: dict[str, Any] = {"sio": None, "loop": None}


def group_for(org_id: str, node_id: str) -> str:
    """One name for the node's Socket.IO room and Channels group (ASCII, < 100 chars as Channels needs)."""
    return "node." + hashlib.sha256(f"{org_id}\x00{node_id}".encode()).hexdigest()[:40]


def group_for_connection(connection_id: str) -> str:
    """The Channels group of one plain-WebSocket connection (its consumer alone joins it)."""
    return "conn." + hashlib.sha256(connection_id.encode()).hexdigest()[:40]


def register_local_server(sio: Any, loop: asyncio.AbstractEventLoop) -> None:
    _local["sio"], _local["loop"] = sio, loop


@functools.lru_cache(maxsize=1)
def _redis_emitter(url: str, channel: str) -> Any:
    # The same channel as the servers' AsyncRedisManager (gateway.socketio_app), or nobody hears it.
    return socketio.RedisManager(url, channel=channel, write_only=True)


PLAIN_WEBSOCKET_PREFIX = "ws-"  # connection ids of the Channels consumer; Socket.IO sids never start so


def transports_for(connection_id: str | None) -> tuple[bool, bool]:
    """(Socket.IO, plain WebSocket): which transport a node's current connection uses; both when unknown."""
    if not connection_id:
        return True, True
    plain = connection_id.startswith(PLAIN_WEBSOCKET_PREFIX)
    return not plain, plain


def publish(org_id: str, node_id: str, event: str, payload: dict[str, Any], connection_id: str | None = None) -> None:
    """Send `event` to the node's socket, in any process. Call from sync code (a service, a task).

    With the node's `connection_id` (its one current session), only that connection gets it: the
    Socket.IO sid (every sid is a room of its own) or the consumer's per-connection group; a
    superseded socket still open somewhere hears nothing. Without it, every socket of the node,
    on both transports. A message that misses a node which just reconnected is not lost: the
    outbox re-sends it on the node's register.
    """
    if connection_id:
        socketio_wanted, plain_wanted = transports_for(connection_id)
        room = connection_id if socketio_wanted else group_for_connection(connection_id)
    else:
        socketio_wanted = plain_wanted = True
        room = group_for(org_id, node_id)
    _send(room, socketio_wanted, plain_wanted, event, payload, close=False)


def close_connection(connection_id: str, payload: dict[str, Any]) -> None:
    """Send `payload` as an `error` to one connection, then close it, in any process (a superseded
    session: see gateway.protocol). Call from sync code."""
    socketio_wanted, plain_wanted = transports_for(connection_id)
    room = connection_id if socketio_wanted else group_for_connection(connection_id)
    _send(room, socketio_wanted, plain_wanted, "error", payload, close=True)


def _held_here(room: str) -> bool:
    """Whether `room` is a Socket.IO sid connected to this process's server."""
    sio = _local["sio"]
    return sio is not None and sio.manager.is_connected(room, NAMESPACE)


def _send(room: str, to_socketio: bool, to_plain: bool, event: str, payload: dict[str, Any], *, close: bool) -> None:
    channel_message = {"type": "node.close" if close else "node.deliver", "payload": payload}
    # A command for a socket this process holds (the common case: a step's command is created
    # where its dependency's result arrived, on the same daemon's process with one web process)
    # is emitted here, not round-tripped through Redis pub/sub to this same process's listener.
    local_sid = settings.REDIS_URL and to_socketio and not to_plain and not close and _held_here(room)
    if settings.REDIS_URL and not local_sid:
        try:
            if to_socketio:
                emitter = _redis_emitter(settings.REDIS_URL, settings.AIWM_SOCKETIO_CHANNEL)
                emitter.emit(event, payload, namespace=NAMESPACE, room=room)
                if close:
                    # What PubSubManager.disconnect publishes (it would also disconnect "here",
                    # which a write-only manager has no server for): the process holding the sid acts.
                    emitter._publish(
                        {"method": "disconnect", "sid": room, "namespace": NAMESPACE, "host_id": emitter.host_id}
                    )
            if to_plain:
                async_to_sync(get_channel_layer().group_send)(room, channel_message)
        except Exception:  # Redis down: the caller (an on_commit hook, a task) goes on; the outbox re-sends
            logger.exception("delivery to %s through Redis failed", room)
        return
    loop = _local["loop"]
    if loop is None or loop.is_closed():
        return  # no server in this process, so no node can be connected to it
    coroutine = _deliver_here(room, event, payload, to_socketio, to_plain, channel_message, close)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        loop.create_task(coroutine)
    else:
        asyncio.run_coroutine_threadsafe(coroutine, loop)


async def _deliver_here(
    room: str,
    event: str,
    payload: dict[str, Any],
    to_socketio: bool,
    to_plain: bool,
    channel_message: dict[str, Any],
    close: bool,
) -> None:
    try:
        if to_socketio:
            # ignore_queue: with a Redis manager, to this process's sockets only (no PUBLISH).
            await _local["sio"].emit(event, payload, room=room, namespace=NAMESPACE, ignore_queue=True)
            if close:
                await _local["sio"].disconnect(room, namespace=NAMESPACE)
        if to_plain:
            await get_channel_layer().group_send(room, channel_message)
    except Exception:  # a delivery failure must not take the caller down: the outbox re-sends
        logger.exception("delivery to %s failed", room)

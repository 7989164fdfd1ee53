"""The node swarm's baseline: a minimal python-socketio ASGI app (`bench/node_swarm.py`).

    daphne -b 127.0.0.1 -p PORT bench.echo_server:application
    uvicorn --host 127.0.0.1 --port PORT bench.echo_server:application

It speaks just enough of the node protocol for the swarm's daemons: the namespace `/ws/node` at
`/socket.io/`, any `auth` accepted, `connection.ack` on connect, `register.ack` on `node.register`,
and telemetry received and dropped. It answers exactly the frames the service answers, so both
servers carry the same traffic: a daemon that asks for a Socket.IO acknowledgement of its
heartbeat (the swarm's sampled nodes do, on both servers) gets one; nothing else is replied to.
The AsyncServer has the service's options (`gateway/socketio_app.py`) and the service's garbage
collector settings (`aiwm_project.asgi.tune_gc_for_a_socket_server`, repeated here so the echo
server imports no Django); no database, no Redis.
"""

from __future__ import annotations

import gc
import time
import uuid
from typing import Any

import socketio

NAMESPACE = "/ws/node"
MAX_MESSAGE_BYTES = 1024 * 1024  # AIWM_NODE_MAX_MESSAGE_BYTES's default


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _envelope(type_: str, data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": type_, "messageId": str(uuid.uuid4()), "timestamp": _now(), **extra}
    if data is not None:
        message["data"] = data
    return message


class EchoNamespace(socketio.AsyncNamespace):
    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        node_id = auth.get("nodeId", "") if isinstance(auth, dict) else ""
        await self.save_session(sid, {"nodeId": node_id})
        await self.emit("connection.ack", _envelope("connection.ack", status="success", nodeId=node_id), to=sid)

    async def on_disconnect(self, sid: str, *args: Any) -> None:
        return None

    async def on_node_register(self, sid: str, message: Any = None) -> None:
        session = await self.get_session(sid)
        ack = {"status": "success", "nodeId": session.get("nodeId", ""), "registeredAt": _now(), "pendingCommands": []}
        await self.emit("register.ack", _envelope("register.ack", ack), to=sid)

    async def trigger_event(self, event: str, *args: Any) -> Any:
        # Socket.IO event names carry dots ("telemetry.heartbeat"), which AsyncNamespace cannot
        # map to a method name by itself.
        if event == "node.register":
            return await self.on_node_register(*args)
        if event in ("telemetry.heartbeat", "telemetry.metrics"):
            return None  # received, dropped; acknowledged by python-socketio if the daemon asked
        return await super().trigger_event(event, *args)


sio = socketio.AsyncServer(
    async_mode="asgi",
    cors_allowed_origins="*",
    async_handlers=False,
    max_http_buffer_size=2 * MAX_MESSAGE_BYTES,
    logger=False,
    engineio_logger=False,
)
sio.register_namespace(EchoNamespace(NAMESPACE))
application = socketio.ASGIApp(sio, socketio_path="socket.io")

# As the service does (aiwm_project.asgi): the comparison is like for like.
gc.freeze()
gc.set_threshold(50_000, 10, 10)

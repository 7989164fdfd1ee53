"""The baselines' ASGI applications, served by the same ASGI server as the service
(`daphne ... bench.dispatching.echo_apps:echo_application`): python-socketio alone."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from bench.dispatching.messages import COMMAND, command_body
from bench.harness.apps import LazyApp
from bench.harness.daemon import NAMESPACE


def _build_echo(via_redis: bool) -> Any:
    """python-socketio alone, with the service's server options (gateway/socketio_app.py): on a
    `command.result` it emits a command to the sender's room. `via_redis`: as aiwm_project.node_bus does
    it with REDIS_URL, from a worker thread through a write-only RedisManager, received by this
    server's AsyncRedisManager listener (the service's client manager) and emitted from there."""
    import socketio

    url, channel = os.environ.get("REDIS_URL", ""), os.environ.get("AIWM_SOCKETIO_CHANNEL", "echo")
    manager = socketio.AsyncRedisManager(url, channel=channel) if via_redis else None
    writer = socketio.RedisManager(url, channel=channel, write_only=True) if via_redis else None

    class Echo(socketio.AsyncNamespace):
        async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
            await self.enter_room(sid, f"node.{sid}")

        async def on_disconnect(self, sid: str, *args: Any) -> None:
            return None

        async def trigger_event(self, event: str, *args: Any) -> Any:
            if event != "command.result":
                return await super().trigger_event(event, *args)
            sid, message = args[0], args[1]
            metadata = message.get("metadata") or {}
            command = command_body(str(metadata.get("executionId")), int(metadata.get("stepIndex") or 0) + 1)
            command["metadata"]["echoOf"] = message.get("messageId")
            if writer is not None:
                emit = writer.emit
                await asyncio.to_thread(emit, COMMAND, command, namespace=NAMESPACE, room=f"node.{sid}")
            else:
                await self.emit(COMMAND, command, room=f"node.{sid}")
            return None

    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins="*",
        async_handlers=False,
        max_http_buffer_size=2 * 1024 * 1024,
        logger=False,
        engineio_logger=False,
    )
    sio.register_namespace(Echo(NAMESPACE))
    return socketio.ASGIApp(sio, socketio_path="socket.io")


echo_application = LazyApp(lambda: _build_echo(False))
echo_redis_application = LazyApp(lambda: _build_echo(True))

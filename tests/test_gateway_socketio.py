"""The node gateway over Socket.IO, with python-socketio's AsyncClient against a real server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import socketio
from asgiref.sync import async_to_sync, sync_to_async

from nodes.models import Node
from tests.gateway import LiveGateway, eventually, make_node

pytestmark = pytest.mark.django_db(transaction=True)


def message(type_: str, data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "messageId": str(uuid.uuid4()),
        "timestamp": "2025-11-16T14:00:05.000Z",
        "data": data or {},
        **extra,
    }


class Daemon:
    """A python-socketio AsyncClient that records every event it receives."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        @self.client.on("*", namespace="/ws/node")
        async def any_event(event: str, data: Any) -> None:
            await self.received.put((event, data))

    async def connect(self, url: str, auth: dict[str, Any]) -> None:
        await self.client.connect(url, auth=auth, namespaces=["/ws/node"], transports=["websocket"], wait_timeout=5)

    async def emit(self, event: str, body: Any) -> None:
        await self.client.emit(event, body, namespace="/ws/node")

    async def next(self, expected: str | None = None, timeout: float = 5) -> tuple[str, Any]:
        event, data = await asyncio.wait_for(self.received.get(), timeout)
        if expected is not None:
            assert event == expected, (event, data)
        return event, data


def test_connect_register_heartbeat(gateway: LiveGateway) -> None:
    node, token = make_node()

    async def scenario() -> dict[str, Any]:
        daemon = Daemon()
        await daemon.connect(gateway.url, {"token": token})
        _, ack = await daemon.next("connection.ack")
        assert ack["nodeId"] == "node-gpu-01" and ack["status"] == "success" and ack["serverVersion"]
        await daemon.emit("node.register", message("node.register", {"hostname": "gpu-server-01", "cpuCores": 32}))
        _, registered = await daemon.next("register.ack")
        await daemon.emit(
            "telemetry.heartbeat",
            message(
                "telemetry.heartbeat",
                {"status": "online", "gpuStatus": [{"deviceId": "GPU-0", "utilization": 80, "temperature": 72}]},
            ),
        )
        # The heartbeat has no reply: wait until it shows, then hang up.
        assert await sync_to_async(eventually)(lambda: Node.objects.get(pk=node.pk).gpu_devices)
        await daemon.client.disconnect()
        return registered

    registered = async_to_sync(scenario)()
    assert registered["data"]["controllerInfo"]["heartbeatInterval"] == 30000
    assert registered["data"]["pendingCommands"] == []
    node.refresh_from_db()
    assert node.status == "online" and node.hostname == "gpu-server-01" and node.cpu_cores == 32
    assert node.gpu_devices == [{"deviceId": "GPU-0", "utilization": 80.0, "temperature": 72.0}]
    assert eventually(lambda: not Node.objects.get(pk=node.pk).websocket_connected)

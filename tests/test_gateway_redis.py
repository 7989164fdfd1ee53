"""Many processes with REDIS_URL: a command created anywhere reaches a node connected to any web process.

Real processes, no mocks: web process A (`manage.py serve`) holds the daemons' sockets, web process B
(uvicorn) takes the REST call, a `manage.py shell` stands for any other process (a Celery task, an
operator), and a Celery worker plus one beat run the offline sweep. They all share the test's
PostgreSQL database (committed data: `transaction=True`) and one Redis database.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import socketio
import websockets
from asgiref.sync import async_to_sync

from nodes.models import Node, NodeCommand
from tests.support.daemons import NAMESPACE
from tests.support.factories import NodeFactory
from tests.support.live_server import eventually, free_port
from tests.support.personas import ORG_A
from tests.support.processes import Processes, make_stale, post_json, redis_url, shell, user_token, wait_offline

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

DELIVERY_SECONDS = 10


def envelope(type_: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": type_, "messageId": str(uuid.uuid4()), "timestamp": "2025-11-16T14:00:05.000Z", "data": data or {}}


class SocketIODaemon:
    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        @self.client.on("*", namespace=NAMESPACE)
        async def any_event(event: str, data: Any) -> None:
            await self.received.put((event, data))

    async def connect(self, url: str, token: str) -> None:
        await self.client.connect(
            url, auth={"token": token}, namespaces=[NAMESPACE], transports=["websocket"], wait_timeout=10
        )

    async def emit(self, body: dict[str, Any]) -> None:
        await self.client.emit(body["type"], body, namespace=NAMESPACE)

    async def next(self, expected: str) -> dict[str, Any]:
        event, data = await asyncio.wait_for(self.received.get(), DELIVERY_SECONDS)
        assert event == expected, (event, data)
        return data


async def ws_next(ws: Any, expected: str) -> dict[str, Any]:
    body = json.loads(await asyncio.wait_for(ws.recv(), DELIVERY_SECONDS))
    assert body["type"] == expected, body
    return body


def assert_command(received: dict[str, Any], created: dict[str, Any], type_: str) -> None:
    """The contract's server -> node envelope, carrying what was stored."""
    assert set(received) == {"type", "messageId", "timestamp", "resource", "data", "metadata"}, received
    assert received["type"] == type_
    assert received["messageId"] == created["messageId"]
    assert received["data"] == created["data"] and received["resource"] == created["resource"]
    assert received["metadata"]["priority"] == created["metadata"]["priority"]
    assert received["timestamp"].endswith("Z")


def test_commands_and_sweep_cross_processes(processes: Processes, tmp_path: Path) -> None:
    sio_node, sio_token = NodeFactory.with_token(node_id="node-redis-sio")
    ws_node, ws_token = NodeFactory.with_token(node_id="node-redis-ws")
    stale = NodeFactory.create(node_id="node-redis-stale")
    beat_stale = NodeFactory.create(node_id="node-redis-beat")
    make_stale(stale)
    port_a, port_b = free_port(), free_port()
    # A as `make run` serves it, B with daphne (the design card's server): the same application.
    processes.start("web-A", "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port_a))
    processes.start("web-B", "-m", "daphne", "-b", "127.0.0.1", "-p", str(port_b), "aiwm_project.asgi:application")
    processes.start("celery-worker", "-m", "celery", "-A", "aiwm_project", "worker", "--pool", "solo", "-l", "warning")
    try:
        processes.wait_healthy("web-A", port_a)
        processes.wait_healthy("web-B", port_b)
        created_b = async_to_sync(asyncio.wait_for)(
            deliveries(processes, port_a, port_b, sio_node, sio_token, ws_node, ws_token), 90
        )
        acked, *others = created_b
        assert eventually(lambda: NodeCommand.objects.get(message_id=acked["messageId"]).status == "acknowledged")
        for command in others:
            assert NodeCommand.objects.get(message_id=command["messageId"]).status == "sent"

        # The offline sweep, queued like any task (REDIS_URL: Redis broker, not eager) and run by the worker.
        queued = shell(
            processes,
            "sweep.delay()",
            "from aiwm_project.tasks import sweep\n"
            "conf = sweep.app.conf\n"
            "print(conf.broker_url, conf.task_always_eager)\n"
            "print(sweep.delay().id)\n",
        )
        assert f"{redis_url()} False" in queued, queued
        assert wait_offline(stale), "the Celery worker did not run the sweep"
        assert Node.objects.get(pk=sio_node.pk).status == "online"  # registered: a fresh heartbeat

        # And on its own: one beat, on a short interval, feeding the same worker.
        make_stale(beat_stale)
        processes.start(
            "celery-beat",
            *("-m", "celery", "-A", "aiwm_project", "beat", "-l", "warning"),
            *("--schedule", str(tmp_path / "beat-schedule")),
            AIWM_SWEEP_INTERVAL_SECONDS="1",
        )
        assert wait_offline(beat_stale), "Celery beat did not schedule the sweep"
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__}: {exc}\n\n{processes.logs()}") from exc


async def deliveries(
    processes: Processes, port_a: int, port_b: int, sio_node: Node, sio_token: str, ws_node: Node, ws_token: str
) -> list[dict[str, Any]]:
    """Daemons on A; commands created on B (REST) and in a third process (a shell) reach them."""
    daemon = SocketIODaemon()
    await daemon.connect(f"http://127.0.0.1:{port_a}", sio_token)
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port_a}/ws/node", additional_headers={"Authorization": f"Bearer {ws_token}"}, open_timeout=10
    )
    try:
        assert (await daemon.next("connection.ack"))["nodeId"] == sio_node.node_id
        assert (await ws_next(ws, "connection.ack"))["nodeId"] == ws_node.node_id
        await daemon.emit(envelope("node.register", {"hostname": "gpu-a"}))
        assert (await daemon.next("register.ack"))["data"]["pendingCommands"] == []

        token = user_token()
        base_b = f"http://127.0.0.1:{port_b}/api/nodes"
        body = {
            "type": "model.download",
            "resource": {"type": "model", "id": "m-1"},
            "data": {"modelName": "llama", "url": "https://example.invalid/llama.gguf"},
            "metadata": {"priority": "high"},
        }
        status, created_sio = await asyncio.to_thread(post_json, f"{base_b}/{sio_node.pk}/commands", body, token)
        assert status == 201, created_sio
        assert_command(await daemon.next("model.download"), created_sio, "model.download")
        # The acknowledgement goes back over A and closes the loop in the shared database.
        ack = envelope("command.ack", {"originalMessageId": created_sio["messageId"]})
        await daemon.emit(ack)

        status, created_ws = await asyncio.to_thread(post_json, f"{base_b}/{ws_node.pk}/commands", body, token)
        assert status == 201, created_ws
        assert_command(await ws_next(ws, "model.download"), created_ws, "model.download")

        # A third process (no server in it): the outbox service, as a Celery task would call it.
        nodes = [sio_node.node_id, ws_node.node_id]
        code = "\n".join(
            [
                "import json",
                "from nodes.commands import send_command",
                f"org, nodes = {ORG_A!r}, {nodes!r}",
                "resource, data = {'type': 'deployment', 'id': 'd-1'}, {'deploymentId': 'd-1'}",
                "ids = [send_command(org_id=org, node_id=n, type='deployment.stop', resource=resource, data=data)"
                " for n in nodes]",
                "print(json.dumps([c.message_id for c in ids]))",
            ]
        )
        output = await asyncio.to_thread(shell, processes, "send_command in a shell", code)
        sio_id, ws_id = json.loads(output.strip().splitlines()[-1])
        shell_created = {"data": {"deploymentId": "d-1"}, "resource": {"type": "deployment", "id": "d-1"}}
        shell_created["metadata"] = {"priority": "normal"}
        assert_command(await daemon.next("deployment.stop"), {**shell_created, "messageId": sio_id}, "deployment.stop")
        assert_command(await ws_next(ws, "deployment.stop"), {**shell_created, "messageId": ws_id}, "deployment.stop")
        # Nothing was delivered twice (Socket.IO and Channels each carry a message to their own sockets).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)
        assert daemon.received.empty(), daemon.received
        return [created_sio, created_ws, {"messageId": sio_id}, {"messageId": ws_id}]
    finally:
        await daemon.client.disconnect()
        await ws.close()

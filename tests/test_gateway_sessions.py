"""One live session per node: a newer authenticated connection supersedes the older one.

Real gateway, real clients (python-socketio's AsyncClient, a plain WebSocket). The superseded
connection gets an `error` SUPERSEDED and is closed; commands reach only the current one;
anything the old one still sends is refused and changes nothing; a deleted node's socket is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from aiwm_project import node_bus
from deployments.models import Deployment
from gateway import protocol
from nodes.models import Node
from tests.support.daemons import DOWNLOAD, NAMESPACE, Daemon, daemon_for, message, ws_daemon
from tests.support.factories import NodeFactory, deployment_with_model
from tests.support.live_server import LiveGateway, Rest

pytestmark = pytest.mark.django_db(transaction=True)
CLOSE_SUPERSEDED = 4409  # the plain WebSocket's close code (gateway.consumers)

STATUS = {"deploymentId": "deploy-llama-prod-01", "status": "running", "containerId": "c-1", "healthStatus": "healthy"}


async def nothing_more(daemon: Daemon, seconds: float = 0.5) -> None:
    """The daemon receives nothing (else) within `seconds`."""
    try:
        event, data = await asyncio.wait_for(daemon.received.get(), seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected {event}: {data}")


def current_connection(node: Node) -> str:
    return Node.objects.get(pk=node.pk).connection_id


def test_a_second_connection_supersedes_the_first_and_gets_the_commands(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as first:
            await first.register()
            async with daemon_for(gateway, {"token": token}) as second:
                error = await first.error("SUPERSEDED")
                assert "another connection" in error["message"]
                await first.wait_disconnected()
                sid = second.client.get_sid(NAMESPACE)
                assert await sync_to_async(current_connection)(node) == sid
                await second.register()
                created = await rest.apost(f"/api/nodes/{node.pk}/commands", DOWNLOAD)
                delivered = await second.expect("model.download")
                assert delivered["messageId"] == created["messageId"]
                await nothing_more(first)
                assert (await rest.aget(f"/api/nodes/{node.pk}"))["websocketConnected"] is True

    async_to_sync(scenario)()


@pytest.mark.parametrize("known_by", ["this process", "the node row only"])
def test_a_superseded_session_still_open_gets_nothing_and_changes_nothing(
    gateway: LiveGateway, monkeypatch: pytest.MonkeyPatch, known_by: str
) -> None:
    """The old socket stays open (its close lost, as if it sat in another process behind a Redis
    hiccup): commands still go only to the new one, and what the old one sends is refused."""
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)
    deployment_with_model("deploy-llama-prod-01", "node-gpu-01")
    monkeypatch.setattr(node_bus, "close_connection", lambda connection_id, payload: None)

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as first:
            await first.register()
            old = protocol._live[first.client.get_sid(NAMESPACE)]
            async with daemon_for(gateway, {"token": token}) as second:
                await second.register()
                if known_by == "the node row only":
                    old.ended = None  # what a process that did not see the new connection knows
                created = await rest.apost(f"/api/nodes/{node.pk}/commands", DOWNLOAD)
                assert (await second.expect("model.download"))["messageId"] == created["messageId"]
                await nothing_more(first)
                # The old session acknowledges the command, reports a deployment, re-registers: refused.
                ack = await first.send(message("command.ack", {"originalMessageId": created["messageId"]}))
                error = await first.error("SUPERSEDED")
                assert error["originalMessageId"] == ack["messageId"]
                await first.wait_disconnected()
                assert (await rest.aget(f"/api/nodes/{node.pk}/commands"))["data"][0]["status"] == "sent"
                assert await sync_to_async(current_connection)(node) == second.client.get_sid(NAMESPACE)
                # The current one is unaffected.
                await second.send(message("deployment.status", STATUS))
                await second.barrier()

    async_to_sync(scenario)()
    assert Deployment.objects.get(deployment_id="deploy-llama-prod-01").container_id == "c-1"


def test_a_superseded_session_cannot_report_or_re_register(
    gateway: LiveGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, token = NodeFactory.with_token()
    deployment_with_model("deploy-llama-prod-01", "node-gpu-01")
    monkeypatch.setattr(node_bus, "close_connection", lambda connection_id, payload: None)

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as first:
            old = protocol._live[first.client.get_sid(NAMESPACE)]
            async with daemon_for(gateway, {"token": token}) as second:
                sid = second.client.get_sid(NAMESPACE)
                old.ended = None  # only the row knows (another process)
                await first.send(message("deployment.status", STATUS))
                await first.error("SUPERSEDED")
                await first.wait_disconnected()
                assert await sync_to_async(current_connection)(node) == sid

    async_to_sync(scenario)()
    deployment = Deployment.objects.get(deployment_id="deploy-llama-prod-01")
    assert deployment.container_id != "c-1" and deployment.status != "running"

    async def register_after() -> None:
        async with daemon_for(gateway, {"token": token}) as first:
            old = protocol._live[first.client.get_sid(NAMESPACE)]
            async with daemon_for(gateway, {"token": token}) as second:
                sid = second.client.get_sid(NAMESPACE)
                old.ended = None
                await first.send(message("node.register", {"hostname": "stale"}))
                await first.error("SUPERSEDED")
                assert await sync_to_async(current_connection)(node) == sid

    async_to_sync(register_after)()
    assert Node.objects.get(pk=node.pk).hostname != "stale"


def test_plain_websocket_supersedes_socketio(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as first, ws_daemon(gateway, token) as second:
            await first.error("SUPERSEDED")
            await first.wait_disconnected()
            assert (await sync_to_async(current_connection)(node)).startswith(node_bus.PLAIN_WEBSOCKET_PREFIX)
            await second.register()
            created = await rest.apost(f"/api/nodes/{node.pk}/commands", DOWNLOAD)
            assert (await second.next("model.download"))["messageId"] == created["messageId"]
            await nothing_more(first)

    async_to_sync(scenario)()


def test_socketio_supersedes_plain_websocket(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)

    async def scenario() -> None:
        async with ws_daemon(gateway, token, settle=False) as first:
            await first.register()
            async with daemon_for(gateway, {"token": token}) as second:
                code, frames = await first.close_code()
                assert code == CLOSE_SUPERSEDED
                assert [(f["type"], f["data"]["code"]) for f in frames] == [("error", "SUPERSEDED")]
                await second.register()
                created = await rest.apost(f"/api/nodes/{node.pk}/commands", DOWNLOAD)
                assert (await second.expect("model.download"))["messageId"] == created["messageId"]

    async_to_sync(scenario)()


def test_plain_websocket_supersedes_plain_websocket(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)

    async def scenario() -> None:
        async with ws_daemon(gateway, token, settle=False) as first, ws_daemon(gateway, token) as second:
            code, frames = await first.close_code()
            assert code == CLOSE_SUPERSEDED and frames[-1]["data"]["code"] == "SUPERSEDED"
            await second.register()
            created = await rest.apost(f"/api/nodes/{node.pk}/commands", DOWNLOAD)
            assert (await second.next("model.download"))["messageId"] == created["messageId"]

    async_to_sync(scenario)()


def test_a_reconnecting_daemon_is_its_node_s_session_again(gateway: LiveGateway) -> None:
    _, token = NodeFactory.with_token()

    async def scenario() -> None:
        for _ in range(3):
            async with daemon_for(gateway, {"token": token}) as daemon:
                assert (await daemon.register())["status"] == "success"
                await daemon.send(message("deployment.status", {**STATUS, "deploymentId": "nope"}))
                assert (await daemon.error())["code"] == "REJECTED"  # applied path, not SUPERSEDED

    async_to_sync(scenario)()


def _delete(rest: Rest, node: Node) -> None:
    response = rest.session.delete(f"{rest.base}/api/nodes/{node.pk}", timeout=10)
    assert response.status_code < 300, response.text


def test_a_deleted_node_s_socketio_connection_is_closed(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
            await sync_to_async(_delete, thread_sensitive=False)(rest, node)
            await daemon.send(message("node.register", {"hostname": "gpu-server-01"}))
            await daemon.error("NODE_DELETED")
            await daemon.wait_disconnected()

    async_to_sync(scenario)()


def test_a_deleted_node_s_plain_websocket_is_closed(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)

    async def scenario() -> Any:
        async with ws_daemon(gateway, token, settle=False) as daemon:
            await daemon.register()
            await sync_to_async(_delete, thread_sensitive=False)(rest, node)
            await daemon.send(message("command.ack", {"originalMessageId": "x"}))
            return await daemon.close_code()

    code, frames = async_to_sync(scenario)()
    assert code == CLOSE_SUPERSEDED
    assert [f["data"]["code"] for f in frames] == ["NODE_DELETED"]

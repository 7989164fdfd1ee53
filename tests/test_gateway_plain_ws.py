"""The node gateway over a plain WebSocket at /ws/node (the `websockets` client, a real server).

The same JSON envelopes as Socket.IO, as text frames. Auth by `Authorization: Bearer` on the
handshake (plus `X-Node-Id` or `?nodeId=` for a user token) or by a first frame
`{"type": "auth", "data": {"token", "nodeId"}}`; a refusal closes with 4401.

Synchronization as over Socket.IO: a `barrier()` after frames without reply (tests/support/daemons.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from aiwm_project.auth import issue_user_token
from deployments.models import Deployment, DeploymentLog
from gateway import consumers
from nodes.models import InboundMessage, Node, NodeCommand
from nodes.services import node_issue_token
from tests.support.daemons import DOWNLOAD, ENVELOPE_KEYS, message, ws_daemon
from tests.support.factories import NodeFactory, deployment_with_model
from tests.support.live_server import LiveGateway, Rest
from tests.support.personas import ORG_A, ORG_B, OWNER_B

pytestmark = pytest.mark.django_db(transaction=True)


def auth_frame(token: Any, node_id: Any = None) -> dict[str, Any]:
    data = {"token": token} if node_id is None else {"token": token, "nodeId": node_id}
    return {"type": "auth", "data": data}


def test_header_auth_full_flow(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)
    url = f"/api/nodes/{node.pk}/commands"

    async def scenario() -> dict[str, Any]:
        async with ws_daemon(gateway, token, ack=False) as daemon:
            ack = await daemon.next("connection.ack")
            assert (ack["nodeId"], ack["controllerId"], ack["serverVersion"]) == (
                "node-gpu-01",
                "controller-main",
                "1.0.0",
            )
            registered = await daemon.register(cpuCores=24, gpuDevices=[{"deviceId": "GPU-0", "memoryTotal": 24576}])
            assert registered["controllerInfo"]["heartbeatInterval"] == 30000
            assert registered["controllerInfo"]["metricsInterval"] == 60000 and registered["pendingCommands"] == []
            gpu = {"deviceId": "GPU-0", "utilization": 5, "temperature": 40}
            await daemon.send(message("telemetry.heartbeat", {"gpuStatus": [gpu]}))
            await daemon.barrier()
            seen = await rest.aget(f"/api/nodes/{node.pk}")
            assert seen["status"] == "online" and seen["websocketConnected"] is True and seen["lastHeartbeat"]
            assert seen["cpuCores"] == 24 and seen["gpuDevices"][0]["temperature"] == 40

            # A command sent through REST arrives at once, as a JSON frame with the contract's envelope.
            created = await rest.apost(url, DOWNLOAD)
            command = await daemon.next("model.download")
            assert set(command) == ENVELOPE_KEYS and command["messageId"] == created["messageId"]
            assert (command["resource"], command["data"], command["metadata"]) == (
                DOWNLOAD["resource"],
                DOWNLOAD["data"],
                DOWNLOAD["metadata"],
            )
            assert (await rest.aget(url))["data"][0]["status"] == "sent"
            await daemon.send(message("command.ack", {"originalMessageId": command["messageId"], "status": "received"}))
            result = {"originalMessageId": command["messageId"], "status": "success", "result": {"files": 1}}
            await daemon.send(message("command.result", result))
            await daemon.barrier()
            return (await rest.aget(url))["data"][0]

    done = async_to_sync(scenario)()
    assert done["status"] == "succeeded" and done["acknowledgedAt"] and done["result"] == {"files": 1}
    assert rest.get(f"/api/nodes/{node.pk}")["websocketConnected"] is False


def test_first_frame_auth(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)
    queued = rest.post(f"/api/nodes/{node.pk}/commands", DOWNLOAD)

    async def scenario() -> dict[str, Any]:
        async with ws_daemon(gateway, first_frame=auth_frame(token)) as daemon:
            registered = await daemon.register()
            await daemon.send(message("telemetry.metrics", {"cpu": {"usage": 33}}))
            await daemon.barrier()
            return registered

    registered = async_to_sync(scenario)()
    assert [c["messageId"] for c in registered["pendingCommands"]] == [queued["messageId"]]
    assert set(registered["pendingCommands"][0]) == ENVELOPE_KEYS
    assert [row["cpu"]["usage"] for row in rest.get(f"/api/nodes/{node.pk}/metrics")["data"]] == [33]


@pytest.mark.parametrize("how", ["X-Node-Id", "query", "first frame", "first frame by _id"])
def test_user_token_with_write_rights_names_its_node(gateway: LiveGateway, how: str) -> None:
    node = NodeFactory.create()
    token = issue_user_token(user_id="u", username="u", org_id=ORG_A, roles=["organization.editor"])
    choices: dict[str, dict[str, Any]] = {
        "X-Node-Id": {"token": token, "headers": {"X-Node-Id": "node-gpu-01"}},
        "query": {"token": token, "query": "nodeId=node-gpu-01"},
        "first frame": {"first_frame": auth_frame(token, "node-gpu-01")},
        "first frame by _id": {"first_frame": auth_frame(token, node.pk)},
    }
    options = choices[how]

    async def scenario() -> dict[str, Any]:
        async with ws_daemon(gateway, **options) as daemon:
            return await daemon.register()

    assert async_to_sync(scenario)()["nodeId"] == "node-gpu-01"
    assert Node.objects.get(pk=node.pk).status == "online"


def _expired(node: Node, settings: Any) -> str:
    settings.AIWM_NODE_TOKEN_TTL_DAYS = -1
    token, _ = node_issue_token(node=node, actor_id="u")
    settings.AIWM_NODE_TOKEN_TTL_DAYS = 365
    return token


def _revoked(node: Node, settings: Any) -> str:
    old, _ = node_issue_token(node=node, actor_id="u")
    node_issue_token(node=node, actor_id="u")
    return old


def _user(org_id: str, role: str) -> str:
    return issue_user_token(user_id="u", username="u", org_id=org_id, roles=[role])


# case -> options for ws_daemon (built per test: tokens need the node).
REFUSED: dict[str, Callable[[Node, Any], dict[str, Any]]] = {
    "garbage header token": lambda node, s: {"token": "not-a-jwt"},
    "expired header token": lambda node, s: {"token": _expired(node, s)},
    "revoked header token": lambda node, s: {"token": _revoked(node, s)},
    "viewer user token": lambda node, s: {
        "token": _user(ORG_A, "organization.viewer"),
        "headers": {"X-Node-Id": "node-gpu-01"},
    },
    "user token without a node": lambda node, s: {"token": _user(ORG_A, "organization.editor")},
    "user token of another org": lambda node, s: {
        "token": _user(ORG_B, "organization.owner"),
        "query": "nodeId=node-gpu-01",
    },
    "first frame with a bad token": lambda node, s: {"first_frame": auth_frame("not-a-jwt")},
    "first frame with an expired token": lambda node, s: {"first_frame": auth_frame(_expired(node, s))},
    "first frame without a token": lambda node, s: {"first_frame": {"type": "auth", "data": {}}},
    "first frame not auth": lambda node, s: {"first_frame": message("node.register", {"hostname": "x"})},
    "first frame not an object": lambda node, s: {"first_frame": ["auth"]},
    "first frame auth data not an object": lambda node, s: {"first_frame": {"type": "auth", "data": "token"}},
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_connections_close_with_4401(gateway: LiveGateway, settings: Any, case: str) -> None:
    node = NodeFactory.create()
    NodeFactory.create(node_id="node-b", actor=OWNER_B)
    options = REFUSED[case](node, settings)

    async def scenario() -> tuple[int | None, list[dict[str, Any]]]:
        async with ws_daemon(gateway, ack=False, **options) as daemon:
            return await daemon.close_code()

    code, frames = async_to_sync(scenario)()
    assert code == 4401
    assert [f["type"] for f in frames] == ["error"] and frames[0]["data"]["code"] == "UNAUTHORIZED", frames
    assert not Node.objects.filter(websocket_connected=True).exists()
    assert not InboundMessage.objects.exists() and Node.objects.get(pk=node.pk).status == "offline"


def test_first_frame_invalid_json_and_silence_are_refused(
    gateway: LiveGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    NodeFactory.create()
    monkeypatch.setattr(consumers, "AUTH_TIMEOUT_SECONDS", 0.3)

    async def scenario() -> tuple[Any, Any]:
        async with ws_daemon(gateway, ack=False) as daemon:
            await daemon.send_raw("{not json")
            garbage = await daemon.close_code()
        async with ws_daemon(gateway, ack=False) as daemon:
            silence = await daemon.close_code()  # says nothing: closed when the auth time is up
        return garbage, silence

    (garbage_code, garbage_frames), (silence_code, silence_frames) = async_to_sync(scenario)()
    assert garbage_code == 4401 and garbage_frames[0]["data"]["code"] == "UNAUTHORIZED"
    assert silence_code == 4401 and silence_frames == []
    assert not Node.objects.filter(websocket_connected=True).exists()


def test_a_client_gone_before_authenticating_leaves_no_stray_close(
    gateway: LiveGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The auth timer of a connection that is already closed must not fire a close() on it
    (it raised ClientDisconnected in a task nobody awaited: an asyncio error log per client)."""
    monkeypatch.setattr(consumers, "AUTH_TIMEOUT_SECONDS", 0.2)

    async def scenario() -> None:
        async with ws_daemon(gateway, ack=False) as daemon:
            await daemon.send_raw("{not json")  # refused at once
            assert (await daemon.close_code())[0] == 4401
        async with ws_daemon(gateway, ack=False):
            pass  # hangs up without a word
        # Let the (cancelled) timers' deadline pass; nothing is waited for here but time itself.
        await asyncio.sleep(0.5)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        async_to_sync(scenario)()
        gc.collect()  # an unretrieved task exception is logged when the task is collected
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text


def test_a_node_cannot_speak_for_another_node_or_its_deployments(gateway: LiveGateway) -> None:
    _, token = NodeFactory.with_token()
    other = NodeFactory.create(node_id="node-gpu-02")
    rest = Rest(gateway)
    deployment_with_model("d-other", "node-gpu-02")
    theirs = rest.post(f"/api/nodes/{other.pk}/commands", DOWNLOAD)
    before = (list(Deployment.objects.values()), list(NodeCommand.objects.values()))

    async def scenario() -> None:
        async with ws_daemon(gateway, token) as daemon:
            await daemon.send(message("deployment.status", {"deploymentId": "d-other", "status": "failed"}))
            await daemon.error("REJECTED")
            await daemon.send(message("deployment.logs", {"deploymentId": "d-other", "logs": [{"message": "x"}]}))
            await daemon.error("REJECTED")
            await daemon.send(message("command.ack", {"originalMessageId": theirs["messageId"]}))
            await daemon.error("REJECTED")
            await daemon.send(
                message("command.result", {"originalMessageId": theirs["messageId"], "status": "success"})
            )
            await daemon.error("REJECTED")
            await daemon.send(message("telemetry.heartbeat", {"nodeId": "node-gpu-02", "cpuUsage": 50}))
            await daemon.error("FORBIDDEN")

    async_to_sync(scenario)()
    assert (list(Deployment.objects.values()), list(NodeCommand.objects.values())) == before
    assert not DeploymentLog.objects.exists() and not InboundMessage.objects.exists()
    assert Node.objects.get(pk=other.pk).cpu_usage == 0


def test_both_transports_of_one_node_get_live_commands(gateway: LiveGateway) -> None:
    """A node on the plain WebSocket gets its commands even when no Socket.IO client ever connected."""
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)

    async def scenario() -> list[dict[str, Any]]:
        got = []
        async with ws_daemon(gateway, token) as daemon:
            await daemon.register()
            for kind in ("deployment.start", "deployment.stop"):
                created = await rest.apost(f"/api/nodes/{node.pk}/commands", {**DOWNLOAD, "type": kind})
                command = await daemon.next(kind)
                assert command["messageId"] == created["messageId"]
                got.append(command)
        return got

    got = async_to_sync(scenario)()
    assert [c["type"] for c in got] == ["deployment.start", "deployment.stop"]
    assert {c["status"] for c in rest.commands(node)} == {"sent"}

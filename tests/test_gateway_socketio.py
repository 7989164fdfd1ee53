"""The node gateway over Socket.IO, with python-socketio's AsyncClient against a real server.

Each test drives one or more daemons (AsyncClient) from an event loop of its own
(`async_to_sync`), reads effects through the live server's REST API, and checks the
database only for what REST does not show. Every wait is bounded.

Synchronization: a `barrier()` after messages that get no reply (see tests/support/daemons.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import socketio
from asgiref.sync import async_to_sync, sync_to_async
from django.utils import timezone

from aiwm_project.auth import issue_user_token
from aiwm_project.background import run_sweep
from aiwm_project.datetimes import iso_now
from deployments.models import Deployment, DeploymentLog
from nodes.models import InboundMessage, Node, NodeMetric
from nodes.services import node_issue_token, nodes_mark_stale_offline
from tests.support.daemons import DOWNLOAD, ENVELOPE_KEYS, Daemon, daemon_for, message
from tests.support.factories import NodeFactory, deployment_with_model
from tests.support.live_server import LiveGateway, Rest
from tests.support.personas import ORG_A, ORG_B, OWNER_B

pytestmark = pytest.mark.django_db(transaction=True)

# --- connection, registration, telemetry ---


def test_connect_register_heartbeat(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with daemon_for(gateway, {"token": token}, ack=False) as daemon:
            ack = await daemon.expect("connection.ack")
            online = await rest.aget(f"/api/nodes/{node.pk}")
            registered = await daemon.register(
                ipAddress="10.10.0.101",
                os="Ubuntu 22.04",
                cpuCores=32,
                cpuModel="AMD EPYC 7763",
                ramTotal=65536,
                diskTotal=2000000,
                daemonVersion="1.0.0",
                containerRuntime="docker",
                gpuDevices=[{"deviceId": "GPU-0", "model": "NVIDIA RTX 4090", "memoryTotal": 24576}],
            )
            await daemon.send(
                message(
                    "telemetry.heartbeat",
                    {
                        "status": "online",
                        "uptimeSeconds": 3630,
                        "cpuUsage": 45.5,
                        "ramUsage": 28000,
                        "gpuStatus": [{"deviceId": "GPU-0", "utilization": 80, "memoryUsed": 18000, "temperature": 72}],
                    },
                )
            )
            await daemon.barrier()  # the heartbeat has no reply
            seen = await rest.aget(f"/api/nodes/{node.pk}")
            assert seen["websocketConnected"] is True and online["websocketConnected"] is True
        return ack, registered, seen

    ack, registered, seen = async_to_sync(scenario)()
    assert ack["type"] == "connection.ack" and ack["messageId"] and ack["timestamp"].endswith("Z")
    assert (ack["nodeId"], ack["controllerId"], ack["serverVersion"]) == ("node-gpu-01", "controller-main", "1.0.0")
    assert registered["status"] == "success" and registered["nodeId"] == "node-gpu-01"
    assert registered["controllerInfo"] == {
        "controllerId": "controller-main",
        "heartbeatInterval": 30000,
        "metricsInterval": 60000,
        "timezone": "UTC",
    }
    assert registered["pendingCommands"] == [] and registered["registeredAt"].endswith("Z")
    assert seen["status"] == "online" and seen["lastHeartbeat"].endswith("Z")
    assert (seen["hostname"], seen["cpuCores"], seen["cpuModel"], seen["diskTotal"]) == (
        "gpu-server-01",
        32,
        "AMD EPYC 7763",
        2000000,
    )
    assert (seen["os"], seen["daemonVersion"], seen["containerRuntime"]) == ("Ubuntu 22.04", "1.0.0", "docker")
    assert seen["ramFree"] == 65536 - 28000 and seen["cpuUsage"] == 45.5 and seen["uptimeSeconds"] == 3630
    assert seen["gpuDevices"] == [
        {
            "deviceId": "GPU-0",
            "model": "NVIDIA RTX 4090",
            "memoryTotal": 24576,
            "memoryFree": 24576 - 18000,
            "utilization": 80.0,
            "temperature": 72.0,
        }
    ]
    # Hung up (daemon_for waited for the server to record it): no longer connected, still online
    # (offline is the sweep's call).
    after = rest.get(f"/api/nodes/{node.pk}")
    assert after["websocketConnected"] is False and after["status"] == "online"


@pytest.mark.usefixtures("quick_polling")
def test_polling_transport_connects_registers_and_disconnects(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)

    async def scenario() -> dict[str, Any]:
        async with daemon_for(gateway, {"token": token}, ["polling"]) as daemon:
            assert daemon.client.transport() == "polling"
            registered = await daemon.register(cpuCores=8)
            await daemon.send(message("telemetry.heartbeat", {"cpuUsage": 12.5}))
            await daemon.barrier()
            assert (await rest.aget(f"/api/nodes/{node.pk}"))["cpuUsage"] == 12.5
            return registered

    assert async_to_sync(scenario)()["nodeId"] == "node-gpu-01"
    after = rest.get(f"/api/nodes/{node.pk}")
    assert after["websocketConnected"] is False and after["cpuCores"] == 8


def test_metrics_are_stored_once_and_readable(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)
    report = {
        "cpu": {"usage": 45.5, "cores": 16, "temperature": 55},
        "ram": {"total": 65536, "used": 28000, "free": 37536, "usagePercent": 42.7},
        "gpu": [{"deviceId": "GPU-0", "utilization": 80, "memoryUsed": 18000}],
        "network": {"rxBytes": 1000000000, "txBytes": 500000000},
    }

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
            first = await daemon.send(message("telemetry.metrics", report))
            await daemon.send(dict(first))  # the same messageId again: applied at most once
            await daemon.send(message("telemetry.metrics", {**report, "cpu": {"usage": 50}}))
            await daemon.barrier()

    async_to_sync(scenario)()
    rows = rest.get(f"/api/nodes/{node.pk}/metrics")["data"]
    assert [row["cpu"]["usage"] for row in rows] == [45.5, 50]
    assert rows[0]["ram"] == report["ram"] and rows[0]["gpu"] == report["gpu"] and rows[0]["network"]
    assert rows[0]["timestamp"].endswith("Z") and rows[0]["receivedAt"].endswith("Z")
    assert NodeMetric.objects.count() == 2


def test_offline_after_three_missed_heartbeats(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    quiet = NodeFactory.create(node_id="node-quiet")
    rest = Rest(gateway)

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
            await daemon.send(message("telemetry.heartbeat", {"status": "online"}))
            await daemon.barrier()

            # Two intervals of silence: still online. Past three: offline.
            beat = (await sync_to_async(Node.objects.get)(pk=node.pk)).last_heartbeat
            assert beat is not None
            assert await sync_to_async(nodes_mark_stale_offline)(now=beat + timedelta(seconds=60)) == 0
            assert (await rest.aget(f"/api/nodes/{node.pk}"))["status"] == "online"
            assert await sync_to_async(nodes_mark_stale_offline)(now=beat + timedelta(seconds=91)) == 1
            assert (await rest.aget(f"/api/nodes/{node.pk}"))["status"] == "offline"

            # The next heartbeat brings it back.
            await daemon.send(message("telemetry.heartbeat", {"status": "online"}))
            await daemon.barrier()
            assert (await rest.aget(f"/api/nodes/{node.pk}"))["status"] == "online"

            # The periodic sweep does the same for a node whose last heartbeat is long past.
            past = timezone.now() - timedelta(minutes=10)
            await sync_to_async(Node.objects.filter(pk=node.pk).update)(last_heartbeat=past)
            assert (await sync_to_async(run_sweep)())["nodes_offline"] == 1
            assert (await rest.aget(f"/api/nodes/{node.pk}"))["status"] == "offline"

    async_to_sync(scenario)()
    assert Node.objects.get(pk=quiet.pk).status == "offline"  # never connected: untouched by the sweep


# --- deployments reported by the node ---


def test_deployment_status_and_logs(gateway: LiveGateway) -> None:
    _, token = NodeFactory.with_token()
    rest = Rest(gateway)
    deployment_with_model("deploy-llama-prod-01", "node-gpu-01")
    status = {
        "deploymentId": "deploy-llama-prod-01",
        "status": "running",
        "containerId": "docker-container-id",
        "endpoint": "http://10.10.0.101:8080/v1/chat",
        "healthStatus": "healthy",
    }
    logs = [
        {"timestamp": iso_now(), "level": "info", "message": "Model loaded successfully"},
        {"timestamp": iso_now(), "level": "error", "message": "Server listening on port 8080"},
    ]

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
            await daemon.send(message("deployment.status", status))
            batch = await daemon.send(
                message("deployment.logs", {"deploymentId": "deploy-llama-prod-01", "logs": logs})
            )
            await daemon.send(dict(batch))  # a re-sent batch is stored once
            await daemon.send(message("deployment.status", {**status, "status": "stopped", "healthStatus": "down"}))
            await daemon.barrier()

    async_to_sync(scenario)()
    deployment = rest.get("/api/deployments/deploy-llama-prod-01")
    assert deployment["status"] == "stopped" and deployment["isRunning"] is False
    assert deployment["containerId"] == "docker-container-id"
    assert deployment["endpoint"] == "http://10.10.0.101:8080/v1/chat"
    assert deployment["healthStatus"] == "down" and deployment["lastHealthCheck"]
    assert [e["event"] for e in deployment["events"]] == ["node.running", "node.stopped"]
    assert (
        "node-gpu-01" in deployment["events"][0]["message"] and "status=running" in deployment["events"][0]["message"]
    )
    stored = rest.get("/api/deployments/deploy-llama-prod-01/logs")["data"]
    assert [(line["level"], line["message"]) for line in stored] == [(line["level"], line["message"]) for line in logs]
    assert DeploymentLog.objects.count() == 2


@pytest.mark.usefixtures("quick_polling")
def test_deployment_status_while_running_is_visible(gateway: LiveGateway) -> None:
    _, token = NodeFactory.with_token()
    rest = Rest(gateway)
    deployment_with_model("d1", "node-gpu-01")

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}, ["polling"]) as daemon:
            await daemon.send(message("deployment.status", {"deploymentId": "d1", "status": "running"}))
            await daemon.barrier()

    async_to_sync(scenario)()
    deployment = rest.get("/api/deployments/d1")
    assert deployment["status"] == "running" and deployment["isRunning"] is True
    assert [e["event"] for e in deployment["events"]] == ["node.running"]


# --- a connection speaks only for its own node ---


def test_another_nodes_deployment_is_refused(gateway: LiveGateway) -> None:
    _, token = NodeFactory.with_token()
    NodeFactory.create(node_id="node-gpu-02")
    NodeFactory.create(node_id="node-b", actor=OWNER_B)
    rest = Rest(gateway)
    deployment_with_model("d-other-node", "node-gpu-02")
    deployment_with_model("d-other-org", "node-b", actor=OWNER_B)
    before = list(Deployment.objects.order_by("pk").values())

    async def scenario() -> list[dict[str, Any]]:
        errors = []
        async with daemon_for(gateway, {"token": token}) as daemon:
            for deployment_id in ("d-other-node", "d-other-org", "no-such-deployment"):
                sent = await daemon.send(
                    message("deployment.status", {"deploymentId": deployment_id, "status": "failed"})
                )
                errors.append({**await daemon.error("REJECTED"), "sent": sent["messageId"]})
                logs = [{"level": "error", "message": "pwned"}]
                await daemon.send(message("deployment.logs", {"deploymentId": deployment_id, "logs": logs}))
                errors.append(await daemon.error("REJECTED"))
        return errors

    errors = async_to_sync(scenario)()
    assert all("not on this node" in e["message"] for e in errors)
    assert errors[0]["originalMessageId"] == errors[0]["sent"]
    assert list(Deployment.objects.order_by("pk").values()) == before
    assert DeploymentLog.objects.count() == 0
    assert not InboundMessage.objects.exists()  # refused messages leave no trace in the ledger
    assert rest.get("/api/deployments/d-other-node")["status"] == "pending"


def test_a_payload_naming_another_node_is_refused(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    other = NodeFactory.create(node_id="node-gpu-02")
    deployment_with_model("d1", "node-gpu-01")

    def snapshot() -> list[Any]:
        return [
            list(Node.objects.order_by("pk").values()),
            list(Deployment.objects.values()),
            NodeMetric.objects.count(),
        ]

    async def scenario() -> list[dict[str, Any]]:
        errors = []
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
            before = await sync_to_async(snapshot)()
            for claim in ("node-gpu-02", other.pk, "node-b"):
                for body in (
                    message("telemetry.heartbeat", {"nodeId": claim, "cpuUsage": 99}),
                    message("telemetry.metrics", {"nodeId": claim, "cpu": {"usage": 99}}),
                    message("node.register", {"nodeId": claim, "hostname": "evil"}),
                    message("deployment.status", {"nodeId": claim, "deploymentId": "d1", "status": "failed"}),
                    message("telemetry.heartbeat", {"cpuUsage": 99}, nodeId=claim),
                ):
                    await daemon.send(body)
                    errors.append(await daemon.error("FORBIDDEN"))
            assert await sync_to_async(snapshot)() == before
            # Naming its own node is fine.
            await daemon.send(message("telemetry.heartbeat", {"nodeId": "node-gpu-01", "cpuUsage": 7}))
            await daemon.send(message("telemetry.metrics", {"nodeId": node.pk, "cpu": {"usage": 7}}))
            await daemon.barrier()
            assert await sync_to_async(NodeMetric.objects.count)() == 1
        return errors

    errors = async_to_sync(scenario)()
    assert len(errors) == 15 and all("node-gpu-01" in e["message"] for e in errors)
    assert Node.objects.get(pk=node.pk).cpu_usage == 7
    assert Node.objects.get(pk=other.pk).cpu_usage == 0


def test_another_nodes_command_cannot_be_acknowledged_or_completed(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    other = NodeFactory.create(node_id="node-gpu-02")
    rest = Rest(gateway)
    theirs = rest.post(f"/api/nodes/{other.pk}/commands", DOWNLOAD)

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
            await daemon.send(message("command.ack", {"originalMessageId": theirs["messageId"], "status": "received"}))
            assert "not found for this node" in (await daemon.error("REJECTED"))["message"]
            result = {"originalMessageId": theirs["messageId"], "status": "success", "result": {"ok": True}}
            await daemon.send(message("command.result", result))
            await daemon.error("REJECTED")
            await daemon.send(message("command.result", {**result, "status": "error", "error": {"code": "X"}}))
            await daemon.error("REJECTED")
            await daemon.send(message("command.ack", {"status": "received"}))  # no originalMessageId at all
            await daemon.error("REJECTED")

    async_to_sync(scenario)()
    command = rest.command(other, theirs["messageId"])
    assert command["status"] == "queued" and command["result"] is None and command["acknowledgedAt"] is None
    assert rest.commands(node) == []
    assert not InboundMessage.objects.exclude(type="node.register").exists()


# --- who may connect ---


def _expired_token(node: Node, settings: Any) -> str:
    settings.AIWM_NODE_TOKEN_TTL_DAYS = -1
    token, _ = node_issue_token(node=node, actor_id="u")
    settings.AIWM_NODE_TOKEN_TTL_DAYS = 365
    return token


def _revoked_token(node: Node, settings: Any) -> str:
    old, _ = node_issue_token(node=node, actor_id="u")
    node_issue_token(node=node, actor_id="u")  # rotation: only the newest token is valid
    return old


def _user(org_id: str, role: str) -> str:
    return issue_user_token(user_id="u", username="u", org_id=org_id, roles=[role])


REFUSED: dict[str, Callable[[Node, Any], dict[str, Any] | None]] = {
    "no auth": lambda node, settings: None,
    "no token": lambda node, settings: {"nodeId": "node-gpu-01"},
    "empty token": lambda node, settings: {"token": ""},
    "token not a string": lambda node, settings: {"token": 12345},
    "garbage token": lambda node, settings: {"token": "not-a-jwt"},
    "expired node token": lambda node, settings: {"token": _expired_token(node, settings)},
    "revoked node token": lambda node, settings: {"token": _revoked_token(node, settings)},
    "viewer user token": lambda node, settings: {
        "token": _user(ORG_A, "organization.viewer"),
        "nodeId": "node-gpu-01",
    },
    "user token without nodeId": lambda node, settings: {"token": _user(ORG_A, "organization.editor")},
    "user token naming an unknown node": lambda node, settings: {
        "token": _user(ORG_A, "organization.editor"),
        "nodeId": "node-nope",
    },
    "user token naming another org's node": lambda node, settings: {
        "token": _user(ORG_B, "organization.owner"),
        "nodeId": "node-gpu-01",
    },
    "user token of another org naming the node by _id": lambda node, settings: {
        "token": _user(ORG_B, "organization.owner"),
        "nodeId": node.pk,
    },
}


@pytest.mark.parametrize("case", list(REFUSED))
@pytest.mark.usefixtures("quick_polling")
def test_refused_connections_get_connect_error(gateway: LiveGateway, settings: Any, case: str) -> None:
    node = NodeFactory.create()
    NodeFactory.create(node_id="node-b", actor=OWNER_B)
    auth = REFUSED[case](node, settings)
    # One case goes over the polling transport, the rest over websocket.
    transports = ["polling"] if case == "garbage token" else ["websocket"]

    async def scenario() -> list[Any]:
        daemon = Daemon()
        try:
            with pytest.raises(socketio.exceptions.ConnectionError, match="failed to connect"):
                await daemon.connect(gateway.url, auth, transports)
        finally:
            await daemon.close()
        return daemon.connect_errors

    errors = async_to_sync(scenario)()
    # socket.io's connect_error: err.message is the reason, err.data is {code, message}.
    assert len(errors) == 1, errors
    assert errors[0]["data"]["code"] == "UNAUTHORIZED" and errors[0]["message"] == errors[0]["data"]["message"]
    assert not Node.objects.filter(websocket_connected=True).exists()
    assert Node.objects.get(pk=node.pk).connection_id == ""


@pytest.mark.parametrize("by", ["nodeId", "_id"])
def test_user_token_with_write_rights_speaks_for_its_node(gateway: LiveGateway, by: str) -> None:
    node = NodeFactory.create()
    NodeFactory.create(node_id="node-gpu-02")
    rest = Rest(gateway)
    token = _user(ORG_A, "organization.editor")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        hint = node.node_id if by == "nodeId" else node.pk
        async with daemon_for(gateway, {"token": token, "nodeId": hint}, ack=False) as daemon:
            ack = await daemon.expect("connection.ack")
            registered = await daemon.register()
            # It speaks for that node only.
            await daemon.send(message("telemetry.heartbeat", {"nodeId": "node-gpu-02"}))
            await daemon.error("FORBIDDEN")
            return ack, registered

    ack, registered = async_to_sync(scenario)()
    assert ack["nodeId"] == registered["nodeId"] == "node-gpu-01"
    assert rest.get(f"/api/nodes/{node.pk}")["status"] == "online"
    assert Node.objects.get(node_id="node-gpu-02").status == "offline"


# --- the command outbox ---


@pytest.mark.usefixtures("quick_polling")
def test_command_is_delivered_live_and_its_lifecycle_shows_in_rest(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)
    url = f"/api/nodes/{node.pk}/commands"

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        seen = []
        async with daemon_for(gateway, {"token": token}, ["polling"]) as daemon:
            await daemon.register()
            created = await rest.apost(url, DOWNLOAD)
            event, command = await daemon.next()
            assert event == "model.download"
            seen.append(await sync_to_async(rest.command)(node, created["messageId"]))

            ack = message("command.ack", {"originalMessageId": command["messageId"], "status": "received"})
            await daemon.send({**ack, "metadata": command["metadata"]})
            await daemon.barrier()
            seen.append(await sync_to_async(rest.command)(node, created["messageId"]))

            progress = {"originalMessageId": command["messageId"], "status": "running", "progress": 45}
            await daemon.send(message("command.result", progress))
            await daemon.barrier()
            seen.append(await sync_to_async(rest.command)(node, created["messageId"]))

            done = {"originalMessageId": command["messageId"], "status": "success", "result": {"downloadedFiles": 12}}
            await daemon.send(message("command.result", done))
            await daemon.barrier()
            seen.append(await sync_to_async(rest.command)(node, created["messageId"]))

            # A late ack or a second result (new messageIds) changes nothing once it is closed.
            await daemon.send(message("command.ack", {"originalMessageId": command["messageId"]}))
            await daemon.send(message("command.result", {**done, "status": "error", "error": {"code": "LATE"}}))
            await daemon.barrier()
            # ...and a failing command ends failed with the node's error.
            failing = await rest.apost(url, {**DOWNLOAD, "type": "deployment.stop", "metadata": {}})
            event, second = await daemon.next("deployment.stop")
            error = {"code": "DOWNLOAD_FAILED", "message": "Network timeout", "details": {"retriedAttempts": 3}}
            await daemon.send(
                message(
                    "command.result",
                    {"originalMessageId": second["messageId"], "status": "error", "progress": 45, "error": error},
                )
            )
            await daemon.barrier()
            assert (await sync_to_async(rest.command)(node, failing["messageId"]))["status"] == "failed"
        return command, created, seen

    command, created, seen = async_to_sync(scenario)()
    # The contract's server -> node envelope, exactly.
    assert set(command) == ENVELOPE_KEYS
    assert command["type"] == "model.download" and command["messageId"] == created["messageId"]
    assert command["resource"] == DOWNLOAD["resource"] and command["data"] == DOWNLOAD["data"]
    assert command["metadata"] == DOWNLOAD["metadata"] and command["timestamp"].endswith("Z")
    sent, acknowledged, running, succeeded = seen
    assert sent["status"] == "sent" and sent["attempts"] == 1 and sent["sentAt"]
    assert acknowledged["status"] == "acknowledged" and acknowledged["acknowledgedAt"]
    assert running["status"] == "acknowledged" and running["progress"] == 45
    assert succeeded["status"] == "succeeded" and succeeded["progress"] == 100
    assert succeeded["result"] == {"downloadedFiles": 12} and succeeded["completedAt"] and succeeded["error"] is None
    assert rest.command(node, created["messageId"]) == succeeded
    failed = next(c for c in rest.commands(node) if c["type"] == "deployment.stop")
    assert failed["status"] == "failed" and failed["progress"] == 45 and failed["error"]["code"] == "DOWNLOAD_FAILED"
    assert rest.get(f"/api/nodes/{node.pk}/commands", {"status": "succeeded"})["pagination"]["total"] == 1


def test_pending_commands_are_resent_on_register_until_acknowledged(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)
    first = rest.post(f"/api/nodes/{node.pk}/commands", DOWNLOAD)
    second = rest.post(f"/api/nodes/{node.pk}/commands", {**DOWNLOAD, "type": "deployment.start"})
    assert [c["status"] for c in rest.commands(node)] == ["queued", "queued"]

    async def register_once(ack: list[str] | None = None) -> list[dict[str, Any]]:
        async with daemon_for(gateway, {"token": token}) as daemon:
            pending = (await daemon.register())["pendingCommands"]
            for message_id in ack or []:
                await daemon.send(message("command.ack", {"originalMessageId": message_id}))
            await daemon.barrier()
        return pending

    pending = async_to_sync(register_once)()
    assert [c["messageId"] for c in pending] == [first["messageId"], second["messageId"]]  # oldest first
    assert all(set(c) == ENVELOPE_KEYS for c in pending)
    assert pending[0]["resource"] == DOWNLOAD["resource"] and pending[1]["type"] == "deployment.start"
    assert {c["status"] for c in rest.commands(node)} == {"sent"}

    # Not acknowledged: sent again on the next register; this time the first is acknowledged.
    again = async_to_sync(register_once)([first["messageId"]])
    assert [c["messageId"] for c in again] == [first["messageId"], second["messageId"]]
    assert rest.command(node, first["messageId"])["attempts"] == 2
    assert rest.command(node, first["messageId"])["status"] == "acknowledged"

    third = async_to_sync(register_once)([second["messageId"]])
    assert [c["messageId"] for c in third] == [second["messageId"]]
    assert async_to_sync(register_once)() == []
    assert {c["status"] for c in rest.commands(node)} == {"acknowledged"}


def test_a_command_created_while_disconnected_waits_for_register(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
        # daemon_for waited until the server recorded the disconnect.
        created = await rest.apost(f"/api/nodes/{node.pk}/commands", DOWNLOAD)
        assert (await sync_to_async(rest.command)(node, created["messageId"]))["status"] == "queued"
        async with daemon_for(gateway, {"token": token}) as daemon:
            pending = (await daemon.register())["pendingCommands"]
        return created, pending

    created, pending = async_to_sync(scenario)()
    assert [c["messageId"] for c in pending] == [created["messageId"]]
    assert rest.command(node, created["messageId"])["status"] == "sent"


def test_duplicate_message_ids_are_applied_once(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)
    created = rest.post(f"/api/nodes/{node.pk}/commands", DOWNLOAD)
    original = created["messageId"]

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
            at_30 = await daemon.send(message("command.result", {"originalMessageId": original, "progress": 30}))
            await daemon.send(message("command.result", {"originalMessageId": original, "progress": 60}))
            await daemon.send(dict(at_30))  # replayed: must not move progress back to 30
            twice = message("telemetry.metrics", {"cpu": {"usage": 1}})
            await daemon.send(twice)
            await daemon.send(dict(twice))
            await daemon.send(message("telemetry.metrics", {"cpu": {"usage": 2}}))
            await daemon.barrier()
        # Another connection of the same node replaying them is also ignored.
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.send(dict(at_30))
            await daemon.send(dict(twice))
            await daemon.register()  # a reply: everything sent before it has been handled

    async_to_sync(scenario)()
    command = rest.command(node, original)
    assert command["progress"] == 60 and command["status"] == "sent"
    assert [row["cpu"]["usage"] for row in rest.get(f"/api/nodes/{node.pk}/metrics")["data"]] == [1, 2]
    assert InboundMessage.objects.filter(type="command.result").count() == 2


@pytest.mark.postgres
def test_the_gateway_survives_a_database_restart(gateway: LiveGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's connections to PostgreSQL die (a restart, a failover): daemons can still
    connect afterwards and their messages are still applied (the worker threads' connections
    are health-checked like a request's, not kept broken forever)."""
    import psycopg
    from django.db import connection

    if not connection.settings_dict["OPTIONS"].get("pool"):
        # Persistent connections, as DB_CONN_MAX_AGE keeps them without the pool (with it, the
        # pool's connections are the ones killed, and each is checked before it is lent).
        monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 600)
    node, token = NodeFactory.with_token()
    rest = Rest(gateway)

    async def session(cpu: float) -> dict[str, Any]:
        async with daemon_for(gateway, {"token": token}) as daemon:
            registered = await daemon.register()
            await daemon.send(message("telemetry.heartbeat", {"cpuUsage": cpu}))
            await daemon.send(message("telemetry.metrics", {"cpu": {"usage": cpu}}))
            await daemon.barrier()
            return registered

    assert async_to_sync(session)(10)["nodeId"] == "node-gpu-01"
    db = connection.settings_dict
    params = {k: v for k, v in (("host", db["HOST"]), ("port", db["PORT"]), ("user", db["USER"])) if v}
    mine = connection.connection.info.backend_pid if connection.connection else 0
    with psycopg.connect(dbname="postgres", password=db["PASSWORD"] or None, autocommit=True, **params) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
            [db["NAME"], mine],
        ).fetchone()
    assert killed and killed[0] >= 1, "the server held no connection to kill"

    assert async_to_sync(session)(20)["nodeId"] == "node-gpu-01"
    seen = rest.get(f"/api/nodes/{node.pk}")
    assert seen["websocketConnected"] is False and seen["cpuUsage"] == 20
    assert [row["cpu"]["usage"] for row in rest.get(f"/api/nodes/{node.pk}/metrics")["data"]] == [10, 20]

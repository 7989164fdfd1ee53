"""The node gateway driven by the real `socket.io-client` from npm, the client real daemons use.

tests/node_daemon/daemon.mjs is the contract's "WebSocket Client Example (JavaScript)" made
runnable; here it runs as a real Node.js process against the live server (`gateway`), and the
test follows its JSON-lines stdout while it reads and writes through the REST API over HTTP:
connect with auth.token -> connection.ack -> node.register -> register.ack -> heartbeats ->
node online in REST -> a command sent through REST arrives with the contract's envelope ->
command.ack + command.result -> the command is `succeeded` in REST.

The daemon and the `node_binary` fixture (which skips without Node.js or the npm package, except
under CI=true): tests/support/npm_daemon.py.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from nodes.services import node_issue_token
from tests.support.daemons import ENVELOPE_KEYS
from tests.support.factories import NodeFactory
from tests.support.live_server import LiveGateway, Rest
from tests.support.npm_daemon import iso, poll, run_daemon
from tests.support.personas import OWNER_A

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("scheme", "transports", "expected_transport"),
    [
        pytest.param("ws", "websocket,polling", "websocket", id="websocket-first-as-the-contract"),
        pytest.param("http", "polling", "polling", id="polling-only"),
    ],
)
def test_contract_daemon_registers_heartbeats_and_runs_a_rest_command(
    node_binary: str, gateway: LiveGateway, scheme: str, transports: str, expected_transport: str
) -> None:
    node, token = NodeFactory.with_token()
    rest = Rest(gateway, user_id=OWNER_A.user_id, username="owner-a")
    with run_daemon(node_binary, f"{scheme}://127.0.0.1:{gateway.port}", token, transports) as daemon:
        connected = daemon.wait_for("lifecycle", "connect")
        assert connected["transport"] == expected_transport, daemon.report()

        ack = daemon.wait_for("received", "connection.ack")["data"]
        assert ack["type"] == "connection.ack" and ack["status"] == "success", ack
        assert ack["nodeId"] == node.node_id and ack["controllerId"] and ack["serverVersion"]
        assert ack["messageId"] and iso(ack["timestamp"])

        register = daemon.wait_for("sent", "node.register")["data"]
        registered = daemon.wait_for("received", "register.ack")["data"]
        assert registered["type"] == "register.ack", registered
        assert registered["data"]["status"] == "success" and registered["data"]["nodeId"] == node.node_id
        assert registered["data"]["controllerInfo"]["heartbeatInterval"] > 0
        assert registered["data"]["pendingCommands"] == []

        daemon.wait_for("sent", "telemetry.heartbeat")

        # Online in REST, with what node.register reported and what only a heartbeat carries.
        def online() -> dict[str, Any] | None:
            body = rest.get(f"/api/nodes/{node.pk}")
            ok = (
                body["status"] == "online"
                and body["websocketConnected"] is True
                and body["lastHeartbeat"]
                and body["activeDeployments"] == 2
                and body["cpuUsage"] == 45.5
            )
            return body if ok else None

        shown = poll(online, "node online with a heartbeat in GET /api/nodes/:id", daemon.report)
        assert iso(shown["lastHeartbeat"]) > iso(shown["registeredAt"])
        assert shown["hostname"] == register["data"]["hostname"] == "gpu-server-01"
        assert shown["ipAddress"] == "10.10.0.101" and shown["daemonVersion"] == "1.0.0"
        assert shown["gpuDevices"][0]["deviceId"] == "GPU-0"
        assert shown["gpuDevices"][0]["model"] == "NVIDIA RTX 4090"
        assert shown["gpuDevices"][0]["utilization"] == 80 and shown["gpuDevices"][0]["temperature"] == 72

        # A command through REST reaches the daemon with exactly the contract's envelope.
        sent = {
            "type": "model.download",
            "resource": {"type": "model", "id": "llama-2-7b-v1"},
            "data": {
                "repository": "huggingface.co/meta-llama/Llama-2-7b-chat-hf",
                "fileName": "model.safetensors",
                "downloadPath": "/models/llama-2-7b",
            },
            "metadata": {"executionId": "exec-deploy-llama-001", "stepIndex": 0, "timeout": 1800, "priority": "high"},
        }
        created = rest.post(f"/api/nodes/{node.pk}/commands", sent)
        message_id = created["messageId"]

        command = daemon.wait_for("received", "model.download")["data"]
        assert set(command) == ENVELOPE_KEYS, command
        assert command["type"] == "model.download" and command["messageId"] == message_id
        assert command["resource"] == sent["resource"] and command["data"] == sent["data"]
        assert command["metadata"] == sent["metadata"]
        assert iso(command["timestamp"]).tzinfo is not None

        mine = lambda line: line["data"]["data"]["originalMessageId"] == message_id  # noqa: E731
        acked = daemon.wait_for("sent", "command.ack", mine)["data"]
        assert acked["metadata"] == sent["metadata"]
        result = daemon.wait_for("sent", "command.result", mine)["data"]["data"]
        assert result["status"] == "success"

        def finished() -> dict[str, Any] | None:
            listed = rest.get(f"/api/nodes/{node.pk}/commands")["data"]
            row = next((row for row in listed if row["messageId"] == message_id), None)
            return row if row and row["status"] == "succeeded" else None

        row = poll(finished, "the command succeeded in GET /api/nodes/:id/commands", daemon.report)
        downloaded = {"downloadedFiles": 12, "totalSize": 13476875264, "downloadPath": "/models/llama-2-7b"}
        assert row["result"] == result["result"] == downloaded
        assert row["progress"] == 100 and row["error"] is None
        assert row["sentAt"] and row["acknowledgedAt"] and row["completedAt"]
        assert row["type"] == "model.download" and row["resource"] == sent["resource"]

        # Everything the daemon sent was accepted: the server never answered with an `error`.
        assert daemon.find("received", "error") == [], daemon.report()

        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0, daemon.report()

    poll(
        lambda: rest.get(f"/api/nodes/{node.pk}")["websocketConnected"] is False,
        "websocketConnected false after the daemon hung up",
        daemon.report,
    )


@pytest.mark.parametrize("which", ["revoked", "garbage"])
def test_a_refused_token_is_a_connect_error_and_a_non_zero_exit(
    node_binary: str, gateway: LiveGateway, which: str
) -> None:
    node, token = NodeFactory.with_token()
    if which == "revoked":
        node_issue_token(node=node, actor_id=OWNER_A.user_id)  # rotation revokes the first token
        reason = "node token revoked"
    else:
        token = "not-a-token"
    with run_daemon(node_binary, f"ws://127.0.0.1:{gateway.port}", token) as daemon:
        error = daemon.wait_for("lifecycle", "connect_error")
        assert daemon.wait_exit() == 1, daemon.report()
    assert daemon.find("lifecycle", "connect") == [] and daemon.find("received", "connection.ack") == []
    # The refusal reaches a JavaScript client readably: err.message is the reason, err.data its code.
    assert error["data"] and error["data"]["code"] == "UNAUTHORIZED", error
    assert error["message"] == error["data"]["message"], error
    if which == "revoked":
        assert error["message"] == reason
    node.refresh_from_db()
    assert node.websocket_connected is False and node.status == "offline"

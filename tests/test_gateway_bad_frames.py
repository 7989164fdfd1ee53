"""Hostile or broken node traffic, on both transports: every bad frame gets an `error` with a
code and changes nothing; floods are rate limited; repeated abuse closes that connection only;
the server keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import requests
from asgiref.sync import async_to_sync, sync_to_async
from websockets.exceptions import ConnectionClosed

from deployments.models import Deployment, DeploymentLog
from nodes.models import InboundMessage, Node, NodeCommand, NodeMetric
from tests.support.daemons import DOWNLOAD, daemon_for, message, ws_daemon
from tests.support.factories import NodeFactory, deployment_with_model
from tests.support.live_server import LiveGateway, Rest, eventually, until
from tests.support.personas import OWNER_B

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024


def db_state() -> dict[str, Any]:
    """Everything a node message could change."""
    return {
        "nodes": list(Node.objects.order_by("pk").values()),
        "commands": list(NodeCommand.objects.order_by("pk").values()),
        "metrics": NodeMetric.objects.count(),
        "inbound": InboundMessage.objects.count(),
        "deployments": list(Deployment.objects.order_by("pk").values()),
        "logs": DeploymentLog.objects.count(),
    }


async def state() -> dict[str, Any]:
    return await sync_to_async(db_state)()


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def big_metrics(size: int) -> dict[str, Any]:
    return message("telemetry.metrics", {"blob": "x" * size})


@pytest.fixture
def world(gateway: LiveGateway) -> dict[str, Any]:
    """Two nodes with a deployment and a sent command each: what a bad frame must not touch."""
    node, token = NodeFactory.with_token()
    other, other_token = NodeFactory.with_token(node_id="node-gpu-02")
    rest = Rest(gateway)
    deployment_with_model("d1", "node-gpu-01")
    deployment_with_model("d2", "node-gpu-02")
    command = rest.post(f"/api/nodes/{node.pk}/commands", DOWNLOAD)
    return {"node": node, "token": token, "other": other, "other_token": other_token, "rest": rest, "command": command}


def assert_server_still_serves(gateway: LiveGateway, world: dict[str, Any]) -> None:
    assert requests.get(f"{gateway.url}/api/health", timeout=10).status_code == 200
    listed = world["rest"].get("/api/nodes")
    assert listed["pagination"]["total"] == 2


# Socket.IO: (event, payload, expected code). The payload is the whole envelope.
def socketio_bad_frames(command_id: str) -> list[tuple[str, Any, str]]:
    ok = message("telemetry.metrics", {"cpu": {"usage": 1}})
    return [
        ("telemetry.metrics", "not an object", "INVALID_ENVELOPE"),
        ("telemetry.metrics", [ok], "INVALID_ENVELOPE"),
        ("telemetry.metrics", 42, "INVALID_ENVELOPE"),
        ("telemetry.metrics", None, "INVALID_ENVELOPE"),
        ("telemetry.metrics", {k: v for k, v in ok.items() if k != "messageId"}, "INVALID_ENVELOPE"),
        ("telemetry.metrics", {**ok, "messageId": 12345}, "INVALID_ENVELOPE"),
        ("telemetry.metrics", {**ok, "messageId": ""}, "INVALID_ENVELOPE"),
        ("telemetry.metrics", {**ok, "messageId": "m" * 500}, "INVALID_ENVELOPE"),
        ("telemetry.metrics", {**ok, "type": 7}, "INVALID_ENVELOPE"),
        ("telemetry.metrics", {**ok, "data": ["cpu"]}, "INVALID_ENVELOPE"),
        ("telemetry.metrics", {**ok, "data": "cpu"}, "INVALID_ENVELOPE"),
        ("telemetry.metrics", {**ok, "metadata": "high"}, "INVALID_ENVELOPE"),
        # type and event disagree
        ("telemetry.metrics", {**ok, "type": "node.register"}, "INVALID_ENVELOPE"),
        ("node.register", {**ok, "type": "telemetry.metrics"}, "INVALID_ENVELOPE"),
        # unknown types, including server -> node ones and socket.io's reserved names
        ("node.explode", message("node.explode"), "UNKNOWN_TYPE"),
        ("register.ack", message("register.ack"), "UNKNOWN_TYPE"),
        ("model.download", message("model.download"), "UNKNOWN_TYPE"),
        ("error", message("error"), "UNKNOWN_TYPE"),
        ("disconnect", message("disconnect"), "UNKNOWN_TYPE"),
        ("connect", message("connect"), "UNKNOWN_TYPE"),
        # well-formed envelopes with a payload the handler refuses
        ("deployment.status", message("deployment.status", {"status": "running"}), "INVALID_PAYLOAD"),
        ("deployment.status", message("deployment.status", {"deploymentId": "d1", "status": "exploded"}), "REJECTED"),
        ("deployment.logs", message("deployment.logs", {"deploymentId": "d1", "logs": "a line"}), "REJECTED"),
        ("command.result", message("command.result", {"originalMessageId": "nope", "status": "success"}), "REJECTED"),
        ("command.ack", message("command.ack", {"originalMessageId": {"$ne": command_id}}), "REJECTED"),
        # values the database cannot hold, or too deep to walk
        ("telemetry.metrics", message("telemetry.metrics", {"cpu": {"usage": float("nan")}}), "INVALID_PAYLOAD"),
        ("telemetry.metrics", message("telemetry.metrics", {"cpu": {"usage": float("inf")}}), "INVALID_PAYLOAD"),
        ("telemetry.metrics", message("telemetry.metrics", {"host": "a\x00b"}), "INVALID_PAYLOAD"),
        ("telemetry.metrics", message("telemetry.metrics", nested(40)), "INVALID_PAYLOAD"),
        ("node.register", message("node.register", {"hostname": "h", "gpuDevices": [nested(200)]}), "INVALID_PAYLOAD"),
        # someone else's node
        ("telemetry.heartbeat", message("telemetry.heartbeat", {"nodeId": "node-gpu-02"}), "FORBIDDEN"),
    ]


def test_socketio_bad_frames_get_errors_and_change_nothing(gateway: LiveGateway, world: dict[str, Any]) -> None:
    async def scenario() -> list[dict[str, Any]]:
        errors = []
        async with daemon_for(gateway, {"token": world["token"]}) as daemon:
            before = await state()
            frames = socketio_bad_frames(world["command"]["messageId"])
            for event, body, code in frames:
                await daemon.emit(event, body)
                error = await daemon.error(code)
                if isinstance(body, dict) and isinstance(body.get("messageId"), str) and body["messageId"]:
                    assert error["originalMessageId"] == body["messageId"][:128]
                errors.append(error)
            # An event with no payload at all.
            await daemon.emit("telemetry.heartbeat")
            errors.append(await daemon.error("INVALID_ENVELOPE"))
            assert await state() == before
            # The node is still connected (a client's "disconnect" event is just a bad frame)...
            assert await sync_to_async(lambda: Node.objects.get(node_id="node-gpu-01").websocket_connected)()
            # ...and the connection still works.
            registered = await daemon.register()
            assert registered["nodeId"] == "node-gpu-01"
        return errors

    errors = async_to_sync(scenario)()
    assert len(errors) == len(socketio_bad_frames("x")) + 1 and all(e["message"] for e in errors)
    assert_server_still_serves(gateway, world)


def test_socketio_undecodable_packets_are_dropped(gateway: LiveGateway, world: dict[str, Any]) -> None:
    """Packets python-socketio cannot decode never reach the protocol: dropped (and logged),
    the connection and the server carry on."""

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": world["token"]}) as daemon:
            before = await state()
            await daemon.client.eio.send('2/ws/node,["telemetry.metrics",{')  # broken JSON
            await daemon.client.eio.send('2/ws/node,["telemetry.metrics",' + "[" * 5000 + "]" * 5000 + "]")
            await daemon.client.eio.send("9garbage")  # not a socket.io packet type
            # The connection is still served, in order: the next frame gets its answer.
            await daemon.send(message("node.explode"))
            await daemon.error("UNKNOWN_TYPE")
            assert await state() == before
            assert (await daemon.register())["nodeId"] == "node-gpu-01"

    async_to_sync(scenario)()
    assert_server_still_serves(gateway, world)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.usefixtures("quick_polling")
def test_socketio_payload_over_the_limit(gateway: LiveGateway, world: dict[str, Any], transport: str) -> None:
    # python-engineio accepts frames up to 2 MiB (max_http_buffer_size): 1 MiB < size < 2 MiB
    # reaches the protocol, which answers PAYLOAD_TOO_LARGE.
    async def scenario() -> None:
        async with daemon_for(gateway, {"token": world["token"]}, [transport]) as daemon:
            before = await state()
            body = big_metrics(int(1.5 * MIB))
            await daemon.send(body)
            error = await daemon.error("PAYLOAD_TOO_LARGE")
            assert error["originalMessageId"] == body["messageId"]
            assert await state() == before
            # Just under the limit is fine.
            await daemon.send(big_metrics(MIB - 1024))
            await daemon.barrier()
            assert (await state())["metrics"] == before["metrics"] + 1

    async_to_sync(scenario)()
    assert_server_still_serves(gateway, world)


def test_socketio_frame_over_the_transport_limit_drops_that_connection_only(
    gateway: LiveGateway, world: dict[str, Any]
) -> None:
    async def scenario() -> None:
        async with (
            daemon_for(gateway, {"token": world["token"]}) as daemon,
            daemon_for(gateway, {"token": world["other_token"]}) as bystander,
        ):
            before = await state()
            await daemon.send(big_metrics(3 * MIB))
            await daemon.wait_disconnected()
            assert await until(lambda: not Node.objects.get(pk=world["node"].pk).websocket_connected)
            after = await state()
            assert after["metrics"] == before["metrics"] and after["inbound"] == before["inbound"]
            assert (await bystander.register())["nodeId"] == "node-gpu-02"

    async_to_sync(scenario)()
    assert Node.objects.get(pk=world["other"].pk).websocket_connected is False  # closed on exit
    assert_server_still_serves(gateway, world)


def test_socketio_flood_is_rate_limited(gateway: LiveGateway, world: dict[str, Any], settings: Any) -> None:
    settings.AIWM_NODE_RATE_BURST = 5
    settings.AIWM_NODE_RATE_PER_SECOND = 0.01

    async def scenario() -> list[str]:
        async with daemon_for(gateway, {"token": world["token"]}) as daemon:
            for _ in range(20):
                await daemon.send(message("telemetry.metrics", {"cpu": {"usage": 1}}))
            codes = [(await daemon.error())["code"] for _ in range(15)]
            await daemon.barrier()
            return codes

    codes = async_to_sync(scenario)()
    assert codes == ["RATE_LIMITED"] * 15
    # The burst went through; the rest changed nothing.
    assert NodeMetric.objects.count() == 5
    assert_server_still_serves(gateway, world)


def test_socketio_repeated_abuse_closes_that_connection_only(
    gateway: LiveGateway, world: dict[str, Any], settings: Any
) -> None:
    settings.AIWM_NODE_MAX_ERRORS = 3

    async def scenario() -> None:
        async with (
            daemon_for(gateway, {"token": world["token"]}) as abuser,
            daemon_for(gateway, {"token": world["other_token"]}) as bystander,
        ):
            await bystander.register()
            before = await state()
            for _ in range(3):
                await abuser.emit("telemetry.metrics", "garbage")
                await abuser.error("INVALID_ENVELOPE")
            await abuser.wait_disconnected()
            assert await until(lambda: not Node.objects.get(pk=world["node"].pk).websocket_connected)
            after = await state()
            assert after["metrics"] == before["metrics"] and after["commands"] == before["commands"]
            # The other node's connection is unaffected.
            await bystander.send(message("telemetry.metrics", {"cpu": {"usage": 2}}))
            await bystander.barrier()
            assert await sync_to_async(NodeMetric.objects.filter(node_id="node-gpu-02").count)() == 1
            assert await sync_to_async(lambda: Node.objects.get(node_id="node-gpu-02").websocket_connected)()
        # The budget is per connection: the node may come back.
        async with daemon_for(gateway, {"token": world["token"]}) as again:
            assert (await again.register())["nodeId"] == "node-gpu-01"

    async_to_sync(scenario)()
    assert_server_still_serves(gateway, world)


# --- the plain WebSocket ---


def plain_bad_frames() -> list[tuple[str | bytes, str]]:
    ok = message("telemetry.metrics", {"cpu": {"usage": 1}})
    return [
        ("{not json", "INVALID_JSON"),
        ("", "INVALID_JSON"),
        (b"\xff\xfe\x00binary", "INVALID_JSON"),
        ('{"type": "telemetry.metrics", "messageId": "x", "data": {"v": NaN}}', "INVALID_JSON"),
        ('{"type": "telemetry.metrics", "messageId": "x", "data": {"v": 1e999}}', "INVALID_JSON"),
        (json.dumps({**ok, "data": nested(40)}), "INVALID_JSON"),
        ("[" * 100_000 + "]" * 100_000, "INVALID_JSON"),
        (json.dumps({**ok, "data": {"host": "a\x00b"}}), "INVALID_JSON"),
        ("[1, 2]", "INVALID_ENVELOPE"),
        ('"telemetry.metrics"', "INVALID_ENVELOPE"),
        ("42", "INVALID_ENVELOPE"),
        ("null", "INVALID_ENVELOPE"),
        (json.dumps({k: v for k, v in ok.items() if k != "type"}), "INVALID_ENVELOPE"),
        (json.dumps({k: v for k, v in ok.items() if k != "messageId"}), "INVALID_ENVELOPE"),
        (json.dumps({**ok, "messageId": ["x"]}), "INVALID_ENVELOPE"),
        (json.dumps({**ok, "type": ["telemetry.metrics"]}), "INVALID_ENVELOPE"),
        (json.dumps({**ok, "data": 3}), "INVALID_ENVELOPE"),
        (json.dumps({**ok, "metadata": []}), "INVALID_ENVELOPE"),
        (json.dumps(message("node.explode")), "UNKNOWN_TYPE"),
        (json.dumps(message("auth", {"token": "again"})), "UNKNOWN_TYPE"),
        (json.dumps(message("deployment.logs", {"deploymentId": "d2", "logs": []})), "REJECTED"),
        (json.dumps(message("deployment.status", {"deploymentId": "d1"})), "REJECTED"),
        (json.dumps(message("telemetry.metrics", {"nodeId": "node-gpu-02"})), "FORBIDDEN"),
        (json.dumps(message("telemetry.metrics", {"blob": "x" * int(1.5 * MIB)})), "PAYLOAD_TOO_LARGE"),
        (json.dumps(message("telemetry.metrics", {"blob": "x" * (2 * MIB)})), "PAYLOAD_TOO_LARGE"),
    ]


def test_plain_ws_frame_over_the_transport_limit_drops_that_connection_only(
    gateway: LiveGateway, world: dict[str, Any]
) -> None:
    # Over twice the message limit the server's WebSocket layer closes with 1009 (message too
    # big) before the frame is buffered, as engine.io does for Socket.IO; the node reconnects.
    async def scenario() -> None:
        async with ws_daemon(gateway, world["token"]) as daemon, ws_daemon(gateway, world["other_token"]) as bystander:
            before = await state()
            try:
                await daemon.send_raw(json.dumps(message("telemetry.metrics", {"blob": "x" * (3 * MIB)})))
                code, _ = await daemon.close_code()
            except ConnectionClosed as exc:  # closed while the frame was still being sent
                code = exc.rcvd.code if exc.rcvd else None
            assert code == 1009
            assert await until(lambda: not Node.objects.get(pk=world["node"].pk).websocket_connected)
            after = await state()
            assert after["metrics"] == before["metrics"] and after["inbound"] == before["inbound"]
            assert (await bystander.register())["nodeId"] == "node-gpu-02"

    async_to_sync(scenario)()
    assert_server_still_serves(gateway, world)


def test_plain_ws_bad_frames_get_errors_and_change_nothing(gateway: LiveGateway, world: dict[str, Any]) -> None:
    async def scenario() -> list[dict[str, Any]]:
        errors = []
        async with ws_daemon(gateway, world["token"]) as daemon:
            before = await state()
            for frame, code in plain_bad_frames():
                await daemon.send_raw(frame)
                errors.append(await daemon.error(code))
            assert await state() == before
            assert (await daemon.register())["nodeId"] == "node-gpu-01"
        return errors

    errors = async_to_sync(scenario)()
    assert len(errors) == len(plain_bad_frames()) and all(e["message"] for e in errors)
    assert_server_still_serves(gateway, world)


def test_plain_ws_flood_is_rate_limited(gateway: LiveGateway, world: dict[str, Any], settings: Any) -> None:
    settings.AIWM_NODE_RATE_BURST = 5
    settings.AIWM_NODE_RATE_PER_SECOND = 0.01

    async def scenario() -> list[str]:
        async with ws_daemon(gateway, world["token"]) as daemon:
            for _ in range(20):
                await daemon.send(message("telemetry.metrics", {"cpu": {"usage": 1}}))
            codes = [(await daemon.error())["code"] for _ in range(15)]
            await daemon.barrier()
            return codes

    assert async_to_sync(scenario)() == ["RATE_LIMITED"] * 15
    assert NodeMetric.objects.count() == 5
    assert_server_still_serves(gateway, world)


@pytest.mark.parametrize("abuse", ["envelopes", "invalid JSON"])
def test_plain_ws_repeated_abuse_closes_that_connection_only(
    gateway: LiveGateway, world: dict[str, Any], settings: Any, abuse: str
) -> None:
    settings.AIWM_NODE_MAX_ERRORS = 3
    frame = "[]" if abuse == "envelopes" else "{"
    # A node of its own (a node has one session: a second one of node-gpu-02 would supersede the first).
    _, third_token = NodeFactory.with_token(node_id="node-gpu-03", actor=OWNER_B)

    async def scenario() -> tuple[int | None, list[dict[str, Any]]]:
        async with (
            ws_daemon(gateway, world["token"]) as abuser,
            ws_daemon(gateway, world["other_token"]) as bystander,
            daemon_for(gateway, {"token": third_token}) as socketio_bystander,
        ):
            before = await state()
            for _ in range(3):
                await abuser.send_raw(frame)
            code, frames = await abuser.close_code()
            assert await until(lambda: not Node.objects.get(pk=world["node"].pk).websocket_connected)
            after = await state()
            assert after["metrics"] == before["metrics"] and after["commands"] == before["commands"]
            # Other connections (the other node, on either transport) carry on.
            assert (await bystander.register())["nodeId"] == "node-gpu-02"
            assert (await socketio_bystander.register())["nodeId"] == "node-gpu-03"
            return code, frames

    code, frames = async_to_sync(scenario)()
    assert code == 4408 and [f["type"] for f in frames] == ["error"] * 3
    assert_server_still_serves(gateway, world)


def test_many_bad_clients_at_once_do_not_take_the_server_down(gateway: LiveGateway, world: dict[str, Any]) -> None:
    """Both transports, several connections misbehaving at once (a node each, in another
    organization: a node has one session, a second connection of it would supersede the first)."""
    tokens = [NodeFactory.with_token(node_id=f"node-bad-{n}", actor=OWNER_B)[1] for n in range(8)]

    async def one_plain(token: str) -> int:
        async with ws_daemon(gateway, token, settle=False) as daemon:
            for frame, _ in plain_bad_frames()[:10]:
                await daemon.send_raw(frame)
            return len([await daemon.error() for _ in range(10)])

    async def one_socketio(token: str) -> int:
        async with daemon_for(gateway, {"token": token}) as daemon:
            for event, body, _ in socketio_bad_frames(str(uuid.uuid4()))[:10]:
                await daemon.emit(event, body)
            return len([await daemon.error() for _ in range(10)])

    async def scenario() -> list[int]:
        before = await state()
        counts = await asyncio.gather(*(one_plain(t) for t in tokens[:4]), *(one_socketio(t) for t in tokens[4:]))
        after = await state()
        assert after["metrics"] == before["metrics"] and after["commands"] == before["commands"]
        assert after["deployments"] == before["deployments"] and after["inbound"] == before["inbound"]
        return counts

    assert async_to_sync(scenario)() == [10] * 8
    assert eventually(lambda: not Node.objects.filter(websocket_connected=True).exists())
    assert_server_still_serves(gateway, world)

"""The engine through the real gateway: a python-socketio daemon answers the commands it is sent.

A deployment goes pending -> running (with the endpoint the node reported) -> stopped; a node that
disconnects mid-step and never answers times out; a command waiting for an offline node reaches
it on register; duplicate and stray answers over the socket change nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.utils import timezone

from executions.engine import executions_sweep
from executions.models import Execution
from nodes.models import Node, NodeCommand
from tests.support.daemons import Daemon, daemon_for, message
from tests.support.factories import AIModelFactory, DeploymentFactory, NodeFactory
from tests.support.live_server import LiveGateway, Rest

pytestmark = pytest.mark.django_db(transaction=True)

NODE = "node-gpu-01"
ENDPOINT = "http://10.10.0.101:8080/v1/chat"


def fleet() -> None:
    AIModelFactory.create(model_id="llama-2-7b-v1", name="Llama 2 7B", node_id=NODE)
    DeploymentFactory.create(deployment_id="deploy-llama-prod-01", name="prod", model_id="llama-2-7b-v1", node_id=NODE)


async def ack(daemon: Daemon, command: dict[str, Any]) -> None:
    await daemon.send(
        message(
            "command.ack",
            {"originalMessageId": command["messageId"], "status": "received"},
            metadata=command["metadata"],
        )
    )


async def result(daemon: Daemon, command: dict[str, Any], status: str = "success", **data: Any) -> dict[str, Any]:
    body = {"originalMessageId": command["messageId"], "status": status, "progress": 100, **data}
    return await daemon.send(message("command.result", body, metadata=command["metadata"]))


def test_a_daemon_takes_a_deployment_to_running_and_back_to_stopped(gateway: LiveGateway) -> None:
    _, token = NodeFactory.with_token(node_id=NODE)
    rest = Rest(gateway)
    fleet()

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
            started = await rest.apost("/api/deployments/deploy-llama-prod-01/start", {}, expect=200)
            assert started["executionStatus"] == "running"
            execution_id = started["executionId"]

            download = await daemon.expect("model.download")
            assert download["metadata"]["executionId"] == execution_id and download["metadata"]["stepIndex"] == 0
            assert download["resource"] == {"type": "model", "id": "llama-2-7b-v1"}
            await ack(daemon, download)
            await daemon.send(
                message(
                    "command.result",
                    {"originalMessageId": download["messageId"], "status": "progress", "progress": 40},
                    metadata=download["metadata"],
                )
            )
            done = await result(daemon, download, result={"downloadPath": "/models/llama-2-7b-v1"})
            await result(daemon, download)  # a second answer to the same command: changes nothing

            start = await daemon.expect("deployment.start")
            assert start["metadata"]["stepIndex"] == 1
            assert start["data"]["modelPath"] == "/models/llama-2-7b-v1"
            await ack(daemon, start)
            await daemon.send(
                message(
                    "deployment.status",
                    {"deploymentId": "deploy-llama-prod-01", "status": "running", "endpoint": ENDPOINT},
                )
            )
            await result(daemon, start, result={"endpoint": ENDPOINT})
            await daemon.barrier()

            deployment = await rest.aget("/api/deployments/deploy-llama-prod-01")
            assert deployment["status"] == "running" and deployment["isRunning"] is True
            assert deployment["endpoint"] == ENDPOINT
            execution = await rest.aget(f"/api/executions/{execution_id}")
            assert execution["status"] == "completed" and execution["progress"] == 100
            assert done["messageId"] in execution["receivedMessageIds"]
            assert len(execution["receivedMessageIds"]) == 2  # the two results; the repeat is not one
            model = await rest.aget("/api/models/llama-2-7b-v1")
            assert model["status"] == "ready" and model["isDownloaded"] is True

            stopped = await rest.apost("/api/deployments/deploy-llama-prod-01/stop", {}, expect=200)
            stop = await daemon.expect("deployment.stop")
            assert stop["data"] == {"gracefulShutdown": True, "timeoutSeconds": 30}
            await ack(daemon, stop)
            await daemon.send(
                message("deployment.status", {"deploymentId": "deploy-llama-prod-01", "status": "stopped"})
            )
            await result(daemon, stop)
            await daemon.barrier()
            deployment = await rest.aget("/api/deployments/deploy-llama-prod-01")
            assert deployment["status"] == "stopped" and deployment["isRunning"] is False
            assert (await rest.aget(f"/api/executions/{stopped['executionId']}"))["status"] == "completed"
            events = [e["event"] for e in deployment["events"]]
            assert events[0] == "start.requested" and "node.running" in events and "stop.requested" in events

    async_to_sync(scenario)()


def test_a_node_that_disconnects_mid_step_and_never_answers_times_out(gateway: LiveGateway) -> None:
    _, token = NodeFactory.with_token(node_id=NODE)
    rest = Rest(gateway)
    fleet()

    async def scenario() -> str:
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
            body = await rest.apost("/api/models/llama-2-7b-v1/download", {}, expect=200)
            command = await daemon.expect("model.download")
            await ack(daemon, command)
            await daemon.barrier()
        # Disconnected, never answered. The sweep (here called directly, with the clock moved on)
        # finds the step past its deadline.
        await sync_to_async(executions_sweep)(now=timezone.now() + timedelta(hours=7))
        execution = await rest.aget(f"/api/executions/{body['executionId']}")
        assert execution["status"] == "timeout" and execution["error"]["code"] == "STEP_TIMEOUT"
        assert (await rest.aget("/api/models/llama-2-7b-v1"))["status"] == "error"
        # On its next register the node is told to cancel what it was doing.
        async with daemon_for(gateway, {"token": token}) as daemon:
            pending = (await daemon.register())["pendingCommands"]
            assert [(p["type"], p["data"]["originalMessageId"]) for p in pending] == [
                ("command.cancel", command["messageId"])
            ]
            # Its late answer to the expired command changes nothing.
            await result(daemon, command)
            await daemon.barrier()
        return str(body["executionId"])

    execution_id = async_to_sync(scenario)()
    assert Execution.objects.get(execution_id=execution_id).status == "timeout"
    assert NodeCommand.objects.get(type="model.download").status == "expired"


def test_a_step_for_an_offline_node_is_delivered_when_it_registers(gateway: LiveGateway) -> None:
    _, token = NodeFactory.with_token(node_id=NODE)
    rest = Rest(gateway)
    fleet()
    body = rest.post("/api/models/llama-2-7b-v1/download", {}, expect=200)

    async def scenario() -> None:
        async with daemon_for(gateway, {"token": token}) as daemon:
            (command,) = (await daemon.register())["pendingCommands"]
            assert command["type"] == "model.download"
            assert command["metadata"]["executionId"] == body["executionId"]
            await ack(daemon, command)
            await result(daemon, command)
            await daemon.barrier()

    async_to_sync(scenario)()
    assert Execution.objects.get(execution_id=body["executionId"]).status == "completed"
    assert Node.objects.get(node_id=NODE).websocket_connected is False

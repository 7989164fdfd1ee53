"""The execution engine driven end to end by the real npm `socket.io-client`.

tests/node_daemon/daemon.mjs runs as a real Node.js process with `--answer-commands`
(AIWM_ANSWER_COMMANDS=1): it answers each command as a GPU-node daemon would (command.ack, progress
and success command.result, deployment.status). Through the REST API over HTTP, the test starts a
deployment and follows it: the `deploy-model` execution sends model.download then deployment.start
with the contract's envelope, the node's answers move it to `completed`, the model becomes `ready`
and the deployment `running` at the endpoint the node reported; /stop takes it back to `stopped`.
With `--hold-commands model.download` the download never finishes, and a stop in the middle of
the deploy cancels it: the node is sent `command.cancel` naming the download, and acknowledges it.

The npm package and Node.js are required as in tests/test_gateway_npm_client.py (`make node-deps`).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest

from executions.workflows import DOWNLOAD_TIMEOUT_SECONDS, START_TIMEOUT_SECONDS, STOP_MARGIN_SECONDS
from tests.support.daemons import ENVELOPE_KEYS
from tests.support.factories import NodeFactory
from tests.support.live_server import LiveGateway, Rest
from tests.support.npm_daemon import DaemonProcess, iso, poll, run_daemon
from tests.support.personas import OWNER_A

pytestmark = pytest.mark.django_db(transaction=True)

NODE = "node-gpu-01"
MODEL = "llama-2-7b-v1"
DEPLOYMENT = "deploy-llama-prod-01"
PORT = 8081  # not the default 8080: the endpoint the node reports is built from the command's port
ENDPOINT = f"http://10.10.0.101:{PORT}/v1/chat"  # the daemon's ipAddress and the port it was sent
CONTAINER_ID = f"container-{DEPLOYMENT}"
MODEL_PATH = f"/models/{MODEL}"  # the model has no downloadPath yet: the service names one
# What the node sends back: every field of the contract's messages, no more.
ANSWER_KEYS = {"type", "messageId", "timestamp", "data", "metadata"}
ACK_DATA_KEYS = {"originalMessageId", "status", "receivedAt"}
RESULT_DATA_KEYS = {"originalMessageId", "status", "progress", "result", "error"}
# Bounds on every wait: generous, for a busy 2-core machine; a pass takes a few seconds. The daemon
# lives 60 s (run_daemon's --max-seconds), which the whole scenario stays well under.
WAIT = 30.0


class Api(Rest):
    """Rest, with the status each call must answer with (the lifecycle actions answer 200)."""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, expect: int = 200) -> Any:
        response = self.session.request(method, f"{self.base}{path}", json=body, timeout=30)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        return response.json()


def fleet(api: Api) -> None:
    """The model (on the node) and its deployment, created through REST as a user would."""
    api.call(
        "POST",
        "/api/models",
        {
            "modelId": MODEL,
            "name": "Llama 2 7B",
            "type": "llm",
            "framework": "pytorch",
            "repository": "huggingface.co/meta-llama/Llama-2-7b-chat-hf",
            "fileName": "model.safetensors",
            "nodeId": NODE,
        },
        expect=201,
    )
    created = api.call(
        "POST",
        "/api/deployments",
        {
            "deploymentId": DEPLOYMENT,
            "name": "Llama 2 Production Deployment",
            "environment": "production",
            "modelId": MODEL,
            "nodeId": NODE,
            "replicas": 2,
            "hardwareProfile": "gpu",
            "containerName": "llama-prod",
            "containerPort": PORT,
        },
        expect=201,
    )
    assert created["status"] == "pending" and created["isRunning"] is False and created["events"] == []


def connected(daemon: DaemonProcess, *, hold: list[str]) -> None:
    """The daemon answers commands, holds what it was told to, and has registered (so the node's GPUs are known)."""
    started = daemon.wait_for("lifecycle", "start", timeout=WAIT)
    assert started["answerCommands"] is True and started["holdCommands"] == hold, daemon.report()
    registered = daemon.wait_for("received", "register.ack", timeout=WAIT)["data"]
    assert registered["data"]["status"] == "success" and registered["data"]["pendingCommands"] == []


def of_execution(execution_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: (line["data"].get("metadata") or {}).get("executionId") == execution_id


def received_command(daemon: DaemonProcess, type_: str, execution_id: str) -> dict[str, Any]:
    """The command as the daemon got it, checked against the contract's server -> node envelope."""
    command: dict[str, Any] = daemon.wait_for("received", type_, of_execution(execution_id), timeout=WAIT)["data"]
    assert set(command) == ENVELOPE_KEYS, command
    assert command["type"] == type_ and command["messageId"], command
    assert iso(command["timestamp"]).tzinfo is not None, command
    assert command["metadata"]["executionId"] == execution_id, command
    return command


def in_order(daemon: DaemonProcess, kind: str, events: tuple[str, ...]) -> list[dict[str, Any]]:
    """The payloads of these events, in the order the daemon printed them (sent or received)."""
    lines = list(daemon.lines)  # a snapshot: the reader thread only appends
    return [line["data"] for line in lines if line.get("kind") == kind and line.get("event") in events]


def answers_to(daemon: DaemonProcess, command: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The `count` messages (ack, then results) the daemon sent back for one command, in order,
    each checked for the contract's shape. Waits for them: the server may have applied an answer
    a moment before the reader thread took the daemon's line."""

    def answers() -> list[dict[str, Any]]:
        sent = in_order(daemon, "sent", ("command.ack", "command.result"))
        return [body for body in sent if body["data"].get("originalMessageId") == command["messageId"]]

    poll(lambda: len(answers()) >= count, f"{count} answers to {command['type']}", daemon.report, timeout=WAIT)
    sent = answers()
    assert len(sent) == count, (sent, daemon.report())
    for body in sent:
        assert set(body) == ANSWER_KEYS and body["metadata"] == command["metadata"], body
        keys = ACK_DATA_KEYS if body["type"] == "command.ack" else RESULT_DATA_KEYS
        assert set(body["data"]) == keys, body
        assert iso(body["timestamp"]).tzinfo is not None, body
    return sent


def node_commands(api: Api, node_pk: str) -> dict[str, dict[str, Any]]:
    return {row["messageId"]: row for row in api.call("GET", f"/api/nodes/{node_pk}/commands?limit=100")["data"]}


def test_the_npm_daemon_takes_a_deployment_through_the_engine_to_running_and_back_to_stopped(
    node_binary: str,
    gateway: LiveGateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node, token = NodeFactory.with_token(node_id=NODE)
    api = Api(gateway, user_id=OWNER_A.user_id, username="owner-a")
    fleet(api)
    monkeypatch.setenv("AIWM_ANSWER_COMMANDS", "1")
    monkeypatch.delenv("AIWM_HOLD_COMMANDS", raising=False)
    with run_daemon(node_binary, f"ws://127.0.0.1:{gateway.port}", token) as daemon:
        connected(daemon, hold=[])

        # --- start: deploy-model = model.download, then deployment.start -------------------------
        started = api.call("POST", f"/api/deployments/{DEPLOYMENT}/start", {})
        assert set(started) == {"message", "deployment", "executionId", "executionStatus"}, started
        assert started["message"] == f"Deployment start requested: execution {started['executionId']} is running"
        assert started["deployment"]["status"] == "pending" and started["deployment"]["isRunning"] is False
        execution_id = started["executionId"]

        download = received_command(daemon, "model.download", execution_id)
        assert download["resource"] == {"type": "model", "id": MODEL}
        assert download["data"] == {
            "repository": "huggingface.co/meta-llama/Llama-2-7b-chat-hf",
            "fileName": "model.safetensors",
            "downloadPath": MODEL_PATH,
        }
        assert download["metadata"] == {
            "executionId": execution_id,
            "stepIndex": 0,
            "timeout": DOWNLOAD_TIMEOUT_SECONDS,
            "priority": "high",
        }
        start = received_command(daemon, "deployment.start", execution_id)
        assert start["resource"] == {"type": "deployment", "id": DEPLOYMENT}
        # modelPath is where the download step put the model; gpuDevices the GPU node.register reported.
        assert start["data"] == {
            "modelPath": MODEL_PATH,
            "modelName": MODEL,
            "framework": "pytorch",
            "containerName": "llama-prod",
            "port": PORT,
            "replicas": 2,
            "gpuDevices": ["GPU-0"],
        }
        assert start["metadata"] == {
            "executionId": execution_id,
            "stepIndex": 1,
            "timeout": START_TIMEOUT_SECONDS,
            "priority": "high",
        }
        # The second step was sent only once the first had succeeded.
        assert iso(start["timestamp"]) >= iso(download["timestamp"])

        # The execution is read first: its last step commits with the deployment's change, so once
        # it shows `completed` the deployment and model read after it are final.
        def deployed() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
            execution = api.call("GET", f"/api/executions/{execution_id}")
            deployment = api.call("GET", f"/api/deployments/{DEPLOYMENT}")
            model = api.call("GET", f"/api/models/{MODEL}")
            ok = (
                deployment["status"] == "running"
                and deployment["isRunning"] is True
                and deployment["endpoint"] == ENDPOINT
                and execution["status"] == "completed"
                and model["status"] == "ready"
            )
            return (deployment, execution, model) if ok else None

        deployment, execution, model = poll(deployed, "the deployment running", daemon.report, timeout=WAIT)

        assert deployment["containerId"] == CONTAINER_ID and deployment["healthStatus"] == "healthy"
        assert deployment["lastHealthCheck"] is not None
        assert model["isDownloaded"] is True and model["downloadPath"] == MODEL_PATH
        assert model["downloadProgress"] == 100

        # What the daemon answered, in order, each echoing its command's metadata.
        download_answers = answers_to(daemon, download, 3)
        assert [(a["type"], a["data"]["status"]) for a in download_answers] == [
            ("command.ack", "received"),
            ("command.result", "progress"),
            ("command.result", "success"),
        ], daemon.report()
        assert download_answers[1]["data"]["progress"] == 50
        assert download_answers[2]["data"]["result"] == {"downloadPath": MODEL_PATH, "downloadedFiles": 1}
        start_answers = answers_to(daemon, start, 2)
        assert [(a["type"], a["data"]["status"]) for a in start_answers] == [
            ("command.ack", "received"),
            ("command.result", "success"),
        ], daemon.report()
        assert start_answers[1]["data"]["result"] == {"endpoint": ENDPOINT, "containerId": CONTAINER_ID}
        (running,) = [line["data"] for line in daemon.find("sent", "deployment.status")]
        assert set(running) == {"type", "messageId", "timestamp", "data"}
        assert running["data"] == {
            "deploymentId": DEPLOYMENT,
            "status": "running",
            "containerId": CONTAINER_ID,
            "endpoint": ENDPOINT,
            "healthStatus": "healthy",
        }

        # The execution: both steps completed by exactly these answers (a progress report is not one).
        assert execution["type"] == "deploy-model" and execution["progress"] == 100
        assert execution["startedAt"] and execution["completedAt"] and execution["error"] is None
        assert [step["status"] for step in execution["steps"]] == ["completed", "completed"]
        assert [step["sentMessageId"] for step in execution["steps"]] == [download["messageId"], start["messageId"]]
        assert execution["sentMessageIds"] == [download["messageId"], start["messageId"]]
        # The results that moved a step (acks move only their command; a progress report is not one).
        assert execution["receivedMessageIds"] == [download_answers[2]["messageId"], start_answers[1]["messageId"]]
        assert execution["result"] == {
            "steps": {
                "0": {"downloadPath": MODEL_PATH, "downloadedFiles": 1},
                "1": {"endpoint": ENDPOINT, "containerId": CONTAINER_ID},
            }
        }
        # And the outbox: each command succeeded with the node's result.
        rows = node_commands(api, node.pk)
        for command, answers in ((download, download_answers), (start, start_answers)):
            row = rows[command["messageId"]]
            assert row["status"] == "succeeded" and row["progress"] == 100, row
            assert row["result"] == answers[-1]["data"]["result"] and row["acknowledgedAt"], row

        # --- stop: stop-deployment = deployment.stop ---------------------------------------------
        stopping = api.call("POST", f"/api/deployments/{DEPLOYMENT}/stop", {})
        assert stopping["message"] == f"Deployment stop requested: execution {stopping['executionId']} is running"
        stop_id = stopping["executionId"]
        assert stop_id != execution_id

        stop = received_command(daemon, "deployment.stop", stop_id)
        assert stop["resource"] == {"type": "deployment", "id": DEPLOYMENT}
        assert stop["data"] == {"gracefulShutdown": True, "timeoutSeconds": 30}
        assert stop["metadata"] == {
            "executionId": stop_id,
            "stepIndex": 0,
            "timeout": 30 + STOP_MARGIN_SECONDS,
            "priority": "high",
        }

        def stopped() -> tuple[dict[str, Any], dict[str, Any]] | None:
            execution = api.call("GET", f"/api/executions/{stop_id}")  # first, as above
            deployment = api.call("GET", f"/api/deployments/{DEPLOYMENT}")
            ok = deployment["status"] == "stopped" and deployment["isRunning"] is False
            return (deployment, execution) if ok and execution["status"] == "completed" else None

        deployment, stop_execution = poll(stopped, "the deployment stopped", daemon.report, timeout=WAIT)
        assert stop_execution["type"] == "stop-deployment" and stop_execution["progress"] == 100
        stop_answers = answers_to(daemon, stop, 2)
        assert [(a["type"], a["data"]["status"]) for a in stop_answers] == [
            ("command.ack", "received"),
            ("command.result", "success"),
        ], daemon.report()
        assert stop_execution["receivedMessageIds"] == [stop_answers[1]["messageId"]]
        assert stop_execution["steps"][0]["result"] == {"stopped": True}

        # The deployment's events tell the whole story, in order, from both sources: the requests,
        # the node's own deployment.status reports, and the engine's steps.
        events = deployment["events"]
        assert [event["event"] for event in events] == [
            "start.requested",
            "node.running",
            "engine.started",
            "stop.requested",
            "node.stopped",
            "engine.stopped",
        ], events
        assert {event["severity"] for event in events} == {"info"}
        times = [iso(event["timestamp"]) for event in events]
        assert times == sorted(times), events
        assert execution_id in events[0]["message"] and execution_id in events[2]["message"]
        assert ENDPOINT in events[1]["message"] and ENDPOINT in events[2]["message"]
        assert stop_id in events[3]["message"] and stop_id in events[5]["message"]

        # Everything the daemon sent was accepted, and nothing was cancelled.
        assert daemon.find("received", "error") == [], daemon.report()
        assert daemon.find("received", "command.cancel") == [], daemon.report()

        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=WAIT) == 0, daemon.report()


def test_a_stop_during_the_download_cancels_it_and_the_npm_daemon_acknowledges_the_cancel(
    node_binary: str,
    gateway: LiveGateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node, token = NodeFactory.with_token(node_id=NODE)
    api = Api(gateway, user_id=OWNER_A.user_id, username="owner-a")
    fleet(api)
    monkeypatch.setenv("AIWM_ANSWER_COMMANDS", "1")
    monkeypatch.setenv("AIWM_HOLD_COMMANDS", "model.download")  # acknowledged, never finished
    with run_daemon(node_binary, f"ws://127.0.0.1:{gateway.port}", token) as daemon:
        connected(daemon, hold=["model.download"])
        execution_id = api.call("POST", f"/api/deployments/{DEPLOYMENT}/start", {})["executionId"]
        download = received_command(daemon, "model.download", execution_id)
        (ack,) = answers_to(daemon, download, 1)

        def downloading() -> dict[str, Any] | None:
            commands = api.call("GET", f"/api/nodes/{NODE}/commands")["data"]
            acked = any(c["messageId"] == download["messageId"] and c["status"] == "acknowledged" for c in commands)
            return api.call("GET", f"/api/executions/{execution_id}") if acked else None

        execution = poll(downloading, "the download acknowledged", daemon.report, timeout=WAIT)
        assert execution["status"] == "running"
        assert [step["status"] for step in execution["steps"]] == ["running", "pending"]
        assert api.call("GET", f"/api/models/{MODEL}")["status"] == "downloading"

        # Stop in the middle: the deploy is cancelled first, the node told to drop the download.
        stop_id = api.call("POST", f"/api/deployments/{DEPLOYMENT}/stop", {})["executionId"]
        cancel = received_command(daemon, "command.cancel", execution_id)
        assert cancel["resource"] == {"type": "command", "id": download["messageId"]}
        assert cancel["data"]["originalMessageId"] == download["messageId"]
        assert "superseded by a stop request" in cancel["data"]["reason"]
        assert cancel["metadata"] == {"executionId": execution_id, "stepIndex": 0, "priority": "high"}
        stop = received_command(daemon, "deployment.stop", stop_id)
        # The cancel went out before the stop (both stored in the stop request's transaction).
        received = in_order(daemon, "received", ("command.cancel", "deployment.stop"))
        assert [body["messageId"] for body in received] == [cancel["messageId"], stop["messageId"]]
        (cancel_ack,) = answers_to(daemon, cancel, 1)
        assert cancel_ack["type"] == "command.ack" and cancel_ack["data"]["status"] == "received"

        def settled() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
            stopped = api.call("GET", f"/api/executions/{stop_id}")  # first, as above
            deployment = api.call("GET", f"/api/deployments/{DEPLOYMENT}")
            rows = node_commands(api, node.pk)
            ok = (
                deployment["status"] == "stopped"
                and stopped["status"] == "completed"
                and rows.get(cancel["messageId"], {}).get("status") == "acknowledged"
            )
            return (deployment, stopped, rows) if ok else None

        deployment, _, rows = poll(settled, "stopped, the cancel acknowledged", daemon.report, timeout=WAIT)
        assert deployment["isRunning"] is False
        cancelled = api.call("GET", f"/api/executions/{execution_id}")
        assert cancelled["status"] == "cancelled" and cancelled["error"]["code"] == "USER_CANCELLED"
        assert [step["status"] for step in cancelled["steps"]] == ["failed", "pending"]
        assert cancelled["steps"][0]["error"]["code"] == "CANCELLED"
        assert rows[download["messageId"]]["status"] == "cancelled"
        assert rows[stop["messageId"]]["status"] == "succeeded"
        assert [event["event"] for event in deployment["events"]] == [
            "start.requested",
            "execution.cancelled",
            "stop.requested",
            "node.stopped",
            "engine.stopped",
        ], deployment["events"]
        assert deployment["events"][1]["severity"] == "warning"
        # The held download was never answered; nothing the daemon sent was refused.
        assert answers_to(daemon, download, 1) == [ack]
        assert [a["data"]["status"] for a in answers_to(daemon, stop, 2)] == ["received", "success"]
        assert daemon.find("sent", "deployment.status", lambda line: line["data"]["data"]["status"] == "running") == []
        assert daemon.find("received", "error") == [], daemon.report()

        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=WAIT) == 0, daemon.report()

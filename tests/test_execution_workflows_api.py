"""The engine over REST: start/cancel/retry, deployment start/stop and model download.

Node answers go through the engine's service as the gateway calls it; the socket path end to end is
in test_execution_gateway.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from deployments.models import Deployment
from executions.engine import execution_apply_result
from executions.models import Execution
from models_registry.models import AIModel
from nodes.models import NodeCommand
from tests.support.api import assert_error
from tests.support.factories import AIModelFactory, DeploymentFactory, NodeFactory
from tests.support.personas import ORG_A, Personas

pytestmark = pytest.mark.django_db

NODE = "node-gpu-01"


def post(client: Any, url: str, body: Any = None, status: int = 200) -> dict[str, Any]:
    response = client.post(url, body, format="json") if body is not None else client.post(url)
    assert response.status_code == status, response.content
    return response.json()


def answer(message_id: str, status: str = "success", **data: Any) -> None:
    execution_apply_result(
        org_id=ORG_A,
        node_id=NODE,
        message_id=str(uuid.uuid4()),
        data={"originalMessageId": message_id, "status": status, **data},
    )


@pytest.fixture
def fleet(personas: Personas) -> Personas:
    """A node with one GPU, a model registered on it, a deployment of that model."""
    actor = personas.owner_a.principal
    NodeFactory.create(
        node_id=NODE, name="GPU 1", gpu_devices=[{"deviceId": "GPU-0"}, {"deviceId": "GPU-1"}], actor=actor
    )
    AIModelFactory.create(
        model_id="llama-2-7b-v1",
        name="Llama 2 7B",
        version="1.0.0",
        repository="huggingface.co/meta-llama/Llama-2-7b-chat-hf",
        file_name="model.safetensors",
        node_id=NODE,
        actor=actor,
    )
    DeploymentFactory.create(
        deployment_id="deploy-llama-prod-01",
        name="Llama prod",
        node_id=NODE,
        replicas=2,
        hardware_profile="gpu",
        container_port=8080,
        actor=actor,
    )
    return personas


def execution_body(**extra: Any) -> dict[str, Any]:
    return {
        "name": "Download",
        "category": "model",
        "type": "download-model",
        "nodeId": NODE,
        "steps": [
            {
                "index": 0,
                "name": "Download",
                "command": {"type": "model.download", "resource": {"type": "model", "id": "llama-2-7b-v1"}},
            }
        ],
        **extra,
    }


# --- /api/executions/:id/start | cancel | retry -------------------------------------------


def test_start_cancel_retry_over_rest(fleet: Personas) -> None:
    owner = fleet.owner_a
    created = post(owner, "/api/executions", execution_body(executionId="exec-1", maxRetries=1), 201)
    started = post(owner, "/api/executions/exec-1/start", {"force": False})
    assert started["_id"] == created["_id"] and started["executionId"] == "exec-1"
    assert started["status"] == "running" and started["progress"] == 0 and started["startedAt"]
    assert started["steps"][0]["status"] == "running" and started["steps"][0]["startedAt"]
    assert started["sentMessageIds"] == [started["steps"][0]["sentMessageId"]]
    assert "nextCheckAt" not in started
    body = assert_error(owner.post("/api/executions/exec-1/start", {}, format="json"), 409)
    assert "force" in body["message"]

    cancelled = post(owner, "/api/executions/exec-1/cancel", {"reason": "User requested cancellation"})
    assert cancelled["status"] == "cancelled"
    assert cancelled["error"] == {"code": "USER_CANCELLED", "message": "User requested cancellation"}
    assert_error(owner.post("/api/executions/exec-1/cancel", {}, format="json"), 409)

    retried = post(owner, "/api/executions/exec-1/retry", {"resetSteps": True})
    assert retried["status"] == "running" and retried["retryCount"] == 1 and len(retried["retryAttempts"]) == 1
    post(owner, "/api/executions/exec-1/cancel", {})
    body = assert_error(owner.post("/api/executions/exec-1/retry", {}, format="json"), 409)
    assert "maxRetries 1" in body["message"]


def test_start_with_force_restarts_a_running_execution(fleet: Personas) -> None:
    owner = fleet.owner_a
    post(owner, "/api/executions", execution_body(executionId="exec-1"), 201)
    first = post(owner, "/api/executions/exec-1/start")["steps"][0]["sentMessageId"]
    again = post(owner, "/api/executions/exec-1/start", {"force": True})
    assert again["status"] == "running" and again["steps"][0]["sentMessageId"] != first


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("start", {"force": "yes"}, "force"),
        ("start", {"force": 1}, "force"),
        ("retry", {"resetSteps": "false"}, "resetSteps"),
        ("cancel", {"reason": "x" * 1001}, "reason"),
        ("cancel", {"reason": 7}, "reason"),
        ("start", [1, 2], None),
    ],
)
def test_bad_engine_request_bodies_are_400_and_change_nothing(
    fleet: Personas, action: str, body: Any, field: str | None
) -> None:
    owner = fleet.owner_a
    post(owner, "/api/executions", execution_body(executionId="exec-1"), 201)
    error = assert_error(owner.post(f"/api/executions/exec-1/{action}", body, format="json"), 400)
    if field:
        assert any(line.startswith(field) for line in error["errors"]), error
    assert Execution.objects.get(execution_id="exec-1").status == "pending"
    assert NodeCommand.objects.count() == 0


def test_engine_actions_need_write_rights_and_stay_in_the_organization(fleet: Personas) -> None:
    post(fleet.owner_a, "/api/executions", execution_body(executionId="exec-1"), 201)
    for action in ("start", "cancel", "retry"):
        assert_error(fleet.viewer_a.post(f"/api/executions/exec-1/{action}", {}, format="json"), 403)
        assert_error(fleet.owner_b.post(f"/api/executions/exec-1/{action}", {}, format="json"), 404)
        assert_error(fleet.anonymous.post(f"/api/executions/exec-1/{action}", {}, format="json"), 401)
    assert post(fleet.editor_a, "/api/executions/exec-1/start")["status"] == "running"


def test_statistics_follow_the_engine(fleet: Personas) -> None:
    owner = fleet.owner_a
    post(owner, "/api/executions", execution_body(executionId="exec-1"), 201)
    post(owner, "/api/executions", execution_body(executionId="exec-2", category="maintenance"), 201)
    post(owner, "/api/executions/exec-1/start")
    post(owner, "/api/executions/exec-2/cancel")
    stats = owner.get("/api/executions/_statistics/summary").json()
    assert stats["total"] == 2
    assert stats["byStatus"] == {
        "pending": 0,
        "running": 1,
        "completed": 0,
        "failed": 0,
        "cancelled": 1,
        "timeout": 0,
    }
    assert stats["byCategory"]["model"] == 1 and stats["byCategory"]["maintenance"] == 1
    assert fleet.owner_b.get("/api/executions/_statistics/summary").json()["total"] == 0


# --- /api/deployments/:id/start | stop ------------------------------------------------------


def test_deployment_start_downloads_then_starts_and_follows_the_nodes_results(fleet: Personas) -> None:
    owner = fleet.owner_a
    answer_body = post(owner, "/api/deployments/deploy-llama-prod-01/start")
    # What is true when it answers: the workflow was started, the deployment is not running yet.
    assert answer_body["message"] == f"Deployment start requested: execution {answer_body['executionId']} is running"
    assert answer_body["executionStatus"] == "running"
    assert answer_body["deployment"]["deploymentId"] == "deploy-llama-prod-01"
    assert answer_body["deployment"]["status"] == "pending"
    execution = owner.get(f"/api/executions/{answer_body['executionId']}").json()
    assert (execution["type"], execution["category"], execution["status"]) == ("deploy-model", "deployment", "running")
    assert (execution["resourceType"], execution["resourceId"]) == ("deployment", "deploy-llama-prod-01")
    download, start = execution["steps"]
    assert download["command"]["type"] == "model.download" and download["status"] == "running"
    assert download["command"]["data"]["downloadPath"] == "/models/llama-2-7b-v1"
    assert start["command"] == {
        "type": "deployment.start",
        "resource": {"type": "deployment", "id": "deploy-llama-prod-01"},
        "data": {
            "modelPath": "/models/llama-2-7b-v1",
            "modelName": "llama-2-7b-v1",
            "framework": "pytorch",
            "containerName": "aiwm-deploy-llama-prod-01",
            "port": 8080,
            "replicas": 2,
            "gpuDevices": ["GPU-0"],
        },
    }
    assert start["dependsOn"] == [0] and start["status"] == "pending"
    assert NodeCommand.objects.get(message_id=download["sentMessageId"]).metadata["priority"] == "high"
    # A second start while the first runs: 409, nothing new.
    assert "deploy-model" in assert_error(owner.post("/api/deployments/deploy-llama-prod-01/start"), 409)["message"]

    answer(download["sentMessageId"], "progress", progress=50)
    model = owner.get("/api/models/llama-2-7b-v1").json()
    assert (model["status"], model["downloadProgress"], model["isDownloaded"]) == ("downloading", 50, False)
    answer(download["sentMessageId"], result={"downloadPath": "/data/llama"})
    model = owner.get("/api/models/llama-2-7b-v1").json()
    assert (model["status"], model["isDownloaded"], model["downloadPath"]) == ("ready", True, "/data/llama")
    start_id = owner.get(f"/api/executions/{answer_body['executionId']}").json()["steps"][1]["sentMessageId"]
    answer(start_id, result={"endpoint": "http://10.10.0.101:8080/v1/chat", "containerId": "c-1"})

    deployment = owner.get("/api/deployments/deploy-llama-prod-01").json()
    assert deployment["status"] == "running" and deployment["isRunning"] is True
    assert deployment["endpoint"] == "http://10.10.0.101:8080/v1/chat"
    assert [e["event"] for e in deployment["events"]] == ["start.requested", "engine.started"]
    assert owner.get(f"/api/executions/{answer_body['executionId']}").json()["status"] == "completed"
    assert_error(owner.post("/api/deployments/deploy-llama-prod-01/start"), 409)

    stopped = post(
        owner, "/api/deployments/deploy-llama-prod-01/stop", {"gracefulShutdown": True, "timeoutSeconds": 30}
    )
    stop_execution = owner.get(f"/api/executions/{stopped['executionId']}").json()
    assert stop_execution["type"] == "stop-deployment"
    (stop_step,) = stop_execution["steps"]
    assert stop_step["command"]["data"] == {"gracefulShutdown": True, "timeoutSeconds": 30}
    answer(stop_step["sentMessageId"])
    deployment = owner.get("/api/deployments/deploy-llama-prod-01").json()
    assert deployment["status"] == "stopped" and deployment["isRunning"] is False
    assert_error(owner.post("/api/deployments/deploy-llama-prod-01/stop", {}, format="json"), 409)


def test_deployment_start_skips_the_download_when_the_model_is_on_the_node(fleet: Personas) -> None:
    AIModel.objects.filter(model_id="llama-2-7b-v1").update(is_downloaded=True, download_path="/data/llama")
    Deployment.objects.filter(deployment_id="deploy-llama-prod-01").update(hardware_profile="multi-gpu")
    body = post(fleet.owner_a, "/api/deployments/deploy-llama-prod-01/start")
    (start,) = fleet.owner_a.get(f"/api/executions/{body['executionId']}").json()["steps"]
    assert start["command"]["type"] == "deployment.start" and start["status"] == "running"
    assert start["command"]["data"]["modelPath"] == "/data/llama"
    assert start["command"]["data"]["gpuDevices"] == ["GPU-0", "GPU-1"]


def test_a_failed_deploy_leaves_the_deployment_failed_with_the_reason(fleet: Personas) -> None:
    owner = fleet.owner_a
    body = post(owner, "/api/deployments/deploy-llama-prod-01/start")
    download = owner.get(f"/api/executions/{body['executionId']}").json()["steps"][0]
    answer(download["sentMessageId"], "error", error={"code": "DOWNLOAD_FAILED", "message": "Network timeout"})
    deployment = owner.get("/api/deployments/deploy-llama-prod-01").json()
    assert deployment["status"] == "failed"
    last = deployment["events"][-1]
    assert last["severity"] == "error" and "DOWNLOAD_FAILED" in last["message"]
    assert owner.get("/api/models/llama-2-7b-v1").json()["status"] == "error"
    # Failed is not running: it can be started again.
    assert post(owner, "/api/deployments/deploy-llama-prod-01/start")["executionId"] != body["executionId"]


def test_stop_during_a_deploy_cancels_the_deploy(fleet: Personas) -> None:
    owner = fleet.owner_a
    deploy = post(owner, "/api/deployments/deploy-llama-prod-01/start")
    stop = post(owner, "/api/deployments/deploy-llama-prod-01/stop")
    assert owner.get(f"/api/executions/{deploy['executionId']}").json()["status"] == "cancelled"
    assert owner.get(f"/api/executions/{stop['executionId']}").json()["status"] == "running"
    # The withdrawn download does not leave the model "downloading" for ever.
    assert owner.get("/api/models/llama-2-7b-v1").json()["status"] == "error"
    body = assert_error(owner.post("/api/deployments/deploy-llama-prod-01/stop"), 409)
    assert "already being stopped" in body["message"]


@pytest.mark.parametrize(
    "body", [{"gracefulShutdown": "no"}, {"timeoutSeconds": -1}, {"timeoutSeconds": 99999}, {"timeoutSeconds": "30"}]
)
def test_bad_stop_bodies_are_400(fleet: Personas, body: dict[str, Any]) -> None:
    Deployment.objects.filter(deployment_id="deploy-llama-prod-01").update(status="running")
    assert_error(fleet.owner_a.post("/api/deployments/deploy-llama-prod-01/stop", body, format="json"), 400)
    assert Execution.objects.count() == 0


def test_lifecycle_actions_need_write_rights(fleet: Personas) -> None:
    assert_error(fleet.viewer_a.post("/api/deployments/deploy-llama-prod-01/start"), 403)
    assert_error(fleet.viewer_a.post("/api/models/llama-2-7b-v1/download"), 403)
    assert_error(fleet.owner_b.post("/api/deployments/deploy-llama-prod-01/start"), 404)
    assert Execution.objects.count() == 0


# --- /api/models/:id/download ---------------------------------------------------------------


def test_model_download_runs_a_download_model_execution(fleet: Personas) -> None:
    owner = fleet.owner_a
    body = post(owner, "/api/models/llama-2-7b-v1/download")
    assert body["message"] == "Model download started"
    assert body["model"]["status"] == "downloading" and body["model"]["downloadProgress"] == 0
    execution = owner.get(f"/api/executions/{body['executionId']}").json()
    assert (execution["type"], execution["category"], execution["resourceId"]) == (
        "download-model",
        "model",
        "llama-2-7b-v1",
    )
    assert_error(owner.post("/api/models/llama-2-7b-v1/download"), 409)
    answer(execution["steps"][0]["sentMessageId"])
    model = owner.get("/api/models/llama-2-7b-v1").json()
    assert (model["status"], model["isDownloaded"], model["downloadProgress"]) == ("ready", True, 100)
    assert model["downloadPath"] == "/models/llama-2-7b-v1"  # the path the command named


def test_a_model_without_a_node_cannot_be_downloaded(fleet: Personas) -> None:
    AIModel.objects.filter(model_id="llama-2-7b-v1").update(node_id=None)
    body = assert_error(fleet.owner_a.post("/api/models/llama-2-7b-v1/download"), 400)
    assert body["errors"][0].startswith("nodeId")
    assert Execution.objects.count() == 0

"""The workflows the service builds itself: start a deployment, stop it, download a model; and
the rule that a deployment cannot be deleted while it runs or a workflow is moving it.

Each is an ordinary execution (listed, cancellable and retryable like any other) created and
started in one transaction, holding the resource's row lock so two clicks cannot start two runs.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction

from aiwm_project.auth import Principal
from aiwm_project.exceptions import ConflictError, ValidationFailed
from aiwm_project.services import entity_delete, lock_live
from deployments.choices import DeploymentStatus, HardwareProfile
from deployments.models import Deployment
from deployments.services import deployment_change
from executions.choices import ACTIVE_STATUSES, ExecutionCategory, ExecutionStatus, ExecutionType, ResourceType
from executions.engine import execution_cancel, execution_start
from executions.models import Execution
from executions.services import execution_create
from executions.steps import StepDefinition
from models_registry.choices import server_backend
from models_registry.models import AIModel
from nodes.choices import CommandType, NodeStatus
from nodes.models import Node

# Step time limits (seconds). A download is bounded by the model's size; a week is the engine's cap.
DOWNLOAD_TIMEOUT_SECONDS = 6 * 3600
START_TIMEOUT_SECONDS = 600
STOP_MARGIN_SECONDS = 60  # on top of the graceful shutdown the node is given
DEFAULT_CONTAINER_PORT = 8080


def _active_execution(org_id: str, resource_type: str, resource_id: str) -> Execution | None:
    return (
        Execution.objects.for_org(org_id)
        .filter(resource_type=resource_type, resource_id=resource_id, status__in=ACTIVE_STATUSES)
        .order_by("-created_at")
        .first()
    )


def model_path(model: AIModel) -> str:
    """Where a node keeps the model: its reported path once downloaded, else one the service names
    (sent in model.download and reused as deployment.start's modelPath, so both steps agree)."""
    return model.download_path or f"/models/{model.model_id}"


def _gpu_devices(node: Node, profile: str) -> list[str]:
    devices = [str(d["deviceId"]) for d in node.gpu_devices or [] if isinstance(d, dict) and d.get("deviceId")]
    if profile == HardwareProfile.CPU:
        return []
    return devices if profile == HardwareProfile.MULTI_GPU else devices[:1]


def _backend(deployment: Deployment, model: AIModel) -> dict[str, Any]:
    """The model server to run: the deployment's own choice, else the one the model's framework
    implies; neither, and the node's agent decides by the model's files."""
    backend = server_backend(deployment.backend, model.framework)
    out: dict[str, Any] = {"backend": backend} if backend else {}
    if deployment.backend_args:
        out["args"] = list(deployment.backend_args)
    return out


def _download_step(model: AIModel, *, index: int, node_id: str) -> StepDefinition:
    return {
        "index": index,
        "name": "Download model files",
        "command": {
            "type": CommandType.MODEL_DOWNLOAD,
            "resource": {"type": ResourceType.MODEL, "id": model.model_id},
            "data": {
                "repository": model.repository,
                "fileName": model.file_name,
                "downloadPath": model_path(model),
                **({"sha256": model.sha256} if model.sha256 else {}),
            },
        },
        "nodeId": node_id,
        "timeoutSeconds": DOWNLOAD_TIMEOUT_SECONDS,
        "dependsOn": [],
        "optional": False,
    }


def deployment_start(*, deployment: Deployment, actor: Principal) -> tuple[Deployment, Execution]:
    """Build and start a `deploy-model` execution: `model.download` on the deployment's node unless
    the model is already there, then `deployment.start`. 409 when the deployment is running or a
    workflow on it is still active."""
    with transaction.atomic():
        deployment = lock_live(Deployment, deployment.pk)
        if deployment.status == DeploymentStatus.RUNNING:
            raise ConflictError(f"Deployment {deployment.deployment_id!r} is already running")
        active = _active_execution(actor.org_id, ResourceType.DEPLOYMENT, deployment.deployment_id)
        if active is not None:
            raise ConflictError(
                f"Deployment {deployment.deployment_id!r} has a {active.type} execution {active.execution_id!r} "
                f"still {active.status}; wait for it or cancel it"
            )
        model = AIModel.objects.for_org(actor.org_id).filter(model_id=deployment.model_id).first()
        node = Node.objects.for_org(actor.org_id).filter(node_id=deployment.node_id).first()
        if model is None or node is None:  # protected references make this rare: a race with a delete
            raise ValidationFailed(
                [f"deployment {deployment.deployment_id!r} names a model or node that no longer exists"]
            )
        if node.status == NodeStatus.MAINTENANCE:
            raise ConflictError(
                f"Node {node.node_id!r} is in maintenance: it takes no new deployment until an operator "
                "takes it out of maintenance"
            )
        steps: list[StepDefinition] = []
        if not (model.is_downloaded and model.node_id == node.node_id):
            steps.append(_download_step(model, index=0, node_id=node.node_id))
        data = {
            "modelPath": model_path(model),
            # What the model server calls the model (its /v1/models id) and which server to run.
            "modelName": model.model_id,
            "framework": model.framework,
            **_backend(deployment, model),
            "containerName": deployment.container_name or f"aiwm-{deployment.deployment_id}",
            "port": deployment.container_port or DEFAULT_CONTAINER_PORT,
            "replicas": deployment.replicas,
            "gpuDevices": _gpu_devices(node, deployment.hardware_profile),
        }
        steps.append(
            {
                "index": len(steps),
                "name": "Start container",
                "command": {
                    "type": CommandType.DEPLOYMENT_START,
                    "resource": {"type": ResourceType.DEPLOYMENT, "id": deployment.deployment_id},
                    "data": data,
                },
                "nodeId": node.node_id,
                "timeoutSeconds": START_TIMEOUT_SECONDS,
                "dependsOn": list(range(len(steps))),
                "optional": False,
            }
        )
        return _run_on_deployment(
            actor,
            deployment,
            verb="start",
            changes={"status": DeploymentStatus.PENDING, "is_running": False},
            type=ExecutionType.DEPLOY_MODEL,
            name=f"Deploy {model.name} ({deployment.deployment_id})",
            steps=steps,
        )


def deployment_stop(
    *, deployment: Deployment, actor: Principal, graceful_shutdown: bool = True, timeout_seconds: int = 30
) -> tuple[Deployment, Execution]:
    """Build and start a `stop-deployment` execution (`deployment.stop`). A deploy still in progress
    is cancelled first (its node gets `command.cancel`). 409 when the deployment is stopped or is
    already being stopped."""
    with transaction.atomic():
        deployment = lock_live(Deployment, deployment.pk)
        if deployment.status == DeploymentStatus.STOPPED:
            raise ConflictError(f"Deployment {deployment.deployment_id!r} is already stopped")
        active = _active_execution(actor.org_id, ResourceType.DEPLOYMENT, deployment.deployment_id)
        if active is not None and active.type == ExecutionType.STOP_DEPLOYMENT:
            raise ConflictError(
                f"Deployment {deployment.deployment_id!r} is already being stopped by execution {active.execution_id!r}"
            )
        if active is not None:
            execution_cancel(pk=active.pk, reason="superseded by a stop request", actor=actor)
            # The cancelled run's ending wrote to the deployment (an event): read it again, still locked.
            deployment = lock_live(Deployment, deployment.pk)
        step: StepDefinition = {
            "index": 0,
            "name": "Stop container",
            "command": {
                "type": CommandType.DEPLOYMENT_STOP,
                "resource": {"type": ResourceType.DEPLOYMENT, "id": deployment.deployment_id},
                "data": {"gracefulShutdown": graceful_shutdown, "timeoutSeconds": timeout_seconds},
            },
            "nodeId": deployment.node_id,
            "timeoutSeconds": timeout_seconds + STOP_MARGIN_SECONDS,
            "dependsOn": [],
            "optional": False,
        }
        return _run_on_deployment(
            actor,
            deployment,
            verb="stop",
            changes={},
            type=ExecutionType.STOP_DEPLOYMENT,
            name=f"Stop {deployment.deployment_id}",
            steps=[step],
        )


def deployment_delete(*, instance: Deployment, actor: Principal) -> Deployment:
    """Soft delete, refused (409) while the deployment is running or being started or stopped: its
    model server would go on holding the node's GPU memory with no record left to stop it.

    Holds the deployment's row lock for the check and the delete, so a start cannot slip in
    between (the start takes the same lock first). A deployment never started, stopped or failed
    is deleted like any record (references checked by `entity_delete`).
    """
    with transaction.atomic():
        deployment = lock_live(Deployment, instance.pk)
        active = _active_execution(deployment.owner_org_id, ResourceType.DEPLOYMENT, deployment.deployment_id)
        if active is not None:
            doing = "stopped" if active.type == ExecutionType.STOP_DEPLOYMENT else "started"
            raise ConflictError(
                f"Deployment {deployment.deployment_id!r} is being {doing} by execution {active.execution_id!r}; "
                "wait for it or cancel it first"
            )
        if deployment.status == DeploymentStatus.RUNNING or deployment.is_running:
            raise ConflictError(f"Deployment {deployment.deployment_id!r} is running; stop it first")
        return entity_delete(instance=deployment, actor=actor)


def model_download(*, model: AIModel, actor: Principal) -> tuple[AIModel, Execution]:
    """Build and start a `download-model` execution on the model's node. 400 when the model has no
    node; 409 while another download of it is active."""
    with transaction.atomic():
        locked = lock_live(AIModel, model.pk)
        if not locked.node_id:
            raise ValidationFailed(["nodeId: the model has no node to download it to; set its nodeId first"])
        active = _active_execution(actor.org_id, ResourceType.MODEL, locked.model_id)
        if active is not None:
            raise ConflictError(
                f"Model {locked.model_id!r} is already being downloaded by execution {active.execution_id!r}"
            )
        step = _download_step(locked, index=0, node_id=locked.node_id)
        execution = _create_and_start(
            actor,
            name=f"Download {locked.name}",
            category=ExecutionCategory.MODEL,
            type=ExecutionType.DOWNLOAD_MODEL,
            resource_type=ResourceType.MODEL,
            resource_id=locked.model_id,
            node_id=locked.node_id,
            steps=[step],
        )
        locked.refresh_from_db()
    return locked, execution


def _create_and_start(actor: Principal, *, steps: list[StepDefinition], **fields: Any) -> Execution:
    """Create and start the execution; its timeout is the sum of its steps' (they run in sequence at worst)."""
    timeout_seconds = sum(step.get("timeoutSeconds") or 0 for step in steps)
    execution = execution_create(data={**fields, "steps": steps, "timeout_seconds": timeout_seconds}, actor=actor)
    return execution_start(pk=execution.pk, actor=actor)


def _run_on_deployment(
    actor: Principal,
    deployment: Deployment,
    *,
    verb: str,
    changes: dict[str, Any],
    type: str,
    name: str,
    steps: list[StepDefinition],
) -> tuple[Deployment, Execution]:
    """Record the request on the deployment (held locked by the caller: one UPDATE with its state
    `changes` and a `<verb>.requested` event), then create and start the deployment's workflow."""
    execution_id = str(uuid.uuid4())
    deployment_change(
        deployment=deployment,
        changes=changes,
        event=f"{verb}.requested",
        message=f"{verb} requested: execution {execution_id}",
    )
    execution = _create_and_start(
        actor,
        execution_id=execution_id,
        name=name,
        category=ExecutionCategory.DEPLOYMENT,
        type=type,
        resource_type=ResourceType.DEPLOYMENT,
        resource_id=deployment.deployment_id,
        node_id=deployment.node_id,
        steps=steps,
    )
    if execution.status != ExecutionStatus.RUNNING:
        # It ended at once (its node vanished meanwhile): the engine's ending rewrote the row.
        deployment.refresh_from_db()
    return deployment, execution

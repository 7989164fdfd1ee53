"""What a step's progress means for the resource it acts on: the model it downloads, the
deployment it starts or stops. Called by the engine inside its transition (same transaction), so
a resource's state and the step that moved it commit together.

Only the engine's own commands move resources here; a command sent by hand through
`POST /api/nodes/:id/commands` moves nothing but itself.
"""

from __future__ import annotations

from typing import Any

from deployments.choices import DeploymentStatus, EventSeverity
from deployments.services import deployment_set_state
from executions.choices import ExecutionStatus, ResourceType
from executions.models import Execution
from executions.steps import StepDocument
from models_registry.choices import ModelStatus
from models_registry.services import model_apply_download_report
from nodes.choices import CommandType


def _target(step: StepDocument) -> tuple[str, str] | None:
    """(command type, resource id) of the step's command, or None for a step that acts on nothing."""
    command = step["command"]
    resource_id = command["resource"]["id"] if command else None
    if command is None or not isinstance(resource_id, str):
        return None
    return command["type"], resource_id


def _model(execution: Execution, step: StepDocument, **report: Any) -> None:
    target = _target(step)
    if target and target[0] == CommandType.MODEL_DOWNLOAD:
        node_id = step["nodeId"] or ""  # a step with a command always has one (build_steps)
        model_apply_download_report(org_id=execution.owner_org_id, model_id=target[1], node_id=node_id, **report)


def _deployment(execution: Execution, step: StepDocument, command_type: str, **change: Any) -> None:
    target = _target(step)
    if target and target[0] == command_type:
        deployment_set_state(org_id=execution.owner_org_id, deployment_id=target[1], **change)


def step_dispatched(execution: Execution, step: StepDocument) -> None:
    _model(execution, step, status=ModelStatus.DOWNLOADING, progress=0)


def step_progress(execution: Execution, step: StepDocument) -> None:
    _model(execution, step, status=ModelStatus.DOWNLOADING, progress=step["progress"])


def step_succeeded(execution: Execution, step: StepDocument) -> None:
    result: dict[str, Any] = step["result"] if isinstance(step.get("result"), dict) else {}
    command = step["command"]
    data: dict[str, Any] = command["data"] if command else {}
    path = result.get("downloadPath") or data.get("downloadPath") or ""
    _model(execution, step, status=ModelStatus.READY, progress=100, path=path if isinstance(path, str) else "")
    started: dict[str, Any] = {"status": DeploymentStatus.RUNNING, "is_running": True}
    for key, field in (("endpoint", "endpoint"), ("containerId", "container_id")):
        if isinstance(result.get(key), str):
            started[field] = result[key]
    where = f" at {started['endpoint']}" if started.get("endpoint") else ""
    _deployment(
        execution,
        step,
        CommandType.DEPLOYMENT_START,
        changes=started,
        event="engine.started",
        message=f"node {step['nodeId']} started it{where} (execution {execution.execution_id}, step {step['index']})",
    )
    _deployment(
        execution,
        step,
        CommandType.DEPLOYMENT_STOP,
        changes={"status": DeploymentStatus.STOPPED, "is_running": False},
        event="engine.stopped",
        message=f"node {step['nodeId']} stopped it (execution {execution.execution_id}, step {step['index']})",
    )


def step_failed(execution: Execution, step: StepDocument) -> None:
    _model(execution, step, status=ModelStatus.ERROR)


# What a deployment workflow's ending does to its deployment: (state changes, event severity).
DEPLOYMENT_ON_FINISH: dict[str, tuple[dict[str, Any], str]] = {
    ExecutionStatus.FAILED: ({"status": DeploymentStatus.FAILED, "is_running": False}, EventSeverity.ERROR),
    ExecutionStatus.TIMEOUT: ({"status": DeploymentStatus.FAILED, "is_running": False}, EventSeverity.ERROR),
    ExecutionStatus.CANCELLED: ({}, EventSeverity.WARNING),
}


def execution_finished(execution: Execution) -> None:
    """A deployment's workflow that failed or timed out leaves it failed, with the reason; a
    cancelled one leaves a warning in its events."""
    outcome = DEPLOYMENT_ON_FINISH.get(execution.status)
    if execution.resource_type != ResourceType.DEPLOYMENT or not execution.resource_id or outcome is None:
        return
    changes, severity = outcome
    error = execution.error or {}
    reason = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    deployment_set_state(
        org_id=execution.owner_org_id,
        deployment_id=execution.resource_id,
        changes=changes,
        event=f"execution.{execution.status}",
        message=f"{execution.type} {execution.execution_id} {execution.status}: {reason}",
        severity=severity,
    )

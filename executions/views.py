"""Executions REST endpoints: CRUD, statistics, and the engine's start/cancel/retry."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from aiwm_project.api.schema import entity_schema_view
from aiwm_project.api.viewsets import EntityViewSet
from executions.choices import ExecutionCategory, ExecutionStatus
from executions.engine import execution_cancel, execution_retry, execution_start
from executions.models import Execution
from executions.selectors import execution_statistics
from executions.serializers import (
    CancelRequestSerializer,
    ExecutionSerializer,
    RetryRequestSerializer,
    StartRequestSerializer,
)
from executions.services import execution_create, execution_delete, execution_update

OWNER_EXAMPLE = {"orgId": "68dd05b175d9e3c17bf97f60", "userId": "68dcf365f6a92c0d4911b619", "groupId": ""}
EXECUTION_EXAMPLE_REQUEST: dict[str, Any] = {
    "executionId": "exec-deploy-llama-001",
    "name": "Deploy Llama 2 Model",
    "description": "Multi-step deployment workflow",
    "category": "deployment",
    "type": "deploy-model",
    "timeoutSeconds": 3600,
    "resourceType": "deployment",
    "resourceId": "deploy-llama-prod-01",
    "nodeId": "node-gpu-01",
    "steps": [
        {
            "index": 0,
            "name": "Download model files",
            "command": {
                "type": "model.download",
                "resource": {"type": "model", "id": "llama-2-7b-v1"},
                "data": {"repository": "huggingface.co/meta-llama/Llama-2-7b"},
            },
            "nodeId": "node-gpu-01",
            "timeoutSeconds": 1800,
            "dependsOn": [],
            "optional": False,
        },
        {
            "index": 1,
            "name": "Start container",
            "command": {
                "type": "deployment.start",
                "resource": {"type": "deployment", "id": "deploy-llama-prod-01"},
                "data": {"containerName": "llama-prod", "port": 8080},
            },
            "nodeId": "node-gpu-01",
            "timeoutSeconds": 300,
            "dependsOn": [0],
            "optional": False,
        },
    ],
}
STEP_RUN_STATE = {
    "description": None,
    "status": "pending",
    "progress": 0,
    "startedAt": None,
    "completedAt": None,
    "result": None,
    "error": None,
    "sentMessageId": None,
    "receivedMessageId": None,
}
EXECUTION_EXAMPLE = {
    "_id": "68f2e5f6a7b8c9d0e1f2a3b4",
    **EXECUTION_EXAMPLE_REQUEST,
    "status": "pending",
    "progress": 0,
    "parentExecutionId": None,
    "childExecutionIds": [],
    "steps": [{**STEP_RUN_STATE, **step} for step in EXECUTION_EXAMPLE_REQUEST["steps"]],
    "involvedNodeIds": ["node-gpu-01"],
    "startedAt": None,
    "completedAt": None,
    "timeoutAt": None,
    "result": None,
    "error": None,
    "sentMessageIds": [],
    "receivedMessageIds": [],
    "retryCount": 0,
    "maxRetries": 3,
    "retryAttempts": [],
    "owner": OWNER_EXAMPLE,
    "createdBy": OWNER_EXAMPLE["userId"],
    "updatedBy": OWNER_EXAMPLE["userId"],
    "createdAt": "2025-11-16T13:00:00.000Z",
    "updatedAt": "2025-11-16T13:00:00.000Z",
}
STATISTICS_EXAMPLE = {
    "total": 150,
    "byStatus": {"pending": 10, "running": 5, "completed": 120, "failed": 10, "cancelled": 3, "timeout": 2},
    "byCategory": {"deployment": 80, "model": 40, "agent": 20, "maintenance": 10, "batch": 0},
}


def _counts(name: str, keys: list[str]) -> serializers.Serializer:
    return inline_serializer(name, {key: serializers.IntegerField() for key in keys})


ExecutionStatistics = inline_serializer(
    "ExecutionStatistics",
    {
        "total": serializers.IntegerField(),
        "byStatus": _counts("ExecutionCountsByStatus", ExecutionStatus.values),
        "byCategory": _counts("ExecutionCountsByCategory", ExecutionCategory.values),
    },
)


@entity_schema_view(
    singular="execution",
    example=EXECUTION_EXAMPLE,
    create_example=("Deploy a model", EXECUTION_EXAMPLE_REQUEST),
    update_example=(
        "Rename and extend timeout",
        {"name": "Deploy Llama 2 Model (prod)", "timeoutSeconds": 7200, "maxRetries": 5},
    ),
    overrides={
        "create": {"summary": "Create execution (pending; steps validated as a dependency graph)"},
        "update": {
            "summary": "Update execution (name/description any time; timeoutSeconds, maxRetries, steps while pending)"
        },
        "destroy": {"summary": "Delete execution (soft; not while running)"},
    },
)
class ExecutionViewSet(EntityViewSet):
    model = Execution
    serializer_class = ExecutionSerializer
    filter_fields = {
        "status": "status",
        "category": "category",
        "type": "type",
        "resourceType": "resource_type",
        "resourceId": "resource_id",
        "nodeId": "node_id",
        "executionId": "execution_id",
        "parentExecutionId": "parent_execution_id",
        "involvedNodeIds": "involved_node_ids",
    }
    # The contract's list examples use plain parameters (`?status=running`).
    plain_filter_params = ("status", "category", "type", "resourceType", "resourceId", "nodeId")
    sort_fields = {
        "createdAt": "created_at",
        "updatedAt": "updated_at",
        "name": "name",
        "executionId": "execution_id",
        "status": "status",
        "category": "category",
        "type": "type",
        "progress": "progress",
        "startedAt": "started_at",
        "completedAt": "completed_at",
    }
    create_service = staticmethod(execution_create)
    update_service = staticmethod(execution_update)
    delete_service = staticmethod(execution_delete)

    @extend_schema(
        summary="Execution counts of the caller's organization, by status and by category",
        tags=["Executions"],
        responses={200: ExecutionStatistics},
        examples=[OpenApiExample("Statistics", value=STATISTICS_EXAMPLE, response_only=True)],
    )
    @action(
        detail=False,
        methods=["get"],
        url_path="_statistics/summary",
        url_name="statistics-summary",
        filter_backends=[],
        pagination_class=None,
    )
    def statistics_summary(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        user: Any = request.user
        return Response(execution_statistics(org_id=getattr(user, "org_id", None)))

    # --- the engine ---

    def _engine_response(self, execution: Execution) -> Response:
        return Response(self.get_serializer(execution).data)

    @extend_schema(
        summary="Start a pending execution (force=true restarts a running one; otherwise 409)",
        tags=["Executions"],
        request=StartRequestSerializer,
        responses={200: ExecutionSerializer},
        examples=[OpenApiExample("Start", value={"force": False}, request_only=True)],
    )
    @action(detail=True, methods=["post"], url_path="start", required_right="update")
    def start(self, request: Request, id: str | None = None) -> Response:
        execution = self.get_object()
        body = self.action_body(StartRequestSerializer)
        return self._engine_response(execution_start(pk=execution.pk, force=body["force"], actor=self.actor))

    @extend_schema(
        summary="Cancel a pending or running execution (error USER_CANCELLED; running steps get command.cancel)",
        tags=["Executions"],
        request=CancelRequestSerializer,
        responses={200: ExecutionSerializer},
        examples=[OpenApiExample("Cancel", value={"reason": "User requested cancellation"}, request_only=True)],
    )
    @action(detail=True, methods=["post"], url_path="cancel", required_right="update")
    def cancel(self, request: Request, id: str | None = None) -> Response:
        execution = self.get_object()
        body = self.action_body(CancelRequestSerializer)
        return self._engine_response(execution_cancel(pk=execution.pk, reason=body["reason"], actor=self.actor))

    @extend_schema(
        summary="Retry a failed, timed-out or cancelled execution (409 once retryCount reaches maxRetries)",
        tags=["Executions"],
        request=RetryRequestSerializer,
        responses={200: ExecutionSerializer},
        examples=[OpenApiExample("Retry", value={"resetSteps": True}, request_only=True)],
    )
    @action(detail=True, methods=["post"], url_path="retry", required_right="update")
    def retry(self, request: Request, id: str | None = None) -> Response:
        execution = self.get_object()
        body = self.action_body(RetryRequestSerializer)
        return self._engine_response(execution_retry(pk=execution.pk, reset_steps=body["resetSteps"], actor=self.actor))

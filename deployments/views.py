"""Deployments REST endpoints (thin: scoping, filters and writes live in the shared base)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from aiwm_project.api.params import choice_param, time_param
from aiwm_project.api.schema import entity_schema_view
from aiwm_project.api.serializers import StrictBooleanField, StrictIntegerField
from aiwm_project.api.viewsets import EntityViewSet
from deployments.choices import LogLevel
from deployments.models import Deployment
from deployments.selectors import deployment_logs
from deployments.serializers import DeploymentLogSerializer, DeploymentSerializer
from executions.choices import ExecutionStatus
from executions.models import Execution
from executions.selectors import execution_wait
from executions.workflows import deployment_delete, deployment_start, deployment_stop
from models_registry.views import MODEL_EXAMPLE
from nodes.views import NODE_EXAMPLE


class StopRequestSerializer(serializers.Serializer):
    gracefulShutdown = StrictBooleanField(required=False, default=True)
    timeoutSeconds = StrictIntegerField(
        required=False, default=30, min_value=0, max_value=3600, help_text="Grace period the node gives the container."
    )


DeploymentLifecycleResponse = inline_serializer(
    "DeploymentLifecycleResponse",
    {
        "message": serializers.CharField(),
        "deployment": DeploymentSerializer(),
        "executionId": serializers.CharField(),
        "executionStatus": serializers.ChoiceField(choices=ExecutionStatus.choices),
    },
)
# `?wait=SECONDS`: answer when the workflow has finished, or at the deadline (it may run for long:
# a download), holding one worker thread meanwhile.
MAX_WAIT_SECONDS = 300
WAIT_PARAMETER = OpenApiParameter(
    "wait",
    int,
    description=f"Seconds (0-{MAX_WAIT_SECONDS}) to wait for the workflow to finish before answering; "
    "the answer then tells its outcome (`executionStatus`). Default 0: answer at once.",
)
# The message for how the workflow stands when the answer is written: (verb, outcome) -> text.
LIFECYCLE_MESSAGES: dict[tuple[str, str], str] = {
    ("start", ExecutionStatus.COMPLETED): "Deployment started successfully",
    ("stop", ExecutionStatus.COMPLETED): "Deployment stopped successfully",
}

OWNER = {"orgId": "68dd05b175d9e3c17bf97f60", "userId": "68dcf365f6a92c0d4911b619", "groupId": ""}
AUDIT = {
    "owner": OWNER,
    "createdBy": OWNER["userId"],
    "updatedBy": OWNER["userId"],
}
DEPLOYMENT_EXAMPLE_REQUEST = {
    "deploymentId": "deploy-llama-prod-01",
    "name": "Llama 2 Production Deployment",
    "description": "Production deployment for customer chat",
    "environment": "production",
    "status": "pending",
    "modelId": "llama-2-7b-v1",
    "nodeId": "node-gpu-01",
    "deploymentType": "api",
    "replicas": 2,
    "hardwareProfile": "gpu",
}
# The contract's own Model (2.1) and Node examples appear as `model` and `node`, populated on reads.
DEPLOYMENT_EXAMPLE = {
    "_id": "68f2d4e5f6a7b8c9d0e1f2a3",
    **DEPLOYMENT_EXAMPLE_REQUEST,
    "isRunning": False,
    "containerName": "",
    "containerPort": None,
    "endpoint": "",
    "totalInferences": 0,
    "averageLatency": 0,
    "uptime": 0,
    "lastHealthCheck": None,
    "events": [],
    "model": MODEL_EXAMPLE,
    "node": NODE_EXAMPLE,
    **AUDIT,
    "createdAt": "2025-11-16T12:00:00.000Z",
    "updatedAt": "2025-11-16T12:00:00.000Z",
}


@entity_schema_view(
    singular="deployment",
    example=DEPLOYMENT_EXAMPLE,
    create_example=DEPLOYMENT_EXAMPLE_REQUEST,
    update_example=("Scale up", {"status": "running", "replicas": 3, "totalInferences": 5000}),
    overrides={
        "list": {
            "description": "Each deployment carries its `model` and `node` populated (null when the record is gone)."
        },
        "create": {
            "description": "`modelId` and `nodeId` must name a model and a node of your organization. "
            "`events` is written by the server only."
        },
        "destroy": {
            "description": "409 while the deployment is running or a workflow is starting or stopping it: "
            "stop it first (its model server would otherwise keep the node's GPU memory)."
        },
    },
)
class DeploymentViewSet(EntityViewSet):
    model = Deployment
    serializer_class = DeploymentSerializer
    delete_service = staticmethod(deployment_delete)
    filter_fields = {
        "deploymentId": "deployment_id",
        "status": "status",
        "environment": "environment",
        "modelId": "model_id",
        "nodeId": "node_id",
        "isRunning": "is_running",
        "deploymentType": "deployment_type",
        "hardwareProfile": "hardware_profile",
    }
    sort_fields = {
        "createdAt": "created_at",
        "updatedAt": "updated_at",
        "name": "name",
        "deploymentId": "deployment_id",
        "status": "status",
        "environment": "environment",
        "replicas": "replicas",
        "totalInferences": "total_inferences",
        "averageLatency": "average_latency",
        "uptime": "uptime",
        "lastHealthCheck": "last_health_check",
    }

    @extend_schema(
        summary="The deployment's logs (deployment.logs from its node), oldest first",
        tags=["Deployments"],
        parameters=[
            OpenApiParameter("since", str, description="ISO 8601: only lines at or after this time"),
            OpenApiParameter("level", str, enum=LogLevel.values, description="Only lines of this level."),
            OpenApiParameter("page", int),
            OpenApiParameter("limit", int),
        ],
        responses={200: DeploymentLogSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], url_path="logs")
    def logs(self, request: Request, id: str | None = None) -> Response:
        lines = deployment_logs(
            deployment=self.get_object(),
            since=time_param(request, "since"),
            level=choice_param(request, "level", LogLevel.values),
        )
        page = self.paginate_queryset(lines)
        return self.get_paginated_response(DeploymentLogSerializer(page, many=True).data)

    # --- lifecycle, through the execution engine ---

    @extend_schema(
        summary="Start the deployment: a deploy-model execution (download unless present, then deployment.start)",
        description="Answers with the execution that does the work (`executionId`, `executionStatus`): at once, "
        "or with `?wait=SECONDS` when it has finished (the message then says the deployment started) or the wait "
        "ran out. The deployment's `status` follows its node's reports (`pending` until the node says `running`). "
        "409 when it is running, a workflow on it is still active, or its node is in maintenance.",
        tags=["Deployments"],
        request=None,
        parameters=[WAIT_PARAMETER],
        responses={200: DeploymentLifecycleResponse},
    )
    @action(detail=True, methods=["post"], url_path="start", required_right="update")
    def start(self, request: Request, id: str | None = None) -> Response:
        wait = self.wait_seconds()
        deployment, execution = deployment_start(deployment=self.get_object(), actor=self.actor)
        return self.lifecycle_response("start", deployment, execution, wait)

    @extend_schema(
        summary="Stop the deployment: a stop-deployment execution (deployment.stop)",
        description="A deploy still in progress is cancelled first. Answers like start (`?wait=SECONDS` to wait "
        "for the outcome). 409 when the deployment is stopped or already being stopped.",
        tags=["Deployments"],
        request=StopRequestSerializer,
        parameters=[WAIT_PARAMETER],
        responses={200: DeploymentLifecycleResponse},
        examples=[OpenApiExample("Stop", value={"gracefulShutdown": True, "timeoutSeconds": 30}, request_only=True)],
    )
    @action(detail=True, methods=["post"], url_path="stop", required_right="update")
    def stop(self, request: Request, id: str | None = None) -> Response:
        wait = self.wait_seconds()
        deployment = self.get_object()
        body = self.action_body(StopRequestSerializer)
        deployment, execution = deployment_stop(
            deployment=deployment,
            actor=self.actor,
            graceful_shutdown=body["gracefulShutdown"],
            timeout_seconds=body["timeoutSeconds"],
        )
        return self.lifecycle_response("stop", deployment, execution, wait)

    def wait_seconds(self) -> int:
        """`?wait=`: whole seconds, ASCII digits, 0 to MAX_WAIT_SECONDS (a 400 otherwise)."""
        raw = self.request.query_params.get("wait", "0") or "0"
        if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_WAIT_SECONDS:
            raise ValidationError({"wait": [f"must be a whole number of seconds from 0 to {MAX_WAIT_SECONDS}"]})
        return int(raw)

    def lifecycle_response(self, verb: str, deployment: Deployment, execution: Execution, wait: int) -> Response:
        """What is true when the answer is written: the workflow was started (its `executionId`) and
        how it stands; with `wait`, after it finished or the wait ran out."""
        if wait:
            execution = execution_wait(execution=execution, seconds=wait)
            deployment = self.get_object()  # as the workflow left it
        message = LIFECYCLE_MESSAGES.get((verb, execution.status))
        if message is None:
            message = f"Deployment {verb} requested: execution {execution.execution_id} is {execution.status}"
            if execution.error:
                message += f" ({execution.error.get('code')}: {execution.error.get('message')})"
        response = self.workflow_response(message, "deployment", deployment, execution.execution_id)
        response.data["executionStatus"] = execution.status
        return response

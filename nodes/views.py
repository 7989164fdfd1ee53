"""Nodes REST endpoints (thin: queryset scoping, filters and writes live in the shared base)."""

from __future__ import annotations

from datetime import timedelta

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from aiwm_project.api.params import choice_param, time_range
from aiwm_project.api.schema import entity_schema_view
from aiwm_project.api.viewsets import EntityViewSet
from aiwm_project.datetimes import format_datetime
from nodes import selectors
from nodes.choices import CommandStatus
from nodes.commands import send_command
from nodes.models import Node
from nodes.serializers import (
    NodeCommandSerializer,
    NodeMetricSerializer,
    NodeSerializer,
    NodeTokenSerializer,
    SendCommandSerializer,
)
from nodes.services import node_issue_token, node_update

NODE_EXAMPLE_REQUEST = {
    "nodeId": "node-gpu-01",
    "name": "GPU Server 1",
    "role": ["worker"],
    "status": "offline",
    "isLocal": True,
    "cpuCores": 16,
    "ramTotal": 65536,
    "ramFree": 32768,
}
NODE_EXAMPLE = {
    "_id": "68f2a1b3c4d5e6f7a8b9c0d1",
    **NODE_EXAMPLE_REQUEST,
    "vpnIp": "",
    "websocketConnected": False,
    "lastHeartbeat": None,
    "gpuDevices": [
        {
            "deviceId": "GPU-0",
            "model": "NVIDIA RTX 4090",
            "memoryTotal": 24576,
            "memoryFree": 20000,
            "utilization": 45,
            "temperature": 65,
        }
    ],
    "owner": {"orgId": "68dd05b175d9e3c17bf97f60", "userId": "68dcf365f6a92c0d4911b619", "groupId": ""},
    "createdBy": "68dcf365f6a92c0d4911b619",
    "updatedBy": "68dcf365f6a92c0d4911b619",
    "createdAt": "2025-11-16T10:30:00.000Z",
    "updatedAt": "2025-11-16T10:30:00.000Z",
}


@entity_schema_view(
    singular="node",
    create_verb="Register",
    example=NODE_EXAMPLE,
    create_example=NODE_EXAMPLE_REQUEST,
    update_example=("Maintenance", {"name": "GPU Server 1 - Updated", "status": "maintenance", "ramFree": 30000}),
)
class NodeViewSet(EntityViewSet):
    model = Node
    serializer_class = NodeSerializer
    update_service = staticmethod(node_update)
    filter_fields = {"status": "status", "isLocal": "is_local", "role": "role", "nodeId": "node_id"}
    sort_fields = {
        "createdAt": "created_at",
        "updatedAt": "updated_at",
        "name": "name",
        "nodeId": "node_id",
        "status": "status",
        "lastHeartbeat": "last_heartbeat",
        "cpuCores": "cpu_cores",
    }

    # --- the node gateway's records, per node ---

    @extend_schema(
        summary="Issue the node's token (revokes the previous one)",
        tags=["Nodes"],
        request=None,
        responses={201: NodeTokenSerializer},
    )
    @action(detail=True, methods=["post"], url_path="token", required_right="update")
    def token(self, request: Request, id: str | None = None) -> Response:
        node = self.get_object()
        token, expires_at = node_issue_token(node=node, actor_id=self.actor.user_id)
        body = {"token": token, "nodeId": node.node_id, "expiresAt": format_datetime(expires_at)}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(
        methods=["GET"],
        summary="The node's commands (the outbox), newest first",
        tags=["Nodes"],
        parameters=[
            OpenApiParameter("status", str, enum=CommandStatus.values, description="Only commands in this status."),
            OpenApiParameter("page", int),
            OpenApiParameter("limit", int),
        ],
        responses={200: NodeCommandSerializer(many=True)},
    )
    @extend_schema(
        methods=["POST"],
        summary="Send a command to the node (stored, then delivered when it is connected)",
        tags=["Nodes"],
        request=SendCommandSerializer,
        responses={201: NodeCommandSerializer},
    )
    @action(detail=True, methods=["get", "post"], url_path="commands")
    def commands(self, request: Request, id: str | None = None) -> Response:
        node = self.get_object()
        if request.method == "POST":
            sent = SendCommandSerializer(data=request.data)
            sent.is_valid(raise_exception=True)
            command = send_command(
                org_id=node.owner_org_id, node_id=node.node_id, actor_id=self.actor.user_id, **sent.validated_data
            )
            return Response(NodeCommandSerializer(command).data, status=status.HTTP_201_CREATED)
        commands = selectors.node_commands(node=node, status=choice_param(request, "status", CommandStatus.values))
        page = self.paginate_queryset(commands)
        return self.get_paginated_response(NodeCommandSerializer(page, many=True).data)

    @extend_schema(
        summary="The node's metrics (telemetry.metrics) between from and to (default: the last hour)",
        tags=["Nodes"],
        parameters=[
            OpenApiParameter("from", str, description="ISO 8601; default one hour ago"),
            OpenApiParameter("to", str, description="ISO 8601; default now"),
            OpenApiParameter("page", int),
            OpenApiParameter("limit", int),
        ],
        responses={200: NodeMetricSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], url_path="metrics")
    def metrics(self, request: Request, id: str | None = None) -> Response:
        node = self.get_object()
        start, end = time_range(request, default_span=timedelta(hours=1))
        page = self.paginate_queryset(selectors.node_metrics(node=node, start=start, end=end))
        return self.get_paginated_response(NodeMetricSerializer(page, many=True).data)

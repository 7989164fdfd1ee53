"""Deployment JSON as the contract's schema names it, with the model and node populated on every read."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from aiwm_project.api.serializers import EntitySerializer, IsoDateTimeField, NestedObjectSerializer, PopulatedField
from deployments.choices import DeploymentStatus, EventSeverity
from deployments.models import Deployment
from models_registry.serializers import AIModelSerializer
from nodes.serializers import NodeSerializer


class DeploymentEventSerializer(NestedObjectSerializer):
    timestamp = serializers.DateTimeField()
    event = serializers.CharField()
    message = serializers.CharField(allow_blank=True)
    severity = serializers.ChoiceField(choices=EventSeverity.choices)


class DeploymentSerializer(EntitySerializer):
    backendArgs = serializers.ListField(
        source="backend_args",
        child=serializers.CharField(max_length=1024),
        max_length=64,
        required=False,
        help_text="Extra arguments for the model server (an addition to the contract), before the agent's "
        "own host, port and model name, which they cannot override.",
    )
    # Written by the execution engine and node reports through services, never by API clients.
    events = serializers.ListField(child=DeploymentEventSerializer(), read_only=True)
    model = PopulatedField(
        model_label="models_registry.AIModel", reference_field="model_id", serializer_class=AIModelSerializer
    )
    node = PopulatedField(model_label="nodes.Node", reference_field="node_id", serializer_class=NodeSerializer)

    class Meta:
        model = Deployment
        fields = [
            "deployment_id",
            "name",
            "description",
            "environment",
            "status",
            "model_id",
            "node_id",
            "deployment_type",
            "replicas",
            "hardware_profile",
            "is_running",
            "container_name",
            "container_port",
            "backend",
            "backendArgs",
            "endpoint",
            "container_id",
            "health_status",
            "total_inferences",
            "average_latency",
            "uptime",
            "last_health_check",
            "events",
            "model",
            "node",
        ]
        # Reported by the node (deployment.status).
        read_only_fields = ["container_id", "health_status"]
        extra_kwargs = {
            "description": {"max_length": 4000},
            "backend": {
                "help_text": "The model server the node runs (an addition to the contract): llama.cpp or vllm; "
                "empty (the default) chooses by the model: framework gguf means llama.cpp, else by its files."
            },
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """`isRunning` follows `status` (true exactly when it is running), so the two never
        contradict: a client that writes `status` moves `isRunning` with it, and an `isRunning`
        that disagrees with the status it would have is a 400 - unless it is the value the record
        holds, the copy a client sends back with the status it changed."""
        current = getattr(self.instance, "status", DeploymentStatus.PENDING)
        status = attrs.get("status", current)
        running = status == DeploymentStatus.RUNNING
        held = getattr(self.instance, "is_running", False)
        if "is_running" in attrs and attrs["is_running"] not in (running, held):
            raise serializers.ValidationError(
                {"isRunning": [f"must be {str(running).lower()} while status is {status!r} (it follows status)"]}
            )
        if "status" in attrs or self.instance is None:
            attrs["is_running"] = running
        return attrs


class DeploymentLogSerializer(serializers.Serializer):
    timestamp = IsoDateTimeField()
    level = serializers.CharField()
    message = serializers.CharField()
    nodeId = serializers.CharField(source="node_id")
    receivedAt = IsoDateTimeField(source="received_at")

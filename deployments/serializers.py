"""Deployment JSON as the contract's schema names it, with the model and node populated on every read."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from aiwm_project.api.serializers import EntitySerializer
from aiwm_project.selectors import RelatedLoader
from deployments.choices import EventSeverity
from deployments.models import Deployment
from models_registry.serializers import AIModelSerializer
from nodes.serializers import NodeSerializer

# Written by the execution engine and node reports through services, never by API clients.
SERVER_WRITTEN_FIELDS = ("events",)


class DeploymentEventSerializer(serializers.Serializer):
    timestamp = serializers.DateTimeField()
    event = serializers.CharField()
    message = serializers.CharField(allow_blank=True)
    severity = serializers.ChoiceField(choices=EventSeverity.choices)


class DeploymentSerializer(EntitySerializer):
    events = serializers.ListField(child=DeploymentEventSerializer(), read_only=True)
    model = serializers.SerializerMethodField()
    node = serializers.SerializerMethodField()

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
            "endpoint",
            "total_inferences",
            "average_latency",
            "uptime",
            "last_health_check",
            "events",
            "model",
            "node",
        ]
        extra_kwargs = {"description": {"max_length": 4000}}

    def to_internal_value(self, data: Any) -> Any:
        # A 400 rather than DRF's silent drop, like the other server-set fields: a client that
        # believes it wrote an event should learn that it did not.
        if isinstance(data, dict):
            sent = [name for name in SERVER_WRITTEN_FIELDS if name in data]
            if sent:
                raise serializers.ValidationError({name: ["This field is set by the server."] for name in sent})
        return super().to_internal_value(data)

    # --- populated references: batch-loaded by the viewset's `populate`, never a query per row ---
    def _loader(self, instance: Deployment) -> RelatedLoader:
        loader = self.context.get("loader")
        if loader is None:  # used outside a viewset (shell, admin, tests): same organization as the row
            loader = self.context["loader"] = RelatedLoader(instance.owner_org_id)
        return loader

    def _nested(self, key: str, serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
        # One nested serializer per parent serializer: a list reuses it for every row.
        cache: dict[str, serializers.Serializer] = self.__dict__.setdefault("_nested_serializers", {})
        if key not in cache:
            cache[key] = serializer_class(context=self.context)
        return cache[key]

    @extend_schema_field(AIModelSerializer(allow_null=True, read_only=True))
    def get_model(self, instance: Deployment) -> dict[str, Any] | None:
        record = self._loader(instance).get("models_registry.AIModel", instance.model_id)
        return None if record is None else self._nested("model", AIModelSerializer).to_representation(record)

    @extend_schema_field(NodeSerializer(allow_null=True, read_only=True))
    def get_node(self, instance: Deployment) -> dict[str, Any] | None:
        record = self._loader(instance).get("nodes.Node", instance.node_id)
        return None if record is None else self._nested("node", NodeSerializer).to_representation(record)

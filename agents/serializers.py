"""Instruction, Agent and Tool JSON, exactly as the contract's schemas name them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rest_framework import serializers

from agents.choices import ToolParametersType, ToolResponseType
from agents.models import Agent, Instruction, Tool
from aiwm_project.api.serializers import (
    EntitySerializer,
    NestedObjectSerializer,
    PopulatedField,
    choice_field,
    string_list,
)
from aiwm_project.datetimes import format_datetime

# --- Instruction ---


class InstructionSerializer(EntitySerializer):
    guidelines = string_list(max_items=100, max_length=2000)
    tags = string_list()

    class Meta:
        model = Instruction
        fields = ["instruction_id", "name", "description", "system_prompt", "guidelines", "tags", "is_active"]


# --- Agent ---


class AgentSerializer(EntitySerializer):
    capabilities = string_list()
    permissions = string_list(max_length=128)
    tags = string_list()
    toolIds = serializers.ListField(
        source="tool_ids",
        child=serializers.CharField(max_length=128),
        required=False,
        max_length=128,
        help_text="Tools offered to the model in this agent's conversations (toolIds of your organization).",
    )
    instruction = PopulatedField(
        model_label="agents.Instruction",
        reference_field="instruction_id",
        serializer_class=InstructionSerializer,
        on_request=True,
        help_text="Only with ?populate=instruction: the Instruction, or null.",
    )

    class Meta:
        model = Agent
        fields = [
            "agent_id",
            "name",
            "description",
            "role",
            "status",
            "capabilities",
            "instruction_id",
            "node_id",
            "model_id",
            "toolIds",
            "total_tasks",
            "completed_tasks",
            "failed_tasks",
            "average_response_time",
            "average_latency",
            "last_task",
            "last_heartbeat",
            "is_active",
            "permissions",
            "tags",
            "instruction",
        ]
        extra_kwargs = {
            "total_tasks": {"min_value": 0},
            "completed_tasks": {"min_value": 0},
            "failed_tasks": {"min_value": 0},
            "average_response_time": {"min_value": 0},
            "average_latency": {"min_value": 0},
        }


# --- Tool: JSON columns with a documented shape ---


class IsoTimestampField(serializers.DateTimeField):
    """A date-time inside a JSON column: validated, then stored as the API's ISO string."""

    def to_internal_value(self, value: Any) -> Any:
        parsed: datetime = super().to_internal_value(value)
        return format_datetime(parsed)


class ToolParametersSerializer(NestedObjectSerializer):
    """`parameters`: a JSON Schema of the tool's arguments."""

    def get_fields(self) -> dict[str, serializers.Field]:
        # Built here because a declared attribute named `required` would shadow Field.required.
        return {
            "type": choice_field(ToolParametersType.choices),
            "properties": serializers.DictField(required=False, default=dict),
            "required": serializers.ListField(
                child=serializers.CharField(max_length=255), required=False, default=list, max_length=500
            ),
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        undefined = [name for name in attrs["required"] if name not in attrs["properties"]]
        if undefined:
            raise serializers.ValidationError(
                {"required": [f"names properties that are not defined: {', '.join(undefined[:10])}"]}
            )
        return attrs


class ToolResponseFormatSerializer(NestedObjectSerializer):
    """`responseFormat`: the JSON type of the tool's result and a schema of it."""

    type = choice_field(ToolResponseType.choices)
    schema = serializers.DictField(required=False, default=dict)


class ToolUsageSerializer(NestedObjectSerializer):
    """One entry of `usage`: a call of the tool by an agent."""

    timestamp = IsoTimestampField()
    agentId = serializers.CharField(max_length=128)
    arguments = serializers.DictField(required=False, default=dict)
    result = serializers.JSONField(required=False, allow_null=True, default=None)
    latency = serializers.FloatField(min_value=0, required=False, default=0)
    success = serializers.BooleanField()
    error = serializers.CharField(required=False, allow_blank=True, max_length=10_000)


class ToolExampleSerializer(NestedObjectSerializer):
    """One entry of `examples`: documentation of a call and what it returns."""

    title = serializers.CharField(max_length=255)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    arguments = serializers.DictField(required=False, default=dict)
    expectedOutput = serializers.JSONField(required=False, allow_null=True, default=None)


class ToolSerializer(EntitySerializer):
    parameters = ToolParametersSerializer(required=False)
    responseFormat = ToolResponseFormatSerializer(source="response_format", required=False)
    # The usage log lives in the row (as the contract has it); keep one write bounded.
    usage = serializers.ListField(child=ToolUsageSerializer(), required=False, max_length=1000)
    examples = serializers.ListField(child=ToolExampleSerializer(), required=False, max_length=100)
    tags = string_list()

    class Meta:
        model = Tool
        fields = [
            "tool_id",
            "name",
            "description",
            "type",
            "category",
            "provider",
            "endpoint",
            "version",
            "status",
            "parameters",
            "responseFormat",
            "usage",
            "total_usage",
            "total_failures",
            "average_latency",
            "tags",
            "documentation",
            "examples",
            "is_active",
        ]
        extra_kwargs = {
            "total_usage": {"min_value": 0},
            "total_failures": {"min_value": 0},
            "average_latency": {"min_value": 0},
        }

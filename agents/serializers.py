"""Instruction, Agent and Tool JSON, exactly as the contract's schemas name them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField

from agents.choices import ToolParametersType, ToolResponseType
from agents.models import Agent, Instruction, Tool
from aiwm_project.api.errors import format_datetime
from aiwm_project.api.serializers import EntitySerializer

TAG_MAX_LENGTH = 64
MAX_TAGS = 50


def string_list(*, max_items: int = MAX_TAGS, max_length: int = TAG_MAX_LENGTH) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=max_length), required=False, max_length=max_items
    )


def choice_field(choices: list[tuple[str, str]], **kwargs: Any) -> serializers.ChoiceField:
    """A ChoiceField whose error names the allowed values, like the model-derived ones of EntitySerializer."""
    allowed = ", ".join(value for value, _ in choices)
    return serializers.ChoiceField(
        choices=choices, error_messages={"invalid_choice": f'"{{input}}" is not one of: {allowed}'}, **kwargs
    )


# --- Instruction ---


class InstructionSerializer(EntitySerializer):
    guidelines = string_list(max_items=100, max_length=2000)
    tags = string_list()

    class Meta:
        model = Instruction
        fields = ["instruction_id", "name", "description", "system_prompt", "guidelines", "tags", "is_active"]


# --- Agent ---


class PopulatedInstructionField(serializers.Field):
    """`instruction`: only with `?populate=instruction`, the agent's Instruction (null if none or deleted).

    Output only: a value sent under this name is ignored, as unknown body fields are. It is not
    declared read_only because the OpenAPI document would then list it as always present;
    `agents.schema` documents it as an optional, response-only property instead. The Instruction
    comes from the view's RelatedLoader, primed for the whole page, so a list does not query per row.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(source="*", required=False, allow_null=True, **kwargs)

    def get_attribute(self, instance: Agent) -> Agent:
        if "instruction" not in self.context.get("populate", ()):
            raise SkipField()
        return instance

    def to_representation(self, agent: Agent) -> dict[str, Any] | None:
        instruction = self.context["loader"].get("agents.Instruction", agent.instruction_id or "")
        if instruction is None:
            return None
        return InstructionSerializer(instruction, context=self.context).data

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        return {}


class AgentSerializer(EntitySerializer):
    capabilities = string_list()
    permissions = string_list(max_length=128)
    tags = string_list()
    instruction = PopulatedInstructionField(help_text="Only with ?populate=instruction: the Instruction, or null.")

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

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # "" and null both mean "no instruction"; store one of them.
        if attrs.get("instruction_id") == "":
            attrs["instruction_id"] = None
        return attrs


# --- Tool: JSON columns with a documented shape ---


class IsoTimestampField(serializers.DateTimeField):
    """A date-time inside a JSON column: validated, then stored as the API's ISO string."""

    def to_internal_value(self, value: Any) -> Any:
        parsed: datetime = super().to_internal_value(value)
        return format_datetime(parsed)


class ToolParametersSerializer(serializers.Serializer):
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


class ToolResponseFormatSerializer(serializers.Serializer):
    """`responseFormat`: the JSON type of the tool's result and a schema of it."""

    type = choice_field(ToolResponseType.choices)
    schema = serializers.DictField(required=False, default=dict)


class ToolUsageSerializer(serializers.Serializer):
    """One entry of `usage`: a call of the tool by an agent."""

    timestamp = IsoTimestampField()
    agentId = serializers.CharField(max_length=128)
    arguments = serializers.DictField(required=False, default=dict)
    result = serializers.JSONField(required=False, allow_null=True, default=None)
    latency = serializers.FloatField(min_value=0, required=False, default=0)
    success = serializers.BooleanField()
    error = serializers.CharField(required=False, allow_blank=True, max_length=10_000)


class ToolExampleSerializer(serializers.Serializer):
    """One entry of `examples`: documentation of a call and what it returns."""

    title = serializers.CharField(max_length=255)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    arguments = serializers.DictField(required=False, default=dict)
    expectedOutput = serializers.JSONField(required=False, allow_null=True, default=None)


class ShapedJSONField(serializers.Field):
    """A JSON column checked as a whole against `shape` (a serializer), and stored as validated.

    DRF skips a nested serializer's required fields and defaults when the root serializer is
    partial (every PUT here), so `{"properties": {}}` without a `type` would be stored. A JSON
    column is replaced whole on update, so its value is validated by a fresh, non-partial
    serializer instead. Output is the stored JSON as is.
    """

    shape: ClassVar[type[serializers.Serializer]]
    many: ClassVar[bool] = False
    max_items: ClassVar[int] = 0

    default_error_messages = {
        "not_a_list": "Expected a list of items but got type {input_type!r}.",
        "max_items": "Ensure this field has no more than {max_items} elements.",
    }

    def to_internal_value(self, data: Any) -> Any:
        if self.many:
            if not isinstance(data, list):
                self.fail("not_a_list", input_type=type(data).__name__)
            if self.max_items and len(data) > self.max_items:
                self.fail("max_items", max_items=self.max_items)
        shaped = self.shape(data=data, many=self.many)
        if not shaped.is_valid():
            raise serializers.ValidationError(shaped.errors)
        return shaped.validated_data

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(ToolParametersSerializer)
class ToolParametersField(ShapedJSONField):
    shape = ToolParametersSerializer


@extend_schema_field(ToolResponseFormatSerializer)
class ToolResponseFormatField(ShapedJSONField):
    shape = ToolResponseFormatSerializer


@extend_schema_field(ToolUsageSerializer(many=True))
class ToolUsageField(ShapedJSONField):
    shape = ToolUsageSerializer
    many = True
    # The usage log lives in the row (as the contract has it); keep one write bounded.
    max_items = 1000


@extend_schema_field(ToolExampleSerializer(many=True))
class ToolExamplesField(ShapedJSONField):
    shape = ToolExampleSerializer
    many = True
    max_items = 100


class ToolSerializer(EntitySerializer):
    parameters = ToolParametersField(required=False)
    responseFormat = ToolResponseFormatField(source="response_format", required=False)
    usage = ToolUsageField(required=False)
    examples = ToolExamplesField(required=False)
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

"""Execution JSON, exactly as the contract's schema names it; steps come back as stored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from aiwm_project.api.serializers import (
    EntitySerializer,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    server_value_errors,
)
from executions.choices import STEP_COMMAND_TYPES, StepStatus
from executions.models import MAX_RETRIES_LIMIT, MAX_STEPS, MAX_TIMEOUT_SECONDS, Execution
from executions.steps import command_type_problem, new_step_document

TIMEOUT_MESSAGES: dict[str, Any] = {
    "min_value": "must be at least 1 second",
    "max_value": f"must be at most {MAX_TIMEOUT_SECONDS} seconds (7 days)",
}


class StartRequestSerializer(serializers.Serializer):
    force = StrictBooleanField(required=False, default=False, help_text="Restart even if already running.")


class CancelRequestSerializer(serializers.Serializer):
    reason = StrictCharField(required=False, default="", allow_blank=True, max_length=1000)


class RetryRequestSerializer(serializers.Serializer):
    resetSteps = StrictBooleanField(
        required=False,
        default=True,
        help_text="true: every step runs again; false: only failed/skipped steps and the steps after them.",
    )


class CommandTypeField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> Any:
        problem = command_type_problem(data)
        if problem:
            raise serializers.ValidationError(problem)
        return data


class CommandResourceSerializer(serializers.Serializer):
    # Not an enumeration of its own: each command acts on exactly one resource type, and the
    # services check that it matches (model.download -> model, deployment.* -> deployment).
    type = serializers.CharField(max_length=16, help_text="model for model.download, deployment for deployment.*")
    id = serializers.CharField(max_length=128)


class StepCommandSerializer(serializers.Serializer):
    type = CommandTypeField(choices=[(t.value, t.label) for t in STEP_COMMAND_TYPES])
    resource = CommandResourceSerializer()
    # The name shadows Serializer.data only in the class body: DRF moves declared fields out of it.
    data = serializers.DictField(required=False, default=dict)  # type: ignore[assignment]


class StepErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(required=False, allow_null=True)


class ExecutionErrorSerializer(StepErrorSerializer):
    nodeId = serializers.CharField(required=False, allow_null=True)
    stepIndex = serializers.IntegerField(required=False, allow_null=True)


class StepListSerializer(serializers.ListSerializer):
    def to_representation(self, data: Any) -> list[dict[str, Any]]:
        # Stored step documents are already in the contract's shape: no per-step field work on lists.
        return list(data or [])

    def to_internal_value(self, data: Any) -> list[dict[str, Any]]:
        # Each step is validated on its own: inside a partial PUT, DRF would skip a step's required fields.
        if not isinstance(data, list):
            message = f"Expected a list of steps but got type {type(data).__name__!r}."
            raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [message]})
        if len(data) > MAX_STEPS:
            message = f"at most {MAX_STEPS} steps are allowed, got {len(data)}"
            raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [message]})
        validated: list[dict[str, Any]] = []
        errors: list[Any] = []
        step_class = cast(type[serializers.Serializer], type(self.child))
        held = self.held_steps()
        run_state = [name for name, field in cast(serializers.Serializer, self.child).fields.items() if field.read_only]
        for item in data:
            if isinstance(item, dict) and (changed := server_value_errors(item, held(item.get("index")), run_state)):
                errors.append(changed)
                continue
            step = step_class(data=item, context=self.context)
            if step.is_valid():
                validated.append(dict(step.validated_data))
                errors.append({})
            else:
                errors.append(step.errors)
        if any(errors):
            raise serializers.ValidationError(errors)
        return validated

    def held_steps(self) -> Callable[[Any], Mapping[str, Any]]:
        """The stored step with a given index (a new one: pending, progress 0), whose run state a
        step sent back must carry unchanged: it is the engine's (the entity rule for server-owned
        fields, one level down)."""
        instance = getattr(self.parent, "instance", None)
        stored = {step["index"]: step for step in instance.steps} if isinstance(instance, Execution) else {}
        fresh = new_step_document({"index": 0, "name": ""}, default_node_id=None)
        return lambda index: stored.get(index, fresh) if isinstance(index, int) else fresh


class StepSerializer(serializers.Serializer):
    """One step. Run state (status, progress, timing, result, error, message ids) is the engine's:
    a client may send back the values it read (ignored) but no others (400), and every step
    starts pending with progress 0."""

    index = StrictIntegerField(min_value=0, max_value=MAX_STEPS - 1)
    name = serializers.CharField(max_length=255)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True, allow_null=True)
    status = serializers.ChoiceField(choices=StepStatus.choices, read_only=True)
    progress = serializers.IntegerField(read_only=True, min_value=0, max_value=100)
    command = StepCommandSerializer(required=False, allow_null=True)
    nodeId = serializers.CharField(max_length=128, required=False, allow_null=True, allow_blank=True)
    startedAt = serializers.DateTimeField(read_only=True, allow_null=True)
    completedAt = serializers.DateTimeField(read_only=True, allow_null=True)
    timeoutSeconds = StrictIntegerField(
        min_value=1, max_value=MAX_TIMEOUT_SECONDS, required=False, allow_null=True, error_messages=TIMEOUT_MESSAGES
    )
    result = serializers.DictField(read_only=True, allow_null=True)
    error = StepErrorSerializer(read_only=True, allow_null=True)
    sentMessageId = serializers.CharField(read_only=True, allow_null=True)
    receivedMessageId = serializers.CharField(read_only=True, allow_null=True)
    dependsOn = serializers.ListField(
        child=StrictIntegerField(min_value=0, max_value=MAX_STEPS - 1),
        required=False,
        default=list,
        max_length=MAX_STEPS,
    )
    optional = serializers.BooleanField(required=False, default=False)

    class Meta:
        list_serializer_class = StepListSerializer


@extend_schema_field(ExecutionErrorSerializer(allow_null=True))
class ExecutionErrorField(serializers.JSONField):
    pass


@extend_schema_field({"type": "object", "additionalProperties": {}, "nullable": True})
class ResultField(serializers.JSONField):
    pass


class ExecutionSerializer(EntitySerializer):
    steps = StepSerializer(many=True, required=False)
    childExecutionIds = serializers.ListField(
        source="child_execution_ids", child=serializers.CharField(), read_only=True
    )
    involvedNodeIds = serializers.ListField(source="involved_node_ids", child=serializers.CharField(), read_only=True)
    result = ResultField(read_only=True)
    error = ExecutionErrorField(read_only=True)
    sentMessageIds = serializers.ListField(source="sent_message_ids", child=serializers.CharField(), read_only=True)
    receivedMessageIds = serializers.ListField(
        source="received_message_ids", child=serializers.CharField(), read_only=True
    )
    retryAttempts = serializers.ListField(source="retry_attempts", child=serializers.DateTimeField(), read_only=True)

    class Meta:
        model = Execution
        fields = [
            "execution_id",
            "name",
            "description",
            "category",
            "type",
            "status",
            "progress",
            "parent_execution_id",
            "childExecutionIds",
            "steps",
            "resource_type",
            "resource_id",
            "node_id",
            "involvedNodeIds",
            "started_at",
            "completed_at",
            "timeout_seconds",
            "timeout_at",
            "result",
            "error",
            "sentMessageIds",
            "receivedMessageIds",
            "retry_count",
            "max_retries",
            "retryAttempts",
        ]
        # The engine's: sent back unchanged they are ignored, changed they are a 400 (EntitySerializer).
        read_only_fields = ["status", "progress", "started_at", "completed_at", "timeout_at", "retry_count"]
        extra_kwargs = {
            # Generated (a UUID) when not sent, as the contract describes executionId.
            "execution_id": {"required": False},
            "timeout_seconds": {"min_value": 1, "max_value": MAX_TIMEOUT_SECONDS, "error_messages": TIMEOUT_MESSAGES},
            "max_retries": {"min_value": 0, "max_value": MAX_RETRIES_LIMIT},
        }

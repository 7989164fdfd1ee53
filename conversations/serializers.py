"""Conversation and Message JSON as the contract's schemas name them, with every nested shape validated."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import serializers

from aiwm_project.api.serializers import EntitySerializer, NestedObjectSerializer, string_list
from aiwm_project.datetimes import format_datetime
from conversations.models import MESSAGE_CONTENT_MAX_CHARS, Conversation, Message

# Far above any model's context window; a larger number is a client bug, not usage.
MAX_TOKENS_PER_MESSAGE = 10**9


# --- conversation ---
class ConversationParticipantSerializer(NestedObjectSerializer):
    userId = serializers.CharField(max_length=64)
    role = serializers.CharField(max_length=64)
    joinedAt = serializers.DateTimeField(required=False, help_text="Defaults to the time of the request.")
    leftAt = serializers.DateTimeField(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        joined = attrs.get("joinedAt") or timezone.now()
        left = attrs.get("leftAt")
        if left is not None and left < joined:
            raise serializers.ValidationError({"leftAt": ["must not be before joinedAt"]})
        # Stored as the API's ISO strings: a JSON column cannot hold datetimes.
        shape = {"userId": attrs["userId"], "role": attrs["role"], "joinedAt": format_datetime(joined)}
        if left is not None:
            shape["leftAt"] = format_datetime(left)
        return shape

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)
        # `leftAt?`: absent while the participant is still in, rather than null.
        if data.get("leftAt") is None:
            data.pop("leftAt", None)
        return data


class ConversationSerializer(EntitySerializer):
    tags = string_list()
    participants = serializers.ListField(child=ConversationParticipantSerializer(), required=False, max_length=100)

    class Meta:
        model = Conversation
        fields = [
            "conversation_id",
            "title",
            "description",
            "agent_id",
            "model_id",
            "conversation_type",
            "status",
            "total_tokens",
            "total_messages",
            "tags",
            "is_active",
            "participants",
        ]
        read_only_fields = ["total_tokens", "total_messages"]
        extra_kwargs = {"description": {"max_length": 4000}}


# --- message ---
class MessageFunctionCallSerializer(NestedObjectSerializer):
    name = serializers.CharField(max_length=255)
    arguments = serializers.DictField(required=False, default=dict)


class MessageToolFunctionSerializer(NestedObjectSerializer):
    name = serializers.CharField(max_length=255)
    arguments = serializers.CharField(
        allow_blank=True, trim_whitespace=False, max_length=64 * 1024, help_text="JSON-encoded arguments."
    )


class MessageToolCallSerializer(NestedObjectSerializer):
    id = serializers.CharField(max_length=128)
    type = serializers.CharField(max_length=32)
    function = MessageToolFunctionSerializer()


class MessageToolResultSerializer(NestedObjectSerializer):
    toolCallId = serializers.CharField(max_length=128)
    result = serializers.JSONField(allow_null=True)


class MessageUsageSerializer(NestedObjectSerializer):
    promptTokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS_PER_MESSAGE, default=0)
    completionTokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS_PER_MESSAGE, default=0)
    totalTokens = serializers.IntegerField(
        min_value=0,
        max_value=2 * MAX_TOKENS_PER_MESSAGE,
        required=False,
        help_text="Defaults to promptTokens + completionTokens.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs.setdefault("totalTokens", attrs["promptTokens"] + attrs["completionTokens"])
        return attrs


class MessageSerializer(EntitySerializer):
    functionCall = MessageFunctionCallSerializer(source="function_call", required=False, allow_null=True)
    toolCalls = serializers.ListField(
        source="tool_calls", child=MessageToolCallSerializer(), required=False, max_length=128
    )
    toolResults = serializers.ListField(
        source="tool_results", child=MessageToolResultSerializer(), required=False, max_length=128
    )
    usage = MessageUsageSerializer(required=False, allow_null=True)

    class Meta:
        model = Message
        fields = [
            "message_id",
            "conversation_id",
            "agent_id",
            "role",
            "content",
            "name",
            "functionCall",
            "toolCalls",
            "toolResults",
            "usage",
            "latency",
            "response_time",
            "error",
            "is_active",
        ]
        extra_kwargs = {
            "message_id": {"required": False, "help_text": "Generated (equal to `_id`) when not sent."},
            # Whitespace is part of a message (code, indentation): store it as sent.
            "content": {
                "required": True,
                "allow_blank": True,
                "trim_whitespace": False,
                "max_length": MESSAGE_CONTENT_MAX_CHARS,
            },
            "error": {"max_length": 10_000},
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        def current(field: str) -> Any:
            return attrs[field] if field in attrs else getattr(self.instance, field, None)

        # An assistant turn that only calls a function/tool has no text; any other turn must.
        if not current("content") and not current("function_call") and not current("tool_calls"):
            raise serializers.ValidationError({"content": ["may be empty only when functionCall or toolCalls is set"]})
        return attrs

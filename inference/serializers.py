"""API keys as the API shows them (never the secret, except once as `key` in the create answer),
GET /api/usage's query, and a conversation's chat request and answer."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from aiwm_project.api.serializers import (
    EntitySerializer,
    IsoDateTimeField,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    string_list,
)
from conversations.models import MESSAGE_CONTENT_MAX_CHARS
from conversations.serializers import MessageSerializer, MessageToolResultSerializer
from inference.models import ApiKey
from inference.usage import GROUPS


class ApiKeySerializer(EntitySerializer):
    models = string_list()

    class Meta:
        model = ApiKey
        fields = ["api_key_id", "name", "prefix", "models", "expires_at", "last_used_at"]
        read_only_fields = ["prefix", "last_used_at"]
        extra_kwargs = {
            "api_key_id": {"required": False, "help_text": "Optional; the server makes one (`key-<24 hex>`)."},
            "prefix": {
                "help_text": "The key's first characters, to tell keys apart (the secret is never shown again)."
            },
            "models": {
                "help_text": "The modelIds (or deploymentIds) the key may call on /v1; empty or absent: every model "
                "of the organization."
            },
            "expires_at": {"help_text": "When the key stops working (absent: never)."},
            "last_used_at": {"help_text": "The last /v1 request made with it (recorded within a few seconds)."},
        }


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The secret: shown in this answer only.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


class UsageQuerySerializer(serializers.Serializer):
    """`from` is a Python keyword: the fields are declared here rather than as attributes."""

    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            "from": IsoDateTimeField(required=False, help_text="ISO 8601; default: 24 hours before `to`"),
            "to": IsoDateTimeField(required=False, help_text="ISO 8601, exclusive; default: now"),
            "groupBy": serializers.ChoiceField(choices=list(GROUPS), default="model"),
        }


class UsageRowSerializer(serializers.Serializer):
    key = serializers.CharField(allow_null=True)
    requests = serializers.IntegerField()
    promptTokens = serializers.IntegerField()
    completionTokens = serializers.IntegerField()
    totalTokens = serializers.IntegerField()
    averageLatency = serializers.FloatField(help_text="milliseconds")


class ChatRequestSerializer(serializers.Serializer):
    """POST /api/conversations/:id/chat."""

    content = StrictCharField(
        required=False, trim_whitespace=False, max_length=MESSAGE_CONTENT_MAX_CHARS, help_text="The user's message."
    )
    toolResults = serializers.ListField(
        child=MessageToolResultSerializer(),
        required=False,
        min_length=1,
        max_length=128,
        help_text="Instead of content: the results of the last assistant message's function tool calls.",
    )
    stream = StrictBooleanField(required=False, default=False)
    maxTokens = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=1_000_000,
        help_text="The most tokens the answer may have (default AIWM_CHAT_MAX_TOKENS, 512).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("content" in attrs) == ("toolResults" in attrs):
            raise serializers.ValidationError({"content": ["send either content or toolResults"]})
        return attrs


class ChatAnswerSerializer(serializers.Serializer):
    userMessage = MessageSerializer(allow_null=True)
    assistantMessage = MessageSerializer()

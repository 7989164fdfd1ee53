"""Operator view of conversations and their messages (read-mostly: the counters are the services')."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from aiwm_project.admin import AUDIT_FIELDS, OwnedModelAdmin
from conversations.models import Conversation, Message, usage_tokens
from conversations.serializers import ConversationSerializer, MessageSerializer


@admin.register(Conversation)
class ConversationAdmin(OwnedModelAdmin):
    api_serializer = ConversationSerializer
    list_display = (
        "conversation_id",
        "title",
        "agent_id",
        "model_id",
        "conversation_type",
        "status",
        "total_messages",
        "total_tokens",
        "is_active",
        "owner_org_id",
        "is_deleted",
    )
    list_filter = ("status", "conversation_type", "is_active", "is_deleted")
    search_fields = ("conversation_id", "title", "agent_id", "model_id", "owner_org_id")
    # Counted by the message services; an admin edit would make them disagree with the messages.
    readonly_fields = (*AUDIT_FIELDS, "total_tokens", "total_messages")


@admin.register(Message)
class MessageAdmin(OwnedModelAdmin):
    api_serializer = MessageSerializer
    list_display = (
        "message_id",
        "conversation_id",
        "role",
        "short_content",
        "tokens",
        "agent_id",
        "owner_org_id",
        "is_deleted",
    )
    list_filter = ("role", "is_active", "is_deleted")
    search_fields = ("message_id", "conversation_id", "agent_id", "owner_org_id")
    readonly_fields = (*AUDIT_FIELDS, "message_id", "conversation_id", "usage")

    # Adding or (hard) deleting here would bypass the conversation counters: use the API.
    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content if len(obj.content) <= 80 else obj.content[:79] + "…"

    @admin.display(description="tokens")
    def tokens(self, obj: Message) -> int:
        return usage_tokens(obj.usage)

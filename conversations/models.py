"""Multi-turn interactions with an agent (Conversation) and the messages they are made of (Message)."""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models

from aiwm_project.models import OwnedModel, tenant_constraints, tenant_indexes
from conversations.choices import ConversationStatus, ConversationType, MessageRole

# Large enough for a pasted document or a long completion, small enough to keep one row cheap.
MESSAGE_CONTENT_MAX_CHARS = 256 * 1024


class Conversation(OwnedModel):
    business_id_field = "conversation_id"
    entity_label = "Conversation"
    references = {"agent_id": "agents.Agent", "model_id": "models_registry.AIModel"}

    conversation_id = models.CharField(max_length=128)
    title = models.CharField(max_length=255, blank=True, default="")
    description = models.TextField(blank=True, default="")
    agent_id = models.CharField(max_length=128)
    # Optional references are NULL when unset (not ""), as in the other apps.
    model_id = models.CharField(max_length=128, null=True, blank=True, default=None)
    conversation_type = models.CharField(max_length=16, choices=ConversationType.choices, default=ConversationType.CHAT)
    status = models.CharField(max_length=16, choices=ConversationStatus.choices, default=ConversationStatus.ACTIVE)
    # Kept by the message services with F() expressions, never written by clients.
    total_tokens = models.BigIntegerField(default=0)
    total_messages = models.BigIntegerField(default=0)
    tags = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)
    # [{userId, role, joinedAt, leftAt?}], validated by the serializer.
    participants = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = tenant_constraints("conv", "conversation_id")
        indexes = tenant_indexes("conv", "agent_id", "status")


class Message(OwnedModel):
    """One message of a conversation.

    The contract gives messages no business id; `message_id` is one anyway so the shared base
    (lookup by business id, per-org uniqueness, 409 on a duplicate) works unchanged. A client may
    send its own (e.g. the upstream provider's id, which makes retries idempotent); when it does
    not, the server uses the message's `_id`.
    """

    business_id_field = "message_id"
    entity_label = "Message"
    references = {"conversation_id": "conversations.Conversation", "agent_id": "agents.Agent"}

    message_id = models.CharField(max_length=128)
    conversation_id = models.CharField(max_length=128)
    agent_id = models.CharField(max_length=128, null=True, blank=True, default=None)
    role = models.CharField(max_length=16, choices=MessageRole.choices)
    content = models.TextField(blank=True)
    name = models.CharField(max_length=255, blank=True, default="")
    function_call = models.JSONField(null=True, blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    tool_results = models.JSONField(default=list, blank=True)
    usage = models.JSONField(null=True, blank=True)
    latency = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)])
    response_time = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)])
    error = models.TextField(blank=True, default="")
    is_active = models.BooleanField(default=True)

    class Meta:
        constraints = tenant_constraints("msg", "message_id")
        # (org, conversation, created_at): a conversation's history, newest or oldest first.
        indexes = tenant_indexes("msg", "conversation_id", "agent_id")


def usage_tokens(usage: object) -> int:
    """`usage.totalTokens` of a stored or validated message, 0 when absent."""
    if isinstance(usage, dict):
        value = usage.get("totalTokens")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0

"""Conversations and Messages REST endpoints (thin: writes go through conversations.services)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

from aiwm_project.api.schema import entity_schema_view
from aiwm_project.api.viewsets import EntityViewSet
from conversations import services
from conversations.models import Conversation, Message
from conversations.serializers import ConversationSerializer, MessageSerializer

OWNER = {"orgId": "68dd05b175d9e3c17bf97f60", "userId": "68dcf365f6a92c0d4911b619", "groupId": ""}
AUDIT = {
    "owner": OWNER,
    "createdBy": OWNER["userId"],
    "updatedBy": OWNER["userId"],
    "createdAt": "2025-11-16T13:00:00.000Z",
    "updatedAt": "2025-11-16T13:00:00.000Z",
}

CONVERSATION_EXAMPLE_REQUEST = {
    "conversationId": "conv-support-0001",
    "title": "Refund for order 1042",
    "description": "Customer asks about a late refund",
    "agentId": "agent-assistant-01",
    "modelId": "llama-2-7b-v1",
    "conversationType": "chat",
    "status": "active",
    "tags": ["support", "refund"],
    "participants": [{"userId": "68dcf365f6a92c0d4911b619", "role": "customer"}],
}
CONVERSATION_EXAMPLE = {
    "_id": "68f2e5f6a7b8c9d0e1f2a3b4",
    **CONVERSATION_EXAMPLE_REQUEST,
    "totalTokens": 0,
    "totalMessages": 0,
    "isActive": True,
    "participants": [
        {"userId": "68dcf365f6a92c0d4911b619", "role": "customer", "joinedAt": "2025-11-16T13:00:00.000Z"}
    ],
    **AUDIT,
}
MESSAGE_EXAMPLE_REQUEST = {
    "conversationId": "conv-support-0001",
    "agentId": "agent-assistant-01",
    "role": "assistant",
    "content": "Your refund was issued on November 14 and should arrive within 3 business days.",
    "usage": {"promptTokens": 412, "completionTokens": 23, "totalTokens": 435},
    "latency": 180,
    "responseTime": 950,
}
MESSAGE_EXAMPLE = {
    "_id": "68f2f6a7b8c9d0e1f2a3b4c5",
    "messageId": "68f2f6a7b8c9d0e1f2a3b4c5",
    **MESSAGE_EXAMPLE_REQUEST,
    "name": "",
    "functionCall": None,
    "toolCalls": [],
    "toolResults": [],
    "error": "",
    "isActive": True,
    **AUDIT,
}
MESSAGE_TOOL_CALL_REQUEST = {
    "conversationId": "conv-support-0001",
    "agentId": "agent-assistant-01",
    "role": "assistant",
    "content": "",
    "toolCalls": [
        {"id": "call_1", "type": "function", "function": {"name": "lookup_order", "arguments": '{"orderId": 1042}'}}
    ],
}


@entity_schema_view(
    singular="conversation",
    example=CONVERSATION_EXAMPLE,
    create_example=CONVERSATION_EXAMPLE_REQUEST,
    update_example=("Complete", {"status": "completed", "isActive": False}),
    overrides={
        "create": {
            "description": "`agentId` (required) and `modelId` (optional) must name records of your organization. "
            "`totalTokens` and `totalMessages` are kept by the server as messages are added and deleted."
        },
        "update": {"summary": "Update conversation (only the fields sent; conversationId is fixed)"},
        "destroy": {"summary": "Delete conversation and its messages (soft)"},
    },
)
class ConversationViewSet(EntityViewSet):
    model = Conversation
    serializer_class = ConversationSerializer
    filter_fields = {
        "conversationId": "conversation_id",
        "agentId": "agent_id",
        "modelId": "model_id",
        "conversationType": "conversation_type",
        "status": "status",
        "isActive": "is_active",
        "tags": "tags",
    }
    sort_fields = {
        "createdAt": "created_at",
        "updatedAt": "updated_at",
        "title": "title",
        "conversationId": "conversation_id",
        "status": "status",
        "totalTokens": "total_tokens",
        "totalMessages": "total_messages",
    }
    delete_service = staticmethod(services.conversation_delete)


@entity_schema_view(
    singular="message",
    example=MESSAGE_EXAMPLE,
    create_example=("Assistant reply", MESSAGE_EXAMPLE_REQUEST),
    update_example=("Hide", {"isActive": False}),
    overrides={
        "list": {"description": "A conversation's history: `filter[conversationId]=...&sort=createdAt`."},
        "create": {
            "summary": "Add message to a conversation",
            "description": "Adds 1 to the conversation's `totalMessages` and `usage.totalTokens` to its `totalTokens`. "
            "`messageId` is optional: the server uses the new `_id` when it is not sent; a client-chosen one "
            "makes retries safe (a repeat is a 409).",
            "examples": [OpenApiExample("Tool call", value=MESSAGE_TOOL_CALL_REQUEST, request_only=True)],
        },
        "update": {
            "summary": "Update message (only the fields sent; it cannot move to another conversation)",
            "description": "A new `usage` moves the conversation's `totalTokens` by the difference.",
        },
        "destroy": {"description": "Subtracts the message from its conversation's `totalMessages` and `totalTokens`."},
    },
)
class MessageViewSet(EntityViewSet):
    model = Message
    serializer_class = MessageSerializer
    filter_fields = {
        "messageId": "message_id",
        "conversationId": "conversation_id",
        "role": "role",
        "agentId": "agent_id",
        "isActive": "is_active",
    }
    sort_fields = {
        "createdAt": "created_at",
        "updatedAt": "updated_at",
        "messageId": "message_id",
        "role": "role",
        "latency": "latency",
        "responseTime": "response_time",
    }
    create_service = staticmethod(services.message_create)
    update_service = staticmethod(services.message_update)
    delete_service = staticmethod(services.message_delete)

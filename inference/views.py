"""REST endpoints of the gateway's data: API keys (/api/api-keys) and usage (/api/usage), and a
conversation's chat (/api/conversations/:id/chat, inference.chat). The gateway itself (/v1) is
inference.gateway, outside Django."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

from asgiref.sync import async_to_sync
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aiwm_project.api.errors import error_body
from aiwm_project.api.schema import entity_schema_view
from aiwm_project.api.streams import event_stream
from aiwm_project.api.viewsets import EntityViewSet
from aiwm_project.auth import Principal
from aiwm_project.permissions import RolePermission
from conversations.models import Message
from conversations.serializers import MessageSerializer
from inference.chat import ModelCallFailed, Turn, prepare_turn, run_turn
from inference.models import ApiKey
from inference.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeySerializer,
    ChatAnswerSerializer,
    ChatRequestSerializer,
    UsageQuerySerializer,
    UsageRowSerializer,
)
from inference.services import api_key_create, api_key_revoke
from inference.usage import usage_summary

MAX_USAGE_DAYS = 366

API_KEY_EXAMPLE = {
    "_id": "68f5a1b2c3d4e5f6a7b8c9d0",
    "apiKeyId": "key-68f5a1b2c3d4e5f6a7b8c9d0",
    "name": "support bot",
    "prefix": "aiwm_Qm3x9Tz",
    "models": ["llama-2-7b-v1"],
    "expiresAt": "2026-06-30T00:00:00.000Z",
    "lastUsedAt": None,
    "owner": {"orgId": "68dd05b175d9e3c17bf97f60", "userId": "68dcf365f6a92c0d4911b619", "groupId": ""},
    "createdBy": "68dcf365f6a92c0d4911b619",
    "updatedBy": "68dcf365f6a92c0d4911b619",
    "createdAt": "2025-11-19T10:00:00.000Z",
    "updatedAt": "2025-11-19T10:00:00.000Z",
}


@entity_schema_view(
    singular="API key",
    tag="API keys",
    business_id="apiKeyId",
    example=API_KEY_EXAMPLE,
    create_example={"name": "support bot", "models": ["llama-2-7b-v1"], "expiresAt": "2026-06-30T00:00:00.000Z"},
    created_example={**API_KEY_EXAMPLE, "key": "aiwm_Qm3x9Tz…(43 characters)"},
    overrides={
        "create": {
            "description": "A key for programs calling the gateway (`/v1`, the OpenAI-compatible API) on behalf of "
            "the organization. The secret comes back once, as `key`; only its hash is kept. A key is "
            "accepted on `/v1` only. Owners and editors.",
            "responses": {201: ApiKeyCreatedSerializer},
        },
        "destroy": {
            "summary": "Revoke API key",
            "description": "The key stops working at once in this web process, within 10 s in others.",
        },
    },
)
class ApiKeyViewSet(EntityViewSet):
    model = ApiKey
    serializer_class = ApiKeySerializer
    http_method_names = ["get", "post", "delete", "head", "options"]
    filter_fields = {"name": "name", "apiKeyId": "api_key_id"}
    sort_fields = {"createdAt": "created_at", "name": "name", "lastUsedAt": "last_used_at"}
    delete_service = staticmethod(api_key_revoke)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        instance, secret = api_key_create(data=serializer.validated_data, actor=self.actor)
        instance.key = secret  # type: ignore[attr-defined]  # in this answer only
        return Response(ApiKeyCreatedSerializer(instance, context=self.get_serializer_context()).data, status=201)


class UsageView(APIView):
    permission_classes = [RolePermission]

    @extend_schema(
        tags=["Usage"],
        summary="Usage of the gateway",
        description="Requests through `/v1` in [`from`, `to`), grouped by model, deployment, API key or day "
        "(UTC): requests, tokens and the average latency (ms, to the answer's last byte). Streams whose "
        "backend sends no usage are counted with its tokenizer.",
        parameters=[
            OpenApiParameter("from", str, description="ISO 8601 (default: 24 h before `to`)"),
            OpenApiParameter("to", str, description="ISO 8601, exclusive (default: now)"),
            OpenApiParameter("groupBy", str, enum=["model", "deployment", "apiKey", "day"], default="model"),
        ],
        responses={
            200: inline_serializer("UsageAnswer", {"data": UsageRowSerializer(many=True)}),
            400: OpenApiResponse(description="A bad date, range or groupBy"),
        },
    )
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        end = query.validated_data.get("to") or timezone.now()
        start = query.validated_data.get("from") or end - timedelta(days=1)
        if start >= end:
            raise ValidationError({"from": ["must be before `to`"]})
        if end - start > timedelta(days=MAX_USAGE_DAYS):
            raise ValidationError({"from": [f"the range is at most {MAX_USAGE_DAYS} days"]})
        rows = usage_summary(
            org_id=cast(Principal, request.user).org_id, start=start, end=end, group_by=query.validated_data["groupBy"]
        )
        return Response({"data": rows}, status=status.HTTP_200_OK)


class ConversationChatView(APIView):
    """A turn of a conversation: the user's message in, the agent's answer out (inference.chat)."""

    permission_classes = [RolePermission]

    @extend_schema(
        tags=["Conversations"],
        summary="Chat: send a message, get the agent's answer",
        description="Stores the user's message, calls the conversation's model (its `modelId`, else its agent's "
        "`modelId`) through the gateway with the agent's instruction, the history that fits the context and the "
        "agent's tools (`toolIds`; `api` tools are run by AIWM), stores the assistant's message with `usage`, "
        "`latency` (ms to the first token) and `responseTime` (ms to the end), and counts the task on the agent. "
        'With `"stream": true` the answer is Server-Sent Events: `event: userMessage` (the stored user message), '
        '`event: token` (`{"content": "..."}`) for each piece of text, then `event: message` with the stored '
        "assistant message, or `event: error` with the "
        "error body. `toolResults` instead of `content` answers the `function` tool calls of the last assistant "
        "message (stored on it; `userMessage` is then null) and the model goes on from them. "
        "A failed call keeps the user's message with `error` set and counts a failed task: "
        "404 the model is unknown, 503 no deployment of it is running, 502 the deployment failed.",
        request=ChatRequestSerializer,
        responses={
            200: ChatAnswerSerializer,
            400: OpenApiResponse(description="A bad body, or no model to call"),
            404: OpenApiResponse(description="No such conversation, or its model is unknown"),
            409: OpenApiResponse(description="The conversation is completed, or its agent is inactive or gone"),
            502: OpenApiResponse(description="The deployment failed to answer"),
            503: OpenApiResponse(description="No deployment of the model is running"),
        },
    )
    def post(self, request: Request, pk: str) -> Response | StreamingHttpResponse:
        query = ChatRequestSerializer(data=request.data)
        query.is_valid(raise_exception=True)
        turn = prepare_turn(
            actor=cast(Principal, request.user),
            conversation_ref=pk,
            content=query.validated_data.get("content"),
            tool_results=query.validated_data.get("toolResults"),
            max_tokens=query.validated_data.get("maxTokens"),
        )
        if query.validated_data["stream"]:
            return event_stream(sse(request, turn))
        # On the server's event loop (this view runs in a thread of its own: aiwm_project.http_handler).
        message = async_to_sync(answer_of)(turn)
        return Response(
            {
                "userMessage": None if turn.user_message is None else MessageSerializer(turn.user_message).data,
                "assistantMessage": MessageSerializer(message).data,
            }
        )


async def answer_of(turn: Turn) -> Message:
    async for item in run_turn(turn, stream=False):
        if isinstance(item, Message):
            return item
    raise AssertionError("a turn ends with its message")


def sse_frame(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def sse(request: Request, turn: Turn) -> AsyncIterator[bytes]:
    """The turn as Server-Sent Events, on the event loop (no thread is held while the model answers).
    First the stored user message (the page shows it with its id at once), then the answer."""
    if turn.user_message is not None:
        yield sse_frame("userMessage", MessageSerializer(turn.user_message).data)
    try:
        async for item in run_turn(turn, stream=True):
            if isinstance(item, str):
                yield sse_frame("token", {"content": item})
            else:
                yield sse_frame("message", MessageSerializer(item).data)
    except ModelCallFailed as exc:
        yield sse_frame("error", error_body(request, exc.status_code, exc.message))

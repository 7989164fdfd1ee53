"""REST endpoints of the gateway's data: API keys (/api/api-keys) and usage (/api/usage). The
gateway itself (/v1) is inference.gateway, outside Django."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aiwm_project.api.schema import entity_schema_view
from aiwm_project.api.viewsets import EntityViewSet
from aiwm_project.auth import Principal
from aiwm_project.permissions import RolePermission
from inference.models import ApiKey
from inference.serializers import ApiKeyCreatedSerializer, ApiKeySerializer, UsageQuerySerializer, UsageRowSerializer
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

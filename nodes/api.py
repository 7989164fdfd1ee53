"""REST views of the node gateway's records: node tokens, the command outbox, metrics."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from aiwm_project.api.errors import format_datetime
from aiwm_project.api.serializers import IsoDateTimeField, choice_field
from nodes.choices import CommandStatus, CommandType


def time_param(request: Request, name: str, default: datetime | None = None) -> datetime | None:
    """An ISO 8601 query parameter (`from`, `to`, `since`); anything else is a 400."""
    raw = request.query_params.get(name) or ""
    if not raw:
        return default
    parsed = parse_datetime(raw) if len(raw) < 64 else None
    if parsed is None:
        raise ValidationError({name: [f"must be an ISO 8601 date-time, got {raw[:32]!r}"]})
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, timezone.get_current_timezone())


def time_window(request: Request, queryset: QuerySet, field: str, default_span: timedelta | None) -> QuerySet:
    now = timezone.now()
    start = time_param(request, "from", now - default_span if default_span else None)
    end = time_param(request, "to")
    if start and end and end < start:
        raise ValidationError({"to": ["must not be before from"]})
    if start:
        queryset = queryset.filter(**{f"{field}__gte": start})
    if end:
        queryset = queryset.filter(**{f"{field}__lte": end})
    return queryset


class NodeTokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    nodeId = serializers.CharField()
    expiresAt = serializers.CharField()


class OutboxResourceSerializer(serializers.Serializer):
    type = serializers.CharField(max_length=32)
    id = serializers.CharField(max_length=128)


class CommandMetadataSerializer(serializers.Serializer):
    executionId = serializers.CharField(max_length=128, required=False)
    stepIndex = serializers.IntegerField(min_value=0, max_value=10_000, required=False)
    timeout = serializers.IntegerField(min_value=1, max_value=7 * 86400, required=False)
    priority = choice_field([("low", "low"), ("normal", "normal"), ("high", "high")], required=False)


class SendCommandSerializer(serializers.Serializer):
    type = choice_field(CommandType.choices)
    resource = OutboxResourceSerializer(required=False)
    # The name shadows Serializer.data only in the class body: DRF moves declared fields out of it.
    data = serializers.DictField(required=False, default=dict)  # type: ignore[assignment]
    metadata = CommandMetadataSerializer(required=False)


class NodeCommandSerializer(serializers.Serializer):
    """A command of the outbox as the API shows it: the envelope plus its delivery state."""

    _id = serializers.CharField(source="id")
    messageId = serializers.CharField(source="message_id")
    nodeId = serializers.CharField(source="node_id")
    type = serializers.CharField()
    resource = serializers.DictField()
    data = serializers.DictField()  # type: ignore[assignment]
    metadata = serializers.DictField()
    status = choice_field(CommandStatus.choices)
    attempts = serializers.IntegerField()
    progress = serializers.FloatField()
    result = serializers.JSONField(allow_null=True)
    error = serializers.JSONField(allow_null=True)
    createdBy = serializers.CharField(source="created_by")
    createdAt = IsoDateTimeField(source="created_at")
    sentAt = IsoDateTimeField(source="sent_at", allow_null=True)
    acknowledgedAt = IsoDateTimeField(source="acknowledged_at", allow_null=True)
    completedAt = IsoDateTimeField(source="completed_at", allow_null=True)


class NodeMetricSerializer(serializers.Serializer):
    timestamp = IsoDateTimeField()
    receivedAt = IsoDateTimeField(source="received_at")
    data = serializers.DictField()  # type: ignore[assignment]

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # The stored report as the node sent it (cpu, ram, disk, gpu, network), with its times.
        return {
            "timestamp": format_datetime(instance.timestamp),
            "receivedAt": format_datetime(instance.received_at),
            **instance.data,
        }

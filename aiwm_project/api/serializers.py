"""The base serializer: camelCase JSON over snake_case models, audit fields, mass-assignment guard."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.db import models
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from aiwm_project.api.errors import format_datetime

# Fields a client can never set; sending one is a 400 rather than a silent no-op.
PROTECTED_FIELDS = ("_id", "owner", "createdBy", "updatedBy", "isDeleted", "deletedAt")
COMMON_FIELDS = ["id", "owner", "created_by", "updated_by", "created_at", "updated_at"]
_CAMEL_RE = re.compile(r"_([a-z0-9])")
BIG_INT_MAX = 2**63 - 1


def camelize(name: str) -> str:
    if name == "id":
        return "_id"
    return _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)


class IsoDateTimeField(serializers.DateTimeField):
    def to_representation(self, value: datetime) -> str:
        return format_datetime(value)


@extend_schema_field(
    inline_serializer(
        "Owner",
        {
            "orgId": serializers.CharField(),
            "userId": serializers.CharField(),
            "groupId": serializers.CharField(),
        },
    )
)
class OwnerField(serializers.Field):
    def __init__(self, **kwargs: Any):
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, instance: Any) -> dict[str, str]:
        return {
            "orgId": instance.owner_org_id,
            "userId": instance.owner_user_id,
            "groupId": instance.owner_group_id,
        }


class EntitySerializer(serializers.ModelSerializer):
    """Subclasses list snake_case model fields in Meta.fields; the JSON names are their camelCase.

    `_id`, `owner`, `createdBy`, `updatedBy`, `createdAt`, `updatedAt` are added and read-only.
    """

    owner = OwnerField()

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DateTimeField: IsoDateTimeField,
    }

    class Meta:
        model: Any = None
        fields: list[str] = []

    def get_field_names(self, declared_fields: Any, info: Any) -> list[str]:
        names = list(super().get_field_names(declared_fields, info))
        return [*COMMON_FIELDS, *(n for n in names if n not in COMMON_FIELDS)]

    def build_field(self, field_name: str, info: Any, model_class: Any, nested_depth: int) -> Any:
        field_class, kwargs = super().build_field(field_name, info, model_class, nested_depth)
        if field_name in ("created_by", "updated_by", "created_at", "updated_at", "id"):
            kwargs["read_only"] = True
            for key in ("required", "allow_blank", "allow_null", "max_length", "validators", "default"):
                kwargs.pop(key, None)
        if issubclass(field_class, serializers.ChoiceField) and "choices" in kwargs:
            allowed = ", ".join(str(value) for value, _ in kwargs["choices"])
            kwargs["error_messages"] = {"invalid_choice": f'"{{input}}" is not one of: {allowed}'}
        if issubclass(field_class, serializers.IntegerField):
            # Keep numbers inside what every database column can hold: an overflow is a 400, not a 500.
            kwargs.setdefault("max_value", BIG_INT_MAX)
            kwargs.setdefault("min_value", -BIG_INT_MAX)
        return field_class, kwargs

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        renamed: dict[str, serializers.Field] = {}
        for name, field in fields.items():
            api_name = camelize(name) if name not in self._declared_fields else name
            if api_name != name and field.source is None:
                field.source = name
            renamed[api_name] = field
        return renamed

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            sent = [name for name in PROTECTED_FIELDS if name in data]
            if sent:
                raise serializers.ValidationError({name: ["This field is set by the server."] for name in sent})
        return super().to_internal_value(data)

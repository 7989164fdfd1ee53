"""Base serializers: camelCase JSON over snake_case models, audit fields, mass-assignment guard,
nested JSON shapes, and populated references."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.fields import SkipField, empty

from aiwm_project.datetimes import format_datetime, parse_iso8601
from aiwm_project.naming import camelize
from aiwm_project.parsers import INT64_MAX
from aiwm_project.selectors import RelatedLoader

# Fields a client can never set (with every read-only field of a serializer). Sent with the value
# the server holds they are accepted and ignored, so a record read can be sent back; sent with
# another value they are a 400, so a client learns at once that its value was not taken.
PROTECTED_FIELDS = ("_id", "owner", "createdBy", "updatedBy", "isDeleted", "deletedAt")
# Server-owned values that move without any client request (every heartbeat bumps a node's
# `updatedAt`): a copy read a moment ago is stale, not an attempt to write, so any value is ignored.
LIVE_FIELDS = ("updatedAt",)
SERVER_SET_MESSAGE = "This field is set by the server."
_ABSENT = object()


def same_json_value(sent: Any, held: Any) -> bool:
    """Whether a client's JSON value is the one the server holds: strict about types (true is not
    1), and a date-time equal when it names the same instant (`…:00Z` and `…:00.000+00:00`)."""
    if isinstance(sent, bool) or isinstance(held, bool):
        return type(sent) is type(held) and sent == held
    if isinstance(sent, Mapping) and isinstance(held, Mapping):
        return sent.keys() == held.keys() and all(same_json_value(sent[k], held[k]) for k in sent)
    if isinstance(sent, list) and isinstance(held, list):
        return len(sent) == len(held) and all(same_json_value(a, b) for a, b in zip(sent, held, strict=True))
    if isinstance(sent, str) and isinstance(held, str) and sent != held:
        instant = parse_iso8601(held)
        return instant is not None and parse_iso8601(sent) == instant
    if isinstance(sent, (Mapping, list)) or isinstance(held, (Mapping, list)):
        return False
    return bool(sent == held)


def server_value_errors(sent: Mapping[str, Any], held: Mapping[str, Any], names: Iterable[str]) -> dict[str, list[str]]:
    """The server-owned fields among `names` that `sent` gives a value other than the one held."""
    return {
        name: [SERVER_SET_MESSAGE]
        for name in names
        if name in sent and not same_json_value(sent[name], held.get(name, _ABSENT))
    }


COMMON_FIELDS = ["id", "owner", "created_by", "updated_by", "created_at", "updated_at"]


def invalid_choice_message(choices: Any) -> str:
    allowed = ", ".join(str(value) for value, _ in choices)
    return f'"{{input}}" is not one of: {allowed}'


def choice_field(choices: Any, **kwargs: Any) -> serializers.ChoiceField:
    """A ChoiceField whose error names the allowed values, like the model-derived ones."""
    return serializers.ChoiceField(
        choices=choices, error_messages={"invalid_choice": invalid_choice_message(choices)}, **kwargs
    )


# Tags (and other short labels: capabilities, permissions) on every entity that has them.
TAG_MAX_LENGTH = 64
MAX_TAGS = 50


def string_list(*, max_items: int = MAX_TAGS, max_length: int = TAG_MAX_LENGTH) -> serializers.ListField:
    """An optional list of strings, bounded in count and length (tags by default)."""
    return serializers.ListField(
        child=serializers.CharField(max_length=max_length), required=False, max_length=max_items
    )


class IsoDateTimeField(serializers.DateTimeField):
    def to_representation(self, value: datetime) -> str:
        return format_datetime(value)


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean only: "yes", 1 and "false" are errors, not a guess about a restart or a reset."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only: "1", 1.0 and true are type errors, not silently converted step indexes."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A JSON string only: 7 is a type error, not the text "7"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


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


class NestedObjectSerializer(serializers.Serializer):
    """A JSON object stored inside an entity (a GPU device, a step, a participant…).

    DRF lets a partial update (every PUT here) skip the required keys and defaults of nested
    serializers, which would store shapes later reads cannot render. A nested object is
    therefore validated as if it stood alone: a PUT is as strict about it as a POST.
    """

    def run_validation(self, data: Any = empty) -> Any:
        if self.parent is None:
            return super().run_validation(data)
        is_empty, data = self.validate_empty_values(data)
        if is_empty:
            return data
        standalone = type(self)(data=data, context=self.context)
        standalone.is_valid(raise_exception=True)
        return standalone.validated_data


class PopulatedField(serializers.Field):
    """Output only: the referenced record (by business id) as JSON, or null when it is gone.

    Records come from the view's RelatedLoader, which the list view primes for the whole page,
    so a list never queries per row. With `on_request=True` the field is only present when the
    client asks for it (`?populate=<name>`); otherwise it is on every read. A value sent under
    this name is ignored, as unknown body fields are.
    """

    def __init__(
        self,
        *,
        model_label: str,
        reference_field: str,
        serializer_class: type[serializers.Serializer],
        on_request: bool = False,
        **kwargs: Any,
    ):
        super().__init__(source="*", required=False, allow_null=True, **kwargs)
        self.model_label = model_label
        self.reference_field = reference_field
        self.serializer_class = serializer_class
        self.on_request = on_request

    def is_wanted(self, context: dict[str, Any]) -> bool:
        return not self.on_request or self.field_name in context.get("populate", ())

    def get_attribute(self, instance: Any) -> Any:
        if not self.is_wanted(self.context):
            raise SkipField()
        return instance

    def to_representation(self, instance: Any) -> dict[str, Any] | None:
        return self.represent(instance, self.context)

    def represent(self, instance: Any, context: dict[str, Any]) -> dict[str, Any] | None:
        """The referenced record, with the request's `context` given rather than read from the
        field's parent: EntitySerializer shares this field between requests (its read plan)."""
        loader = context.get("loader")
        if loader is None:  # outside a view (shell, admin, tests): the row's own organization
            loader = context["loader"] = RelatedLoader(instance.owner_org_id)
        record = loader.get(self.model_label, getattr(instance, self.reference_field) or "")
        if record is None:
            return None
        key = f"populated:{self.field_name}"  # one nested serializer per request, for every row of a list
        nested = context.get(key)
        if nested is None:
            nested = context[key] = self.serializer_class(context=context)
        return nested.to_representation(record)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        return {}


class EntitySerializer(serializers.ModelSerializer):
    """Subclasses list snake_case model fields in Meta.fields; the JSON names are their camelCase.

    `_id`, `owner`, `createdBy`, `updatedBy`, `createdAt`, `updatedAt` are added and read-only.
    Every server-owned field (those, `isDeleted`/`deletedAt`, and each read-only field) follows one
    rule: the value the server holds (for a new record, the value it starts with) is accepted and
    ignored; another value is a 400 naming the field. `live_fields` (with LIVE_FIELDS) name the
    server-owned fields that change on their own, whose sent value is always ignored.
    """

    owner = OwnerField()
    live_fields: tuple[str, ...] = ()
    # Set per class by read_plan(): the shared output fields; output name -> model attribute.
    _read_plan: list[serializers.Field]
    _column_sources: dict[str, str]

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
            kwargs["error_messages"] = {"invalid_choice": invalid_choice_message(kwargs["choices"])}
        if issubclass(field_class, serializers.IntegerField):
            # Keep numbers inside what every database column can hold: an overflow is a 400, not a 500.
            kwargs.setdefault("max_value", INT64_MAX)
            kwargs.setdefault("min_value", -INT64_MAX)
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

    @classmethod
    def read_plan(cls) -> list[serializers.Field]:
        """The class's output fields, built and bound once per class. DRF builds every field of a
        serializer again for each instance, which was a third of a node-list request's CPU
        (BENCHMARKS.md, "Node list against the machine's limit"). The fields are shared between
        requests and threads, so their output may depend on nothing but the row: the one field
        that reads the request (PopulatedField) is handed the request's context instead."""
        plan: list[serializers.Field] | None = cls.__dict__.get("_read_plan")
        if plan is None:
            plan = [field for field in cls(context={}).fields.values() if not field.write_only]
            cls._read_plan = plan
            # A field that is a column of the model reads the row's attribute directly; DRF's
            # generic lookup (callables, mappings, dotted sources) is for the others.
            columns = {f.attname for f in cls.Meta.model._meta.concrete_fields}
            cls._column_sources = {
                str(field.field_name): str(field.source)
                for field in plan
                if field.source in columns and not isinstance(field, PopulatedField)
            }
        return plan

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # DRF's Serializer.to_representation over the shared read plan instead of `self.fields`.
        context = self.context
        plan = self.read_plan()
        columns = self._column_sources if isinstance(instance, self.Meta.model) else {}
        data: dict[str, Any] = {}
        for field in plan:
            name = str(field.field_name)
            if name in columns:
                attribute = getattr(instance, columns[name])
            elif isinstance(field, PopulatedField):
                if field.is_wanted(context):
                    data[name] = field.represent(instance, context)
                continue
            else:
                try:
                    attribute = field.get_attribute(instance)
                except SkipField:
                    continue
            data[name] = None if attribute is None else field.to_representation(attribute)
        return data

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            owned = [name for name in self.server_owned_fields() if name in data]
            errors = server_value_errors(data, self.held_values(owned), owned) if owned else {}
            if errors:
                raise serializers.ValidationError(errors)
        return blank_is_null(self.Meta.model, super().to_internal_value(data))

    def server_owned_fields(self) -> list[str]:
        read_only = [
            name for name, field in self.fields.items() if field.read_only and not isinstance(field, PopulatedField)
        ]
        live = {*LIVE_FIELDS, *self.live_fields}
        return [name for name in dict.fromkeys((*PROTECTED_FIELDS, *read_only)) if name not in live]

    def held_values(self, names: Iterable[str]) -> dict[str, Any]:
        """The JSON the server holds under `names`: the record's, or a new record's defaults."""
        instance = self.instance if isinstance(self.instance, models.Model) else self.Meta.model()
        stored = {
            "isDeleted": getattr(instance, "is_deleted", False),
            "deletedAt": getattr(instance, "deleted_at", None),
        }
        held: dict[str, Any] = {}
        for name in names:
            if name in stored:
                value = stored[name]
                held[name] = format_datetime(value) if isinstance(value, datetime) else value
                continue
            field = self.fields[name]
            value = field.get_attribute(instance)
            held[name] = None if value is None else field.to_representation(value)
        return held


def blank_is_null(model: type[models.Model], attrs: dict[str, Any]) -> dict[str, Any]:
    """ "" and null both mean "not set" for an optional text column (a reference such as `nodeId`,
    an execution's `resourceType`): store NULL, so filters and reference checks see one form."""
    for name, value in attrs.items():
        if value == "":
            try:
                field = model._meta.get_field(name)
            except FieldDoesNotExist:
                continue
            if isinstance(field, models.CharField) and field.null:
                attrs[name] = None
    return attrs

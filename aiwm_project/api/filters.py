"""`filter[field]=value` and `sort=a,-b` over a per-viewset whitelist; anything else is a 400.

User input never becomes a keyword argument name: keys are looked up in the whitelist, so a
key such as `_connector` or `owner_org_id` is simply unknown.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.filters import BaseFilterBackend
from rest_framework.request import Request

from aiwm_project.datetimes import parse_iso8601

FILTER_KEY_RE = re.compile(r"^filter\[([A-Za-z0-9_.]+)\]$")
TRUE_VALUES = {"true", "1"}
FALSE_VALUES = {"false", "0"}


def _fail(param: str, message: str) -> ValidationError:
    return ValidationError({param: [message]})


def parse_filter_value(model: type[models.Model], field_name: str, raw: str, param: str) -> tuple[str, Any]:
    """Convert the query string value to the column's type; returns (lookup, value)."""
    field = model._meta.get_field(field_name)
    assert isinstance(field, models.Field), field_name  # whitelists name concrete columns only
    if isinstance(field, models.JSONField):
        return f"{field_name}__has_item", raw  # array fields match by membership
    if isinstance(field, models.BooleanField):
        lowered = raw.lower()
        if lowered not in TRUE_VALUES | FALSE_VALUES:
            raise _fail(param, f"must be true or false, got {raw[:32]!r}")
        return field_name, lowered in TRUE_VALUES
    if isinstance(field, models.IntegerField):
        if not re.fullmatch(r"-?\d{1,18}", raw):
            raise _fail(param, f"must be an integer, got {raw[:32]!r}")
        return field_name, int(raw)
    if isinstance(field, models.FloatField):
        try:
            return field_name, float(raw)
        except ValueError:
            raise _fail(param, f"must be a number, got {raw[:32]!r}") from None
    if isinstance(field, models.DateTimeField):
        value = parse_iso8601(raw)  # None for 30 February or a +99:00 offset too, not a ValueError
        if value is None:
            raise _fail(param, f"must be an ISO 8601 date-time, got {raw[:32]!r}")
        return field_name, value
    if field.choices:
        allowed = [str(choice) for choice, _ in field.flatchoices]
        if raw not in allowed:
            raise _fail(param, f"must be one of: {', '.join(allowed)}")
    if "\x00" in raw:
        raise _fail(param, "must not contain NUL characters")
    return field_name, raw


def filter_value_schema(model: type[models.Model] | None, field_name: str) -> dict[str, Any]:
    """The OpenAPI type of a filter's value, as `parse_filter_value` reads it (a string otherwise)."""
    try:
        field = model._meta.get_field(field_name) if model is not None else None
    except FieldDoesNotExist:
        field = None
    if isinstance(field, models.BooleanField):
        return {"type": "boolean"}
    if isinstance(field, models.IntegerField):
        return {"type": "integer"}
    if isinstance(field, models.FloatField):
        return {"type": "number"}
    if isinstance(field, models.DateTimeField):
        return {"type": "string", "format": "date-time"}
    if isinstance(field, models.Field) and field.choices and not isinstance(field, models.JSONField):
        return {"type": "string", "enum": [str(choice) for choice, _ in field.flatchoices]}
    return {"type": "string"}


class FilterSortBackend(BaseFilterBackend):
    """Reads `filter_fields`, `plain_filter_params`, `sort_fields` and `default_sort` from the view."""

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        filter_fields: dict[str, str] = getattr(view, "filter_fields", {})
        conditions: dict[str, Any] = {}
        for key in request.query_params:
            if not key.startswith("filter"):
                continue
            match = FILTER_KEY_RE.match(key)
            if not match:
                raise _fail(key, "malformed filter parameter; use filter[field]=value")
            api_name = match.group(1)
            if api_name not in filter_fields:
                allowed = ", ".join(sorted(filter_fields)) or "none"
                raise _fail(key, f"unknown filter field {api_name!r}; allowed: {allowed}")
            lookup, value = parse_filter_value(queryset.model, filter_fields[api_name], request.query_params[key], key)
            conditions[lookup] = value
        for api_name in getattr(view, "plain_filter_params", ()):
            # An empty plain parameter (`?status=`, an empty filter box) means "no filter".
            if request.query_params.get(api_name):
                lookup, value = parse_filter_value(
                    queryset.model, filter_fields[api_name], request.query_params[api_name], api_name
                )
                conditions[lookup] = value
        if conditions:
            queryset = queryset.filter(**conditions)
        return queryset.order_by(*self.ordering(request, view))

    def ordering(self, request: Request, view: Any) -> list[str]:
        sort_fields: dict[str, str] = getattr(view, "sort_fields", {})
        raw = str(request.query_params.get("sort") or getattr(view, "default_sort", "-createdAt"))
        ordering: list[str] = []
        for part in raw.split(","):
            part = part.strip()
            descending = part.startswith("-")
            name = part.lstrip("-+")
            if name not in sort_fields:
                allowed = ", ".join(sorted(sort_fields))
                raise _fail("sort", f"unknown sort field {name[:64]!r}; allowed: {allowed}")
            ordering.append(("-" if descending else "") + sort_fields[name])
        # The primary key breaks ties so that pages never overlap or skip rows.
        last_descending = ordering[-1].startswith("-")
        ordering.append("-id" if last_descending else "id")
        return ordering

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        filter_fields: dict[str, str] = getattr(view, "filter_fields", {})
        model = getattr(view, "model", None)
        params = []
        for api_name, field_name in filter_fields.items():
            params.append(
                {
                    "name": f"filter[{api_name}]",
                    "in": "query",
                    "required": False,
                    "description": f"Only records whose {api_name} equals this value (array fields: contain it).",
                    "schema": filter_value_schema(model, field_name),
                }
            )
        for api_name in getattr(view, "plain_filter_params", ()):
            params.append(
                {
                    "name": api_name,
                    "in": "query",
                    "required": False,
                    "description": f"Filter by {api_name} (same as filter[{api_name}]).",
                    "schema": filter_value_schema(model, filter_fields.get(api_name, "")),
                }
            )
        sort_fields = ", ".join(getattr(view, "sort_fields", {}))
        params.append(
            {
                "name": "sort",
                "in": "query",
                "required": False,
                "description": f"Comma-separated fields, '-' for descending. Allowed: {sort_fields}.",
                "schema": {"type": "string", "example": "-createdAt"},
            }
        )
        return params

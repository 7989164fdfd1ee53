"""`page` (1-based) and `limit` (default 10, max 100: over 100 is a 400, not silently cut)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_PAGE = 1_000_000


def _positive_int(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: str.isdigit() is also true of "²" (int() fails) and "٣" (int() reads 3).
    digits = raw.lstrip("0")
    if not (raw.isascii() and raw.isdigit()) or not digits:
        raise ValidationError({name: [f"must be a positive integer, got {raw[:32]!r}"]})
    # Thousands of digits are more than int() converts: more digits than the maximum is too large.
    value = int(digits) if len(digits) <= len(str(maximum)) else maximum + 1
    if value > maximum:
        raise ValidationError({name: [f"must not be greater than {maximum}"]})
    return value


def read_page_params(request: Request) -> tuple[int, int]:
    return (
        _positive_int(request, "page", 1, MAX_PAGE),
        _positive_int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT),
    )


class PagePagination(BasePagination):
    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list[Any]:
        self.page, self.limit = read_page_params(request)
        offset = (self.page - 1) * self.limit
        rows = list(queryset[offset : offset + self.limit])
        # A short first page already tells the total; only count when the page does not.
        if self.page == 1 and len(rows) < self.limit:
            self.total = len(rows)
        else:
            self.total = queryset.count()
        return rows

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"data": data, "pagination": {"page": self.page, "limit": self.limit, "total": self.total}})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["data", "pagination"],
            "properties": {
                "data": schema,
                "pagination": {
                    "type": "object",
                    "properties": {
                        "page": {"type": "integer", "example": 1},
                        "limit": {"type": "integer", "example": 10},
                        "total": {"type": "integer", "example": 25},
                    },
                },
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        return [
            {
                "name": "page",
                "in": "query",
                "required": False,
                "description": "Page number, 1-based (default 1).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
            },
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": f"Items per page (default {DEFAULT_LIMIT}, max {MAX_LIMIT}; more is a 400).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            },
        ]

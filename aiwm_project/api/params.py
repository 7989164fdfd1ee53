"""Query parameters of the sub-resource reads (times and enumerations), checked: a bad one is a 400."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from aiwm_project.datetimes import parse_iso8601


def time_param(request: Request, name: str, default: datetime | None = None) -> datetime | None:
    """An ISO 8601 query parameter (`from`, `to`, `since`), in UTC; anything else, a time out of
    range among them (30 February, a +99:00 offset, year 1 at +01:00), is a 400."""
    raw = request.query_params.get(name) or ""
    if not raw:
        return default
    parsed = parse_iso8601(raw)
    if parsed is None:
        raise ValidationError({name: [f"must be an ISO 8601 date-time, got {raw[:32]!r}"]})
    return parsed


def time_range(request: Request, *, default_span: timedelta) -> tuple[datetime | None, datetime | None]:
    """`from` (default: `default_span` ago) and `to` (default: open); `to` before `from` is a 400."""
    start = time_param(request, "from", timezone.now() - default_span)
    end = time_param(request, "to")
    if start and end and end < start:
        raise ValidationError({"to": ["must not be before from"]})
    return start, end


def choice_param(request: Request, name: str, choices: Sequence[str]) -> str | None:
    """An enumerated query parameter (`status`, `level`): one of `choices`, or absent."""
    value = request.query_params.get(name)
    if not value:
        return None
    if value not in choices:
        raise ValidationError({name: [f"must be one of: {', '.join(choices)}"]})
    return value

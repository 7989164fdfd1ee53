"""Times as the contract writes them (ISO 8601, UTC, milliseconds, Z) and as nodes report them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

# A node's clock may run a little ahead of ours; further ahead than this, its time is not believed.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as the contract's examples show."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def iso_now() -> str:
    return format_datetime(timezone.now())


def parse_iso(value: str | None) -> datetime | None:
    """A time this service wrote with `format_datetime` (a step's startedAt, say), back as a datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def aware(value: datetime) -> datetime:
    """A naive time read as the server's time zone; an aware one as it is."""
    return value if timezone.is_aware(value) else timezone.make_aware(value, timezone.get_current_timezone())


def reported_time(value: Any, default: datetime) -> datetime:
    """A node's timestamp if it is a sane ISO 8601 time (not far in the future), else `default`."""
    if isinstance(value, str) and len(value) < 64:
        parsed = parse_datetime(value)
        if parsed is not None:
            parsed = aware(parsed)
            if parsed <= default + MAX_CLOCK_SKEW:
                return parsed
    return default

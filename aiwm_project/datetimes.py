"""Times as the contract writes them (ISO 8601, UTC, milliseconds, Z) and as nodes report them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

# A node's clock may run a little ahead of ours; further ahead than this, its time is not believed.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as the contract's examples show.

    The year is padded to four digits by hand: glibc's strftime writes year 325 as "325".
    """
    utc = value.astimezone(UTC)
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def iso_now() -> str:
    return format_datetime(timezone.now())


def parse_iso(value: str | None) -> datetime | None:
    """A time this service wrote with `format_datetime` (a step's startedAt, say), back as a datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def aware(value: datetime) -> datetime:
    """A naive time read as the server's time zone; an aware one as it is."""
    return value if timezone.is_aware(value) else timezone.make_aware(value, timezone.get_current_timezone())


def parse_iso8601(value: Any) -> datetime | None:
    """An ISO 8601 date-time string as an aware datetime in UTC; None when it is not one.

    Not one either: a time that cannot be (30 February, a +99:00 offset: `parse_datetime` raises
    ValueError on those) or that a datetime cannot hold in UTC (year 1 at +01:00, year 9999 at
    -01:00: converting overflows), so neither reaches a comparison or the database.
    """
    if not isinstance(value, str) or len(value) >= 64:
        return None
    try:
        parsed = parse_datetime(value)
        return None if parsed is None else aware(parsed).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


# Before this, a node's time is not believed: no daemon reported then, and a point of year 1 is a
# broken clock (or an attack) that would sort before everything and stretch every time range.
EARLIEST_REPORTED = datetime(2000, 1, 1, tzinfo=UTC)


def believable_time(value: Any, now: datetime) -> datetime | None:
    """A node's timestamp if it is an ISO 8601 time from EARLIEST_REPORTED (2000-01-01 UTC) up to
    MAX_CLOCK_SKEW (5 minutes) past `now`; None when it is anything else."""
    parsed = parse_iso8601(value)
    if parsed is None or not EARLIEST_REPORTED <= parsed <= now + MAX_CLOCK_SKEW:
        return None
    return parsed


def reported_time(value: Any, default: datetime) -> datetime:
    """A node's timestamp if `believable_time` believes it (not before 2000, not more than five
    minutes ahead of `default`, a real time at all), else `default` (the time it was received)."""
    return believable_time(value, default) or default

"""Writes of the operator console: live-events tickets."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from aiwm_project.auth import Principal
from console.models import EventTicket


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def event_ticket_issue(*, principal: Principal) -> tuple[str, datetime]:
    """A new ticket for the caller's organization; returns (the ticket, when it expires)."""
    now = timezone.now()
    ticket = secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=settings.AIWM_EVENTS_TICKET_SECONDS)
    EventTicket.objects.create(
        digest=_digest(ticket),
        org_id=principal.org_id,
        user_id=principal.user_id,
        created_at=now,
        expires_at=expires_at,
    )
    return ticket, expires_at


def event_ticket_redeem(*, ticket: str) -> str | None:
    """The organization of a valid ticket, which is used up by this call (one UPDATE: two streams
    racing with the same ticket get it once); None for an unknown, used or expired one."""
    if not ticket or len(ticket) > 128:
        return None
    now = timezone.now()
    rows = EventTicket.objects.filter(digest=_digest(ticket), used_at__isnull=True, expires_at__gt=now)
    if not rows.update(used_at=now):
        return None
    return EventTicket.objects.filter(digest=_digest(ticket)).values_list("org_id", flat=True).first()


def event_tickets_prune(*, now: datetime | None = None) -> int:
    """Forget expired tickets (the sweep)."""
    return EventTicket.objects.filter(expires_at__lt=now or timezone.now()).delete()[0]

from __future__ import annotations

from django.db import models


class EventTicket(models.Model):
    """A short-lived, single-use ticket for `GET /api/events?ticket=…`: a browser's EventSource
    cannot send an Authorization header, and a long-lived token must never sit in a URL (it lands
    in proxy and server logs). Only the ticket's SHA-256 is stored."""

    digest = models.CharField(max_length=64, primary_key=True)
    org_id = models.CharField(max_length=64)
    user_id = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "live events ticket"

    def __str__(self) -> str:
        return f"ticket of {self.user_id} ({self.org_id}), expires {self.expires_at:%Y-%m-%d %H:%M:%S}"

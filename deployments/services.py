"""Deployment writes beyond plain CRUD (which the shared entity services handle)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from aiwm_project.api.errors import format_datetime
from aiwm_project.exceptions import NotFoundError
from deployments.choices import EventSeverity
from deployments.models import MAX_EVENTS, Deployment


def deployment_record_event(
    *, deployment: Deployment, event: str, message: str, severity: str = EventSeverity.INFO
) -> Deployment:
    """Append one entry to the deployment's event log, keeping the newest MAX_EVENTS.

    Holds a SELECT FOR UPDATE lock on the deployment row for the read-append-write of the JSON
    array, so concurrent reports (node status, engine steps) cannot drop each other's entries.
    Sends nothing. Raises NotFoundError when the deployment was deleted meanwhile.
    """
    if severity not in EventSeverity.values:
        raise ValueError(f"unknown event severity {severity!r}")
    now = timezone.now()
    entry = {"timestamp": format_datetime(now), "event": event[:128], "message": message[:4000], "severity": severity}
    with transaction.atomic():
        current = (
            Deployment.objects.select_for_update()
            .filter(pk=deployment.pk, is_deleted=False)
            .values_list("events", flat=True)
            .first()
        )
        if current is None:
            raise NotFoundError(f"Deployment with ID {deployment.pk} not found")
        events = [*(current or []), entry][-MAX_EVENTS:]
        Deployment.objects.filter(pk=deployment.pk).update(events=events, updated_at=now)
    deployment.events, deployment.updated_at = events, now
    return deployment

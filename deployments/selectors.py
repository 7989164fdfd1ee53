"""Reads of a deployment's records beyond the entity itself: the log lines its node reported."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from deployments.models import Deployment, DeploymentLog


def deployment_logs(
    *, deployment: Deployment, since: datetime | None = None, level: str | None = None
) -> QuerySet[DeploymentLog]:
    """The deployment's log lines at or after `since` and of `level` (when given), oldest first."""
    lines = DeploymentLog.objects.for_org(deployment.owner_org_id).filter(deployment_id=deployment.deployment_id)
    if since:
        lines = lines.filter(timestamp__gte=since)
    if level:
        lines = lines.filter(level=level)
    return lines.order_by("timestamp", "id")

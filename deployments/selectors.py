"""Reads of a deployment's records beyond the entity itself: the log lines its node reported."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from aiwm_project.selectors import in_time_range
from deployments.models import Deployment, DeploymentLog


def deployment_logs(
    *, deployment: Deployment, since: datetime | None = None, level: str | None = None
) -> QuerySet[DeploymentLog]:
    """The deployment's log lines at or after `since` and of `level` (when given), oldest first."""
    lines = DeploymentLog.objects.for_org(deployment.owner_org_id).filter(deployment_id=deployment.deployment_id)
    if level:
        lines = lines.filter(level=level)
    return in_time_range(lines, "timestamp", since, None).order_by("timestamp", "id")

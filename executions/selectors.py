"""Execution reads that are more than a filter: the per-organization statistics."""

from __future__ import annotations

from typing import Any

from django.db.models import Count

from executions.choices import ExecutionCategory, ExecutionStatus
from executions.models import Execution


def execution_statistics(*, org_id: str | None) -> dict[str, Any]:
    """`{total, byStatus, byCategory}` over the organization's live executions.

    Two GROUP BY queries answered from the (org, status|category) indexes; no row is loaded.
    Every status and category is present, zeros included, so clients need no defaults.
    """
    executions = Execution.objects.for_org(org_id)
    by_status = dict.fromkeys(ExecutionStatus.values, 0)
    for status, count in executions.order_by().values_list("status").annotate(count=Count("id")):
        by_status[status] = count
    by_category = dict.fromkeys(ExecutionCategory.values, 0)
    for category, count in executions.order_by().values_list("category").annotate(count=Count("id")):
        by_category[category] = count
    return {"total": sum(by_status.values()), "byStatus": by_status, "byCategory": by_category}

"""Execution reads that are more than a filter: the per-organization statistics, waiting for a run."""

from __future__ import annotations

import time
from typing import Any

from django.db.models import Count

from executions.choices import ACTIVE_STATUSES, ExecutionCategory, ExecutionStatus
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


# How often a waiting request looks at its execution again.
WAIT_POLL_SECONDS = 0.1


def execution_wait(*, execution: Execution, seconds: float) -> Execution:
    """The execution once it has finished, or as it is after `seconds` (still running then).

    For a client that asked to wait for its workflow's outcome (`?wait=`): polls the row (the run
    moves in other threads or processes: the node's results, the sweep), holding no lock.
    """
    deadline = time.monotonic() + seconds
    while execution.status in ACTIVE_STATUSES and time.monotonic() < deadline:
        time.sleep(WAIT_POLL_SECONDS)
        execution.refresh_from_db(fields=["status", "progress", "error", "completed_at"])
    return execution

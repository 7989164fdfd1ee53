"""Periodic maintenance (the sweep) inside the web process, for the embedded default.

With REDIS_URL set, Celery beat runs the same sweep (aiwm_project.tasks) and this stays off, so
N web processes do not sweep N times. The sweep's steps are conditional UPDATEs, safe anyway.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from aiwm_project.db import db_sync_to_async
from console.services import event_tickets_prune
from deployments.services import deployments_flag_offline_nodes
from executions.engine import executions_sweep
from inference.usage import usage_prune
from nodes.commands import commands_redeliver
from nodes.services import inbound_prune, metrics_prune, nodes_mark_stale_offline

logger = logging.getLogger("aiwm.background")
_started = False


def run_sweep() -> dict[str, int]:
    """One pass of every periodic job; each is a service, also called by the Celery task."""
    return {
        "nodes_offline": nodes_mark_stale_offline(),
        "deployments_flagged": deployments_flag_offline_nodes(),
        "executions_advanced": executions_sweep(),
        "commands_redelivered": commands_redeliver(),
        "metrics_pruned": metrics_prune(),
        "inbound_pruned": inbound_prune(),
        "event_tickets_pruned": event_tickets_prune(),
        "usage_pruned": usage_prune(),
    }


async def _ticker() -> None:
    while True:
        await asyncio.sleep(settings.AIWM_SWEEP_INTERVAL_SECONDS)
        try:
            await db_sync_to_async(run_sweep)()
        except Exception:  # keep ticking: one failed pass (a locked SQLite file…) is retried next time
            logger.exception("sweep failed")


def start_background_work_once() -> None:
    global _started
    if _started or settings.REDIS_URL or not settings.AIWM_IN_PROCESS_SWEEP:
        return
    _started = True
    asyncio.get_running_loop().create_task(_ticker())

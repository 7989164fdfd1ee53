"""Telemetry intake, write-behind: heartbeats and metric points are buffered per process and written in
batches every AIWM_TELEMETRY_FLUSH_MS (by `nodes.telemetry`), so a fleet's heartbeats cost one
statement per batch rather than one transaction each (GPUStack buffers heartbeats the same way).

Only telemetry is buffered: nothing in it is acknowledged to the node, and a crash loses at
most one flush interval of readings that the next heartbeat repeats anyway.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from django.conf import settings
from django.utils import timezone

from aiwm_project import metrics
from aiwm_project.datetimes import reported_time
from aiwm_project.db import db_sync_to_async
from nodes.telemetry import Heartbeat, MetricPoint, node_metrics_record, nodes_apply_heartbeats

logger = logging.getLogger("aiwm.gateway.telemetry")


class TelemetryBuffer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._heartbeats: dict[str, Heartbeat] = {}
        self._metrics: list[MetricPoint] = []

    def add_heartbeat(self, node_pk: str, data: dict[str, Any]) -> None:
        with self._lock:
            # Readings of one node within one interval: the latest wins, as it would in the row.
            self._heartbeats[node_pk] = Heartbeat(data=data, at=timezone.now())

    def add_metric(self, *, org_id: str, node_id: str, message_id: str, data: dict[str, Any], timestamp: Any) -> None:
        now = timezone.now()
        point = MetricPoint(org_id, node_id, message_id, reported_time(timestamp, now), now, data)
        with self._lock:
            self._metrics.append(point)

    def pending(self) -> int:
        with self._lock:
            return len(self._heartbeats) + len(self._metrics)

    def flush(self) -> tuple[int, int]:
        """Write everything buffered (sync: uses the ORM); returns (heartbeats, metric points)."""
        with self._lock:
            heartbeats, self._heartbeats = self._heartbeats, {}
            points, self._metrics = self._metrics, []
        nodes_apply_heartbeats(heartbeats=heartbeats)
        node_metrics_record(points=points)
        written = timezone.now()
        for kind, arrivals in (
            ("heartbeat", [h.at for h in heartbeats.values()]),
            ("metrics", [p.received_at for p in points]),
        ):
            lag = metrics.TELEMETRY_FLUSH_LAG.labels(kind)
            for at in arrivals:
                lag.observe((written - at).total_seconds())
        return len(heartbeats), len(points)


buffer = TelemetryBuffer()
_flusher: dict[str, Any] = {"task": None}


async def flush_now() -> None:
    """Write what is buffered now (from the event loop; the ORM work runs in a worker thread)."""
    if not buffer.pending():
        return
    try:
        await db_sync_to_async(buffer.flush)()
    except Exception:  # keep going: a failed batch (a lost DB connection) must not stop the next
        logger.exception("telemetry flush failed")


async def _flush_forever() -> None:
    interval = settings.AIWM_TELEMETRY_FLUSH_MS / 1000
    while True:
        await asyncio.sleep(interval)
        await flush_now()


def ensure_flusher() -> None:
    """Start this process's flush loop on the running event loop (once)."""
    task = _flusher["task"]
    if task is None or task.done():
        _flusher["task"] = asyncio.get_running_loop().create_task(_flush_forever())

"""Telemetry write-behind: heartbeats and metric points are buffered per process and written in
batches every AIWM_TELEMETRY_FLUSH_MS, so a fleet's heartbeats cost one statement per batch
rather than one transaction each (GPUStack buffers heartbeats the same way).

Only telemetry is buffered: nothing in it is acknowledged to the node, and a crash loses at
most one flush interval of readings that the next heartbeat repeats anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Field, Model
from django.utils import timezone

from aiwm_project.db import db_sync_to_async
from nodes.models import Node, NodeMetric
from nodes.services import heartbeat_changes, reported_time

logger = logging.getLogger("aiwm.nodes.telemetry")


@dataclass
class _Heartbeat:
    data: dict[str, Any]
    at: datetime


@dataclass
class _Point:
    """One metric point, as NodeMetric's fields (a plain object: built in the event loop per message)."""

    owner_org_id: str
    node_id: str
    message_id: str
    timestamp: datetime
    received_at: datetime
    data: dict[str, Any]


class TelemetryBuffer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._heartbeats: dict[str, _Heartbeat] = {}
        self._metrics: list[_Point] = []

    def add_heartbeat(self, node_pk: str, data: dict[str, Any]) -> None:
        with self._lock:
            # Readings of one node within one interval: the latest wins, as it would in the row.
            self._heartbeats[node_pk] = _Heartbeat(data=data, at=timezone.now())

    def add_metric(self, *, org_id: str, node_id: str, message_id: str, data: dict[str, Any], timestamp: Any) -> None:
        now = timezone.now()
        point = _Point(org_id, node_id, message_id, reported_time(timestamp, now), now, data)
        with self._lock:
            self._metrics.append(point)

    def pending(self) -> int:
        with self._lock:
            return len(self._heartbeats) + len(self._metrics)

    def flush(self) -> tuple[int, int]:
        """Write everything buffered: heartbeats as one locked read + one UPDATE of every node in the
        batch, in one transaction; metric points as one INSERT (a point whose messageId was already
        stored is skipped: at most once)."""
        with self._lock:
            heartbeats, self._heartbeats = self._heartbeats, {}
            metrics, self._metrics = self._metrics, []
        postgres = connection.vendor == "postgresql"
        if heartbeats:
            with transaction.atomic():
                # Locked in primary-key order, so concurrent flushes of several processes cannot deadlock.
                nodes = _lock_nodes_pg(list(heartbeats)) if postgres else _lock_nodes_orm(list(heartbeats))
                changes = []
                for node in nodes:
                    beat = heartbeats[node.pk]
                    changes.append((node.pk, heartbeat_changes(node, beat.data, beat.at)))
                if changes:
                    (_write_heartbeats_pg if postgres else _write_heartbeats_orm)(changes)
        if metrics:
            if postgres:
                _insert_metrics_pg(metrics)
            else:
                points = [NodeMetric(**vars(point)) for point in metrics]
                NodeMetric.objects.bulk_create(points, ignore_conflicts=True)
        return len(heartbeats), len(metrics)


# --- PostgreSQL: each batch is a constant number of statements whose rows travel as one JSON
# document (jsonb_to_recordset). The ORM's bulk_update builds a `CASE WHEN pk = ... THEN ...`
# per node and field and resolves each expression in Python: at a few hundred heartbeats a second
# that was most of the gateway's CPU, and the worker thread doing it starved the event loop of
# the GIL (bench/node_swarm.py, BENCHMARKS.md "Node swarm").

_HEARTBEAT_READ = ("status", "gpu_devices", "ram_total")


def _lock_nodes_orm(pks: list[str]) -> list[Node]:
    return list(
        Node.objects.select_for_update()
        .filter(pk__in=pks, is_deleted=False)
        .only("id", *_HEARTBEAT_READ)
        .order_by("pk")
    )


def _lock_nodes_pg(pks: list[str]) -> list[Node]:
    # Model.from_db takes the values in the model's field order.
    fields = [f for f in Node._meta.concrete_fields if f.attname in ("id", *_HEARTBEAT_READ)]
    quote = connection.ops.quote_name
    pk, deleted = quote(Node._meta.pk.column), quote(_field("is_deleted").column)
    sql = (
        f"SELECT {', '.join(quote(f.column) for f in fields)} FROM {quote(Node._meta.db_table)}"
        f" WHERE {pk} = ANY(%s) AND NOT {deleted} ORDER BY {pk} FOR UPDATE"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [pks])
        rows = cursor.fetchall()
    names = [f.attname for f in fields]
    # Django reads jsonb as text and decodes it in the field (from_db_value); so do we.
    return [
        Node.from_db(connection.alias, names, [_from_db(f, v) for f, v in zip(fields, row, strict=True)])
        for row in rows
    ]


def _from_db(field: Field[Any, Any], value: Any) -> Any:
    if isinstance(value, str) and field.get_internal_type() == "JSONField":
        return json.loads(value)
    return value


def _write_heartbeats_pg(changes: list[tuple[str, dict[str, Any]]]) -> None:
    """One UPDATE for the whole batch. A field a heartbeat does not change is absent from its row
    (NULL in the recordset) and kept (`COALESCE`): heartbeat_changes never sets a NULL."""
    names = sorted({name for _, change in changes for name in change})
    fields = [_field(name) for name in names]
    column = {name: str(f.column) for name, f in zip(names, fields, strict=True)}
    pk = Node._meta.pk
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(f.column)} = COALESCE(v.{quote(f.column)}, n.{quote(f.column)})" for f in fields)
    record = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in [pk, *fields])
    # `n._id = ANY(...)` too: the planner estimates 100 rows for a function scan and would otherwise
    # hash-join against a sequential scan of the whole table (every node of every organization).
    sql = (
        f"UPDATE {quote(Node._meta.db_table)} AS n SET {assignments}"
        f" FROM jsonb_to_recordset(%s::jsonb) AS v({record})"
        f" WHERE n.{quote(pk.column)} = v.{quote(pk.column)} AND n.{quote(pk.column)} = ANY(%s)"
    )
    rows = [{pk.column: node_pk, **{column[k]: v for k, v in change.items()}} for node_pk, change in changes]
    with connection.cursor() as cursor:
        cursor.execute(sql, [json.dumps(rows, default=_json_default), [node_pk for node_pk, _ in changes]])


def _insert_metrics_pg(points: list[_Point]) -> None:
    names = ["owner_org_id", "node_id", "message_id", "timestamp", "received_at", "data"]
    fields = [_field(name, NodeMetric) for name in names]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    record = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in fields)
    sql = (
        f"INSERT INTO {quote(NodeMetric._meta.db_table)} ({columns}) SELECT {columns}"
        f" FROM jsonb_to_recordset(%s::jsonb) AS v({record}) ON CONFLICT DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [json.dumps([vars(point) for point in points], default=_json_default)])


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _field(name: str, model: type[Model] = Node) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field) and field.column
    return field


# --- Other databases (SQLite, the embedded default: a handful of nodes): one UPDATE per node.


def _write_heartbeats_orm(changes: list[tuple[str, dict[str, Any]]]) -> None:
    names = sorted({name for _, change in changes for name in change})
    fields = [_field(name) for name in names]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(f.column)} = COALESCE(%s, {quote(f.column)})" for f in fields)
    sql = f"UPDATE {quote(Node._meta.db_table)} SET {assignments} WHERE {quote(Node._meta.pk.column)} = %s"
    rows = []
    for pk, change in changes:
        values = [
            None if n not in change else f.get_db_prep_save(change[n], connection)
            for n, f in zip(names, fields, strict=True)
        ]
        rows.append([*values, pk])
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


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

"""Telemetry writes in batches: heartbeats onto their nodes, metric points into the time series.

The gateway's write-behind buffer (`gateway.telemetry`) collects a fleet's readings and flushes
them here every AIWM_TELEMETRY_FLUSH_MS: a constant number of statements per batch rather than a
transaction per message.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DataError, connection, transaction
from django.db.models import Field, Model

from nodes.models import Node, NodeMetric
from nodes.services import announce_heartbeats, heartbeat_changes

logger = logging.getLogger("aiwm.nodes.telemetry")


@dataclass
class Heartbeat:
    data: dict[str, Any]
    at: datetime


@dataclass
class MetricPoint:
    """One metric point, as NodeMetric's fields (a plain object: built in the event loop per message)."""

    owner_org_id: str
    node_id: str
    message_id: str
    timestamp: datetime
    received_at: datetime
    data: dict[str, Any]


def nodes_apply_heartbeats(*, heartbeats: dict[str, Heartbeat]) -> None:
    """Apply the latest heartbeat of each node (by primary key): one locked read and one UPDATE of
    every node in the batch, in one transaction. Nodes are locked in primary-key order, so
    concurrent flushes of several processes cannot deadlock; a deleted node's heartbeat is dropped."""
    if not heartbeats:
        return
    postgres = connection.vendor == "postgresql"
    with transaction.atomic():
        nodes = _lock_nodes_pg(list(heartbeats)) if postgres else _lock_nodes_orm(list(heartbeats))
        changes = [
            (node.pk, heartbeat_changes(node, heartbeats[node.pk].data, heartbeats[node.pk].at)) for node in nodes
        ]
        if changes:
            (_write_heartbeats_pg if postgres else _write_heartbeats_orm)(changes)
            announce_heartbeats(nodes, [change for _, change in changes])


# What a point's values can make the database or its driver refuse (an out-of-range time, a number
# beyond the column): not a lost connection, which the caller's retry handles.
BAD_DATA = (DataError, ValueError, OverflowError)


def node_metrics_record(*, points: list[MetricPoint]) -> None:
    """Insert metric points in one statement; a point whose messageId its node already stored is
    skipped (at most once).

    The batch holds every node's points: if the database (or the driver) refuses the batch because
    of one point, it is written again node by node, so one misbehaving daemon never costs another
    node its readings; that node's points of this batch are dropped, with a log line naming it.
    """
    if not points:
        return
    try:
        _insert_metrics_atomically(points)
    except BAD_DATA:
        by_node: dict[tuple[str, str], list[MetricPoint]] = {}
        for point in points:
            by_node.setdefault((point.owner_org_id, point.node_id), []).append(point)
        for (org_id, node_id), own in by_node.items():
            try:
                _insert_metrics_atomically(own)
            except BAD_DATA:
                logger.warning("metrics of node %s (org %s) refused; %d point(s) dropped", node_id, org_id, len(own))


def _insert_metrics_atomically(points: list[MetricPoint]) -> None:
    # Its own transaction (a savepoint inside the caller's): a refused statement leaves nothing
    # aborted behind it for the next attempt.
    with transaction.atomic():
        if connection.vendor == "postgresql":
            _insert_metrics_pg(points)
        else:
            NodeMetric.objects.bulk_create([NodeMetric(**vars(point)) for point in points], ignore_conflicts=True)


# --- PostgreSQL: each batch is a constant number of statements whose rows travel as one JSON
# document (jsonb_to_recordset). The ORM's bulk_update builds a `CASE WHEN pk = ... THEN ...`
# per node and field and resolves each expression in Python: at a few hundred heartbeats a second
# that was most of the gateway's CPU, and the worker thread doing it starved the event loop of
# the GIL (bench/node_swarm.py, BENCHMARKS.md "Node swarm").

_HEARTBEAT_READ = ("owner_org_id", "node_id", "status", "gpu_devices", "ram_total")


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


def _insert_metrics_pg(points: list[MetricPoint]) -> None:
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

"""Variants of the served applications for the experiments of BENCHMARKS.md "Node swarm".

    .venv/bin/python bench/node_swarm.py --service-app bench.swarm_experiments:service_cpython_gc \\
        --echo-app bench.swarm_experiments:echo_cpython_gc

Each variant loads its application on the first ASGI call (uvicorn's lifespan, daphne's first
connection: before the benchmark's warm-up) and then changes one thing:

- `service_cpython_gc`, `echo_cpython_gc`: CPython's default garbage collector settings, undoing
  what the service and the echo server do by default (`gc.freeze()` of everything imported at
  startup, a young collection every 50,000 net new container objects instead of 700). With the
  defaults a full collection at 2,000 connections walks about 560,000 objects and stops the event
  loop for 0.6-0.8 s on this machine, one or two per 10 s.
- `service_async_flush`: the telemetry flush run on the event loop through an asynchronous
  psycopg connection (the same three statements as nodes.telemetry's PostgreSQL path) instead of
  in a worker thread, so no second Python thread competes with the event loop for the GIL.
- `service_no_flush`: the service whose telemetry flushes drop the buffer instead of writing it
  (what the event loop costs without the write-behind's worker thread). Not a service: nothing
  reaches the database.

Nothing here is used by the service itself. `node_swarm.py --smoke` exercises every variant
(bench/swarm/experiments_check.py).
"""

from __future__ import annotations

import gc
import json
import logging
from datetime import datetime
from typing import Any

from bench.harness.apps import ASGIApp, LazyApp

logger = logging.getLogger("bench.swarm_experiments")


def _service() -> ASGIApp:
    from aiwm_project.asgi import application

    return application  # type: ignore[no-any-return]


def _echo() -> ASGIApp:
    from bench.echo_server import application

    return application  # type: ignore[no-any-return]


def _cpython_gc() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)


def _drop_flushes() -> None:
    from gateway import telemetry

    def flush(self: telemetry.TelemetryBuffer) -> tuple[int, int]:
        with self._lock:
            self._heartbeats, self._metrics = {}, []
        return 0, 0

    telemetry.TelemetryBuffer.flush = flush  # type: ignore[method-assign]


class _AsyncFlush:
    """gateway.telemetry.flush_now replaced by the same writes, awaited on the event loop."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.update = self.insert = ""

    def install(self) -> None:
        from gateway import telemetry

        telemetry.flush_now = self.flush_now  # the flusher and the protocol look it up at each call

    def statements(self) -> tuple[str, str]:
        from nodes.models import Node, NodeMetric

        names = ["last_heartbeat", "updated_at", "status", "cpu_usage", "uptime_seconds"]
        names += ["active_deployments", "ram_free", "gpu_devices"]
        fields = _columns(Node, names)
        assign = ", ".join(f"{column} = COALESCE(v.{column}, n.{column})" for column, _ in fields)
        record = ", ".join(f"{column} {type_}" for column, type_ in fields)
        update = (
            f"UPDATE nodes_node AS n SET {assign} FROM jsonb_to_recordset(%s::jsonb) AS v(_id varchar(24), {record})"
            " WHERE n._id = v._id AND n._id = ANY(%s)"
        )
        mfields = _columns(NodeMetric, ["owner_org_id", "node_id", "message_id", "timestamp", "received_at", "data"])
        columns = ", ".join(column for column, _ in mfields)
        mrecord = ", ".join(f"{column} {type_}" for column, type_ in mfields)
        insert = (
            f"INSERT INTO nodes_nodemetric ({columns}) SELECT {columns}"
            f" FROM jsonb_to_recordset(%s::jsonb) AS v({mrecord}) ON CONFLICT DO NOTHING"
        )
        return update, insert

    async def connection(self) -> Any:
        import psycopg
        from django.conf import settings

        if self.conn is None or self.conn.closed:
            db = settings.DATABASES["default"]
            self.conn = await psycopg.AsyncConnection.connect(
                dbname=db["NAME"],
                user=db.get("USER") or None,
                password=db.get("PASSWORD") or None,
                host=db.get("HOST") or None,
                port=db.get("PORT") or None,
                autocommit=True,
            )
        return self.conn

    async def flush_now(self) -> None:
        from gateway import telemetry
        from nodes.models import Node
        from nodes.services import heartbeat_changes

        buffer = telemetry.buffer
        with buffer._lock:
            heartbeats, buffer._heartbeats = buffer._heartbeats, {}
            metrics, buffer._metrics = buffer._metrics, []
        if not heartbeats and not metrics:
            return
        if not self.update:
            self.update, self.insert = self.statements()
        try:
            conn = await self.connection()
            if heartbeats:
                async with conn.transaction():
                    cursor = await conn.execute(
                        "SELECT _id, status, ram_total, gpu_devices FROM nodes_node"
                        " WHERE _id = ANY(%s) AND NOT is_deleted ORDER BY _id FOR UPDATE",
                        [list(heartbeats)],
                    )
                    rows = []
                    for pk, status, ram_total, gpus in await cursor.fetchall():
                        beat = heartbeats[pk]
                        node = Node(id=pk, status=status, ram_total=ram_total, gpu_devices=gpus)
                        rows.append({"_id": pk, **heartbeat_changes(node, beat.data, beat.at)})
                    if rows:
                        await conn.execute(self.update, [json.dumps(rows, default=_iso), [r["_id"] for r in rows]])
            if metrics:
                await conn.execute(self.insert, [json.dumps([vars(p) for p in metrics], default=_iso)])
        except Exception:
            logger.exception("telemetry flush failed")
            if self.conn is not None:
                await self.conn.close()
                self.conn = None


def _columns(model: Any, names: list[str]) -> list[tuple[str, str]]:
    """(quoted column, database type) of each named field."""
    from django.db import connection
    from django.db.models import Field

    out = []
    for name in names:
        field = model._meta.get_field(name)
        assert isinstance(field, Field) and field.column
        out.append((connection.ops.quote_name(field.column), str(field.db_type(connection))))
    return out


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


service_cpython_gc = LazyApp(_service, _cpython_gc)
echo_cpython_gc = LazyApp(_echo, _cpython_gc)
service_async_flush = LazyApp(_service, lambda: _AsyncFlush().install())
service_no_flush = LazyApp(_service, _drop_flushes)

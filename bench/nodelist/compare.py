"""The node list benchmark's checks that the service and the bare view do the same work (the same
SQL, the same JSON), and the server-side time of that SQL."""

from __future__ import annotations

import json
import re
import statistics
from typing import Any

from bench.harness.report import log
from bench.harness.servers import Server
from bench.nodelist import BENCH_PATH
from bench.nodelist.servers import http_get


def capture_service_queries(token: str) -> list[str]:
    """The SQL the service runs for the benchmarked request, captured from Django itself."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        response = Client().get(BENCH_PATH, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content[:500]
    return [q["sql"] for q in ctx.captured_queries if "nodes_node" in q["sql"]]


def bare_queries(org: str, conn: Any) -> list[str]:
    import psycopg

    from bench.bare_urls import COUNT_SQL, PAGE_SQL

    cursor = psycopg.ClientCursor(conn)
    return [cursor.mogrify(PAGE_SQL, [org, "online", 10]), cursor.mogrify(COUNT_SQL, [org, "online"])]


def normalize_sql(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def check_identical(service: Server, others: list[Server], token: str) -> tuple[dict[str, Any], bool]:
    """Every server answers the benchmarked request with the service's rows and pagination; returns
    the service's JSON and whether the bytes are identical too."""
    s_status, s_body = http_get(service, token)
    if s_status != 200:
        raise RuntimeError(f"service {s_status} {s_body[:300]!r}")
    s_json = json.loads(s_body)
    byte_identical = True
    for other in others:
        o_status, o_body = http_get(other, token)
        if o_status != 200:
            raise RuntimeError(f"{other.label} {o_status} {o_body[:300]!r}")
        o_json = json.loads(o_body)
        if s_json["data"] != o_json["data"] or s_json["pagination"] != o_json["pagination"]:
            for s_row, o_row in zip(s_json["data"], o_json["data"], strict=False):
                if s_row != o_row:
                    log(f"  first differing row:\n    service {s_row}\n    {other.label} {o_row}")
                    break
            raise RuntimeError(f"service and {other.label} answer different JSON")
        byte_identical &= s_body == o_body
    return s_json, byte_identical


def explain(dsn: str, sql: str) -> list[str]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return [row[0] for row in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql).fetchall()]


def db_time_ms(dsn: str, sql: str, repeat: int = 9) -> float:
    """Median server-side execution time of one statement, warm cache.

    TIMING OFF: per-node timing calls the clock twice per row, which on this kind of VM costs more
    than counting an index entry, so EXPLAIN's own timing would inflate the COUNT several-fold.
    """
    import psycopg

    times = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(repeat):
            row = conn.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + sql).fetchone()
            assert row is not None
            plan = row[0]
            times.append((json.loads(plan) if isinstance(plan, str) else plan)[0]["Execution Time"])
    return statistics.median(times)

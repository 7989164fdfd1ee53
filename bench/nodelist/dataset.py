"""The data set of the node list benchmark: rows seeded in SQL into `nodes_node`, and the organization
whose requests are measured."""

from __future__ import annotations

import json
import re
from typing import Any

ORGS = 100
ORG_SKEW = 1.5  # org index = floor(100 * random() ** 1.5): sizes from ~0.7% to ~4.6% of the rows


def org_id(index: int) -> str:
    import hashlib

    return hashlib.md5(f"aiwm-bench-org-{index}".encode()).hexdigest()[:24]


def typical_org_index() -> int:
    """The organization whose expected share of the rows is closest to 1%."""
    shares = [((k + 1) / ORGS) ** (1 / ORG_SKEW) - (k / ORGS) ** (1 / ORG_SKEW) for k in range(ORGS)]
    return min(range(ORGS), key=lambda k: abs(shares[k] - 0.01))


GPU_VARIANTS = [
    [],
    [{"deviceId": "GPU-0", "model": "NVIDIA RTX 4090", "memoryTotal": 24576, "memoryFree": 20000,
      "utilization": 45.5, "temperature": 65.0}],
    [{"deviceId": f"GPU-{i}", "model": "NVIDIA A100 80GB", "memoryTotal": 81920, "memoryFree": 40960 - 1024 * i,
      "utilization": 72.25, "temperature": 70.5} for i in range(2)],
    [{"deviceId": f"GPU-{i}", "model": "NVIDIA H100", "memoryTotal": 81920, "memoryFree": 8192 * i,
      "utilization": 91.0, "temperature": 77.5} for i in range(4)],
]  # fmt: skip
ROLE_VARIANTS = [["worker"], ["worker"], ["worker", "storage"], ["controller"], ["proxy"]]

SEED_SQL = """
INSERT INTO nodes_node (
    _id, owner_org_id, owner_user_id, owner_group_id, created_by, updated_by, created_at, updated_at,
    is_deleted, deleted_at, node_id, name, role, status, is_local, vpn_ip, websocket_connected,
    last_heartbeat, cpu_cores, ram_total, ram_free, gpu_devices /*EXTRA_COLUMNS*/
)
SELECT
    lpad(to_hex(extract(epoch FROM s.created)::bigint), 8, '0') || lpad(to_hex(s.i), 16, '0'),
    substr(md5('aiwm-bench-org-' || s.org), 1, 24),
    substr(md5('aiwm-bench-user-' || s.org || '-' || s.i %% 7), 1, 24),
    '',
    substr(md5('aiwm-bench-user-' || s.org || '-' || s.i %% 7), 1, 24),
    substr(md5('aiwm-bench-user-' || s.org || '-' || s.i %% 5), 1, 24),
    s.created,
    s.created + s.rx * interval '30 days',
    s.rd < 1.0 / 3,
    CASE WHEN s.rd < 1.0 / 3 THEN s.created + s.rx * interval '60 days' END,
    'node-gpu-' || s.i,
    'GPU Server ' || s.i,
    (%(roles)s::text[])[1 + s.i %% 5]::jsonb,
    CASE WHEN s.rs < 0.5 THEN 'online' WHEN s.rs < 0.85 THEN 'offline' ELSE 'maintenance' END,
    s.i %% 10 = 0,
    '10.' || (s.i >> 16 & 255) || '.' || (s.i >> 8 & 255) || '.' || (s.i & 255),
    s.rs < 0.5,
    CASE
        WHEN s.rs < 0.5 THEN now() - s.rx * interval '60 seconds'
        WHEN s.rs < 0.85 THEN now() - interval '1 day' - s.rx * interval '30 days'
    END,
    (ARRAY[16, 32, 64, 128])[1 + s.i %% 4],
    (ARRAY[65536, 131072, 262144, 524288])[1 + s.i %% 4],
    ((ARRAY[65536, 131072, 262144, 524288])[1 + s.i %% 4] * (0.2 + 0.6 * s.rx))::bigint,
    (%(gpus)s::text[])[1 + (s.i / 7) %% 4]::jsonb /*EXTRA_VALUES*/
FROM (
    SELECT
        i,
        floor(%(orgs)s::int * power(random(), %(skew)s::float8))::int AS org,
        %(anchor)s::timestamptz - random() * interval '730 days' AS created,
        random() AS rd,
        random() AS rs,
        random() AS rx
    FROM generate_series(%(lo)s::int, %(hi)s::int) AS i
) AS s
"""


def seed_sql() -> tuple[str, dict[str, Any]]:
    """SEED_SQL plus every other Node column, filled with the model's default (a constant).

    The Node model grows (daemon-reported fields, ...); its columns have Python-side defaults only,
    so an INSERT that omits them would fail on NOT NULL. Columns without a default fail loudly.
    """
    from django.db import connection

    from nodes.models import Node

    seeded = set(re.findall(r"\w+", SEED_SQL[SEED_SQL.index("(") : SEED_SQL.index(")")]))
    columns, values, params = [], [], {}
    for n, f in enumerate(Node._meta.concrete_fields):
        if f.column in seeded:
            continue
        default = f.get_default()
        if default is None and not f.null:
            raise RuntimeError(f"bench seed: nodes_node.{f.column} has no default; give it a value in SEED_SQL")
        columns.append(f.column)
        values.append(f"%(extra{n})s::{f.db_type(connection)}")
        params[f"extra{n}"] = f.get_db_prep_save(default, connection)
    sql = SEED_SQL.replace("/*EXTRA_COLUMNS*/", "".join(f", {c}" for c in columns))
    return sql.replace("/*EXTRA_VALUES*/", "".join(f", {v}" for v in values)), params


def seed(dsn: str, first: int, last: int) -> float:
    """Insert rows `first..last` (1-based, inclusive), then VACUUM ANALYZE; returns the all-visible share.

    The commit is synchronous on purpose: VACUUM marks a page all-visible only once the hint bits
    of its rows can be set, which waits for the commit record to be flushed. With an asynchronous
    commit, the pages VACUUM reached first stayed not-all-visible and COUNT(*) had to visit the heap.
    """
    import psycopg

    sql, extra = seed_sql()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT setseed(%s)", [(first % 1000) / 1000.0])
        conn.execute(
            sql,
            {
                "roles": [json.dumps(r) for r in ROLE_VARIANTS],
                "gpus": [json.dumps(g) for g in GPU_VARIANTS],
                "orgs": ORGS,
                "skew": ORG_SKEW,
                "anchor": "2026-11-01T00:00:00+00:00",
                "lo": first,
                "hi": last,
                **extra,
            },
        )
        conn.execute("VACUUM (ANALYZE) nodes_node")
        row = conn.execute("SELECT relallvisible, relpages FROM pg_class WHERE relname = 'nodes_node'").fetchone()
    assert row is not None
    return row[0] / row[1] if row[1] else 1.0


def org_counts(dsn: str, org: str) -> tuple[int, int, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT is_deleted),"
            " count(*) FILTER (WHERE NOT is_deleted AND status = 'online') FROM nodes_node WHERE owner_org_id = %s",
            [org],
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])

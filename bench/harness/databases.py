"""The benchmarks' own PostgreSQL databases: created (or cloned from a template), migrated, dropped;
and the CPU time of the backends serving one."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from typing import Any

from bench.harness.env import REPO
from bench.harness.procfs import cpu_seconds


def admin_execute(admin_dsn: str, statement: Any) -> None:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(statement)


def server_version(admin_dsn: str) -> str:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    return str(row[0])


def recreate_database(admin_dsn: str, name: str, template: str | None = None) -> None:
    """Drop `name` if it exists (its connections too), then create it, empty or as a clone of `template`."""
    from psycopg import sql

    drop_database(admin_dsn, name)
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    admin_execute(admin_dsn, create)


def drop_database(admin_dsn: str, name: str) -> None:
    from psycopg import sql

    admin_execute(admin_dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def migrate(dsn: str, env: dict[str, str]) -> None:
    """`manage.py migrate` of the database at `dsn` (the service's own migrations), without Redis."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=REPO,
        env={**env, "DATABASE_URL": dsn, "REDIS_URL": ""},
        check=True,
        timeout=600,
    )


def point_django_at(name: str) -> None:
    """This process's Django connection, closed, then pointed at another database of the same server
    (as Django's test runner points it at the test database): how one benchmark seeds several
    databases through the ORM."""
    from django.db import connection

    connection.close()
    connection.settings_dict["NAME"] = name


def close_django_connections() -> None:
    """Close this process's Django connections if Django was set up (before its databases are dropped)."""
    with contextlib.suppress(Exception):
        from django.db import connections

        connections.close_all()


def pg_backend_cpu(dsn: str, db: str, exclude_pid: int) -> dict[int, float]:
    """CPU seconds so far of the PostgreSQL backends connected to `db` (the server's), but the poller's."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [
            int(r[0])
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() AND pid <> %s",
                [db, exclude_pid],
            ).fetchall()
        ]
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            out[pid] = cpu_seconds(pid)
    return out


def end_run(*, admin_dsn: str, databases: list[str], redis_url: str, logdir: Any, keep: bool) -> None:
    """A benchmark's clean-up, whatever happened: Django's connections closed, its Redis database
    emptied, then its databases dropped and its log folder removed — or both kept (`--keep-db`)."""
    import shutil

    from bench.harness.redis_db import flush_redis
    from bench.harness.report import log

    close_django_connections()
    with contextlib.suppress(Exception):
        flush_redis(redis_url)
    if keep:
        log(f"kept databases {', '.join(databases)} and logs in {logdir}")
        return
    for name in databases:
        drop_database(admin_dsn, name)
    shutil.rmtree(logdir, ignore_errors=True)

"""ORM work from async code (sockets, background loops) on long-lived worker threads.

Django recycles database connections around HTTP requests only. A socket server's worker
threads live as long as the process, so a connection the database dropped (a restart, a
failover, an idle timeout) would stay broken in them forever. `db_sync_to_async` runs the
function in a worker thread and, when it fails because the connection is gone (not for an
SQL error), closes that connection and tries once more on a fresh one: nothing was applied
through a dead connection, so the retry is safe. With the connection pool, the connection goes
back to the pool after each call.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection
from django.db.utils import InterfaceError, OperationalError

P = ParamSpec("P")
R = TypeVar("R")


# SQLSTATEs of a lost connection: connection exceptions (08…), and the server shutting the
# session down (admin shutdown, crash shutdown, cannot connect now).
LOST_CONNECTION_STATES = ("57P01", "57P02", "57P03")


def connection_lost(exc: BaseException) -> bool:
    """Whether a database error means the connection is gone (not an SQL error, not a lock).

    Decided from the driver's error, not by probing the connection afterwards: leaving a failed
    transaction, Django may already have opened a fresh, usable connection in its place.
    """
    if connection.vendor != "postgresql":
        return False
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate is None:
        return cause is not None  # a client-side failure: the socket closed, the connection is broken
    return sqlstate.startswith("08") or sqlstate in LOST_CONNECTION_STATES


def _with_reconnect(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (InterfaceError, OperationalError) as exc:
            if connection.in_atomic_block or not connection_lost(exc):
                raise  # a real database error (or inside a caller's transaction): not ours to retry
            connection.close()
            return func(*args, **kwargs)
        finally:
            release_pooled_connection()

    return run


def release_pooled_connection() -> None:
    """With the connection pool (settings: DB_POOL_MAX_SIZE), hand this thread's connection back
    once its unit of work is done, as a request does at its end: a worker thread lives as long as
    the process and would otherwise keep one of the pool's few connections for ever (the pool runs
    dry and requests wait for DB_POOL_TIMEOUT). Taking one again from the pool is cheap."""
    if connection.settings_dict["OPTIONS"].get("pool") and not connection.in_atomic_block:
        connection.close()


def db_sync_to_async(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Like `sync_to_async`, for ORM work, with recovery from a dropped connection.

    SQLite allows one writer, so there the work stays on one thread; PostgreSQL takes it in parallel.
    """
    runner: Any = sync_to_async(_with_reconnect(func), thread_sensitive=connection.vendor == "sqlite")
    return runner  # type: ignore[no-any-return]

"""The node list benchmark's three servers per row count, on loopback: the real service
(`aiwm_project.settings`) and the bare view (`bench.bare_settings`: the same settings, middleware and
ASGI application, one view), both with `make run`'s command (`manage.py serve`); and the near-limit
baseline (`bench.limit_app`: no framework, a connection pool) under the same uvicorn."""

from __future__ import annotations

import contextlib
import http.client
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.harness.servers import HOST, SERVICE_APP, Server
from bench.nodelist import BENCH_PATH

LIMIT_APP = "bench.limit_app:application"


def http_get(server: Server, token: str, path: str = BENCH_PATH) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def answers_200(server: Server, token: str) -> Callable[[], bool]:
    """A readiness probe: the benchmarked request answered 200 (any other status is a failure)."""

    def probe() -> bool:
        status, body = http_get(server, token)
        if status != 200:
            raise RuntimeError(f"{server.label} answered {status}: {body[:500]!r}")
        return True

    return probe


@contextlib.contextmanager
def servers(
    env: dict[str, str], dsn: str, rows: int, token: str, logdir: Path
) -> Iterator[tuple[Server, Server, Server]]:
    """The service, the bare view and the near-limit app on the database at `dsn`, all answering;
    stopped on exit."""
    env = {**env, "DATABASE_URL": dsn}
    service_env, bare_env = (
        {**env, "DJANGO_SETTINGS_MODULE": settings} for settings in ("aiwm_project.settings", "bench.bare_settings")
    )
    service = Server("serve", SERVICE_APP, service_env, logdir, f"service-{rows}")
    bare = Server("serve", SERVICE_APP, bare_env, logdir, f"bare-{rows}")
    limit = Server(
        "uvicorn", LIMIT_APP, {**env, "DJANGO_SETTINGS_MODULE": "aiwm_project.settings"}, logdir, f"limit-{rows}"
    )
    trio = (service, bare, limit)
    try:
        for server in trio:
            server.start()
        for server in trio:
            server.wait_ready(probe=answers_200(server, token))
        yield trio
    finally:
        for server in trio:
            server.stop()

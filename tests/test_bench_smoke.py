"""The benchmarks still run: each one's smoke mode (`--smoke`), as a subprocess.

A smoke run is the benchmark at tiny sizes (bench/harness/smoke.py): the real server processes, the
service's real code paths, every check, and the service internals the benchmark patches (the traced
dispatch path, bench/swarm_experiments.py's variants) resolved and exercised; the figures are not
judged. It exits non-zero when a check fails or when something the benchmark calls or patches no
longer exists, so a change to the service that breaks a benchmark fails here.

The benchmarks create (and drop) databases of their own on the suite's PostgreSQL server
(`aiwm_smoke_list*`, `aiwm_smoke_swarm*`, `aiwm_smoke_dispatch*`, `aiwm_smoke_fleet*`,
`aiwm_smoke_portal*`) and use Redis databases 9, 10, 11 and 12 of the suite's Redis server (the suite
itself uses 14 and 15).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 180


def postgres_server() -> str:
    """The suite's PostgreSQL server (no database name): the benchmarks' `--pg`."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    user = quote(db.get("USER") or "postgres")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"


def redis_server() -> str:
    """The suite's Redis server (no database number): the benchmarks' `--redis`."""
    parts = urlsplit(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))  # as tests/conftest.py
    return f"{parts.scheme}://{parts.netloc}"


def run_smoke(script: str, *args: str) -> None:
    command = [sys.executable, str(REPO / "bench" / script), "--smoke", *args]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"bench/{script} --smoke still running after {TIMEOUT_S}s; its output ends:\n{output[-4000:]}")
    if done.returncode != 0:
        tail = "\n".join((done.stdout + "\n" + done.stderr).splitlines()[-60:])
        pytest.fail(f"bench/{script} --smoke exited {done.returncode}; its output ends:\n{tail}")


@pytest.mark.postgres
def test_node_list_smoke() -> None:
    run_smoke("node_list.py", "--pg", postgres_server())


@pytest.mark.postgres
@pytest.mark.redis
def test_node_swarm_smoke() -> None:
    run_smoke("node_swarm.py", "--pg", postgres_server(), "--redis", redis_server())


@pytest.mark.postgres
@pytest.mark.redis
def test_dispatch_smoke() -> None:
    run_smoke("dispatch.py", "--pg", postgres_server(), "--redis", redis_server())


@pytest.mark.postgres
@pytest.mark.redis
def test_fleet_smoke() -> None:
    run_smoke("fleet.py", "--pg", postgres_server(), "--redis", redis_server())


@pytest.mark.postgres
@pytest.mark.redis
def test_portal_smoke() -> None:
    run_smoke("portal.py", "--pg", postgres_server(), "--redis", redis_server())


def test_embedded_mix_smoke() -> None:
    """The embedded default's benchmark: SQLite and no Redis, so it runs in every pass."""
    run_smoke("embedded_mix.py")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is the baseline of the downloads")
def test_node_agent_smoke() -> None:
    """The node agent's benchmark: a local file server, SQLite and no Redis, so it runs in every pass."""
    run_smoke("node_agent.py")


def test_gateway_smoke() -> None:
    """The inference gateway's benchmark: fake upstreams, SQLite and no Redis, so it runs in every pass."""
    run_smoke("gateway.py")

"""Child processes of one test (web servers, a Celery worker and beat, `manage.py shell`) sharing the
test's PostgreSQL database (committed data: `transaction=True`) and one Redis database.

A plugin (tests/conftest.py): the `processes` fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import pytest
import redis
from django.db import connection
from django.utils import timezone

from aiwm_project.auth import issue_user_token
from nodes.models import Node
from tests.support.environment import ROOT
from tests.support.personas import ORG_A, OWNER_A_USER_ID

STARTUP_SECONDS = 40
SWEEP_SECONDS = 60
JWT_SECRET = "redis-test-iam-secret-" + "x" * 32
NODE_TOKEN_SECRET = "redis-test-node-secret-" + "y" * 32


def redis_url() -> str:
    """Database 14 of the Redis server the `redis` marker checks (15 is the suite's default)."""
    base = urlparse(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    return base._replace(path="/14").geturl()


def database_url() -> str:
    """The pytest-django test database, as a DATABASE_URL the child processes can use."""
    s = connection.settings_dict
    credentials = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        credentials += ":" + quote(s["PASSWORD"], safe="")
    return f"postgres://{credentials}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{quote(s['NAME'], safe='')}"


class Processes:
    """Child processes of one test, each logging to its own file; all stopped in `stop()`."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir, self.env = workdir, env
        self.children: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self, name: str, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            child = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env={**self.env, **extra_env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children[name] = (child, log)
        return child

    def wait_healthy(self, name: str, port: int) -> None:
        child, _ = self.children[name]
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert child.poll() is None, f"{name} exited with {child.returncode}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"{name} did not answer /api/health within {STARTUP_SECONDS}s")

    def logs(self) -> str:
        parts = []
        for name, (child, log) in self.children.items():
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"----- {name} (exit {child.poll()}) -----\n{text[-6000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for child, _ in self.children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 10
        for child, _ in self.children.values():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


@pytest.fixture
def processes(tmp_path: Path, settings: Any) -> Iterator[Processes]:
    # The test process signs tokens with the same secrets as the servers check them with.
    settings.IAM_JWT_SECRET = JWT_SECRET
    settings.IAM_JWT_ALGORITHMS = ["HS256"]
    settings.AIWM_NODE_TOKEN_SECRET = NODE_TOKEN_SECRET
    url = redis_url()
    redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIWM_", "IAM_", "DJANGO_", "CELERY_")) and key not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="aiwm_project.settings",
        DATABASE_URL=database_url(),
        REDIS_URL=url,
        # Its own pub/sub channel: Redis pub/sub ignores database numbers, so parallel runs stay apart.
        AIWM_SOCKETIO_CHANNEL=f"aiwm-socketio-test-{uuid.uuid4().hex}",
        AIWM_EVENTS_STREAM=f"aiwm-events-test-{uuid.uuid4().hex}",
        IAM_JWT_SECRET=JWT_SECRET,
        AIWM_NODE_TOKEN_SECRET=NODE_TOKEN_SECRET,
        AIWM_IN_PROCESS_SWEEP="false",
        AIWM_VAR_DIR=str(tmp_path / "var"),
        DJANGO_SECRET_KEY="redis-test-django-secret",
        DB_CONN_MAX_AGE="0",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    children = Processes(tmp_path, env)
    try:
        yield children
    finally:
        children.stop()


def user_token() -> str:
    return issue_user_token(user_id=OWNER_A_USER_ID, username="owner", org_id=ORG_A, roles=["organization.owner"])


def post_json(url: str, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def run_shell(processes: Processes, code: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run `manage.py shell -c CODE` as another process with the cluster's environment, to its end."""
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=ROOT,
        env=processes.env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def shell(processes: Processes, name: str, code: str) -> str:
    """`run_shell`, which must succeed; its stdout."""
    done = run_shell(processes, code)
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, f"{name} failed:\n{output}\n{done.stderr.decode(errors='replace')}"
    return output


def make_stale(node: Node) -> None:
    Node.objects.filter(pk=node.pk).update(status="online", last_heartbeat=timezone.now() - timedelta(hours=1))


def wait_offline(node: Node) -> bool:
    deadline = time.monotonic() + SWEEP_SECONDS
    while time.monotonic() < deadline:
        if Node.objects.get(pk=node.pk).status == "offline":
            return True
        time.sleep(0.25)
    return False

"""Many processes with REDIS_URL: a command created anywhere reaches a node connected to any web process.

Real processes, no mocks: web process A (daphne) holds the daemons' sockets, web process B
(uvicorn) takes the REST call, a `manage.py shell` stands for any other process (a Celery task, an
operator), and a Celery worker plus one beat run the offline sweep. They all share the test's
PostgreSQL database (committed data: `transaction=True`) and one Redis database.
"""

from __future__ import annotations

import asyncio
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
import socketio
import websockets
from asgiref.sync import async_to_sync
from django.db import connection
from django.utils import timezone

from aiwm_project.auth import issue_user_token
from nodes.models import Node, NodeCommand
from tests.conftest import ORG_A
from tests.gateway import eventually, free_port, make_node

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "/ws/node"
JWT_SECRET = "redis-test-iam-secret-" + "x" * 32
NODE_TOKEN_SECRET = "redis-test-node-secret-" + "y" * 32
STARTUP_SECONDS = 40
DELIVERY_SECONDS = 10
SWEEP_SECONDS = 60


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
    return issue_user_token(
        user_id="68dcf365f6a92c0d4911b619", username="owner", org_id=ORG_A, roles=["organization.owner"]
    )


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


def envelope(type_: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": type_, "messageId": str(uuid.uuid4()), "timestamp": "2025-11-16T14:00:05.000Z", "data": data or {}}


class SocketIODaemon:
    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        @self.client.on("*", namespace=NAMESPACE)
        async def any_event(event: str, data: Any) -> None:
            await self.received.put((event, data))

    async def connect(self, url: str, token: str) -> None:
        await self.client.connect(
            url, auth={"token": token}, namespaces=[NAMESPACE], transports=["websocket"], wait_timeout=10
        )

    async def emit(self, body: dict[str, Any]) -> None:
        await self.client.emit(body["type"], body, namespace=NAMESPACE)

    async def next(self, expected: str) -> dict[str, Any]:
        event, data = await asyncio.wait_for(self.received.get(), DELIVERY_SECONDS)
        assert event == expected, (event, data)
        return data


async def ws_next(ws: Any, expected: str) -> dict[str, Any]:
    body = json.loads(await asyncio.wait_for(ws.recv(), DELIVERY_SECONDS))
    assert body["type"] == expected, body
    return body


def assert_command(received: dict[str, Any], created: dict[str, Any], type_: str) -> None:
    """The contract's server -> node envelope, carrying what was stored."""
    assert set(received) == {"type", "messageId", "timestamp", "resource", "data", "metadata"}, received
    assert received["type"] == type_
    assert received["messageId"] == created["messageId"]
    assert received["data"] == created["data"] and received["resource"] == created["resource"]
    assert received["metadata"]["priority"] == created["metadata"]["priority"]
    assert received["timestamp"].endswith("Z")


def shell(processes: Processes, name: str, code: str) -> str:
    """Run `manage.py shell -c CODE` as another process with the cluster's environment; its stdout."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=ROOT,
        env=processes.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
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


def test_commands_and_sweep_cross_processes(processes: Processes, tmp_path: Path) -> None:
    sio_node, sio_token = make_node("node-redis-sio")
    ws_node, ws_token = make_node("node-redis-ws")
    stale, _ = make_node("node-redis-stale")
    beat_stale, _ = make_node("node-redis-beat")
    make_stale(stale)
    port_a, port_b = free_port(), free_port()
    # A with the production server (daphne), B with uvicorn: the same application either way.
    processes.start("web-A", "-m", "daphne", "-b", "127.0.0.1", "-p", str(port_a), "aiwm_project.asgi:application")
    processes.start(
        "web-B",
        *("-m", "uvicorn", "aiwm_project.asgi:application", "--host", "127.0.0.1", "--port", str(port_b)),
        *("--lifespan", "off", "--log-level", "warning"),
    )
    processes.start("celery-worker", "-m", "celery", "-A", "aiwm_project", "worker", "--pool", "solo", "-l", "warning")
    try:
        processes.wait_healthy("web-A", port_a)
        processes.wait_healthy("web-B", port_b)
        created_b = async_to_sync(asyncio.wait_for)(
            deliveries(processes, port_a, port_b, sio_node, sio_token, ws_node, ws_token), 90
        )
        acked, *others = created_b
        assert eventually(lambda: NodeCommand.objects.get(message_id=acked["messageId"]).status == "acknowledged")
        for command in others:
            assert NodeCommand.objects.get(message_id=command["messageId"]).status == "sent"

        # The offline sweep, queued like any task (REDIS_URL: Redis broker, not eager) and run by the worker.
        queued = shell(
            processes,
            "sweep.delay()",
            "from aiwm_project.tasks import sweep\n"
            "conf = sweep.app.conf\n"
            "print(conf.broker_url, conf.task_always_eager)\n"
            "print(sweep.delay().id)\n",
        )
        assert f"{redis_url()} False" in queued, queued
        assert wait_offline(stale), "the Celery worker did not run the sweep"
        assert Node.objects.get(pk=sio_node.pk).status == "online"  # registered: a fresh heartbeat

        # And on its own: one beat, on a short interval, feeding the same worker.
        make_stale(beat_stale)
        processes.start(
            "celery-beat",
            *("-m", "celery", "-A", "aiwm_project", "beat", "-l", "warning"),
            *("--schedule", str(tmp_path / "beat-schedule")),
            AIWM_SWEEP_INTERVAL_SECONDS="1",
        )
        assert wait_offline(beat_stale), "Celery beat did not schedule the sweep"
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__}: {exc}\n\n{processes.logs()}") from exc


async def deliveries(
    processes: Processes, port_a: int, port_b: int, sio_node: Node, sio_token: str, ws_node: Node, ws_token: str
) -> list[dict[str, Any]]:
    """Daemons on A; commands created on B (REST) and in a third process (a shell) reach them."""
    daemon = SocketIODaemon()
    await daemon.connect(f"http://127.0.0.1:{port_a}", sio_token)
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port_a}/ws/node", additional_headers={"Authorization": f"Bearer {ws_token}"}, open_timeout=10
    )
    try:
        assert (await daemon.next("connection.ack"))["nodeId"] == sio_node.node_id
        assert (await ws_next(ws, "connection.ack"))["nodeId"] == ws_node.node_id
        await daemon.emit(envelope("node.register", {"hostname": "gpu-a"}))
        assert (await daemon.next("register.ack"))["data"]["pendingCommands"] == []

        token = user_token()
        base_b = f"http://127.0.0.1:{port_b}/api/nodes"
        body = {
            "type": "model.download",
            "resource": {"type": "model", "id": "m-1"},
            "data": {"modelName": "llama", "url": "https://example.invalid/llama.gguf"},
            "metadata": {"priority": "high"},
        }
        status, created_sio = await asyncio.to_thread(post_json, f"{base_b}/{sio_node.pk}/commands", body, token)
        assert status == 201, created_sio
        assert_command(await daemon.next("model.download"), created_sio, "model.download")
        # The acknowledgement goes back over A and closes the loop in the shared database.
        ack = envelope("command.ack", {"originalMessageId": created_sio["messageId"]})
        await daemon.emit(ack)

        status, created_ws = await asyncio.to_thread(post_json, f"{base_b}/{ws_node.pk}/commands", body, token)
        assert status == 201, created_ws
        assert_command(await ws_next(ws, "model.download"), created_ws, "model.download")

        # A third process (no server in it): the outbox service, as a Celery task would call it.
        nodes = [sio_node.node_id, ws_node.node_id]
        code = "\n".join(
            [
                "import json",
                "from nodes.commands import send_command",
                f"org, nodes = {ORG_A!r}, {nodes!r}",
                "resource, data = {'type': 'deployment', 'id': 'd-1'}, {'deploymentId': 'd-1'}",
                "ids = [send_command(org_id=org, node_id=n, type='deployment.stop', resource=resource, data=data)"
                " for n in nodes]",
                "print(json.dumps([c.message_id for c in ids]))",
            ]
        )
        output = await asyncio.to_thread(shell, processes, "send_command in a shell", code)
        sio_id, ws_id = json.loads(output.strip().splitlines()[-1])
        shell_created = {"data": {"deploymentId": "d-1"}, "resource": {"type": "deployment", "id": "d-1"}}
        shell_created["metadata"] = {"priority": "normal"}
        assert_command(await daemon.next("deployment.stop"), {**shell_created, "messageId": sio_id}, "deployment.stop")
        assert_command(await ws_next(ws, "deployment.stop"), {**shell_created, "messageId": ws_id}, "deployment.stop")
        # Nothing was delivered twice (Socket.IO and Channels each carry a message to their own sockets).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)
        assert daemon.received.empty(), daemon.received
        return [created_sio, created_ws, {"messageId": sio_id}, {"messageId": ws_id}]
    finally:
        await daemon.client.disconnect()
        await ws.close()

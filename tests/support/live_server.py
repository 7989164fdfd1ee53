"""A real ASGI server (uvicorn as `manage.py serve` configures it, in a thread of the test
process) serving the whole application, so node clients talk to it over real sockets while tests
read the same test database; and the REST API of that server, over HTTP.

A plugin (tests/conftest.py): the `gateway`, `restartable` and `quick_polling` fixtures.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import uvicorn
from asgiref.sync import sync_to_async

from aiwm_project.auth import issue_user_token
from aiwm_project.server import uvicorn_config
from nodes.models import Node
from tests.support.personas import ORG_A, OWNER_A_USER_ID

TIMEOUT = 5.0  # seconds: the bound on a wait for the server or a daemon


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveGateway:
    url: str  # http://127.0.0.1:PORT
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/node"


class RestartableServer:
    """The whole application served as `manage.py serve` configures it, on a port of its own, in a
    thread of the test process; stopped and started again on the same port (a control plane that
    goes away and comes back)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from aiwm_project.asgi import application

        self._server = uvicorn.Server(uvicorn_config("127.0.0.1", self.port, app=application, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self._server.started, "uvicorn did not start"

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(15)


@pytest.fixture
def gateway(transactional_db: None) -> Iterator[LiveGateway]:
    server = RestartableServer()
    server.start()
    yield LiveGateway(url=server.url, port=server.port)
    server.stop()
    _close_server_connections()


@pytest.fixture
def restartable(transactional_db: None) -> Iterator[RestartableServer]:
    server = RestartableServer()
    server.start()
    yield server
    server.stop()
    _close_server_connections()


def _close_server_connections() -> None:
    """The server's ORM work ran on threads of their own, whose PostgreSQL sessions outlive the
    server; ended here, or pytest-django cannot drop the test database at the end of the run."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    if connection.settings_dict["OPTIONS"].get("pool"):
        # Pooled: the server's threads gave their connections back; closing the pool ends them
        # (terminating them instead leaves dead connections in it for the next test to wait on).
        connection.close()
        connection.close_pool()  # type: ignore[attr-defined]  # PostgreSQL-only method
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def quick_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short engine.io ping timings, for tests with a polling daemon.

    python-engineio's server keeps a long-poll GET open after the client closed the session,
    until the ping timers run out (25 s + 20 s by default): the client's disconnect() waits for
    it, and so does the server's shutdown. Short timers keep both within a couple of seconds.
    """
    from gateway.socketio_app import sio

    monkeypatch.setattr(sio.eio, "ping_interval", 0.5)
    monkeypatch.setattr(sio.eio, "ping_timeout", 1.0)


def eventually(check, timeout: float = 5.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll `check()` until it returns something truthy: the server applies socket events asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


async def until(check: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """`eventually` from inside a scenario (the ORM runs on the test's main thread)."""
    return await sync_to_async(eventually)(check, timeout)


class Rest:
    """The live server's REST API, as a user of an organization (org A's owner persona by default)."""

    def __init__(
        self,
        gateway: LiveGateway,
        *,
        org_id: str = ORG_A,
        role: str = "organization.owner",
        user_id: str = OWNER_A_USER_ID,
        username: str = "tester",
    ) -> None:
        token = issue_user_token(user_id=user_id, username=username, org_id=org_id, roles=[role])
        self.base = gateway.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, params: dict[str, Any] | None = None, expect: int = 200) -> Any:
        response = self.session.get(self.base + path, params=params, timeout=10)
        assert response.status_code == expect, (path, response.status_code, response.text[:500])
        return response.json()

    def post(self, path: str, body: dict[str, Any], expect: int = 201) -> Any:
        response = self.session.post(self.base + path, json=body, timeout=10)
        assert response.status_code == expect, (path, response.status_code, response.text[:500])
        return response.json()

    # From inside a scenario's event loop (the HTTP call must not block the daemons' loop).
    async def aget(self, path: str, params: dict[str, Any] | None = None, expect: int = 200) -> Any:
        return await sync_to_async(self.get, thread_sensitive=False)(path, params, expect)

    async def apost(self, path: str, body: dict[str, Any], expect: int = 201) -> Any:
        return await sync_to_async(self.post, thread_sensitive=False)(path, body, expect)

    def commands(self, node: Node) -> list[dict[str, Any]]:
        return self.get(f"/api/nodes/{node.pk}/commands")["data"]

    def command(self, node: Node, message_id: str) -> dict[str, Any]:
        (found,) = [c for c in self.commands(node) if c["messageId"] == message_id]
        return found

"""A real ASGI server (uvicorn, in a thread of the test process) serving the whole application,
so node clients talk to it over real sockets while tests read the same test database."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn

from aiwm_project.auth import Principal
from aiwm_project.services import entity_create
from nodes.models import Node
from nodes.services import node_issue_token
from tests.conftest import ORG_A, ORG_B


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


@pytest.fixture
def gateway(transactional_db: None) -> Iterator[LiveGateway]:
    from aiwm_project.asgi import application

    port = free_port()
    config = uvicorn.Config(
        application, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws_per_message_deflate=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield LiveGateway(url=f"http://127.0.0.1:{port}", port=port)
    server.should_exit = True
    thread.join(10)
    _close_server_connections()


def _close_server_connections() -> None:
    """The server's ORM work ran on threads of their own, whose PostgreSQL sessions outlive the
    server; ended here, or pytest-django cannot drop the test database at the end of the run."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


OWNER_A = Principal(user_id="u-owner-a", org_id=ORG_A, roles=("organization.owner",))
OWNER_B = Principal(user_id="u-owner-b", org_id=ORG_B, roles=("organization.owner",))


def make_node(node_id: str = "node-gpu-01", actor: Principal = OWNER_A) -> tuple[Node, str]:
    """A node of the actor's organization and a valid node token for it."""
    node = entity_create(
        model=Node, data={"node_id": node_id, "name": node_id, "cpu_cores": 16, "ram_total": 65536}, actor=actor
    )
    token, _ = node_issue_token(node=node, actor_id=actor.user_id)
    return node, token


def eventually(check, timeout: float = 5.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll `check()` until it returns something truthy: the server applies socket events asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)

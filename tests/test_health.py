"""`GET /api/health`: no auth; 200 when the database (and Redis when configured) answer, else 503."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_healthy_without_redis(settings: Any) -> None:
    settings.REDIS_URL = ""
    response = APIClient().get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "redis": "not configured"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_redis_is_503_naming_it(settings: Any) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    response = APIClient().get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"]["redis"] == "error" and body["checks"]["database"] == "ok"
    assert "redis" in body["message"]


def test_unreachable_database_is_503_naming_it(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    from django.db import connection
    from django.db.utils import OperationalError

    settings.REDIS_URL = ""

    def broken_cursor(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", broken_cursor)
    response = APIClient().get("/api/health")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "error"
    assert "database" in response.json()["message"]


@pytest.mark.redis
def test_real_redis_is_checked(settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:6379/15"
    response = APIClient().get("/api/health")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["redis"] == "ok"

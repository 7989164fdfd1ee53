"""Shared fixtures: personas (owner/editor/viewer of org A, owner of org B), the admin operator and
service gates. Helpers live in tests/support; its modules with fixtures are plugins, below."""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from tests.support.environment import IN_CI
from tests.support.personas import PersonaClient, Personas, build_personas
from tests.support.tokens import use_hs256

pytest_plugins = [
    "tests.support.live_server",  # gateway, quick_polling
    "tests.support.npm_daemon",  # node_binary
    "tests.support.processes",  # processes
    "tests.support.upstreams",  # upstreams
]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SQLite tests use a file database, not the in-memory one: the live gateway's server thread
    and the test share it, and in-memory shared-cache SQLite fails concurrent readers and writers
    at once ("table is locked") where a file database waits for its lock as `make run` does."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("sqlite") / "test.sqlite3")


@pytest.fixture
def personas(db) -> Personas:
    return build_personas()


@pytest.fixture
def owner_a(personas: Personas) -> PersonaClient:
    return personas.owner_a


@pytest.fixture
def hs256(settings: Any) -> None:
    """Tokens signed with tests.support.tokens.HS256_SECRET are the IAM's."""
    use_hs256(settings)


@pytest.fixture
def operator(db: None) -> Client:
    """A superuser logged in to the admin."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def _redis_available() -> str | None:
    import redis

    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:  # any failure means the server is not usable for the test
        return f"Redis at {url} is not reachable ({type(exc).__name__})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_postgres = connection.vendor == "postgresql"
    redis_problem: str | None = None
    redis_checked = False
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: runs in the PostgreSQL pass of make test"))
        if "redis" in item.keywords:
            if not redis_checked:
                redis_problem, redis_checked = _redis_available(), True
            # Under CI the test runs regardless, so a missing Redis fails it instead of hiding it.
            if redis_problem and not IN_CI:
                item.add_marker(pytest.mark.skip(reason=redis_problem))

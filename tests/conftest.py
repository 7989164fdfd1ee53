"""Shared fixtures: personas (owner/editor/viewer of org A, owner of org B) and service gates."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from django.db import connection
from rest_framework.test import APIClient

from aiwm_project.auth import issue_user_token

ORG_A = "68dd05b175d9e3c17bf97f60"
ORG_B = "68dd05b175d9e3c17bf97f61"
IN_CI = os.environ.get("CI", "").lower() == "true"


class PersonaClient(APIClient):
    """An API client carrying a user token; remembers who it is for assertions."""

    def __init__(self, *, user_id: str = "", org_id: str = "", roles: list[str] | None = None):
        super().__init__()
        self.user_id, self.org_id = user_id, org_id
        if roles is not None:
            token = issue_user_token(user_id=user_id, username="tester", org_id=org_id, roles=roles)
            self.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")


def client_for(*, user_id: str, org_id: str, roles: list[str]) -> PersonaClient:
    return PersonaClient(user_id=user_id, org_id=org_id, roles=roles)


@dataclass
class Personas:
    owner_a: PersonaClient
    editor_a: PersonaClient
    viewer_a: PersonaClient
    owner_b: PersonaClient
    anonymous: PersonaClient


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
    return Personas(
        owner_a=client_for(user_id="68dcf365f6a92c0d4911b619", org_id=ORG_A, roles=["organization.owner"]),
        editor_a=client_for(user_id="68dcf365f6a92c0d4911b620", org_id=ORG_A, roles=["organization.editor"]),
        viewer_a=client_for(user_id="68dcf365f6a92c0d4911b621", org_id=ORG_A, roles=["organization.viewer"]),
        owner_b=client_for(user_id="68dcf365f6a92c0d4911b622", org_id=ORG_B, roles=["organization.owner"]),
        anonymous=PersonaClient(),
    )


@pytest.fixture
def owner_a(personas: Personas) -> PersonaClient:
    return personas.owner_a


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


# The live gateway fixture (a real ASGI server) for node-protocol tests.
from tests.gateway import gateway  # noqa: E402, F401

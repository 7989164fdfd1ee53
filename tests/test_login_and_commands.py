"""Embedded IAM: `POST /auth/login`, `create_iam_user` and `issue_token`."""

from __future__ import annotations

import io
from typing import Any

import jwt
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from tests.support.api import assert_error

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_login_returns_contract_shape_and_a_working_token() -> None:
    run(
        "create_iam_user",
        "--username",
        "tonyh",
        "--password",
        "123zXc_-",
        "--org-id",
        "org-1",
        "--roles",
        "universe.owner",
    )
    client = APIClient()
    response = client.post("/auth/login", {"username": "tonyh", "password": "123zXc_-"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"accessToken", "user"}
    assert body["user"]["username"] == "tonyh"
    assert body["user"]["roles"] == ["universe.owner"]
    assert body["user"]["orgId"] == "org-1"
    assert len(body["user"]["id"]) == 24
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['accessToken']}")
    created = client.post("/api/nodes", {"nodeId": "n1", "name": "n", "cpuCores": 2}, format="json").json()
    assert created["owner"] == {"orgId": "org-1", "userId": body["user"]["id"], "groupId": ""}


def test_login_failures() -> None:
    run("create_iam_user", "--username", "u", "--password", "right", "--org-id", "o", "--roles", "organization.viewer")
    client = APIClient()
    assert_error(client.post("/auth/login", {"username": "u", "password": "wrong"}, format="json"), 401)
    assert_error(client.post("/auth/login", {"username": "nobody", "password": "x"}, format="json"), 401)
    body = assert_error(client.post("/auth/login", {"username": "u"}, format="json"), 400)
    assert body["errors"] == ["password is required."]
    assert_error(client.generic("POST", "/auth/login", "{", content_type="application/json"), 400)


def test_django_user_without_iam_identity_cannot_log_in() -> None:
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user(username="plain", password="pw")
    assert_error(APIClient().post("/auth/login", {"username": "plain", "password": "pw"}, format="json"), 401)


def test_login_is_off_with_an_external_iam(settings: Any) -> None:
    settings.AIWM_LOCAL_LOGIN = False
    assert_error(APIClient().post("/auth/login", {"username": "a", "password": "b"}, format="json"), 404)


def test_create_iam_user_updates_an_existing_user() -> None:
    assert "Created" in run(
        "create_iam_user", "--username", "x", "--password", "a", "--org-id", "o1", "--roles", "organization.viewer"
    )
    assert "Updated" in run(
        "create_iam_user",
        "--username",
        "x",
        "--password",
        "b",
        "--org-id",
        "o2",
        "--roles",
        "organization.editor,organization.viewer",
        "--force",  # another organization and roles: refused without it (below)
    )
    body = APIClient().post("/auth/login", {"username": "x", "password": "b"}, format="json").json()
    assert body["user"]["orgId"] == "o2"
    assert body["user"]["roles"] == ["organization.editor", "organization.viewer"]


def test_create_iam_user_rejects_unknown_roles() -> None:
    with pytest.raises(CommandError):
        run("create_iam_user", "--username", "x", "--password", "a", "--org-id", "o", "--roles", "root")


def test_issue_token_prints_only_a_verifiable_token() -> None:
    out = run(
        "issue_token",
        "--username",
        "ops",
        "--user-id",
        "u-42",
        "--org-id",
        "org-9",
        "--roles",
        "organization.editor",
        "--expires-in",
        "120",
    )
    token = out.strip()
    assert out == token + "\n" and token.count(".") == 2
    claims = jwt.decode(token, settings.IAM_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u-42" and claims["orgId"] == "org-9" and claims["roles"] == ["organization.editor"]
    assert 110 <= claims["exp"] - claims["iat"] <= 120
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/nodes").status_code == 200
    assert_error(client.delete("/api/nodes/whatever"), 403)


def test_issue_token_rejects_bad_arguments() -> None:
    with pytest.raises(CommandError):
        run("issue_token", "--username", "a", "--user-id", "u", "--org-id", "o", "--roles", "nope")
    with pytest.raises(CommandError):
        run(
            "issue_token",
            "--username",
            "a",
            "--user-id",
            "u",
            "--org-id",
            "o",
            "--roles",
            "organization.owner",
            "--expires-in",
            "0",
        )


USER = ["--username", "x", "--org-id", "o1", "--roles", "organization.viewer"]


def test_create_iam_user_refuses_to_move_a_user_without_force() -> None:
    run("create_iam_user", *USER, "--password", "a")
    assert "Updated" in run("create_iam_user", *USER, "--password", "b")  # same org and roles: a new password
    for change in (["--org-id", "o2"], ["--roles", "organization.owner"], ["--group-id", "g"]):
        with pytest.raises(CommandError, match="--force"):
            run("create_iam_user", *USER, "--password", "c", *change)
    body = APIClient().post("/auth/login", {"username": "x", "password": "b"}, format="json").json()
    assert (body["user"]["orgId"], body["user"]["roles"]) == ("o1", ["organization.viewer"])


@pytest.mark.parametrize(
    "bad",
    [
        ["--username", ""],
        ["--username", "has space"],
        ["--org-id", ""],
        ["--org-id", "o/1"],
        ["--group-id", "g g"],
        ["--roles", ","],
        ["--password", ""],
    ],
)
def test_create_iam_user_refuses_malformed_input(bad: list[str]) -> None:
    with pytest.raises(CommandError):
        run("create_iam_user", *USER, "--password", "a", *bad)
    from django.contrib.auth import get_user_model

    assert not get_user_model().objects.exists()


def test_create_iam_user_takes_the_password_from_stdin_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    run("create_iam_user", *USER, "--password-stdin")
    assert (
        APIClient().post("/auth/login", {"username": "x", "password": "from-stdin"}, format="json").status_code == 200
    )
    monkeypatch.setenv("AIWM_USER_PASSWORD", "from-env")
    run("create_iam_user", *USER)
    assert APIClient().post("/auth/login", {"username": "x", "password": "from-env"}, format="json").status_code == 200
    monkeypatch.delenv("AIWM_USER_PASSWORD")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: no prompt, a clear refusal
    with pytest.raises(CommandError, match="no password"):
        run("create_iam_user", *USER)


@pytest.mark.parametrize("field", ["--org-id", "--user-id", "--username"])
def test_issue_token_refuses_empty_ids(field: str) -> None:
    args = {"--username": "a", "--user-id": "u", "--org-id": "o", "--roles": "organization.owner", field: ""}
    with pytest.raises(CommandError):
        run("issue_token", *[part for pair in args.items() for part in pair])


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_the_banner_refuses_a_port_out_of_range(port: str) -> None:
    with pytest.raises(CommandError):
        run("aiwm_banner", "--port", port)


@pytest.mark.parametrize("args", [["--port", "70000"], ["--workers", "0"], ["--workers", "65"], ["--workers", "two"]])
def test_serve_refuses_bad_arguments(args: list[str]) -> None:
    with pytest.raises(CommandError):
        run("serve", *args)


def test_serve_refuses_several_workers_without_redis(settings: Any) -> None:
    # Without Redis a node's socket and the commands for it must live in the same process.
    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="REDIS_URL"):
        run("serve", "--workers", "2")

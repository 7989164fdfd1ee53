"""Production behind a TLS-terminating proxy: `manage.py check --deploy` is clean under the
production settings, and the admin login works through the proxy (CSRF, secure cookies)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.support.environment import ROOT

PUBLIC = "https://aiwm.example"


def _check_deploy(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AIWM_HTTPS", "AIWM_HSTS", "CSRF_"))}
    environment.update(DEBUG="false", DJANGO_SECRET_KEY=secrets.token_urlsafe(50), **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_behind_a_tls_proxy() -> None:
    done = _check_deploy(AIWM_HTTPS="true", CSRF_TRUSTED_ORIGINS=PUBLIC)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_check_deploy_warns_without_the_production_settings() -> None:
    # The same check fails on the embedded default's settings: the test above proves something.
    assert _check_deploy().returncode != 0


@pytest.fixture
def behind_proxy(settings: Any) -> None:
    """What AIWM_HTTPS=true and CSRF_TRUSTED_ORIGINS set (settings are read once, at start)."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.CSRF_TRUSTED_ORIGINS = [PUBLIC]
    settings.ALLOWED_HOSTS = ["aiwm.example"]


def _login(client: Client, **proxy: Any) -> Any:
    page = client.get("/admin/login/", HTTP_HOST="aiwm.example", **proxy)
    token = page.cookies["csrftoken"].value
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": "ops", "password": "pw-ops-1", "csrfmiddlewaretoken": token},
        HTTP_HOST="aiwm.example",
        HTTP_ORIGIN=PUBLIC,
        HTTP_REFERER=f"{PUBLIC}/admin/login/",
        **proxy,
    )


@pytest.mark.django_db
def test_the_admin_login_works_through_the_proxy(behind_proxy: None) -> None:
    get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-1")
    client = Client(enforce_csrf_checks=True)
    response = _login(client, HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 302 and response["Location"] == "/admin/", response.status_code
    assert response.cookies["sessionid"]["secure"]


@pytest.mark.django_db
def test_without_the_proxy_settings_the_same_login_is_refused(settings: Any) -> None:
    """What an operator saw before: the proxy says https, Django believes http, the browser's
    https Origin does not match, and CSRF refuses the form."""
    settings.ALLOWED_HOSTS = ["aiwm.example"]
    get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-1")
    assert _login(Client(enforce_csrf_checks=True), HTTP_X_FORWARDED_PROTO="https").status_code == 403

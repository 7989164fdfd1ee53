"""CORS for a browser frontend on another origin (django-cors-headers; docs/decisions.md "CORS")."""

from __future__ import annotations

import functools
import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.management import call_command
from django.test import Client

from tests.support.browser import chromium, dump_dom
from tests.support.live_server import LiveGateway, free_port

PORTAL = "http://localhost:5173"


def preflight(path: str, origin: str, headers: str = "authorization, content-type, x-correlation-id") -> Any:
    return Client().options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS=headers,
    )


@pytest.mark.parametrize("path", ["/api/nodes", "/auth/login", "/api-docs/schema"])
@pytest.mark.parametrize("origin", [PORTAL, "http://127.0.0.1:8080", "http://localhost"])
def test_preflight_from_a_local_origin_needs_no_token(path: str, origin: str) -> None:
    response = preflight(path, origin)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == origin
    allowed = {h.strip() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-correlation-id"} <= allowed
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert response.headers["x-correlation-id"]  # CorrelationIdMiddleware still wraps the preflight


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost.evil.example", "https://localhost:5173"])
def test_preflight_from_another_origin_is_not_allowed_by_default(origin: str) -> None:
    assert "Access-Control-Allow-Origin" not in preflight("/api/nodes", origin).headers


def test_configured_origins_are_exactly_those(settings: Any) -> None:
    # What AIWM_CORS_ALLOWED_ORIGINS=https://portal.example sets (aiwm_project/settings.py).
    settings.CORS_ALLOWED_ORIGINS = ["https://portal.example"]
    settings.CORS_ALLOWED_ORIGIN_REGEXES = []
    assert preflight("/api/nodes", "https://portal.example").headers["Access-Control-Allow-Origin"] == (
        "https://portal.example"
    )
    assert "Access-Control-Allow-Origin" not in preflight("/api/nodes", PORTAL).headers


def test_other_paths_get_no_cors_headers() -> None:
    assert "Access-Control-Allow-Origin" not in preflight("/admin/login/", PORTAL).headers


@pytest.mark.django_db
def test_a_real_request_exposes_the_correlation_id() -> None:
    response = Client().get("/api/nodes", HTTP_ORIGIN=PORTAL)
    assert response.status_code == 401  # CORS does not replace authentication
    assert response.headers["Access-Control-Allow-Origin"] == PORTAL
    assert response.headers["Access-Control-Expose-Headers"] == "x-correlation-id"
    assert response.headers["x-correlation-id"]


# --- A real browser: a page on another origin logs in and lists nodes. ---

PAGE = """<!doctype html>
<html><head><title>portal</title></head><body><pre id="out">loading</pre><script>
(async () => {
  const out = document.getElementById("out");
  try {
    const api = %(api)s;
    const login = await fetch(`${api}/auth/login`, {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({username: "portal", password: "pw-portal-1"}),
    });
    const token = (await login.json()).accessToken;
    const nodes = await fetch(`${api}/api/nodes`, {headers: {Authorization: "Bearer " + token}});
    const body = await nodes.json();
    out.textContent = "NODES " + nodes.status + " cid=" + (nodes.headers.get("x-correlation-id") ? "yes" : "no")
      + " " + body.data.map((n) => n.nodeId + ":" + n.name).join(",");
  } catch (e) {
    out.textContent = "FAILED " + e;
  }
})();
</script></body></html>
"""


@pytest.fixture
def portal(tmp_path: Path, gateway: LiveGateway) -> Iterator[str]:
    """The page, served by http.server on a port (and host name) of its own: another origin."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE % {"api": json.dumps(gateway.url)})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}/index.html"
    server.shutdown()
    server.server_close()


def test_a_page_on_another_origin_logs_in_and_lists_nodes(gateway: LiveGateway, portal: str, tmp_path: Path) -> None:
    chromium()  # skips (fails under CI=true) before anything is set up
    call_command(
        "create_iam_user",
        "--username",
        "portal",
        "--password",
        "pw-portal-1",
        "--org-id",
        "org-portal",
        "--roles",
        "organization.owner",
        stdout=io.StringIO(),
    )
    token = requests.post(
        f"{gateway.url}/auth/login", json={"username": "portal", "password": "pw-portal-1"}, timeout=10
    ).json()["accessToken"]
    created = requests.post(
        f"{gateway.url}/api/nodes",
        json={"nodeId": "gpu-portal-1", "name": "Portal GPU", "cpuCores": 8},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    result = dump_dom(portal, tmp_path / "profile")
    assert "NODES 200 cid=yes gpu-portal-1:Portal GPU" in result.stdout, (result.stdout[-2000:], result.stderr[-2000:])

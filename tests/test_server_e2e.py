"""The service as `make run` serves it: daphne + ASGI on a port, embedded default, checked over HTTP.

Also drives Swagger UI in headless Chromium, proving the docs render with no CDN (no internet here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import dump_dom
from tests.support.environment import ROOT
from tests.support.live_server import free_port


def _http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real daphne process on a free port, with its own SQLite database and secrets in a temp dir."""
    var_dir = tmp_path_factory.mktemp("var")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "IAM_JWT_SECRET")}
    env.update({"AIWM_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "aiwm_project.settings"})
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, cwd=ROOT, check=True, capture_output=True)
    subprocess.run(
        [
            *manage,
            "create_iam_user",
            "--username",
            "tonyh",
            "--password",
            "123zXc_-",
            "--org-id",
            "org-e2e",
            "--roles",
            "universe.owner",
        ],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    port = free_port()
    daphne = str(Path(sys.executable).parent / "daphne")
    process = subprocess.Popen(
        [daphne, "-b", "127.0.0.1", "-p", str(port), "aiwm_project.asgi:application"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if _http("GET", f"{base}/api/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError("daphne did not come up")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_login_then_crud_over_http(served: str) -> None:
    status, _, body = _http("POST", f"{served}/auth/login", {"username": "tonyh", "password": "123zXc_-"})
    assert status == 200
    token = json.loads(body)["accessToken"]
    status, headers, body = _http(
        "POST",
        f"{served}/api/nodes",
        {"nodeId": "node-gpu-01", "name": "GPU Server 1", "role": ["worker"], "cpuCores": 16},
        token,
    )
    assert status == 201, body
    assert headers.get("x-correlation-id")
    status, _, body = _http("GET", f"{served}/api/nodes?filter[status]=offline&sort=-createdAt", token=token)
    listed = json.loads(body)
    assert status == 200 and listed["pagination"]["total"] == 1
    status, _, body = _http("GET", f"{served}/api/nodes?limit=500", token=token)
    assert status == 400 and json.loads(body)["statusCode"] == 400
    status, _, body = _http("GET", f"{served}/api/nodes")
    assert status == 401 and json.loads(body)["message"] == "Unauthorized"


def test_schema_and_swagger_assets_are_served_locally(served: str) -> None:
    status, _, body = _http("GET", f"{served}/api-docs/schema?format=json")
    assert status == 200
    schema = json.loads(body)
    assert "/api/nodes" in schema["paths"] and "/api/health" in schema["paths"]
    status, _, page = _http("GET", f"{served}/api-docs")
    assert status == 200
    html = page.decode()
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    status, _, asset = _http("GET", f"{served}/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert status == 200 and len(asset) > 100_000


def test_swagger_ui_renders_in_a_real_browser(served: str, tmp_path: Path) -> None:
    result = dump_dom(f"{served}/api-docs", tmp_path / "profile")
    dom = result.stdout
    # Swagger UI only builds these elements once its JavaScript ran and it loaded the schema.
    assert 'class="swagger-ui' in dom, result.stderr[-2000:]
    assert "AIWM - AI Workflow Manager API" in dom
    assert "/api/nodes" in dom

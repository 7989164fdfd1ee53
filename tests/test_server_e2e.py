"""The service as `make run` serves it (`manage.py serve`: uvicorn + ASGI on a port), embedded
default, checked over HTTP - including the limits at the server's edge (aiwm_project.server).

Also drives Swagger UI in headless Chromium, proving the docs render with no CDN (no internet here).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass
class Served:
    url: str
    pid: int


@pytest.fixture(scope="module")
def served(served_process: Served) -> str:
    return served_process.url


@pytest.fixture(scope="module")
def served_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`manage.py serve` on a free port, with its own SQLite database and secrets in a temp dir."""
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
    log = (var_dir / "serve.log").open("wb")
    process = subprocess.Popen(
        [*manage, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=log
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
            raise AssertionError("manage.py serve did not come up")
        yield Served(url=base, pid=process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


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
    # Every asset from this server: no src/href to another host (a CDN). Not a search for "cdn" in the
    # page: its random CSP nonce may spell it.
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert assets and [a for a in assets if re.match(r"^(https?:)?//", a)] == [], assets
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


# --- the server's edge: limits that hold before anything is buffered ---

MIB = 1024 * 1024


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _exchange(url: str, head: bytes, body_frame: bytes = b"", body_bytes: int = 0) -> tuple[int, dict, int]:
    """Send a request head, then `body_bytes` of `body_frame` repeated while watching for an early
    answer, as curl does. Returns (status, error body, body bytes sent before the answer)."""
    host, port = url.removeprefix("http://").split(":")
    sent, answer = 0, b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        while sent < body_bytes and b"\r\n\r\n" not in answer:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            if readable:
                answer += sock.recv(65536) or b"\r\n\r\n"
            elif writable:
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(body_frame)
        sock.setblocking(True)
        while not answer.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2]), sent


def test_over_long_urls_and_heads_get_414_and_431_with_the_error_body(served: str) -> None:
    cases = [
        (b"GET /api/health?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /api/health?" + b"a" * 10 * MIB + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", 431),
        (b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(5000)) + b"\r\n", 431),
        (b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10 * MIB + b"\r\n\r\n", 431),
    ]
    for head, expected in cases:
        status, body, _ = _exchange(served, head[:65536], head[65536:], len(head) - 65536)
        assert status == expected and body["statusCode"] == expected, (expected, body)
        assert body["path"] == "/api/health" and body["message"] and body["correlationId"]
    # Just inside the limits is served.
    inside = b"GET /api/health?" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    with socket.create_connection(tuple(served.removeprefix("http://").split(":")), timeout=10) as sock:  # type: ignore[arg-type]
        sock.sendall(inside)
        assert sock.recv(64).startswith(b"HTTP/1.1 200")


def test_oversized_bodies_are_refused_before_they_are_buffered(served_process: Served) -> None:
    """512 MiB, declared or chunked, without a token: a 413 after at most a few MiB, and the
    server's peak memory hardly moves (it used to grow by the whole body)."""
    post = b"POST /api/nodes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    before = _peak_rss(served_process.pid)
    status, body, sent = _exchange(served_process.url, post + b"Content-Length: %d\r\n\r\n" % (512 * MIB))
    assert status == 413 and body["statusCode"] == 413 and sent == 0
    chunk = b"x" * 65536
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    status, body, sent = _exchange(served_process.url, post + b"Transfer-Encoding: chunked\r\n\r\n", frame, 512 * MIB)
    assert status == 413 and body["message"] == "Request body is larger than 1048576 bytes"
    growth = _peak_rss(served_process.pid) - before
    print(f"chunked 512 MiB upload: refused after {sent / MIB:.1f} MiB sent; server peak RSS +{growth / MIB:.1f} MiB")
    assert sent < 64 * MIB
    assert growth < 32 * MIB
    # The Socket.IO long-polling path has the transport's limit (2 MiB), refused the same way.
    polling = b"POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    assert _exchange(served_process.url, polling % (3 * MIB))[0] == 413


def test_a_chunked_body_within_the_limit_is_read_whole(served: str) -> None:
    login = json.dumps({"username": "tonyh", "password": "123zXc_-"}).encode()
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (login[:10], login[10:])) + b"0\r\n\r\n"
    with socket.create_connection(tuple(served.removeprefix("http://").split(":")), timeout=10) as sock:  # type: ignore[arg-type]
        sock.sendall(head + chunks)
        answer = b""
        while b"accessToken" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b"accessToken" in answer, answer[:300]

"""The error body on every failure under /api, and the x-correlation-id on every response."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.support.api import assert_error
from tests.support.personas import Personas

pytestmark = pytest.mark.django_db
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_correlation_id_is_echoed(personas: Personas) -> None:
    response = personas.owner_a.get("/api/nodes", HTTP_X_CORRELATION_ID="my-custom-id")
    assert response["x-correlation-id"] == "my-custom-id"


def test_correlation_id_is_generated_and_in_error_bodies(personas: Personas) -> None:
    response = personas.anonymous.get("/api/nodes")
    assert UUID4.match(response["x-correlation-id"])
    assert response.json()["correlationId"] == response["x-correlation-id"]


def test_unsafe_correlation_id_is_replaced(personas: Personas) -> None:
    response = personas.owner_a.get("/api/nodes", HTTP_X_CORRELATION_ID="evil\r\nSet-Cookie: x=1" + "a" * 200)
    assert UUID4.match(response["x-correlation-id"])


def test_correlation_id_reaches_log_lines(personas: Personas, caplog: pytest.LogCaptureFixture) -> None:
    from aiwm_project.correlation import CorrelationIdLogFilter

    handler_records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(record)

    capture = Capture()
    capture.addFilter(CorrelationIdLogFilter())
    logger = logging.getLogger("aiwm.health")
    logger.addHandler(capture)
    try:
        from django.test import override_settings

        with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
            APIClient().get("/api/health", HTTP_X_CORRELATION_ID="trace-123")
    finally:
        logger.removeHandler(capture)
    assert handler_records and all(r.correlation_id == "trace-123" for r in handler_records)  # type: ignore[attr-defined]


def test_unknown_api_route_is_json_404() -> None:
    response = Client().get("/api/no-such-thing")
    body = assert_error(response, 404, "/api/no-such-thing")
    assert body["message"] == "Cannot GET /api/no-such-thing"
    assert response["Content-Type"].startswith("application/json")


def test_method_not_allowed_is_json_405(personas: Personas) -> None:
    assert_error(personas.owner_a.delete("/api/nodes"), 405)
    assert_error(personas.owner_a.put("/api/health"), 405)


async def _asgi_post(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Drive the real ASGI application with a chunked request (no Content-Length header)."""
    from asgiref.testing import ApplicationCommunicator

    from aiwm_project.asgi import application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    communicator = ApplicationCommunicator(application, scope)
    for index, chunk in enumerate(chunks):
        await communicator.send_input({"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1})
    start = await communicator.receive_output(timeout=10)
    body = b""
    while True:
        message = await communicator.receive_output(timeout=10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    return start["status"], body


@pytest.mark.django_db(transaction=True)
def test_chunked_body_over_the_limit_is_413(settings: Any) -> None:
    from asgiref.sync import async_to_sync

    from aiwm_project.auth import issue_user_token

    settings.AIWM_MAX_BODY_BYTES = 1000
    token = issue_user_token(user_id="u1", username="u", org_id="org-chunk", roles=["organization.owner"])
    auth = [(b"authorization", f"Bearer {token}".encode())]
    post = async_to_sync(_asgi_post)
    status, body = post("/api/nodes", [b'{"nodeId": "n1", "name": "', b"x" * 2000, b'"}'], auth)
    assert status == 413, body
    # The same request under the limit, still chunked, is parsed and created.
    status, body = post("/api/nodes", [b'{"nodeId": "n1", ', b'"name": "n", "cpuCores": 1}'], auth)
    assert status == 201, body


def test_unsupported_media_type_is_415(personas: Personas) -> None:
    response = personas.owner_a.generic(
        "POST", "/api/nodes", "nodeId=x", content_type="application/x-www-form-urlencoded"
    )
    assert_error(response, 415)


def test_unhandled_exception_is_json_500_without_details(personas: Personas, monkeypatch: pytest.MonkeyPatch) -> None:
    from nodes.views import NodeViewSet

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(NodeViewSet, "list", explode)
    body = assert_error(personas.owner_a.get("/api/nodes"), 500)
    assert body["message"] == "Internal server error"
    assert "secret" not in str(body)


def test_an_exhausted_connection_pool_is_a_503_to_retry(personas: Personas, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db.utils import OperationalError
    from psycopg_pool import PoolTimeout

    from nodes.views import NodeViewSet

    def busy(*args: Any, **kwargs: Any) -> Any:
        # What Django raises when the pool lends nothing within DB_POOL_TIMEOUT.
        raise OperationalError("couldn't get a connection after 10.00 sec") from PoolTimeout("timeout")

    monkeypatch.setattr(NodeViewSet, "list", busy)
    response = personas.owner_a.get("/api/nodes")
    body = assert_error(response, 503)
    assert body["message"] == "The database is busy; try again shortly" and response["Retry-After"] == "1"


def test_admin_and_docs_are_not_api_errors() -> None:
    # Outside /api, Django's own pages are kept (the admin login redirect, the Swagger HTML).
    assert Client().get("/admin/").status_code == 302
    assert Client().get("/api-docs")["Content-Type"].startswith("text/html")

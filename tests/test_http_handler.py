"""aiwm_project.http_handler: Django's requests under ASGI, each in one hop to a fixed pool of threads
(the served path of every HTTP test over `manage.py serve`; these check the handler's own promises)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from django.core import signals

from aiwm_project.http_handler import PooledHTTPHandler, waits

pytestmark = pytest.mark.django_db(transaction=True)


def scope(path: str, headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


async def call(handler: PooledHTTPHandler, request_scope: dict[str, Any], disconnect: bool = False) -> dict[str, Any]:
    sent: list[dict[str, Any]] = []
    received: list[bool] = []

    async def receive() -> dict[str, Any]:
        if disconnect:
            return {"type": "http.disconnect"}
        if received:  # as a server does: after the body, nothing until the client goes away
            await asyncio.Event().wait()
        received.append(True)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await handler(request_scope, receive, send)
    if not sent:
        return {}
    start = sent[0]
    return {
        "status": start["status"],
        "headers": {name.lower(): value for name, value in start["headers"]},
        "body": b"".join(m.get("body", b"") for m in sent[1:]),
        "closed": not sent[-1].get("more_body", False),
    }


def test_requests_run_on_the_pools_threads_and_each_ends_once() -> None:
    started: list[str] = []
    finished: list[str] = []

    def on_started(**_: Any) -> None:
        started.append(threading.current_thread().name)

    def on_finished(**_: Any) -> None:
        finished.append(threading.current_thread().name)

    signals.request_started.connect(on_started)
    signals.request_finished.connect(on_finished)
    handler = PooledHTTPHandler(threads=3)
    try:

        async def many() -> list[dict[str, Any]]:
            return await asyncio.gather(*(call(handler, scope("/api/health")) for _ in range(30)))

        answers = asyncio.run(many())
    finally:
        signals.request_started.disconnect(on_started)
        signals.request_finished.disconnect(on_finished)
        handler.executor.shutdown()
    assert all(a["status"] == 200 and a["closed"] for a in answers)
    assert json.loads(answers[0]["body"])["status"] == "ok"
    # Django's own ASGIHandler starts a thread per request: here, at most the pool's three.
    assert len(started) == len(finished) == 30
    assert set(started) <= {f"http_{i}" for i in range(3)}, set(started)


def test_the_correlation_id_and_a_streamed_file_come_through() -> None:
    handler = PooledHTTPHandler(threads=2)
    try:
        answer = asyncio.run(call(handler, scope("/api/health", [(b"x-correlation-id", b"req-abc-123")])))
        asset = asyncio.run(call(handler, scope("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css")))
    finally:
        handler.executor.shutdown()
    assert answer["headers"][b"x-correlation-id"] == b"req-abc-123"
    # A static file is a streaming response (whitenoise): every byte, then the end of the body.
    assert asset["status"] == 200 and asset["closed"]
    assert int(asset["headers"][b"content-length"]) == len(asset["body"]) > 10_000


def test_a_client_gone_before_its_body_arrived_runs_nothing() -> None:
    started: list[str] = []

    def on_started(**_: Any) -> None:
        started.append("started")

    signals.request_started.connect(on_started)
    handler = PooledHTTPHandler(threads=1)
    try:
        assert asyncio.run(call(handler, scope("/api/health"), disconnect=True)) == {}
    finally:
        signals.request_started.disconnect(on_started)
        handler.executor.shutdown()
    assert started == []


def test_a_request_that_waits_gets_a_thread_of_its_own_and_the_pool_stays_free() -> None:
    """`?wait=` (a deployment's start/stop waiting for its workflow) may hold a thread for minutes:
    it must not take one of the pool's, and it is served even when every pool thread is busy."""
    handler = PooledHTTPHandler(threads=1)
    release = threading.Event()
    handler.executor.submit(release.wait, 30)  # the pool's only thread, busy
    try:

        async def waiting_request() -> dict[str, Any]:
            return await asyncio.wait_for(call(handler, scope("/api/health", query=b"x=1&wait=5")), 20)

        answer = asyncio.run(waiting_request())
    finally:
        release.set()
        handler.executor.shutdown()
    assert answer["status"] == 200
    assert waits(scope("/", query=b"wait=0")) is False and waits(scope("/", query=b"wait=")) is False
    assert waits(scope("/", query=b"waiting=1")) is False and waits(scope("/", query=b"wait=30")) is True

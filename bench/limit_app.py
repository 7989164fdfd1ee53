"""The near-limit baseline of bench/node_list.py: `GET /api/nodes` as a framework-free ASGI app.

What this machine can do for the benchmarked request with nothing but the work itself: verify the
bearer token (the service's `authenticate_user_token`), run the same two SQL statements (the bare
view's, which the benchmark checks are the service's) through a psycopg async connection pool, and
write the same JSON. No Django request, middleware, URL routing, DRF or ORM at request time; Django
is set up once at import only to read the settings and derive the row-to-JSON mapping
(bench/bare_urls.py). Served by uvicorn with httptools and uvloop, as `manage.py serve` serves
the service.

    uvicorn --host 127.0.0.1 --port PORT --lifespan off bench.limit_app:application
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import parse_qs

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiwm_project.settings")
django.setup()

from django.conf import settings  # noqa: E402
from psycopg_pool import AsyncConnectionPool  # noqa: E402

from aiwm_project.auth import TokenError, authenticate_user_token, bearer_token  # noqa: E402
from bench.bare_urls import COUNT_SQL, PAGE_SQL, row_json  # noqa: E402

POOL_SIZE = int(os.environ.get("AIWM_BENCH_LIMIT_POOL", "4"))
_pool: AsyncConnectionPool | None = None
_pool_lock = asyncio.Lock()


def _conninfo() -> str:
    db = settings.DATABASES["default"]
    return f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} dbname={db['NAME']} user={db['USER']}" + (
        f" password={db['PASSWORD']}" if db.get("PASSWORD") else ""
    )


async def pool() -> AsyncConnectionPool:
    global _pool
    async with _pool_lock:
        if _pool is None:
            _pool = AsyncConnectionPool(_conninfo(), min_size=POOL_SIZE, max_size=POOL_SIZE, open=False)
            await _pool.open(wait=True)
    return _pool


async def respond(send: Any, status: int, body: dict[str, Any]) -> None:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] != "/api/nodes":
        await respond(send, 404, {"statusCode": 404, "message": "Not Found"})
        return
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    token = bearer_token(header)
    if token is None:
        await respond(send, 401, {"statusCode": 401, "message": "Authentication credentials were not provided."})
        return
    try:
        org_id = authenticate_user_token(token).org_id
    except TokenError as exc:
        await respond(send, 401, {"statusCode": 401, "message": str(exc)})
        return
    query = parse_qs(scope["query_string"].decode("latin-1"))
    status = query.get("filter[status]", ["online"])[0]
    limit = int(query.get("limit", ["10"])[0])
    async with (await pool()).connection() as conn:
        cursor = await conn.execute(PAGE_SQL, [org_id, status, limit])
        rows = await cursor.fetchall()
        # Same rule as the service's pagination: a short first page already tells the total.
        if len(rows) < limit:
            total = len(rows)
        else:
            cursor = await conn.execute(COUNT_SQL, [org_id, status])
            total = (await cursor.fetchone())[0]  # type: ignore[index]
    body = {"data": [row_json(r) for r in rows], "pagination": {"page": 1, "limit": limit, "total": total}}
    await respond(send, 200, body)

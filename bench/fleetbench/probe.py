"""The control plane's lists timed while the fleet reports: GET /api/nodes and GET /api/deployments
(the default page, a user token of the fleet's organization), one request at a time, from a thread of
the benchmark's process."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from bench.harness.servers import HOST, Server
from bench.nodelist.loadgen import CLIENT_ERRORS, REQUEST_TIMEOUT_S, read_response
from bench.nodelist.servers import http_get

ROUTES = ("/api/nodes", "/api/deployments")


def list_total(server: Server, token: str, route: str) -> tuple[int, int]:
    """(status, pagination total) of one GET of `route` (total -1 unless it answered 200)."""
    status, body = http_get(server, token, route)
    return status, int(json.loads(body)["pagination"]["total"]) if status == 200 else -1


class ListProber:
    """Every `interval` seconds the next of ROUTES, alternating, one request at a time (a slow one
    delays the next, none overlap), until `stop`. Each request opens a new connection, so that with
    several web processes the kernel hands the requests to all of them as it does the nodes' (a
    kept-alive connection would stay with one process); its latency is from the connect to the last
    byte of the answer. `latencies[route]` holds the 200s' in seconds, `errors[route]` the rest by
    kind."""

    def __init__(self, port: int, token: str, interval: float):
        self.port, self.interval = port, interval
        self.request = {
            route: (
                f"GET {route} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
                "Accept: application/json\r\nConnection: close\r\n\r\n"
            ).encode()
            for route in ROUTES
        }
        self.latencies: dict[str, list[float]] = {route: [] for route in ROUTES}
        self.errors: dict[str, dict[str, int]] = {route: {} for route in ROUTES}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._loop()), daemon=True)

    async def one(self, route: str) -> tuple[float, str]:
        """One request: its latency and `HTTP <status>`, or the client error's name."""
        t0 = time.perf_counter()
        writer: asyncio.StreamWriter | None = None
        try:
            reader, opened = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), REQUEST_TIMEOUT_S)
            writer = opened
            opened.write(self.request[route])
            status, _ = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT_S)
            kind = f"HTTP {status}"
        except CLIENT_ERRORS as exc:
            kind = type(exc).__name__
        finally:
            if writer is not None:
                writer.close()
        return time.perf_counter() - t0, kind

    def warm(self, per_route: int) -> None:
        """`per_route` requests of each route, not recorded: the web processes' first requests (lazy
        imports, serializers, database connections) are paid before the idle RSS is read."""

        async def warm() -> None:
            for _ in range(per_route):
                for route in ROUTES:
                    await self.one(route)

        asyncio.run(warm())

    async def _loop(self) -> None:
        started, tick = time.monotonic(), 0
        while not self._stopping.is_set():
            route = ROUTES[tick % len(ROUTES)]
            latency, kind = await self.one(route)
            if kind == "HTTP 200":
                self.latencies[route].append(latency)
            else:
                self.errors[route][kind] = self.errors[route].get(kind, 0) + 1
            tick += 1
            await asyncio.sleep(max(0.0, started + tick * self.interval - time.monotonic()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=REQUEST_TIMEOUT_S + 5)

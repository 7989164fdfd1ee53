"""The daemon side of the node benchmarks (their own processes; nothing here imports Django).

- `SimNode`: one simulated daemon's python-socketio AsyncClient over the websocket transport:
  connect, wait for `connection.ack`, send `node.register`, wait for `register.ack`; counts the
  `error` replies and the unexpected disconnects;
- `bring_up`: many of them connected and registered with bounded concurrency (the connect rate);
- the line protocol of a daemon process (bench.harness.processes.LineProcess is the other end):
  its config from the file named on its command line, one-word commands read from stdin,
  JSON lines written to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.harness.messages import register_message

NAMESPACE = "/ws/node"
CONNECT_TIMEOUT_S = 60.0  # one daemon's connect + connection.ack + register.ack
PHASE_TIMEOUT_S = 300.0  # the whole ramp, or any wait on a daemon process


@dataclass
class DaemonStats:
    """What the daemons of one process saw go wrong."""

    disconnects: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # `error` replies by code


class SimNode:
    """One daemon: connect, wait for connection.ack, register; `cfg` is {pk, nodeId, token, url}."""

    def __init__(self, cfg: dict[str, Any], session: Any, stats: DaemonStats):
        import socketio

        self.pk: str = cfg["pk"]
        self.node_id: str = cfg["nodeId"]
        self.token: str = cfg["token"]
        self.url: str = cfg["url"]
        self.stats = stats
        self.client = socketio.AsyncClient(
            reconnection=False, handle_sigint=False, http_session=session, logger=False, engineio_logger=False
        )
        self.connection_acked = asyncio.Event()
        self.registered = asyncio.Event()
        self.stopping = False
        self.client.on("connection.ack", self._on_connection_ack, namespace=NAMESPACE)
        self.client.on("register.ack", self._on_register_ack, namespace=NAMESPACE)
        self.client.on("error", self._on_error, namespace=NAMESPACE)
        self.client.on("disconnect", self._on_disconnect, namespace=NAMESPACE)

    async def _on_connection_ack(self, data: Any = None) -> None:
        self.connection_acked.set()

    async def _on_register_ack(self, data: Any = None) -> None:
        self.registered.set()

    async def _on_error(self, data: Any = None) -> None:
        code = data.get("data", {}).get("code", "?") if isinstance(data, dict) else "?"
        self.stats.errors[code] = self.stats.errors.get(code, 0) + 1

    async def _on_disconnect(self, *args: Any) -> None:
        if not self.stopping:
            self.stats.disconnects.append(time.monotonic())

    async def start(self) -> tuple[float, float]:
        """Connect and register; returns (connected, registered) monotonic times."""
        await self.client.connect(
            self.url,
            auth={"token": self.token, "nodeId": self.node_id},
            namespaces=[NAMESPACE],
            transports=["websocket"],
            wait_timeout=CONNECT_TIMEOUT_S,
        )
        connected = time.monotonic()
        await self.connection_acked.wait()
        await self.client.emit("node.register", register_message(self.node_id), namespace=NAMESPACE)
        await self.registered.wait()
        return connected, time.monotonic()

    async def stop(self) -> None:
        self.stopping = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), 10)


Node = TypeVar("Node", bound=SimNode)


async def bring_up(
    nodes: list[Node], concurrency: int
) -> tuple[list[Node], list[tuple[float, float, float]], dict[str, int]]:
    """Connect and register every node, `concurrency` at a time. Returns the nodes that came up,
    their (started, connected, registered) monotonic times, and the failures by exception name."""
    limit = asyncio.Semaphore(concurrency)
    failures: dict[str, int] = {}
    times: list[tuple[float, float, float]] = []
    up: list[Node] = []

    async def one(node: Node) -> None:
        async with limit:
            started = time.monotonic()
            try:
                connected, registered = await asyncio.wait_for(node.start(), CONNECT_TIMEOUT_S)
            except Exception as exc:
                kind = type(exc).__name__
                failures[kind] = failures.get(kind, 0) + 1
                return
        times.append((started, connected, registered))
        up.append(node)

    await asyncio.wait_for(asyncio.gather(*(one(n) for n in nodes)), PHASE_TIMEOUT_S)
    return up, times, failures


def read_config() -> dict[str, Any]:
    """The JSON config whose path is this process's first argument."""
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python -m <module> CONFIG.json (a benchmark starts this; got {sys.argv[1:]})")
    config: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text())
    return config


def emit_line(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def expect_command(reader: asyncio.StreamReader, command: str, timeout: float, who: str) -> None:
    """Wait for the benchmark's next command line, which must be `command`."""
    line = await asyncio.wait_for(reader.readline(), timeout)
    if not line:
        raise SystemExit(f"{who}: the benchmark went away")
    if line.decode().strip() != command:
        raise SystemExit(f"{who}: expected {command}")

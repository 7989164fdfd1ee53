"""A process of SSE subscribers (`python -m bench.portalbench.subscribers CONFIG.json`, started by
bench.portalbench.fanout through bench.harness.processes.LineProcess; nothing here imports Django).

Its config: `url`, `token` (the operator's accessToken), `count` (streams), `concurrency` (streams
being opened at once), `index`. Commands, one per line: `go` (open every stream, `concurrency` at
a time; a stream counts as subscribed once the service's first frame, `retry:`, arrived — the
service subscribes it before writing that frame; answered `subscribed`), `stop` (answered `done`
with, per `uptimeSeconds` value of the `node.heartbeat` events seen, how many streams got it and
the first and last arrival, in monotonic seconds — the same clock as the daemons' send times on
this machine — and how many events a stream got more than once).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

from bench.harness.daemon import (
    CONNECT_TIMEOUT_S,
    PHASE_TIMEOUT_S,
    emit_line,
    expect_command,
    read_config,
    stdin_reader,
)

UPTIME = re.compile(rb'"uptimeSeconds":(\d+)')
HEARTBEAT = b"node.heartbeat"


@dataclass
class Streams:
    subscribed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    ended: int = 0  # streams the service ended (or that broke) before `stop`
    events: int = 0  # every event frame seen, of any type
    duplicates: int = 0  # a heartbeat's event a stream had had already
    arrivals: dict[int, list[float]] = field(default_factory=dict)  # uptimeSeconds -> [count, first, last]
    stopping: bool = False

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def arrived(self, value: int, at: float) -> None:
        seen = self.arrivals.get(value)
        if seen is None:
            self.arrivals[value] = [1, at, at]
        else:
            seen[0] += 1
            seen[2] = max(seen[2], at)


async def stream(session: Any, cfg: dict[str, Any], streams: Streams, limit: asyncio.Semaphore) -> None:
    import aiohttp

    headers = {"Authorization": f"Bearer {cfg['token']}", "Accept": "text/event-stream"}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=None)
    opening = True
    await limit.acquire()
    try:
        async with session.get(f"{cfg['url']}/api/events", headers=headers, timeout=timeout) as response:
            if response.status != 200:
                streams.fail(f"HTTP {response.status}")
                return
            event = b""
            seen: set[int] = set()
            async for raw in response.content:
                at = time.monotonic()
                line = raw.rstrip(b"\r\n")
                if opening and line.startswith(b"retry:"):
                    opening = False
                    streams.subscribed += 1
                    limit.release()
                elif line.startswith(b"event: "):
                    event = line[7:]
                    streams.events += 1
                elif event == HEARTBEAT and line.startswith(b"data: "):
                    found = UPTIME.search(line)
                    if found:
                        value = int(found.group(1))
                        if value in seen:
                            streams.duplicates += 1
                        else:
                            seen.add(value)
                            streams.arrived(value, at)
        if not streams.stopping:
            streams.ended += 1
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if opening:
            streams.fail(type(exc).__name__)
        elif not streams.stopping:
            streams.ended += 1
    finally:
        if opening:
            limit.release()


async def main(cfg: dict[str, Any]) -> None:
    import aiohttp

    reader = await stdin_reader()
    streams = Streams()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    tasks: list[asyncio.Task[None]] = []
    try:
        emit_line({"event": "prepared"})
        await expect_command(reader, "go", PHASE_TIMEOUT_S, "subscribers")
        started = time.monotonic()
        limit = asyncio.Semaphore(cfg["concurrency"])
        tasks = [asyncio.create_task(stream(session, cfg, streams, limit)) for _ in range(cfg["count"])]
        deadline = started + PHASE_TIMEOUT_S
        while streams.subscribed + sum(streams.failures.values()) < cfg["count"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        emit_line(
            {
                "event": "subscribed",
                "subscribed": streams.subscribed,
                "failures": streams.failures,
                "seconds": time.monotonic() - started,
            }
        )
        await expect_command(reader, "stop", 24 * 3600, "subscribers")
        streams.stopping = True
        emit_line(
            {
                "event": "done",
                "subscribed": streams.subscribed,
                "ended": streams.ended,
                "events": streams.events,
                "duplicates": streams.duplicates,
                "arrivals": {str(k): v for k, v in streams.arrivals.items()},
            }
        )
    finally:
        streams.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()


if __name__ == "__main__":
    asyncio.run(main(read_config()))

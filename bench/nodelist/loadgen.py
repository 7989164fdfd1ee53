"""The load generator of the node list benchmark, and one measured run of it.

It runs in its own process (`python -m bench.nodelist.loadgen '<json config>'`, the token in
BENCH_TOKEN): `concurrency` keep-alive HTTP/1.1 clients send the request in a loop; after a
warm-up, for `duration` seconds, it records each 200's latency and counts the rest; it prints
{latencies, errors, window} as JSON. The run is bounded by a request count and a per-request timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench.harness.env import REPO
from bench.harness.procfs import cpu_seconds
from bench.harness.servers import HOST, Server
from bench.harness.stats import pct
from bench.nodelist import BENCH_PATH

MAX_REQUESTS_PER_RUN = 200_000  # hard bound on one load-generator run, whatever the duration
REQUEST_TIMEOUT_S = 30.0
CLIENT_ERRORS = (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length: int | None = None
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()
        close = True
    return status, close


async def _client(
    cfg: dict[str, Any], start_measure: float, end: float, out: dict[str, Any], budget: list[int]
) -> None:
    request = (
        f"GET {cfg['path']} HTTP/1.1\r\nHost: {HOST}:{cfg['port']}\r\n"
        f"Authorization: Bearer {cfg['token']}\r\nAccept: application/json\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    try:
        while time.perf_counter() < end and budget[0] > 0:
            budget[0] -= 1
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, cfg["port"])
            assert reader is not None
            t0 = time.perf_counter()
            try:
                writer.write(request)
                status, close = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT_S)
                kind = f"HTTP {status}"
            except CLIENT_ERRORS as exc:
                status, close, kind = -1, True, type(exc).__name__
            t1 = time.perf_counter()
            if start_measure <= t0 and t1 <= end:
                if status == 200:
                    out["latencies"].append(t1 - t0)
                else:
                    out["errors"][kind] = out["errors"].get(kind, 0) + 1
            if close:
                writer.close()
                writer = reader = None
    finally:
        if writer is not None:
            writer.close()


async def _loadgen(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"latencies": [], "errors": {}}
    start_measure = time.perf_counter() + cfg["warmup"]
    end = start_measure + cfg["duration"]
    budget = [MAX_REQUESTS_PER_RUN]
    await asyncio.gather(*(_client(cfg, start_measure, end, out, budget) for _ in range(cfg["concurrency"])))
    return {"latencies": out["latencies"], "errors": out["errors"], "window": cfg["duration"]}


def main(raw: str) -> None:
    cfg = json.loads(raw)
    cfg["token"] = os.environ["BENCH_TOKEN"]
    print(json.dumps(asyncio.run(_loadgen(cfg))))


@dataclass
class Run:
    """Measurements of one target (service or bare) at one row count, pooled over rounds."""

    latencies: list[float] = field(default_factory=list)
    window: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0
    round_rps: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.window if self.window else 0.0

    def pct(self, q: float) -> float:
        """The q-quantile of the latencies, in milliseconds."""
        return pct(self.latencies, q) * 1000

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_s / len(self.latencies) if self.latencies else float("nan")


def run_load(server: Server, env: dict[str, str], token: str, args: argparse.Namespace, duration: float) -> Run:
    """One load-generator run against `server`: `args.warmup` seconds, then `duration` measured,
    with the server process's CPU time over it."""
    cfg = {
        "port": server.port,
        "path": BENCH_PATH,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "duration": duration,
    }
    cpu_before = cpu_seconds(server.pid)
    done = subprocess.run(
        [sys.executable, "-m", "bench.nodelist.loadgen", json.dumps(cfg)],
        cwd=REPO,
        env={**env, "BENCH_TOKEN": token},
        capture_output=True,
        timeout=args.warmup + duration + REQUEST_TIMEOUT_S + 30,
        check=True,
    )
    cpu_after = cpu_seconds(server.pid)
    result = json.loads(done.stdout)
    run = Run(latencies=result["latencies"], window=result["window"], errors=result["errors"])
    # The CPU time of the server process over the warm-up too; scaled to the measured window.
    run.cpu_s = (cpu_after - cpu_before) * duration / (duration + args.warmup)
    run.round_rps.append(run.rps)
    return run


def merge(total: Run, part: Run) -> None:
    total.latencies.extend(part.latencies)
    total.window += part.window
    for kind, n in part.errors.items():
        total.errors[kind] = total.errors.get(kind, 0) + n
    total.cpu_s += part.cpu_s
    total.round_rps.extend(part.round_rps)


if __name__ == "__main__":
    main(sys.argv[1])

"""The baselines of the dispatch benchmark, measured in the same run, one message at a time:

- "redis": a bare Redis round trip between two processes (LPUSH, BRPOP in the other process, LPUSH
  back, BRPOP), the other process being `python -m bench.dispatching.baselines pong URL KEY`;
- "echo" and "echo-redis" per server kind: a daemon-like client (`python -m
  bench.dispatching.baselines CONFIG.json`) emits a `command.result`-sized message to a bare
  python-socketio server (bench.dispatching.echo_apps) served by the same ASGI server as the
  service, which emits a command back, directly or through Redis as the node bus does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.dispatching.messages import COMMAND, answers, command_body
from bench.harness.daemon import (
    CONNECT_TIMEOUT_S,
    NAMESPACE,
    PHASE_TIMEOUT_S,
    emit_line,
    expect_command,
    read_config,
    stdin_reader,
)
from bench.harness.processes import Child, Cleanup, LineProcess
from bench.harness.servers import Server, kind_for_app

ECHO_APPS = {
    "echo": "bench.dispatching.echo_apps:echo_application",
    "echo-redis": "bench.dispatching.echo_apps:echo_redis_application",
}
STARTUP_TIMEOUT_S = 90.0


@dataclass
class Baseline:
    name: str
    what: str
    rtts: list[float]


def redis_baseline(url: str, env: dict[str, str], logdir: Path, samples: int, gap: float, cleanup: Cleanup) -> Baseline:
    import redis

    key = f"aiwm-bench-dispatch-{secrets.token_hex(4)}"
    pong = Child("redis-pong", [sys.executable, "-m", "bench.dispatching.baselines", "pong", url, key], env, logdir)
    cleanup.add("redis-pong", pong.stop)
    client = redis.Redis.from_url(url)
    payload = json.dumps(command_body("redis-baseline", 1)).encode()
    rtts = []
    try:
        for i in range(samples + 50):
            sent = time.monotonic()
            client.lpush(f"{key}:ping", payload)
            item = client.brpop([f"{key}:pong"], timeout=10)
            if item is None:
                raise RuntimeError(f"Redis baseline: no pong after 10s\n{pong.tail()}")
            if i >= 50:
                rtts.append(time.monotonic() - sent)
            time.sleep(gap)
        client.lpush(f"{key}:ping", b"stop")
        pong.proc.wait(timeout=10)
    finally:
        client.delete(f"{key}:ping", f"{key}:pong")
        client.close()
        cleanup.run("redis-pong")
    return Baseline(
        "redis", "LPUSH, BRPOP in a 2nd process, LPUSH back, BRPOP (redis-py, a command-sized message)", rtts
    )


def echo_baseline(
    kind: str, target: str, env: dict[str, str], logdir: Path, samples: int, gap: float, cleanup: Cleanup
) -> Baseline:
    server = Server(kind_for_app(kind, ECHO_APPS[target]), ECHO_APPS[target], env, logdir, target)
    label = f"server-{target}-{kind}"
    cleanup.add(label, server.stop)
    try:
        server.start()
        server.wait_ready(STARTUP_TIMEOUT_S)
        cfg = {"url": server.url, "samples": samples, "warmup": 50, "gap": gap}
        client = LineProcess("bench.dispatching.baselines", "echo", 0, cfg, env, logdir)
        cleanup.add(f"echo-client-{kind}", client.kill)
        client.expect("prepared", 120)
        client.send("go")
        rtts = client.expect("done", 60 + samples * (gap + 1.0))["rtts"]
        client.proc.wait(timeout=30)
        cleanup.run(f"echo-client-{kind}")
    finally:
        cleanup.run(label)
    what = (
        "python-socketio echo: the server emits to the daemon's room"
        if target == "echo"
        else "python-socketio echo through a worker thread, RedisManager PUBLISH and the AsyncRedisManager listener"
    )
    return Baseline(f"{target} ({kind})", what, rtts)


async def echo_client(cfg: dict[str, Any]) -> None:
    """One daemon-like client: `samples` round trips through an echo server, one at a time."""
    import aiohttp
    import socketio

    reader = await stdin_reader()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        client = socketio.AsyncClient(reconnection=False, handle_sigint=False, http_session=session)
        waiting: dict[str, asyncio.Future[float]] = {}

        async def on_command(command: Any = None) -> None:
            at = time.monotonic()
            future = waiting.pop(command.get("metadata", {}).get("echoOf", ""), None)
            if future is not None and not future.done():
                future.set_result(at)

        client.on(COMMAND, on_command, namespace=NAMESPACE)
        emit_line({"event": "prepared", "pid": os.getpid()})
        await expect_command(reader, "go", PHASE_TIMEOUT_S, "echo")
        await client.connect(
            cfg["url"],
            auth={"token": "echo", "nodeId": "echo-node"},
            namespaces=[NAMESPACE],
            transports=["websocket"],
            wait_timeout=CONNECT_TIMEOUT_S,
        )
        rtts: list[float] = []
        lost = 0
        try:
            i = 0
            while i < cfg["warmup"] + cfg["samples"]:
                _, result = answers(command_body("echo", 1))
                future: asyncio.Future[float] = loop.create_future()
                waiting[result["messageId"]] = future
                sent = time.monotonic()
                await client.emit(result["type"], result, namespace=NAMESPACE)
                warming = i < cfg["warmup"]
                try:
                    received = await asyncio.wait_for(future, 2 if warming else 10)
                except TimeoutError:
                    # The Redis variant's listener subscribes only once the first client has connected
                    # (python-socketio starts it then), and a PUBLISH before that SUBSCRIBE is gone:
                    # the warm-up sends again instead; a loss after it is a failure.
                    waiting.pop(result["messageId"], None)
                    lost += 1
                    if not warming or lost > 5:
                        raise
                    continue
                if not warming:
                    rtts.append(received - sent)
                i += 1
                await asyncio.sleep(cfg["gap"])
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 10)
        emit_line({"event": "done", "rtts": rtts})


def redis_pong(url: str, key: str) -> None:
    """The other side of the Redis baseline: BRPOP a ping, LPUSH it back; bounded by a 60 s idle timeout."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        while True:
            item = client.brpop([f"{key}:ping"], timeout=60)
            if item is None or item[1] == b"stop":
                return
            client.lpush(f"{key}:pong", item[1])
    finally:
        client.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "pong":
        redis_pong(sys.argv[2], sys.argv[3])
    else:
        asyncio.run(echo_client(read_config()))

"""The live events' fan-out on one web process: SSE subscribers in their own processes
(bench.portalbench.subscribers), then a few simulated daemons (bench.harness.daemon.SimNode) in
this process sending `telemetry.heartbeat` at a steady rate, round robin. Each heartbeat carries
its send time (monotonic microseconds) as `uptimeSeconds`, which the service echoes in the
`node.heartbeat` event: a heartbeat's latency is from its send to its arrival at the LAST
subscriber that got it."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.daemon import NAMESPACE, DaemonStats, SimNode, bring_up
from bench.harness.messages import heartbeat_message
from bench.harness.processes import LineProcess
from bench.harness.procfs import cpu_seconds
from bench.harness.servers import Server
from bench.harness.smoke import Check
from bench.portalbench.seed import GPU_MEMORY_MB, GPUS_PER_NODE
from bench.swarm.clients import mono_us

SUBSCRIBERS_MODULE = "bench.portalbench.subscribers"
DRAIN_S = 3.0  # after the last heartbeat, before the subscribers are stopped
WARMUP_HEARTBEATS = 2  # per daemon, before the window: the service's first flush and events paid


@dataclass
class FanoutResult:
    mode: str  # "Redis stream" or "in-process"
    subscribers: int
    subscribed: int = 0
    subscribe_failures: dict[str, int] = field(default_factory=dict)
    subscribe_s: float = 0.0
    senders: int = 0
    sent: dict[int, float] = field(default_factory=dict)  # uptimeSeconds value -> send time (monotonic s)
    latency: list[float] = field(default_factory=list)  # send -> last subscriber, of those all got
    first: list[float] = field(default_factory=list)  # send -> first subscriber
    delivered_all: int = 0
    deliveries: int = 0  # (heartbeat, subscriber) pairs delivered
    ended: int = 0
    duplicates: int = 0  # events a subscriber got more than once
    window_s: float = 0.0
    server_cpu_s: float = 0.0
    subscribers_cpu_s: float = 0.0
    daemon_errors: dict[str, int] = field(default_factory=dict)
    daemon_disconnects: int = 0
    checks: list[Check] = field(default_factory=list)

    @property
    def share_all(self) -> float:
        return self.delivered_all / len(self.sent) if self.sent else 0.0


def heartbeat(value: int, rng: random.Random) -> dict[str, Any]:
    """The contract's heartbeat with the send time as uptimeSeconds and the node's 8 GPUs."""
    body = heartbeat_message(value, rng)
    body["data"]["gpuStatus"] = [
        {
            "deviceId": f"GPU-{d}",
            "utilization": rng.randrange(0, 101),
            "memoryUsed": rng.randrange(1000, GPU_MEMORY_MB),
            "temperature": rng.randrange(40, 85),
        }
        for d in range(GPUS_PER_NODE)
    ]
    return body


async def send_heartbeats(
    server: Server, daemons: list[dict[str, Any]], count: int, interval: float, seed: int, result: FanoutResult
) -> None:
    """Bring the daemons up, a warm-up heartbeat or two each, then `count` heartbeats, one every
    `interval` seconds round robin; record each one's send time in `result.sent`."""
    import aiohttp

    stats = DaemonStats()
    rng = random.Random(seed)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        nodes = [SimNode({**d, "url": server.url}, session, stats) for d in daemons]
        up, _, failures = await bring_up(nodes, concurrency=len(nodes))
        if failures or len(up) != len(nodes):
            raise RuntimeError(f"daemons: {len(up)}/{len(nodes)} came up; failures {failures}")
        try:
            for _ in range(WARMUP_HEARTBEATS):
                for node in up:
                    await node.client.emit(
                        "telemetry.heartbeat", heartbeat(mono_us(time.monotonic()), rng), namespace=NAMESPACE
                    )
                await asyncio.sleep(max(interval * len(up), 0.3))
            await asyncio.sleep(1.0)
            start = time.monotonic()
            for k in range(count):
                delay = start + k * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                node = up[k % len(up)]
                sent = time.monotonic()
                value = mono_us(sent)
                await node.client.emit("telemetry.heartbeat", heartbeat(value, rng), namespace=NAMESPACE)
                result.sent[value] = sent
            result.window_s = time.monotonic() - start
            await asyncio.sleep(DRAIN_S)
        finally:
            for node in up:
                await node.stop()
    result.daemon_errors, result.daemon_disconnects = stats.errors, len(stats.disconnects)


def run_fanout(
    mode: str,
    server: Server,
    args: argparse.Namespace,
    env: dict[str, str],
    logdir: Path,
    token: str,
    daemons: list[dict[str, Any]],
) -> FanoutResult:
    """One fan-out measurement on a started `server`."""
    result = FanoutResult(mode, args.subscribers, senders=len(daemons))
    per = [
        args.subscribers // args.subscriber_procs + (i < args.subscribers % args.subscriber_procs)
        for i in range(args.subscriber_procs)
    ]
    concurrency = max(1, args.subscribe_concurrency // args.subscriber_procs)
    procs: list[LineProcess] = []
    tag = f"-{mode.split()[0].lower()}"
    try:
        for i, count in enumerate(per):
            cfg = {"url": server.url, "token": token, "count": count, "concurrency": concurrency, "index": i}
            procs.append(LineProcess(SUBSCRIBERS_MODULE, "subscribers", i, cfg, env, logdir, tag))
        for proc in procs:
            proc.expect("prepared", 60)
        t0 = time.monotonic()
        for proc in procs:
            proc.send("go")
        for proc in procs:
            answer = proc.expect("subscribed", 330)
            result.subscribed += answer["subscribed"]
            for kind, n in answer["failures"].items():
                result.subscribe_failures[kind] = result.subscribe_failures.get(kind, 0) + n
        result.subscribe_s = time.monotonic() - t0
        cpu0 = cpu_seconds(server.pid), sum(cpu_seconds(p.proc.pid) for p in procs)
        count = max(1, int(args.fanout_duration / args.interval))
        asyncio.run(send_heartbeats(server, daemons, count, args.interval, args.seed, result))
        result.server_cpu_s = cpu_seconds(server.pid) - cpu0[0]
        result.subscribers_cpu_s = sum(cpu_seconds(p.proc.pid) for p in procs) - cpu0[1]
        arrivals: dict[int, list[float]] = {}
        for proc in procs:
            proc.send("stop")
        for proc in procs:
            answer = proc.expect("done", 120)
            result.ended += answer["ended"]
            result.duplicates += answer["duplicates"]
            for key, (n, first, last) in answer["arrivals"].items():
                seen = arrivals.setdefault(int(key), [0, first, last])
                if seen[0]:
                    seen[1], seen[2] = min(seen[1], first), max(seen[2], last)
                seen[0] += n
    finally:
        for proc in procs:
            proc.kill()
    for value, sent in result.sent.items():
        n, first, last = arrivals.get(value, (0, 0.0, 0.0))
        result.deliveries += int(n)
        if n:
            result.first.append(first - sent)
        if n >= result.subscribers:
            result.delivered_all += 1
            result.latency.append(last - sent)
    who = f"fan-out ({mode}):"
    result.checks += [
        (
            f"{who} {result.subscribed}/{result.subscribers} subscribers subscribed, failures "
            f"{result.subscribe_failures or 'none'}",
            result.subscribed == result.subscribers and not result.subscribe_failures,
        ),
        (f"{who} no stream ended before the end ({result.ended} did)", result.ended == 0),
        (
            f"{who} no subscriber got an event twice ({result.duplicates} duplicate events)",
            result.duplicates == 0,
        ),
        (
            f"{who} {result.delivered_all}/{len(result.sent)} heartbeats reached every subscriber "
            f"({result.deliveries}/{len(result.sent) * result.subscribers} deliveries)",
            bool(result.sent) and result.delivered_all == len(result.sent),
        ),
        (
            f"{who} the daemons got no error reply and stayed ({result.daemon_errors or 'no errors'}, "
            f"{result.daemon_disconnects} disconnects)",
            not result.daemon_errors and result.daemon_disconnects == 0,
        ),
    ]
    return result

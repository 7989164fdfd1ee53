"""The swarm: simulated daemons in their own processes (`python -m bench.swarm.clients CONFIG.json`,
started by bench.swarm.run through bench.harness.processes.LineProcess).

Its config: `url`, `seed`, `concurrency` (connects in flight), `max_seconds`, `nodes`, and optionally
`heartbeat_s`/`metrics_s` (the intervals; by default HEARTBEAT_S and METRICS_S, ten times the
contract's rate, which bench/node_swarm.py measures; bench/fleet.py sends the contract's own).

Commands from the benchmark, one per line: `go` (every node connects and registers, with bounded
concurrency; answered `connected` with the times), `telemetry` (every node starts its heartbeats and
metrics at a random phase; answered `telemetry`), `stop` (answered `done` with what was sent and
seen; then every node disconnects).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.harness.daemon import (
    NAMESPACE,
    PHASE_TIMEOUT_S,
    DaemonStats,
    SimNode,
    bring_up,
    emit_line,
    expect_command,
    read_config,
    stdin_reader,
)
from bench.harness.messages import heartbeat_message, metrics_message

CONTRACT_HEARTBEAT_S = 30.0  # the contract's intervals
CONTRACT_METRICS_S = 60.0
HEARTBEAT_S = CONTRACT_HEARTBEAT_S / 10  # bench/node_swarm.py's default: ten times the contract's rate
METRICS_S = CONTRACT_METRICS_S / 10
JITTER = 0.05  # each interval is drawn from +-5% of its nominal value


def mono_us(t: float) -> int:
    return int(t * 1_000_000)


@dataclass
class SwarmStats(DaemonStats):
    sent_hb: dict[int, int] = field(default_factory=dict)  # per whole monotonic second
    sent_metrics: dict[int, int] = field(default_factory=dict)
    lag: list[float] = field(default_factory=list)  # send time - scheduled time
    rtt: list[tuple[float, float]] = field(default_factory=list)  # (sent, ack round trip) of sampled heartbeats
    sampled_hb: dict[str, list[int]] = field(default_factory=dict)  # node pk -> uptimeSeconds values sent


class TelemetryNode(SimNode):
    """A daemon that, once registered, sends the contract's telemetry; a sampled one (`cfg["sampled"]`)
    asks for an acknowledgement of each heartbeat and records what it sent."""

    stats: SwarmStats

    def __init__(
        self,
        cfg: dict[str, Any],
        session: Any,
        stats: SwarmStats,
        seed: int,
        heartbeat_s: float = HEARTBEAT_S,
        metrics_s: float = METRICS_S,
    ):
        super().__init__(cfg, session, stats)
        self.sampled: bool = cfg["sampled"]
        self.rng = random.Random(seed)
        self.heartbeat_s, self.metrics_s = heartbeat_s, metrics_s
        if self.sampled:
            stats.sampled_hb[self.pk] = []

    async def telemetry(self, deadline: float) -> None:
        """Heartbeats every `heartbeat_s`, metrics every `metrics_s`, random phase and jitter; until
        cancelled or `deadline`."""
        rng, stats = self.rng, self.stats
        now = time.monotonic()
        next_hb = now + rng.uniform(0, self.heartbeat_s)
        next_metrics = now + rng.uniform(0, self.metrics_s)
        while True:
            due = min(next_hb, next_metrics)
            if due > deadline:
                return
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self.client.connected:
                return
            sent = time.monotonic()
            stats.lag.append(sent - due)
            second = int(sent)
            if due == next_hb:
                value = mono_us(sent)
                body = heartbeat_message(value, rng)
                if self.sampled:
                    stats.sampled_hb[self.pk].append(value)
                    callback = self._ack_callback(sent)
                    await self.client.emit(body["type"], body, namespace=NAMESPACE, callback=callback)
                else:
                    await self.client.emit(body["type"], body, namespace=NAMESPACE)
                stats.sent_hb[second] = stats.sent_hb.get(second, 0) + 1
                next_hb += self.heartbeat_s * rng.uniform(1 - JITTER, 1 + JITTER)
            else:
                body = metrics_message(rng)
                await self.client.emit(body["type"], body, namespace=NAMESPACE)
                stats.sent_metrics[second] = stats.sent_metrics.get(second, 0) + 1
                next_metrics += self.metrics_s * rng.uniform(1 - JITTER, 1 + JITTER)

    def _ack_callback(self, sent: float) -> Callable[..., None]:
        def acked(*args: Any) -> None:
            self.stats.rtt.append((sent, time.monotonic() - sent))

        return acked


async def swarm(cfg: dict[str, Any]) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    reader = await stdin_reader()
    stats = SwarmStats()
    # One HTTP session for every daemon of this process (no pool limit: a websocket holds its connection).
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    intervals = {"heartbeat_s": cfg.get("heartbeat_s", HEARTBEAT_S), "metrics_s": cfg.get("metrics_s", METRICS_S)}
    nodes = [
        TelemetryNode({**n, "url": cfg["url"]}, session, stats, seed=cfg["seed"] * 100_000 + i, **intervals)
        for i, n in enumerate(cfg["nodes"])
    ]
    telemetry: list[asyncio.Task[None]] = []
    try:
        emit_line({"event": "prepared", "pid": os.getpid()})
        await expect_command(reader, "go", PHASE_TIMEOUT_S, "swarm")
        go = time.monotonic()
        hard_deadline = go + cfg["max_seconds"]
        up, times, failures = await bring_up(nodes, cfg["concurrency"])
        emit_line({"event": "connected", "go": go, "times": times, "failures": failures})

        # Telemetry starts on every node at once (random phases), after the ramp: the connect rate
        # and the steady state are measured apart (see BENCHMARKS.md for a ramp under telemetry).
        await expect_command(reader, "telemetry", PHASE_TIMEOUT_S, "swarm")
        telemetry.extend(
            loop.create_task(node.telemetry(hard_deadline)) for node in up if isinstance(node, TelemetryNode)
        )
        emit_line({"event": "telemetry"})

        await expect_command(reader, "stop", cfg["max_seconds"], "swarm")
        for task in telemetry:
            task.cancel()
        await asyncio.gather(*telemetry, return_exceptions=True)
        done = {
            "event": "done",
            "sent_hb": stats.sent_hb,
            "sent_metrics": stats.sent_metrics,
            "lag": stats.lag,
            "rtt": stats.rtt,
            "sampled_hb": stats.sampled_hb,
            "disconnects": stats.disconnects,
            "errors": stats.errors,
        }
        # Disconnect with bounded concurrency (each disconnect is a DB write on the service).
        closing = asyncio.Semaphore(100)

        async def close(node: TelemetryNode) -> None:
            async with closing:
                await node.stop()

        await asyncio.wait_for(asyncio.gather(*(close(n) for n in nodes), return_exceptions=True), 120)
        emit_line(done)
    finally:
        for task in telemetry:
            task.cancel()
        await session.close()


if __name__ == "__main__":
    asyncio.run(swarm(read_config()))

"""One run of the swarm against one server and target (the service or the echo baseline): the
server started, warmed up, the swarm's processes connected, telemetry, the steady window measured
on the server process, and (for the service) the heartbeat-to-database latency and what it wrote."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.daemon import CONNECT_TIMEOUT_S, NAMESPACE, PHASE_TIMEOUT_S
from bench.harness.databases import pg_backend_cpu
from bench.harness.env import REPO
from bench.harness.messages import heartbeat_message, metrics_message
from bench.harness.processes import LineProcess
from bench.harness.procfs import cpu_seconds, steady_rss_kib, thread_cpu_seconds
from bench.harness.report import log
from bench.harness.servers import Server
from bench.harness.smoke import Check
from bench.harness.stats import pct
from bench.swarm.clients import SwarmStats, TelemetryNode

WARMUP_NODES = 5


@dataclass
class RunResult:
    kind: str
    target: str  # "service" or "echo"
    nodes: int
    connected: int = 0
    connect_failures: dict[str, int] = field(default_factory=dict)
    ramp_s: float = 0.0
    connect_latency: list[float] = field(default_factory=list)
    ramp_cpu_s: float = 0.0
    rss_idle: int = 0
    rss_connected: int = 0
    rss_end: int = 0
    window_s: float = 0.0
    cpu_s: float = 0.0
    main_thread_cpu_s: float = 0.0  # the event loop's thread
    pg_cpu_s: float = float("nan")
    swarm_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0
    poller_pg_cpu_s: float = 0.0
    hb_rate: float = 0.0
    metrics_rate: float = 0.0
    lag: list[float] = field(default_factory=list)
    rtt: list[float] = field(default_factory=list)
    rtt_slices: list[float] = field(default_factory=list)
    db_latency: list[float] = field(default_factory=list)
    db_missing: int = 0
    db_expected: int = 0
    disconnects: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def connect_rate(self) -> float:
        return self.connected / self.ramp_s if self.ramp_s else float("nan")

    def kib_per_conn(self, rss: int) -> float:
        return (rss - self.rss_idle) / self.nodes if self.nodes else float("nan")

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.window_s if self.window_s else float("nan")


async def warm_up(url: str, nodes: list[dict[str, Any]]) -> None:
    """A few daemons connect, register, send telemetry and leave: the server's one-time costs
    (lazy imports, thread pool, database connections) are paid before its idle RSS is read."""
    import aiohttp

    stats = SwarmStats()
    async with aiohttp.ClientSession() as session:
        sims = [TelemetryNode({**n, "sampled": True, "url": url}, session, stats, seed=i) for i, n in enumerate(nodes)]
        await asyncio.wait_for(asyncio.gather(*(s.start() for s in sims)), CONNECT_TIMEOUT_S)
        rng = random.Random(0)
        for sim in sims:
            for _ in range(2):
                beat = heartbeat_message(1, rng)
                await sim.client.emit(beat["type"], beat, namespace=NAMESPACE, callback=lambda *a: None)
                metrics = metrics_message(rng)
                await sim.client.emit(metrics["type"], metrics, namespace=NAMESPACE)
        await asyncio.sleep(0.5)
        await asyncio.gather(*(s.stop() for s in sims))


NOTIFY_SQL = """
CREATE FUNCTION swarm_heartbeat_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('swarm_heartbeat', NEW._id || ' ' || NEW.uptime_seconds);
    RETURN NULL;
END $$;
CREATE TRIGGER swarm_heartbeat_notify AFTER UPDATE ON nodes_node FOR EACH ROW
    WHEN (NEW.node_id LIKE '%-s' AND NEW.uptime_seconds IS DISTINCT FROM OLD.uptime_seconds)
    EXECUTE FUNCTION swarm_heartbeat_notify();
"""


class HeartbeatListener(threading.Thread):
    """Records when each sampled node's new `uptime_seconds` became visible in PostgreSQL.

    A trigger of the benchmark's database (NOTIFY_SQL; its WHEN clause lets only the sampled
    nodes' rows call it) notifies `_id uptime_seconds`; PostgreSQL delivers a notification when
    the transaction that wrote the row commits, so the time this thread receives it is the
    heartbeat's commit as seen by a reader. No polling: a poller reading 100 rows every 10 ms cost
    a quarter of a core on this 2-CPU machine (its own process and its PostgreSQL backend).
    """

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("LISTEN swarm_heartbeat")
        row = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        self.backend_pid = int(row[0])
        self.seen: dict[str, dict[int, float]] = {}
        self.until = float("inf")

    def run(self) -> None:
        while time.monotonic() < self.until:
            for notify in self.conn.notifies(timeout=0.2):
                at = time.monotonic()
                pk, _, value = notify.payload.partition(" ")
                self.seen.setdefault(pk, {}).setdefault(int(value), at)
                if at >= self.until:
                    break

    def stop(self, at: float) -> None:
        self.until = at
        self.join(timeout=10)
        self.conn.close()


def run_target(
    kind: str,
    target: str,
    args: argparse.Namespace,
    env: dict[str, str],
    logdir: Path,
    nodes: list[dict[str, Any]],
    warmup_nodes: list[dict[str, Any]],
    dsn: str,
) -> RunResult:
    app = args.service_app if target == "service" else args.echo_app
    if target == "service":
        env = {**env, **dict(item.split("=", 1) for item in args.service_env)}
    server = Server(kind, app, env, logdir, target)
    result = RunResult(kind=kind, target=target, nodes=len(nodes))
    swarms: list[LineProcess] = []
    listener: HeartbeatListener | None = None
    try:
        server.start()
        server.wait_ready()
        url = server.url
        asyncio.run(warm_up(url, warmup_nodes))
        # The swarm's processes start (imports, clients built) before the idle RSS is read.
        per = [nodes[i :: args.swarm_procs] for i in range(args.swarm_procs)]
        for index, part in enumerate(per):
            cfg = {
                "url": url,
                "seed": args.seed + index,
                "concurrency": max(1, args.ramp_concurrency // args.swarm_procs),
                "max_seconds": PHASE_TIMEOUT_S + args.settle + args.duration + 60,
                "nodes": part,
            }
            env_ = {**os.environ, "PYTHONPATH": str(REPO)}
            swarms.append(LineProcess("bench.swarm.clients", "swarm", index, cfg, env_, logdir))
        for s in swarms:
            s.expect("prepared", 120)
        time.sleep(1.0)
        result.rss_idle = steady_rss_kib(server.pid)

        # Ramp: every node connects and registers.
        cpu0 = cpu_seconds(server.pid)
        for s in swarms:
            s.send("go")
        connected = [s.expect("connected", PHASE_TIMEOUT_S + 30) for s in swarms]
        result.ramp_cpu_s = cpu_seconds(server.pid) - cpu0
        go = min(c["go"] for c in connected)
        times = [t for c in connected for t in c["times"]]
        result.connected = len(times)
        for c in connected:
            for name, n in c["failures"].items():
                result.connect_failures[name] = result.connect_failures.get(name, 0) + n
        result.ramp_s = max(t[2] for t in times) - go if times else float("nan")
        result.connect_latency = [t[2] - t[0] for t in times]
        result.rss_connected = steady_rss_kib(server.pid)
        log(
            f"  {kind} {target}: {result.connected}/{result.nodes} registered in {result.ramp_s:.1f}s; "
            f"telemetry starts; steady window of {args.duration:g}s starts in {args.settle:g}s"
        )

        # Telemetry on every node, settle (every node has been heartbeating for `settle` s), then the window.
        for s in swarms:
            s.send("telemetry")
        for s in swarms:
            s.expect("telemetry", 60)
        time.sleep(args.settle)
        swarm_cpu0 = sum(cpu_seconds(s.proc.pid) for s in swarms)
        bench_cpu0 = time.process_time()
        pg0 = pg_backend_cpu(dsn, args.db, 0) if target == "service" else {}
        threads0 = thread_cpu_seconds(server.pid)
        t0, cpu0 = time.monotonic(), cpu_seconds(server.pid)
        t_end = t0 + args.duration
        if target == "service":
            listener = HeartbeatListener(dsn)
            listener_cpu0 = cpu_seconds(listener.backend_pid)
            listener.start()
        time.sleep(max(0.0, t_end - time.monotonic()))
        t1, cpu1 = time.monotonic(), cpu_seconds(server.pid)
        threads1 = thread_cpu_seconds(server.pid)
        result.main_thread_cpu_s = threads1.get(server.pid, 0.0) - threads0.get(server.pid, 0.0)
        result.window_s, result.cpu_s = t1 - t0, cpu1 - cpu0
        result.swarm_cpu_s = sum(cpu_seconds(s.proc.pid) for s in swarms) - swarm_cpu0
        result.bench_cpu_s = time.process_time() - bench_cpu0
        seen: dict[str, dict[int, float]] = {}
        if listener is not None:
            pg1 = pg_backend_cpu(dsn, args.db, listener.backend_pid)
            result.pg_cpu_s = sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items())
            result.poller_pg_cpu_s = cpu_seconds(listener.backend_pid) - listener_cpu0
            # Heartbeats sent at the very end of the window get a grace period to reach the database.
            listener.stop(time.monotonic() + 2.0)
            seen = listener.seen
        result.rss_end = steady_rss_kib(server.pid, samples=3, interval=0.1)

        for s in swarms:
            s.send("stop")
        done = [s.expect("done", 180) for s in swarms]
        in_window = range(int(t0) + 1, int(t1))  # whole seconds inside the window
        hb = sum(n for d in done for sec, n in d["sent_hb"].items() if int(sec) in in_window)
        metrics = sum(n for d in done for sec, n in d["sent_metrics"].items() if int(sec) in in_window)
        result.hb_rate, result.metrics_rate = hb / len(in_window), metrics / len(in_window)
        result.lag = [x for d in done for x in d["lag"]]
        result.rtt = [rtt for d in done for sent, rtt in d["rtt"] if t0 <= sent < t1]
        # The ack round trip through the window, in slices: a backlog shows as a trend.
        slices = max(1, min(6, int((t1 - t0) // 10)))
        width = (t1 - t0) / slices
        result.rtt_slices = [
            pct([rtt for d in done for sent, rtt in d["rtt"] if t0 + i * width <= sent < t0 + (i + 1) * width], 0.5)
            for i in range(slices)
        ]
        result.disconnects = sum(len(d["disconnects"]) for d in done)
        for d in done:
            for code, n in d["errors"].items():
                result.errors[code] = result.errors.get(code, 0) + n
        if target == "service":
            for d in done:
                for pk, values in d["sampled_hb"].items():
                    for value in values:
                        sent_at = value / 1_000_000
                        if not t0 <= sent_at < t1:
                            continue
                        result.db_expected += 1
                        seen_at = seen.get(pk, {}).get(value)
                        if seen_at is None:
                            result.db_missing += 1
                        else:
                            result.db_latency.append(seen_at - sent_at)
        for s in swarms:
            s.proc.wait(timeout=60)
        if target == "service":
            metrics_sent = sum(n for d in done for n in d["sent_metrics"].values())
            result.checks = check_database(dsn, len(nodes), t0, metrics_sent)
    finally:
        if listener is not None and listener.is_alive():
            listener.stop(0.0)
        for s in swarms:
            s.kill()
        server.stop()
    return result


def check_database(dsn: str, expected_nodes: int, since_monotonic: float, metrics_sent: int) -> list[Check]:
    """What the service wrote: every swarm node heartbeated into its row, every metric point stored
    once, and every node marked disconnected once the swarm left (waited for, up to 60 s). Printed;
    judged by `--smoke` (an experiment such as `service_no_flush` writes nothing on purpose)."""
    import psycopg

    since = time.time() - (time.monotonic() - since_monotonic)
    left = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        beat = conn.execute(
            "SELECT count(*) FROM nodes_node WHERE node_id LIKE 'swarm-%%' AND last_heartbeat >= to_timestamp(%s)"
            " AND status = 'online'",
            [since],
        ).fetchone()
        points = conn.execute("SELECT count(*) FROM nodes_nodemetric WHERE node_id LIKE 'swarm-%%'").fetchone()
        connected: Any = None
        for _ in range(120):
            connected = conn.execute("SELECT count(*) FROM nodes_node WHERE websocket_connected").fetchone()
            if connected is None or connected[0] == 0:
                break
            time.sleep(0.5)
    assert beat is not None and points is not None and connected is not None
    waited = time.monotonic() - left
    return [
        (f"nodes online with a heartbeat written in the window: {beat[0]}/{expected_nodes}", beat[0] == expected_nodes),
        (f"metric points stored: {points[0]} of {metrics_sent} sent", points[0] == metrics_sent),
        (
            f"nodes still marked websocket-connected {waited:.1f}s after the swarm left: {connected[0]}",
            connected[0] == 0,
        ),
    ]

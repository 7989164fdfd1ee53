"""One run of the swarm against one server and target (the service or the echo baseline): the
server started, warmed up, the swarm's processes connected, telemetry, the steady window measured
on the server process, and (for the service) the heartbeat-to-database latency and what it wrote."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.daemon import CONNECT_TIMEOUT_S, NAMESPACE, PHASE_TIMEOUT_S
from bench.harness.databases import pg_backend_cpu
from bench.harness.env import REPO, service_env
from bench.harness.messages import heartbeat_message, metrics_message
from bench.harness.processes import LineProcess
from bench.harness.procfs import cpu_seconds, established_by_process, steady_rss_kib, thread_cpu_seconds
from bench.harness.report import log
from bench.harness.servers import Server, kind_for_app
from bench.harness.smoke import Check
from bench.harness.stats import pct
from bench.swarm.clients import SwarmStats, TelemetryNode

WARMUP_NODES = 5


def swarm_service_env(*, dsn: str, logdir: Path, redis_url: str, name: str) -> dict[str, str]:
    """The environment of the service a swarm reports to (bench/node_swarm.py, bench/fleet.py):
    the service's own telemetry and rate-limit defaults (what is measured), Redis, and a Socket.IO
    pub/sub channel of the run's own (Redis pub/sub ignores database numbers)."""
    return service_env(
        dsn=dsn,
        logdir=logdir,
        drop=("AIWM_NODE_RATE", "AIWM_TELEMETRY"),
        REDIS_URL=redis_url,
        AIWM_SOCKETIO_CHANNEL=f"aiwm-bench-{name}-{secrets.token_hex(6)}",
        DJANGO_SETTINGS_MODULE="aiwm_project.settings",
    )


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
    cpu_s: float = 0.0  # all web processes
    process_cpu_s: list[float] = field(default_factory=list)  # per web process
    process_connections: list[int] = field(default_factory=list)  # connections each holds at the window's end
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
    disconnect_offsets: list[float] = field(default_factory=list)  # s from the window's start (< 0: before it)
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
    """bench/node_swarm.py's run: one server process, the swarm at its default rate, the window."""
    app = args.service_app if target == "service" else args.echo_app
    if target == "service":
        env = {**env, **dict(item.split("=", 1) for item in args.service_env)}
    server = Server(kind_for_app(kind, app), app, env, logdir, target)
    result = RunResult(kind=kind, target=target, nodes=len(nodes))
    run = SwarmRun(server, result, args, logdir, dsn, service=target == "service")
    try:
        server.start()
        server.wait_ready()
        run.prepare(nodes, warmup_nodes)
        run.ramp()
        run.settle()
        time.sleep(max(0.0, run.open_window() - time.monotonic()))
        run.close_window()
        run.finish()
    finally:
        run.close()
        server.stop()
    return result


class SwarmRun:
    """One run of the swarm against a started server, step by step: `prepare` (warm-up, the swarm's
    processes started, idle RSS), `ramp` (every node connects and registers), `settle` (telemetry
    on every node, then `args.settle` seconds), `open_window` ... `close_window` (the steady
    window: CPU, RSS, heartbeat-to-database), `finish` (the swarm leaves: what it sent and saw, and
    for the service what the database holds); `close` in a `finally`.

    The measured processes are the server's web processes (`Server.web_processes`: one, or a
    master's workers), summed; `result.process_cpu_s` and `result.process_connections` keep them
    apart. `swarm_cfg` goes to every swarm process's config on top of its own (`heartbeat_s`,
    `metrics_s`); `tag` keeps one run's files apart from another's.
    """

    def __init__(
        self,
        server: Server,
        result: RunResult,
        args: argparse.Namespace,
        logdir: Path,
        dsn: str,
        *,
        service: bool,
        swarm_cfg: dict[str, Any] | None = None,
        tag: str = "",
    ):
        self.server, self.result, self.args, self.logdir, self.dsn = server, result, args, logdir, dsn
        self.service, self.swarm_cfg, self.tag = service, swarm_cfg or {}, tag
        self.nodes: list[dict[str, Any]] = []
        self.swarms: list[LineProcess] = []
        self.pids: list[int] = []
        self.listener: HeartbeatListener | None = None
        self.seen: dict[str, dict[int, float]] = {}
        self._at_open: dict[str, Any] = {}

    def cpu(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in self.pids}

    def prepare(self, nodes: list[dict[str, Any]], warmup_nodes: list[dict[str, Any]]) -> None:
        args, url = self.args, self.server.url
        self.nodes = nodes
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
                **self.swarm_cfg,
            }
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            self.swarms.append(LineProcess("bench.swarm.clients", "swarm", index, cfg, env, self.logdir, self.tag))
        for s in self.swarms:
            s.expect("prepared", 120)
        time.sleep(1.0)
        self.pids = self.server.web_processes()
        self.result.rss_idle = steady_rss_kib(self.pids)

    def ramp(self) -> None:
        """Every node connects and registers."""
        result = self.result
        cpu0 = sum(self.cpu().values())
        for s in self.swarms:
            s.send("go")
        connected = [s.expect("connected", PHASE_TIMEOUT_S + 30) for s in self.swarms]
        result.ramp_cpu_s = sum(self.cpu().values()) - cpu0
        go = min(c["go"] for c in connected)
        times = [t for c in connected for t in c["times"]]
        result.connected = len(times)
        for c in connected:
            for name, n in c["failures"].items():
                result.connect_failures[name] = result.connect_failures.get(name, 0) + n
        result.ramp_s = max(t[2] for t in times) - go if times else float("nan")
        result.connect_latency = [t[2] - t[0] for t in times]
        result.rss_connected = steady_rss_kib(self.pids)
        log(
            f"  {result.kind} {result.target}: {result.connected}/{result.nodes} registered in {result.ramp_s:.1f}s; "
            f"telemetry starts; steady window of {self.args.duration:g}s starts in {self.args.settle:g}s"
        )

    def settle(self) -> None:
        """Telemetry on every node; then `args.settle` seconds (every node has been sending that long)."""
        for s in self.swarms:
            s.send("telemetry")
        for s in self.swarms:
            s.expect("telemetry", 60)
        time.sleep(self.args.settle)

    def open_window(self) -> float:
        """The steady window starts now; returns when it ends (monotonic)."""
        at = self._at_open
        at["swarm_cpu"] = sum(cpu_seconds(s.proc.pid) for s in self.swarms)
        at["bench_cpu"] = time.process_time()
        at["pg"] = pg_backend_cpu(self.dsn, self.args.db, 0) if self.service else {}
        at["threads"] = {pid: thread_cpu_seconds(pid).get(pid, 0.0) for pid in self.pids}
        at["t0"], at["cpu"] = time.monotonic(), self.cpu()
        if self.service:
            self.listener = HeartbeatListener(self.dsn)
            at["listener_cpu"] = cpu_seconds(self.listener.backend_pid)
            self.listener.start()
        return float(at["t0"] + self.args.duration)

    def close_window(self) -> None:
        result, at = self.result, self._at_open
        t1, cpu1 = time.monotonic(), self.cpu()
        threads1 = {pid: thread_cpu_seconds(pid).get(pid, 0.0) for pid in self.pids}
        result.window_s = t1 - at["t0"]
        result.process_cpu_s = [cpu1[pid] - at["cpu"][pid] for pid in self.pids]
        result.cpu_s = sum(result.process_cpu_s)
        result.main_thread_cpu_s = sum(threads1[pid] - at["threads"][pid] for pid in self.pids)
        result.process_connections = list(established_by_process(self.server.port, self.pids).values())
        result.swarm_cpu_s = sum(cpu_seconds(s.proc.pid) for s in self.swarms) - at["swarm_cpu"]
        result.bench_cpu_s = time.process_time() - at["bench_cpu"]
        if self.listener is not None:
            pg1 = pg_backend_cpu(self.dsn, self.args.db, self.listener.backend_pid)
            result.pg_cpu_s = sum(v - at["pg"].get(pid, 0.0) for pid, v in pg1.items())
            result.poller_pg_cpu_s = cpu_seconds(self.listener.backend_pid) - at["listener_cpu"]
            # Heartbeats sent at the very end of the window get a grace period to reach the database.
            self.listener.stop(time.monotonic() + 2.0)
            self.seen = self.listener.seen
        at["t1"] = t1
        result.rss_end = steady_rss_kib(self.pids, samples=3, interval=0.1)

    def finish(self) -> None:
        """The swarm leaves; what it sent and saw in the window; for the service, check_database."""
        result, t0, t1 = self.result, self._at_open["t0"], self._at_open["t1"]
        for s in self.swarms:
            s.send("stop")
        done = [s.expect("done", 180) for s in self.swarms]
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
        result.disconnect_offsets = sorted(at - t0 for d in done for at in d["disconnects"])
        for d in done:
            for code, n in d["errors"].items():
                result.errors[code] = result.errors.get(code, 0) + n
        if self.service:
            for d in done:
                for pk, values in d["sampled_hb"].items():
                    for value in values:
                        sent_at = value / 1_000_000
                        if not t0 <= sent_at < t1:
                            continue
                        result.db_expected += 1
                        seen_at = self.seen.get(pk, {}).get(value)
                        if seen_at is None:
                            result.db_missing += 1
                        else:
                            result.db_latency.append(seen_at - sent_at)
        for s in self.swarms:
            s.proc.wait(timeout=60)
        if self.service:
            metrics_sent = sum(n for d in done for n in d["sent_metrics"].values())
            result.checks = check_database(self.dsn, len(self.nodes), t0, metrics_sent)

    def close(self) -> None:
        if self.listener is not None and self.listener.is_alive():
            self.listener.stop(0.0)
        for s in self.swarms:
            s.kill()


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

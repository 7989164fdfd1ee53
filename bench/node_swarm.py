"""Node swarm: N simulated daemons against the real gateway and a minimal Socket.IO echo server.

    .venv/bin/python bench/node_swarm.py [--nodes 2000] [--duration S] [--server daphne|uvicorn|daphne,uvicorn]

What it does, in order:

1. creates its own PostgreSQL database (`aiwm_swarm_tpl`, migrated with `manage.py migrate`), seeds
   it through the ORM with N nodes (plus a few for the warm-up) spread over a few organizations,
   and issues each node its token with `nodes.services.node_issue_token` (the same
   AIWM_NODE_TOKEN_SECRET is given to the server). Each service run gets a fresh clone of it
   (`aiwm_swarm`); everything is dropped at the end unless `--keep-db`;
2. picks an empty Redis database number and flushes it before each run and at the end;
3. for each ASGI server (daphne, uvicorn), runs two targets one after the other in ONE server
   process each, with the same server flags: the real service (`aiwm_project.asgi:application`,
   PostgreSQL and Redis configured) and the baseline `bench/echo_server.py` (python-socketio only);
4. per run: warms the server up with a few daemons (connect, register, telemetry, disconnect),
   reads its idle RSS, then lets the swarm (separate OS processes, python-socketio AsyncClient over
   the websocket transport) connect and register every node with bounded concurrency (the connect
   rate); then every node starts sending `telemetry.heartbeat` every 3 s and `telemetry.metrics`
   every 6 s (ten times the contract's rate, random phase, +-5% jitter per interval, the contract's
   payloads); after `--settle` seconds a steady window of `--duration` seconds is measured;
5. measures on the server process: RSS idle, after connecting and at the end of the window (KiB per
   connection above idle), CPU seconds (utime+stime from /proc, and the event loop's thread apart)
   over the window, and for the service the heartbeat-to-database latency: every heartbeat carries
   its send time (CLOCK_MONOTONIC in microseconds, shared by all processes of the machine) as
   `uptimeSeconds`; a trigger of the benchmark's database NOTIFYs the new value of a sample of
   nodes (`--sample`), which PostgreSQL delivers when the writing transaction commits; a listener
   in this process matches every heartbeat the sampled nodes sent in the window to that time;
6. prints one table (both targets of each server), the goals and whether they are met, and checks
   what the service wrote (every node's heartbeat, every metric point once, every node marked
   disconnected after the swarm left). Exit status 1 when a goal is missed.

The sampled nodes ask for a Socket.IO acknowledgement of their heartbeats, on both targets (the
round trip through the transport and the event loop; the service acknowledges after buffering).
`--service-app`/`--echo-app`/`--service-env` run the experiments of BENCHMARKS.md
(`bench/swarm_experiments.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import queue
import random
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import log_tail, service_env, stop_group  # noqa: E402  (after the path above)

HOST = "127.0.0.1"
NAMESPACE = "/ws/node"
HEARTBEAT_S = 3.0  # the contract's interval is 30 s: ten times its rate
METRICS_S = 6.0  # the contract's is 60 s
JITTER = 0.05  # each interval is drawn from +-5% of its nominal value
WARMUP_NODES = 5
CONNECT_TIMEOUT_S = 60.0  # one daemon's connect + connection.ack + register.ack
PHASE_TIMEOUT_S = 300.0  # the whole ramp, or any wait on a swarm process
GOAL_KIB_PER_CONN = 100.0
GOAL_P99_MS = 100.0
GOAL_CPU_RATIO = 2.0


def log(message: str) -> None:
    print(message, flush=True)


def mono_us(t: float) -> int:
    return int(t * 1_000_000)


# ============================================================================================
# The swarm (runs in its own processes: `node_swarm.py _swarm CONFIG.json`)
# ============================================================================================


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def heartbeat_message(sent_us: int, rng: random.Random) -> dict[str, Any]:
    """The contract's `telemetry.heartbeat`, with the send time as uptimeSeconds."""
    return {
        "type": "telemetry.heartbeat",
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "data": {
            "status": "online",
            "uptimeSeconds": sent_us,
            "cpuUsage": round(rng.uniform(5, 95), 1),
            "ramUsage": rng.randrange(8000, 60000),
            "activeDeployments": rng.randrange(0, 4),
            "gpuStatus": [
                {
                    "deviceId": "GPU-0",
                    "utilization": rng.randrange(0, 101),
                    "memoryUsed": rng.randrange(1000, 24000),
                    "temperature": rng.randrange(40, 85),
                }
            ],
        },
    }


def metrics_message(rng: random.Random) -> dict[str, Any]:
    """The contract's `telemetry.metrics`."""
    used = rng.randrange(8000, 60000)
    gpu_used = rng.randrange(1000, 24000)
    return {
        "type": "telemetry.metrics",
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "data": {
            "cpu": {"usage": round(rng.uniform(5, 95), 1), "cores": 16, "temperature": rng.randrange(40, 80)},
            "ram": {"total": 65536, "used": used, "free": 65536 - used, "usagePercent": round(100 * used / 65536, 1)},
            "disk": {"total": 2000000, "used": 500000, "free": 1500000, "usagePercent": 25},
            "gpu": [
                {
                    "deviceId": "GPU-0",
                    "model": "NVIDIA RTX 4090",
                    "utilization": rng.randrange(0, 101),
                    "memoryTotal": 24576,
                    "memoryUsed": gpu_used,
                    "memoryFree": 24576 - gpu_used,
                    "temperature": rng.randrange(40, 85),
                    "powerUsage": rng.randrange(100, 450),
                    "fanSpeed": rng.randrange(20, 100),
                }
            ],
            "network": {"rxBytes": 1000000000, "txBytes": 500000000, "rxPackets": 5000000, "txPackets": 3000000},
        },
    }


def register_message(node_id: str) -> dict[str, Any]:
    """The contract's `node.register`."""
    return {
        "type": "node.register",
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "data": {
            "hostname": node_id,
            "ipAddress": "10.10.0.101",
            "publicIpAddress": "203.0.113.10",
            "os": "Ubuntu 22.04",
            "cpuCores": 16,
            "cpuModel": "AMD EPYC 7763",
            "ramTotal": 65536,
            "diskTotal": 2000000,
            "gpuDevices": [
                {"deviceId": "GPU-0", "model": "NVIDIA RTX 4090", "memoryTotal": 24576, "memoryFree": 24000}
            ],
            "daemonVersion": "1.0.0",
            "uptimeSeconds": 0,
            "containerRuntime": "docker",
        },
    }


@dataclass
class SwarmStats:
    sent_hb: dict[int, int] = field(default_factory=dict)  # per whole monotonic second
    sent_metrics: dict[int, int] = field(default_factory=dict)
    lag: list[float] = field(default_factory=list)  # send time - scheduled time
    rtt: list[tuple[float, float]] = field(default_factory=list)  # (sent, ack round trip) of sampled heartbeats
    sampled_hb: dict[str, list[int]] = field(default_factory=dict)  # node pk -> uptimeSeconds values sent
    disconnects: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


class SimNode:
    """One daemon: connect, wait for connection.ack, register, then heartbeats and metrics."""

    def __init__(self, cfg: dict[str, Any], session: Any, stats: SwarmStats, seed: int):
        import socketio

        self.pk: str = cfg["pk"]
        self.node_id: str = cfg["nodeId"]
        self.token: str = cfg["token"]
        self.sampled: bool = cfg["sampled"]
        self.stats = stats
        self.rng = random.Random(seed)
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
        if self.sampled:
            stats.sampled_hb[self.pk] = []

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

    async def start(self, url: str) -> tuple[float, float]:
        """Connect and register; returns (connected, registered) monotonic times."""
        await self.client.connect(
            url,
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

    async def telemetry(self, deadline: float) -> None:
        """Heartbeats every 3 s, metrics every 6 s, random phase and jitter; until cancelled or `deadline`."""
        rng, stats = self.rng, self.stats
        now = time.monotonic()
        next_hb = now + rng.uniform(0, HEARTBEAT_S)
        next_metrics = now + rng.uniform(0, METRICS_S)
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
                next_hb += HEARTBEAT_S * rng.uniform(1 - JITTER, 1 + JITTER)
            else:
                body = metrics_message(rng)
                await self.client.emit(body["type"], body, namespace=NAMESPACE)
                stats.sent_metrics[second] = stats.sent_metrics.get(second, 0) + 1
                next_metrics += METRICS_S * rng.uniform(1 - JITTER, 1 + JITTER)

    def _ack_callback(self, sent: float) -> Callable[..., None]:
        def acked(*args: Any) -> None:
            self.stats.rtt.append((sent, time.monotonic() - sent))

        return acked

    async def stop(self) -> None:
        self.stopping = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), 10)


def emit_line(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def _read_command(reader: asyncio.StreamReader, timeout: float) -> str:
    line = await asyncio.wait_for(reader.readline(), timeout)
    if not line:
        raise SystemExit("swarm: the benchmark went away")
    return line.decode().strip()


async def swarm(cfg: dict[str, Any]) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stats = SwarmStats()
    # One HTTP session for every daemon of this process (no pool limit: a websocket holds its connection).
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    nodes = [SimNode(n, session, stats, seed=cfg["seed"] * 100_000 + i) for i, n in enumerate(cfg["nodes"])]
    telemetry: list[asyncio.Task[None]] = []
    try:
        emit_line({"event": "prepared", "pid": os.getpid()})
        if await _read_command(reader, PHASE_TIMEOUT_S) != "go":
            raise SystemExit("swarm: expected go")
        go = time.monotonic()
        hard_deadline = go + cfg["max_seconds"]
        limit = asyncio.Semaphore(cfg["concurrency"])
        failures: dict[str, int] = {}
        times: list[tuple[float, float, float]] = []  # (started, connected, registered)

        up: list[SimNode] = []

        async def bring_up(node: SimNode) -> None:
            async with limit:
                started = time.monotonic()
                try:
                    connected, registered = await asyncio.wait_for(node.start(cfg["url"]), CONNECT_TIMEOUT_S)
                except Exception as exc:
                    kind = type(exc).__name__
                    failures[kind] = failures.get(kind, 0) + 1
                    return
            times.append((started, connected, registered))
            up.append(node)

        await asyncio.wait_for(asyncio.gather(*(bring_up(n) for n in nodes)), PHASE_TIMEOUT_S)
        emit_line({"event": "connected", "go": go, "times": times, "failures": failures})

        # Telemetry starts on every node at once (random phases), after the ramp: the connect rate
        # and the steady state are measured apart (see BENCHMARKS.md for a ramp under telemetry).
        if await _read_command(reader, PHASE_TIMEOUT_S) != "telemetry":
            raise SystemExit("swarm: expected telemetry")
        telemetry.extend(loop.create_task(node.telemetry(hard_deadline)) for node in up)
        emit_line({"event": "telemetry"})

        if await _read_command(reader, cfg["max_seconds"]) != "stop":
            raise SystemExit("swarm: expected stop")
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

        async def close(node: SimNode) -> None:
            async with closing:
                await node.stop()

        await asyncio.wait_for(asyncio.gather(*(close(n) for n in nodes), return_exceptions=True), 120)
        emit_line(done)
    finally:
        for task in telemetry:
            task.cancel()
        await session.close()


def swarm_main(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    asyncio.run(swarm(cfg))


# ============================================================================================
# Orchestration
# ============================================================================================


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds so far of each thread of `pid` (the main thread's id is the pid)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def steady_rss_kib(pid: int, samples: int = 5, interval: float = 0.2) -> int:
    values = []
    for _ in range(samples):
        values.append(rss_kib(pid))
        time.sleep(interval)
    return int(statistics.median(values))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def admin_execute(admin_dsn: str, statement: Any) -> None:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(statement)


def recreate_database(admin_dsn: str, name: str, template: str | None = None) -> None:
    from psycopg import sql

    admin_execute(admin_dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    admin_execute(admin_dsn, create)


def drop_database(admin_dsn: str, name: str) -> None:
    from psycopg import sql

    admin_execute(admin_dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def org_id(index: int) -> str:
    return hashlib.md5(f"aiwm-swarm-org-{index}".encode()).hexdigest()[:24]


def seed_nodes(count: int, orgs: int, warmup: int = 0, sample: int = 0) -> list[dict[str, Any]]:
    """`count` live nodes (`swarm-NNNNN`, then `warmup` more named `warmup-N`) over `orgs`
    organizations (Django set up against the template database), each with a fresh node token
    issued by the service's own `node_issue_token`. `sample` of them, evenly spread, are the timed
    ones: their nodeId ends in `-s` (what the database trigger of NOTIFY_SQL looks for)."""
    step = max(1, count // sample) if sample else 0
    from django.db import connection

    from nodes.models import Node
    from nodes.services import node_issue_token

    nodes = [
        Node(
            owner_org_id=org_id(i % orgs),
            owner_user_id="0" * 24,
            created_by="0" * 24,
            updated_by="0" * 24,
            node_id=(f"swarm-{i:05d}" + ("-s" if step and i % step == 0 and i // step < sample else ""))
            if i < count
            else f"warmup-{i - count}",
            name=f"Swarm node {i}",
            role=["worker"],
            cpu_cores=16,
            ram_total=65536,
            ram_free=32768,
            gpu_devices=[{"deviceId": "GPU-0", "model": "NVIDIA RTX 4090", "memoryTotal": 24576, "memoryFree": 24000}],
        )
        for i in range(count + warmup)
    ]
    Node.objects.bulk_create(nodes, batch_size=500)
    out = []
    for node in nodes:
        token, _ = node_issue_token(node=node, actor_id="bench")
        out.append({"pk": node.pk, "nodeId": node.node_id, "token": token, "sampled": node.node_id.endswith("-s")})
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE nodes_node")
    connection.close()
    return out


def pick_redis_db(url: str) -> int:
    """The highest-numbered empty Redis database (other sessions use the low ones)."""
    import redis

    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{url}/{db}")
        try:
            if client.dbsize() == 0:
                return db
        finally:
            client.close()
    raise RuntimeError("no empty Redis database")


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


class Server:
    """One ASGI server process (daphne or uvicorn) on loopback, killed on exit."""

    def __init__(self, kind: str, app: str, env: dict[str, str], logdir: Path, label: str):
        self.kind, self.app, self.env, self.label = kind, app, env, label
        self.port = free_port()
        self.log_path = logdir / f"{label}-{kind}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        binary = REPO / ".venv" / "bin" / self.kind
        exe = str(binary if binary.exists() else shutil.which(self.kind) or self.kind)
        if self.kind == "daphne":
            # `make run`'s command, on loopback and a free port.
            return [exe, "-b", HOST, "-p", str(self.port), self.app]
        # ARCHITECTURE.md: with uvicorn, turn off WebSocket per-message deflate.
        return [exe, "--host", HOST, "--port", str(self.port), "--ws-per-message-deflate", "false", self.app]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log_path.open("wb") as logfile:
            self.proc = subprocess.Popen(
                self.command(), cwd=REPO, env=self.env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 90.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} server exited ({self.proc.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=1):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.label} server not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        stop_group(self.proc, grace=15)

    def log_tail(self) -> str:
        return log_tail(self.log_path)


class SwarmProcess:
    """One OS process of the swarm, driven by lines on its stdin, answering JSON lines on stdout."""

    def __init__(
        self,
        index: int,
        cfg: dict[str, Any],
        env: dict[str, str],
        logdir: Path,
        *,
        script: str = __file__,
        role: str = "swarm",
        tag: str = "",
    ):
        """`script _<role> <config>` as the child (another benchmark reuses this with its own roles);
        `tag` keeps one run's files apart from another's."""
        self.index = index
        config_path = logdir / f"{role}{tag}-{index}.json"
        config_path.write_text(json.dumps(cfg))
        config_path.chmod(0o600)  # node tokens
        self.stderr_path = logdir / f"{role}{tag}-{index}.err"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, script, f"_{role}", str(config_path)],
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.put(raw.decode())
        self.lines.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\n".encode())
        self.proc.stdin.flush()

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"swarm {self.index}: no {event!r} after {timeout:.0f}s\n{self.err_tail()}") from None
        if line is None:
            raise RuntimeError(f"swarm {self.index} exited ({self.proc.wait()}):\n{self.err_tail()}")
        payload: dict[str, Any] = json.loads(line)
        if payload.get("event") != event:
            raise RuntimeError(f"swarm {self.index}: expected {event!r}, got {line[:200]!r}")
        return payload

    def err_tail(self) -> str:
        return log_tail(self.stderr_path)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


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
    checks: list[str] = field(default_factory=list)

    @property
    def connect_rate(self) -> float:
        return self.connected / self.ramp_s if self.ramp_s else float("nan")

    def kib_per_conn(self, rss: int) -> float:
        return (rss - self.rss_idle) / self.nodes if self.nodes else float("nan")

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.window_s if self.window_s else float("nan")


def pg_backend_cpu(dsn: str, db: str, exclude_pid: int) -> dict[int, float]:
    """CPU seconds so far of the PostgreSQL backends connected to `db` (the server's), but the poller's."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [
            int(r[0])
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() AND pid <> %s",
                [db, exclude_pid],
            ).fetchall()
        ]
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            out[pid] = cpu_seconds(pid)
    return out


async def warm_up(url: str, nodes: list[dict[str, Any]]) -> None:
    """A few daemons connect, register, send telemetry and leave: the server's one-time costs
    (lazy imports, thread pool, database connections) are paid before its idle RSS is read."""
    import aiohttp

    stats = SwarmStats()
    async with aiohttp.ClientSession() as session:
        sims = [SimNode({**n, "sampled": True}, session, stats, seed=i) for i, n in enumerate(nodes)]
        await asyncio.wait_for(asyncio.gather(*(s.start(url) for s in sims)), CONNECT_TIMEOUT_S)
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
    swarms: list[SwarmProcess] = []
    listener: HeartbeatListener | None = None
    try:
        server.start()
        server.wait_ready()
        url = f"http://{HOST}:{server.port}"
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
            swarms.append(SwarmProcess(index, cfg, {**os.environ, "PYTHONPATH": str(REPO)}, logdir))
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


def check_database(dsn: str, expected_nodes: int, since_monotonic: float, metrics_sent: int) -> list[str]:
    """What the service wrote: every swarm node heartbeated into its row, every metric point stored
    once, and every node marked disconnected once the swarm left (waited for, up to 60 s)."""
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
        f"nodes online with a heartbeat written in the window: {beat[0]}/{expected_nodes}",
        f"metric points stored: {points[0]} of {metrics_sent} sent",
        f"nodes still marked websocket-connected {waited:.1f}s after the swarm left: {connected[0]}",
    ]


def ms(x: float) -> str:
    return f"{1000 * x:.1f}"


def print_results(results: list[RunResult], args: argparse.Namespace) -> bool:
    log("")
    log(
        f"{args.nodes} nodes; heartbeat every {HEARTBEAT_S:g} s, metrics every {METRICS_S:g} s; steady window "
        f"{args.duration:g} s after {args.settle:g} s of settling; swarm in {args.swarm_procs} processes; "
        f"ramp concurrency {args.ramp_concurrency}"
    )
    log("")
    log(
        "| server | target | connects/s | connect p50/p99 ms | CPU ms per connect | RSS idle MiB | RSS connected"
        " / end MiB | KiB/conn connected / end | msgs/s in | CPU % | CPU service/echo | PG backends CPU % "
        "| heartbeat->DB p50/p99 ms | ack RTT p50/p99 ms | disconnects, errors |"
    )
    log("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    by = {(r.kind, r.target): r for r in results}
    ok = True
    for r in results:
        echo = by.get((r.kind, "echo"))
        ratio = r.cpu_s / r.window_s / (echo.cpu_s / echo.window_s) if echo and r.target == "service" else None
        pg = f"{100 * r.pg_cpu_s / r.window_s:.1f}" if r.target == "service" else ""
        db = f"{ms(pct(r.db_latency, 0.5))} / {ms(pct(r.db_latency, 0.99))}" if r.target == "service" else ""
        problems = f"{r.disconnects}, {sum(r.errors.values())}"
        if r.connect_failures:
            problems += f", connect failures {r.connect_failures}"
        log(
            f"| {r.kind} | {r.target} | {r.connect_rate:.0f} | {ms(pct(r.connect_latency, 0.5))} / "
            f"{ms(pct(r.connect_latency, 0.99))} | {1000 * r.ramp_cpu_s / max(r.connected, 1):.2f} "
            f"| {r.rss_idle / 1024:.0f} | {r.rss_connected / 1024:.0f} / {r.rss_end / 1024:.0f} "
            f"| {r.kib_per_conn(r.rss_connected):.0f} / {r.kib_per_conn(r.rss_end):.0f} "
            f"| {r.hb_rate + r.metrics_rate:.0f} | {r.cpu_pct:.1f} | {f'**{ratio:.2f}**' if ratio else ''} | {pg} "
            f"| {db} | {ms(pct(r.rtt, 0.5))} / {ms(pct(r.rtt, 0.99))} | {problems} |"
        )
    log("")
    for r in results:
        log(
            f"{r.kind} {r.target}: {r.connected}/{r.nodes} registered in {r.ramp_s:.1f} s; server CPU "
            f"{r.cpu_s:.1f} s in {r.window_s:.1f} s (event loop thread {100 * r.main_thread_cpu_s / r.window_s:.0f} %, "
            f"other threads {100 * (r.cpu_s - r.main_thread_cpu_s) / r.window_s:.0f} %); "
            f"swarm processes CPU {100 * r.swarm_cpu_s / r.window_s:.0f} % "
            f"(of one core, all processes), client send lag p50/p99 {ms(pct(r.lag, 0.5))}/{ms(pct(r.lag, 0.99))} ms; "
            f"heartbeats {r.hb_rate:.0f}/s, metrics {r.metrics_rate:.0f}/s sent in the window"
            + (
                f"; heartbeat->DB matched {len(r.db_latency)}/{r.db_expected} sampled heartbeats "
                f"({r.db_missing} never seen); bench process CPU {100 * r.bench_cpu_s / r.window_s:.0f} %, "
                f"its listening PostgreSQL backend {100 * r.poller_pg_cpu_s / r.window_s:.0f} %"
                if r.target == "service"
                else ""
            )
        )
        log(f"    ack RTT p50 per slice of the window, ms: {', '.join(ms(x) for x in r.rtt_slices)}")
        for line in r.checks:
            log(f"    {line}")
        if r.errors:
            log(f"    error replies: {r.errors}")
    log("")
    for r in results:
        if r.target != "service":
            continue
        echo = by.get((r.kind, "echo"))
        kib = max(r.kib_per_conn(r.rss_connected), r.kib_per_conn(r.rss_end))
        p99 = 1000 * pct(r.db_latency, 0.99)
        goals = [
            (f"all {r.nodes} nodes connected and stayed", r.connected == r.nodes and r.disconnects == 0, ""),
            (f"RSS per connection above idle {kib:.0f} KiB", kib < GOAL_KIB_PER_CONN, f"< {GOAL_KIB_PER_CONN:g}"),
            (f"heartbeat->DB p99 {p99:.1f} ms", p99 < GOAL_P99_MS and r.db_missing == 0, f"< {GOAL_P99_MS:g}"),
        ]
        if echo is not None:
            ratio = (r.cpu_s / r.window_s) / (echo.cpu_s / echo.window_s)
            goals.append((f"CPU service/echo {ratio:.2f}", ratio <= GOAL_CPU_RATIO, f"<= {GOAL_CPU_RATIO:g}"))
        for text, met, bound in goals:
            ok &= met
            log(f"goal  {r.kind:7}  {text} {bound}: {'met' if met else 'MISSED'}")
    return ok


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=2000, help="simulated daemons")
    parser.add_argument("--duration", type=float, default=60.0, help="steady window, seconds per run")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds between the last register and the window")
    parser.add_argument("--server", default="daphne,uvicorn", help="daphne, uvicorn, or both (comma-separated)")
    parser.add_argument("--targets", default="echo,service", help="echo, service, or both (comma-separated)")
    parser.add_argument("--swarm-procs", type=int, default=2, help="OS processes the daemons are spread over")
    parser.add_argument("--ramp-concurrency", type=int, default=100, help="connects in flight (all processes)")
    parser.add_argument("--sample", type=int, default=200, help="nodes whose heartbeats are timed")
    parser.add_argument("--orgs", type=int, default=4, help="organizations the nodes belong to")
    parser.add_argument("--seed", type=int, default=1, help="random seed (phases, jitter, payloads, sample)")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL")
    parser.add_argument("--db", default="aiwm_swarm", help="database to create (and drop) for the run")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the databases at the end")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL (no database number)")
    parser.add_argument("--redis-db", type=int, default=None, help="Redis database number (default: an empty one)")
    parser.add_argument(
        "--service-app",
        default="aiwm_project.asgi:application",
        help="experiment: the service's ASGI application (module:attribute)",
    )
    parser.add_argument(
        "--echo-app",
        default="bench.echo_server:application",
        help="experiment: the baseline's ASGI application (module:attribute)",
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="experiment: an environment variable for the service's server (repeatable)",
    )
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.server.split(",") if s.strip()]
    if not args.servers or any(s not in ("daphne", "uvicorn") for s in args.servers):
        parser.error("--server: daphne, uvicorn or daphne,uvicorn")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not args.targets or any(t not in ("echo", "service") for t in args.targets):
        parser.error("--targets: echo, service or echo,service")
    if not 1 <= args.nodes <= 20000 or not 1 <= args.swarm_procs <= 16 or not 1 <= args.ramp_concurrency <= 2000:
        parser.error("--nodes 1..20000, --swarm-procs 1..16, --ramp-concurrency 1..2000")
    if not 0 < args.duration <= 1800 or not 0 <= args.settle <= 120 or args.sample < 1:
        parser.error("--duration 0..1800 s, --settle 0..120 s, --sample >= 1")
    if not all(c.islower() or c.isdigit() or c == "_" for c in args.db) or args.db in ("postgres", "template1"):
        parser.error("--db: a plain lower-case database name of the benchmark's own")
    return args


@contextlib.contextmanager
def open_files_limit(needed: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # A plain `kill` runs the clean-up too (servers, swarm processes, databases).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    pg = args.pg.rstrip("/")
    admin_dsn = f"{pg}/postgres"
    template = f"{args.db}_tpl"
    dsn = f"{pg}/{args.db}"
    redis_db = args.redis_db if args.redis_db is not None else pick_redis_db(args.redis)
    redis_url = f"{args.redis}/{redis_db}"
    logdir = Path(tempfile.mkdtemp(prefix="aiwm-swarm-"))
    env = service_env(
        dsn=dsn,
        logdir=logdir,
        drop=("AIWM_NODE_RATE", "AIWM_TELEMETRY"),  # the service's defaults are what is measured
        REDIS_URL=redis_url,
        # Redis pub/sub ignores database numbers: a channel of the run's own.
        AIWM_SOCKETIO_CHANNEL=f"aiwm-bench-swarm-{secrets.token_hex(6)}",
        DJANGO_SETTINGS_MODULE="aiwm_project.settings",
    )
    os.environ.clear()
    os.environ.update({**env, "DATABASE_URL": f"{pg}/{template}", "REDIS_URL": ""})

    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    log(f"databases {template}, {args.db} on {pg}; Redis {redis_url}; logs in {logdir}")
    log(
        f"machine: {os.cpu_count()} CPUs, load average {load} at start; Python {platform.python_version()}, "
        f"PostgreSQL {pg_version}; {versions()}"
    )
    results: list[RunResult] = []
    try:
        with open_files_limit(4 * args.nodes + 1024):
            recreate_database(admin_dsn, template)
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=REPO,
                env={**env, "DATABASE_URL": f"{pg}/{template}", "REDIS_URL": ""},
                check=True,
            )
            with psycopg.connect(f"{pg}/{template}", autocommit=True) as conn:
                conn.execute(NOTIFY_SQL)
            import django

            django.setup()
            t_seed = time.monotonic()
            seeded = seed_nodes(args.nodes, args.orgs, WARMUP_NODES, args.sample)
            nodes, warmup_nodes = seeded[: args.nodes], seeded[args.nodes :]
            log(
                f"seeded {args.nodes} nodes (+{WARMUP_NODES} for the warm-up) over {args.orgs} organizations, "
                f"with a node token each, in {time.monotonic() - t_seed:.1f}s"
            )
            # Alternate which target goes first from one server to the next.
            plan = []
            for i, kind in enumerate(args.servers):
                targets = ["echo", "service"] if i % 2 == 0 else ["service", "echo"]
                plan += [(kind, t) for t in targets if t in args.targets]
            for kind, target in plan:
                flush_redis(redis_url)
                if target == "service":
                    recreate_database(admin_dsn, args.db, template=template)
                log(f"{kind} {target}: starting ({time.monotonic() - started:.0f}s into the run)")
                result = run_target(kind, target, args, env, logdir, nodes, warmup_nodes, dsn)
                results.append(result)
                log(
                    f"{kind} {target}: {result.connected}/{result.nodes} connected in {result.ramp_s:.1f}s "
                    f"({result.connect_rate:.0f}/s); RSS {result.rss_idle // 1024} -> {result.rss_connected // 1024}"
                    f" -> {result.rss_end // 1024} MiB; CPU {result.cpu_pct:.1f}%"
                    + (
                        f"; heartbeat->DB p50 {ms(pct(result.db_latency, 0.5))} ms, "
                        f"p99 {ms(pct(result.db_latency, 0.99))} ms"
                        if target == "service"
                        else ""
                    )
                )
        ok = print_results(results, args)
        log(f"\ntotal wall time {time.monotonic() - started:.0f}s")
        return 0 if ok else 1
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with contextlib.suppress(Exception):
            flush_redis(redis_url)
        if args.keep_db:
            log(f"kept databases {template}, {args.db} and logs in {logdir}")
        else:
            for name in (args.db, template):
                drop_database(admin_dsn, name)
            shutil.rmtree(logdir, ignore_errors=True)


def versions() -> str:
    from importlib.metadata import version

    names = ("daphne", "uvicorn", "websockets", "python-socketio", "python-engineio", "aiohttp", "Django")
    return ", ".join(f"{n} {version(n)}" for n in names)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_swarm":
        swarm_main(sys.argv[2])
    else:
        sys.exit(main(sys.argv[1:]))

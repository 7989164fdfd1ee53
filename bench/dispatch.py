"""Execution dispatch: per-step overhead and steps/s of the engine against daemons that answer at once.

    .venv/bin/python bench/dispatch.py [--executions 200] [--shape chain,fanout] [--start paced,burst]
        [--rate 10] [--nodes 20] [--server daphne|uvicorn|daphne,uvicorn] [--web-processes 1|2|1,2]
        [--keep-db] [--trace]

What it does, in order:

1. creates its own PostgreSQL database (`aiwm_dispatch_tpl`, migrated with `manage.py migrate`),
   seeds it through the ORM with `--nodes` nodes of one organization, each with a node token from
   `nodes.services.node_issue_token` (bench/node_swarm.py's `seed_nodes`), and creates every
   execution of the run with `executions.services.execution_create` (3 steps, `model.download` each,
   step k of execution i on node (3i + k) mod N, so consecutive steps are on different daemons):
   "chain" is 0 -> 1 -> 2, "fanout" is 0 -> (1, 2). A trigger of the benchmark's own NOTIFYs when an
   execution leaves `running` (PostgreSQL delivers it at commit). Each server kind gets a fresh
   clone (`aiwm_dispatch`) per web process count; all are dropped at the end unless `--keep-db`;
2. picks an empty Redis database (the highest of 1..13: the test suite uses 14 and 15) and its own
   Socket.IO pub/sub channel;
3. baselines, in the same run: a bare Redis round trip between two processes (LPUSH, BRPOP in the
   other process, LPUSH back, BRPOP), and per server kind a bare python-socketio echo served by the
   same ASGI server: the daemon emits a `command.result`-sized message, the server emits a
   `model.download`-sized command back to the daemon's room, either directly ("echo") or the way
   the node bus (aiwm_project.node_bus) does (from a worker thread through a write-only `socketio.RedisManager`, so
   Redis pub/sub and the server's AsyncRedisManager listener carry it: "echo-redis"). One message
   at a time, `--baseline-gap-ms` apart;
4. per server kind (daphne by default, `make run`'s command; uvicorn as bench/node_swarm.py runs it)
   and per web process count N of `--web-processes` (default 1; `1,2` runs both, one after the
   other, in the same run) starts the production topology: N ASGI server processes of that kind on
   N ports serving `aiwm_project.asgi:application` with the same DATABASE_URL, REDIS_URL, Socket.IO
   channel and secrets (ARCHITECTURE.md's "N daphne processes behind a load balancer"), one Celery
   worker (`--pool solo`) and one Celery beat (the periodic sweep, every
   AIWM_SWEEP_INTERVAL_SECONDS), and the daemons: `--nodes` python-socketio AsyncClients (websocket
   transport) in `--daemon-procs` OS processes, node j connected to web process j mod N (sticky
   load balancing: each daemon on one process), each of which connects, registers, and on every
   command immediately emits `command.ack` then `command.result` success (the command's metadata
   echoed), recording the monotonic time it received the command and the time it sent the result;
5. warms up with `--warmup` executions of each shape, then runs each scenario (shape x start mode)
   with `--executions` fresh executions: "paced" starts them at `--rate` per second (open loop),
   "burst" all at once (`--burst-concurrency` start requests in flight). Starts go through REST
   (`POST /api/executions/:id/start` with a user token), spread round-robin over the N web
   processes. With N > 1 a step's command is then often created on another process than the one
   holding its daemon's socket (a step's command is created where its dependency's result was
   handled, step 0's where its start request went) and reaches the daemon through Redis pub/sub and
   the other process's AsyncRedisManager listener: the report counts those cross-process commands
   and splits the overhead by path. A scenario ends when every execution's terminal status was
   NOTIFYed (bounded wait);
6. measures, all in CLOCK_MONOTONIC (shared by the processes of the machine):
   - overhead per step: the time a daemon received step k's command minus the time the daemon that
     ran k's dependency sent that dependency's result (fan-out: both children from the parent's
     result). It includes the daemon -> server -> daemon transport, which the baselines measure
     alone;
   - start -> first command: from sending the start request to the daemon receiving step 0;
   - steps/s: steps completed / wall time from the first start request to the last execution's
     completion (its NOTIFY);
   - CPU per step of the server processes (summed over the N; each one's CPU and event loop thread
     are printed too), the PostgreSQL backends of the database (those still connected at the end of
     the scenario: the socket threads' and Celery's; a start request's short-lived backend is not
     counted), Celery (worker + beat) and the daemons;
7. checks through the database that every execution is `completed` with all its steps completed,
   that each step's command was stored once, succeeded and was sent once (attempts = 1), that no
   `command.cancel` was issued, that every command reached its step's node exactly once, and that
   no daemon got an `error` reply or was disconnected;
8. prints the command, machine, versions and load average, a Markdown table (one row per server
   kind, web process count and scenario), the baselines and the ratios engine/baseline, with
   several web process counts their steps/s and CPU ratios, and the goals (judged for every server
   kind and web process count). Exit status 1 when a goal is missed or a check fails.

Goals (the issue's): overhead p50 < 20 ms and p99 < 100 ms, judged on the paced scenarios (the
engine's own overhead, not a queue of 600 steps); at least 100 steps/s, judged on the burst
scenarios (what the topology sustains). Every figure of every scenario is printed either way.

Experiments, not the goals' run (the service runs instrumented, as
`bench.dispatch:traced_service_application`, so its figures are a little worse):

- `--trace`: timestamps of the protocol handler, the worker thread's transaction, the outbox's
  after-commit delivery and the Redis PUBLISH, with each message's SQL statement count, SQL time
  and thread CPU time; prints the overhead per segment, and the SQL of one ack, one result and
  one start as the ORM sent it;
- `--profile`: `--trace` plus cProfile (on the thread's CPU clock) of each ack, result and start
  handling, grouped by library; the raw statistics stay in the log directory.

The log directory (server, Celery, daemons, trace) is removed after a run that meets every goal
and check, and kept otherwise (and with `--keep-db`).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import cProfile
import functools
import json
import os
import platform
import pstats
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import log_tail, service_env, stop_group  # noqa: E402  (the repository has to be on sys.path first)
from bench.node_swarm import (  # noqa: E402  (the repository has to be on sys.path first)
    HOST,
    NAMESPACE,
    Server,
    SimNode,
    SwarmProcess,
    SwarmStats,
    _read_command,
    cpu_seconds,
    drop_database,
    emit_line,
    flush_redis,
    iso_now,
    log,
    pct,
    pg_backend_cpu,
    recreate_database,
    seed_nodes,
    thread_cpu_seconds,
)
from bench.node_swarm import versions as swarm_versions  # noqa: E402
from bench.swarm_experiments import LazyApp  # noqa: E402

SERVICE_APP = "aiwm_project.asgi:application"
TRACED_APP = "bench.dispatch:traced_service_application"
ECHO_APPS = {"echo": "bench.dispatch:echo_application", "echo-redis": "bench.dispatch:echo_redis_application"}
COMMAND = "model.download"
SHAPES: dict[str, list[list[int]]] = {"chain": [[], [0], [1]], "fanout": [[], [0], [0]]}
STEPS = 3
GOAL_P50_MS = 20.0
GOAL_P99_MS = 100.0
GOAL_STEPS_PER_S = 100.0
CONNECT_TIMEOUT_S = 60.0
PHASE_TIMEOUT_S = 300.0
STARTUP_TIMEOUT_S = 90.0
NOTIFY_CHANNEL = "dispatch_bench"
# --trace: the SQL text of these calls (1-based, per message type) is written to the trace.
SQL_SAMPLES = (50, 51, 52)


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def p50_p99(values: list[float]) -> str:
    return f"{ms(pct(values, 0.5))} / {ms(pct(values, 0.99))}" if values else "-"


def command_body(execution_id: str, step: int, message_id: str | None = None) -> dict[str, Any]:
    """A `model.download` command as nodes.commands.command_envelope builds it for a step (the echo's reply)."""
    return {
        "type": COMMAND,
        "messageId": message_id or str(uuid.uuid4()),
        "timestamp": iso_now(),
        "resource": {"type": "model", "id": f"bench-model-{step}"},
        "data": {"modelName": f"bench-model-{step}", "url": "https://example.invalid/bench.gguf"},
        "metadata": {"executionId": execution_id, "stepIndex": step, "timeout": 3600, "priority": "normal"},
    }


def answers(command: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The daemon's `command.ack` and `command.result` success for a command, its metadata echoed."""
    original = command.get("messageId")
    metadata: dict[str, Any] = command["metadata"] if isinstance(command.get("metadata"), dict) else {}
    resource: dict[str, Any] = command["resource"] if isinstance(command.get("resource"), dict) else {}
    ack = {
        "type": "command.ack",
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "data": {"originalMessageId": original, "status": "received"},
        "metadata": metadata,
    }
    result = {
        "type": "command.result",
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "data": {
            "originalMessageId": original,
            "status": "success",
            "progress": 100,
            "result": {"downloadPath": f"/models/{resource.get('id', 'model')}"},
        },
        "metadata": metadata,
    }
    return ack, result


# ============================================================================================
# The daemons (their own processes: `dispatch.py _daemons CONFIG.json`)
# ============================================================================================


@dataclass
class DaemonState:
    # [messageId, executionId, stepIndex, nodeId, received, ack sent, result sent]
    records: list[list[Any]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0
    other_events: dict[str, int] = field(default_factory=dict)


class CommandDaemon:
    """bench/node_swarm.py's SimNode (connect, connection.ack, register) that answers every command at once."""

    def __init__(self, cfg: dict[str, Any], session: Any, stats: SwarmStats, state: DaemonState, seed: int):
        self.sim = SimNode({**cfg, "sampled": False}, session, stats, seed)
        self.url: str = cfg["url"]  # the web process this daemon stays on (sticky load balancing)
        self.state = state
        self.sim.client.on(COMMAND, self.on_command, namespace=NAMESPACE)
        self.sim.client.on("*", self.on_other, namespace=NAMESPACE)

    async def on_command(self, command: Any = None) -> None:
        received = time.monotonic()
        if not isinstance(command, dict) or not isinstance(command.get("messageId"), str):
            self.state.other_events["malformed command"] = self.state.other_events.get("malformed command", 0) + 1
            return
        if command["messageId"] in self.state.seen:
            self.state.duplicates += 1  # a daemon recognises a repeat and does not run it again
            return
        self.state.seen.add(command["messageId"])
        ack, result = answers(command)
        client = self.sim.client
        ack_sent = time.monotonic()
        await client.emit(ack["type"], ack, namespace=NAMESPACE)
        result_sent = time.monotonic()
        await client.emit(result["type"], result, namespace=NAMESPACE)
        metadata = command.get("metadata") or {}
        self.state.records.append(
            [
                command["messageId"],
                metadata.get("executionId"),
                metadata.get("stepIndex"),
                self.sim.node_id,
                received,
                ack_sent,
                result_sent,
            ]
        )

    async def on_other(self, event: str, *args: Any) -> None:
        self.state.other_events[event] = self.state.other_events.get(event, 0) + 1


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def daemons(cfg: dict[str, Any]) -> None:
    import aiohttp

    reader = await _stdin_reader()
    stats, state = SwarmStats(), DaemonState()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    nodes = [CommandDaemon(n, session, stats, state, seed=i) for i, n in enumerate(cfg["nodes"])]
    try:
        emit_line({"event": "prepared", "pid": os.getpid()})
        if await _read_command(reader, PHASE_TIMEOUT_S) != "go":
            raise SystemExit("daemons: expected go")
        limit = asyncio.Semaphore(cfg["concurrency"])
        failures: dict[str, int] = {}

        async def bring_up(node: CommandDaemon) -> None:
            async with limit:
                try:
                    await asyncio.wait_for(node.sim.start(node.url), CONNECT_TIMEOUT_S)
                except Exception as exc:
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1

        await asyncio.wait_for(asyncio.gather(*(bring_up(n) for n in nodes)), PHASE_TIMEOUT_S)
        emit_line({"event": "connected", "failures": failures})
        if await _read_command(reader, cfg["max_seconds"]) != "stop":
            raise SystemExit("daemons: expected stop")
        await asyncio.wait_for(asyncio.gather(*(n.sim.stop() for n in nodes), return_exceptions=True), 60)
        emit_line(
            {
                "event": "done",
                "records": state.records,
                "duplicates": state.duplicates,
                "other_events": state.other_events,
                "errors": stats.errors,
                "disconnects": len(stats.disconnects),
            }
        )
    finally:
        await session.close()


async def echo_client(cfg: dict[str, Any]) -> None:
    """One daemon-like client: `samples` round trips through an echo server, one at a time."""
    import aiohttp
    import socketio

    reader = await _stdin_reader()
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
        if await _read_command(reader, PHASE_TIMEOUT_S) != "go":
            raise SystemExit("echo: expected go")
        await client.connect(
            cfg["url"],
            auth={"token": "echo", "nodeId": "echo-node"},
            namespaces=[NAMESPACE],
            transports=["websocket"],
            wait_timeout=CONNECT_TIMEOUT_S,
        )
        rtts: list[float] = []
        try:
            for i in range(cfg["warmup"] + cfg["samples"]):
                _, result = answers(command_body("echo", 1))
                future: asyncio.Future[float] = loop.create_future()
                waiting[result["messageId"]] = future
                sent = time.monotonic()
                await client.emit(result["type"], result, namespace=NAMESPACE)
                received = await asyncio.wait_for(future, 10)
                if i >= cfg["warmup"]:
                    rtts.append(received - sent)
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


# ============================================================================================
# ASGI applications loaded by the server process (baselines and the traced service)
# ============================================================================================


def _build_echo(via_redis: bool) -> Any:
    """python-socketio alone, with the service's server options (gateway/socketio_app.py): on a
    `command.result` it emits a command to the sender's room. `via_redis`: as aiwm_project.node_bus does
    it with REDIS_URL, from a worker thread through a write-only RedisManager, received by this
    server's AsyncRedisManager listener (the service's client manager) and emitted from there."""
    import socketio

    url, channel = os.environ.get("REDIS_URL", ""), os.environ.get("AIWM_SOCKETIO_CHANNEL", "echo")
    manager = socketio.AsyncRedisManager(url, channel=channel) if via_redis else None
    writer = socketio.RedisManager(url, channel=channel, write_only=True) if via_redis else None

    class Echo(socketio.AsyncNamespace):
        async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
            await self.enter_room(sid, f"node.{sid}")

        async def on_disconnect(self, sid: str, *args: Any) -> None:
            return None

        async def trigger_event(self, event: str, *args: Any) -> Any:
            if event != "command.result":
                return await super().trigger_event(event, *args)
            sid, message = args[0], args[1]
            metadata = message.get("metadata") or {}
            command = command_body(str(metadata.get("executionId")), int(metadata.get("stepIndex") or 0) + 1)
            command["metadata"]["echoOf"] = message.get("messageId")
            if writer is not None:
                emit = writer.emit
                await asyncio.to_thread(emit, COMMAND, command, namespace=NAMESPACE, room=f"node.{sid}")
            else:
                await self.emit(COMMAND, command, room=f"node.{sid}")
            return None

    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins="*",
        async_handlers=False,
        max_http_buffer_size=2 * 1024 * 1024,
        logger=False,
        engineio_logger=False,
    )
    sio.register_namespace(Echo(NAMESPACE))
    return socketio.ASGIApp(sio, socketio_path="socket.io")


echo_application = LazyApp(lambda: _build_echo(False))
echo_redis_application = LazyApp(lambda: _build_echo(True))


def _load_service() -> Any:
    from aiwm_project.asgi import application

    return application


def _install_trace() -> None:
    """Wrap the per-step path of the service with timestamps written to AIWM_BENCH_TRACE, one JSON
    array per line: ["handle", event, originalMessageId, t_in, t_out] (the protocol handler, event
    loop), ["apply", type, originalMessageId, t_in, t_out, queries, seconds in SQL, thread CPU
    seconds] (the worker thread's transaction, on_commit delivery included), ["deliver_command",
    parentId, messageId, t_in, t_out] (the outbox's after-commit delivery), ["publish", messageId,
    t_in, t_out] (the Socket.IO RedisManager's PUBLISH), ["deliver", messageId, t_in, t_out]
    (PUBLISH + Channels group_send), ["start", pk, t_in, t_out, queries, seconds in SQL, thread CPU
    seconds] (the REST start action: get_object, execution_start, the serialized answer)."""
    from django.db import connection

    from aiwm_project import node_bus
    from executions.views import ExecutionViewSet
    from gateway import protocol
    from nodes import commands

    out = open(os.environ["AIWM_BENCH_TRACE"], "a", buffering=1)  # noqa: SIM115  (the process's lifetime)
    lock = threading.Lock()
    local = threading.local()

    def write(*fields: Any) -> None:
        line = json.dumps(fields)
        with lock:
            out.write(line + "\n")

    handle, apply, deliver_command = protocol.handle_message, protocol.apply_message, commands.deliver_command
    publish, emitter = node_bus.publish, node_bus._redis_emitter

    def original_id(message: Any) -> Any:
        data = message.get("data") if isinstance(message, dict) else None
        return data.get("originalMessageId") if isinstance(data, dict) else None

    async def traced_handle(conn: Any, event: str, message: Any, raw_size: int | None = None) -> Any:
        t_in = time.monotonic()
        try:
            return await handle(conn, event, message, raw_size)
        finally:
            if event in ("command.ack", "command.result"):
                write("handle", event, original_id(message), t_in, time.monotonic())

    profile_path = os.environ.get("AIWM_BENCH_PROFILE", "")
    sampled: dict[str, int] = {}
    profiles: dict[str, tuple[pstats.Stats, list[int]]] = {}

    def dump_profiles() -> None:
        with lock:
            for label, (stats, _) in profiles.items():
                stats.dump_stats(f"{profile_path}.{label}.prof")
            Path(f"{profile_path}.calls.json").write_text(json.dumps({k: v[1][0] for k, v in profiles.items()}))

    if profile_path:
        atexit.register(dump_profiles)

    def profiled(label: str, func: Callable[[], Any]) -> Any:
        """`func` under cProfile (this thread only), added to the label's statistics, dumped every 100 calls."""
        # The thread's CPU clock: where the CPU goes (the GIL-bound server's limit), not who waits longest.
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        try:
            return func()
        finally:
            profile.disable()
            with lock:
                entry = profiles.get(label)
                if entry is None:
                    profiles[label] = entry = (pstats.Stats(profile), [0])
                else:
                    entry[0].add(profile)
                entry[1][0] += 1
                calls = entry[1][0]
            if calls % 100 == 0:
                dump_profiles()

    def measured(label: str, func: Callable[[], Any], done: Callable[[float, int, float, float], None]) -> Any:
        """Run `func` counting its SQL statements, their time and the thread's CPU time (and with
        AIWM_BENCH_PROFILE, under cProfile)."""
        if profile_path:
            inner = func
            func = lambda: profiled(label, inner)  # noqa: E731
        t_in, cpu_in = time.monotonic(), time.thread_time()
        sql = {"queries": 0, "seconds": 0.0}
        with lock:
            sampled[label] = sampled.get(label, 0) + 1
            keep_text = sampled[label] in SQL_SAMPLES
        texts: list[str] = []

        def timed(execute: Any, statement: Any, params: Any, many: Any, context: Any) -> Any:
            t0 = time.monotonic()
            try:
                return execute(statement, params, many, context)
            finally:
                sql["queries"] += 1
                sql["seconds"] += time.monotonic() - t0
                if keep_text:
                    texts.append(" ".join(str(statement).split()))

        try:
            with connection.execute_wrapper(timed):
                return func()
        finally:
            done(t_in, int(sql["queries"]), sql["seconds"], time.thread_time() - cpu_in)
            if keep_text:
                write("sql", label, texts)

    def traced_apply(conn: Any, message: dict[str, Any]) -> Any:
        local.parent = original_id(message)

        def done(t_in: float, queries: int, sql_s: float, cpu_s: float) -> None:
            local.parent = None
            write("apply", message.get("type"), original_id(message), t_in, time.monotonic(), queries, sql_s, cpu_s)

        return measured(str(message.get("type")), lambda: apply(conn, message), done)

    start_action = ExecutionViewSet.start

    @functools.wraps(start_action)
    def traced_start(self: Any, request: Any, id: str | None = None) -> Any:
        def done(t_in: float, queries: int, sql_s: float, cpu_s: float) -> None:
            write("start", id, t_in, time.monotonic(), queries, sql_s, cpu_s)

        return measured("start", lambda: start_action(self, request, id=id), done)

    def traced_deliver_command(*, command_pk: str, command: Any = None) -> bool:
        t_in = time.monotonic()
        local.delivered = None
        try:
            return deliver_command(command_pk=command_pk, command=command)
        finally:
            write("deliver_command", getattr(local, "parent", None), local.delivered, t_in, time.monotonic())

    def traced_publish(
        org_id: str, node_id: str, event: str, payload: dict[str, Any], connection_id: str | None = None
    ) -> None:
        t_in = time.monotonic()
        local.delivered = payload.get("messageId")
        try:
            publish(org_id, node_id, event, payload, connection_id)
        finally:
            write("deliver", payload.get("messageId"), t_in, time.monotonic())

    class TimedEmitter:
        def __init__(self, manager: Any):
            self.manager = manager

        def emit(self, event: str, payload: Any, **kwargs: Any) -> Any:
            t_in = time.monotonic()
            try:
                return self.manager.emit(event, payload, **kwargs)
            finally:
                write(
                    "publish", payload.get("messageId") if isinstance(payload, dict) else None, t_in, time.monotonic()
                )

    def traced_emitter(url: str, channel: str) -> Any:
        return TimedEmitter(emitter(url, channel))

    protocol.handle_message = traced_handle  # type: ignore[assignment]
    protocol.apply_message = traced_apply
    commands.deliver_command = traced_deliver_command
    node_bus.publish = traced_publish
    node_bus._redis_emitter = traced_emitter  # type: ignore[assignment]
    ExecutionViewSet.start = traced_start  # type: ignore[method-assign,assignment]


traced_service_application = LazyApp(_load_service, _install_trace)


# ============================================================================================
# Orchestration
# ============================================================================================


class Child:
    """A child process (Celery worker, beat, the Redis pong) in its own session, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path):
        self.name = name
        self.log_path = logdir / f"{name}.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            if text in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: no {text!r} in its log after {timeout:.0f}s:\n{self.tail()}")

    def tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        stop_group(self.proc, grace=15)


class ScriptProcess(SwarmProcess):
    """bench/node_swarm.py's line-driven child (send/expect/kill), running one of this script's roles."""

    def __init__(self, role: str, index: int, cfg: dict[str, Any], env: dict[str, str], logdir: Path, tag: str = ""):
        super().__init__(index, cfg, env, logdir, script=__file__, role=role, tag=tag)


class Cleanup:
    """Everything to undo, newest first: children stopped, Redis flushed, databases dropped."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Callable[[], None]]] = []

    def add(self, label: str, action: Callable[[], None]) -> None:
        self.actions.append((label, action))

    def remove(self, label: str) -> None:
        self.actions = [(name, action) for name, action in self.actions if name != label]

    def run(self, label: str | None = None) -> None:
        for name, action in reversed(list(self.actions)):
            if label is not None and name != label:
                continue
            try:
                action()
            except Exception as exc:
                log(f"clean-up {name}: {type(exc).__name__}: {exc}")
            self.remove(name)


class CompletionListener(threading.Thread):
    """The time each execution's terminal status became visible (LISTEN; the trigger NOTIFYs on commit)."""

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        row = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        self.backend_pid = int(row[0])
        self.done: dict[str, tuple[str, float]] = {}
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            for notify in self.conn.notifies(timeout=0.2):
                at = time.monotonic()
                execution_id, _, status = notify.payload.rpartition(" ")
                self.done.setdefault(execution_id, (status, at))

    def wait_for(self, ids: list[str], deadline: float) -> bool:
        while time.monotonic() < deadline:
            if all(i in self.done for i in ids):
                return True
            time.sleep(0.05)
        return all(i in self.done for i in ids)

    def stop(self) -> None:
        self.stopping = True
        self.join(timeout=5)
        self.conn.close()


NOTIFY_SQL = """
CREATE FUNCTION dispatch_bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dispatch_bench', NEW.execution_id || ' ' || NEW.status);
    RETURN NULL;
END $$;
CREATE TRIGGER dispatch_bench_notify AFTER UPDATE ON {table} FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('completed', 'failed', 'timeout', 'cancelled'))
    EXECUTE FUNCTION dispatch_bench_notify();
"""


@dataclass
class Scenario:
    shape: str
    mode: str  # "paced", "burst" or "warmup"
    ids: list[str]  # executionId
    pks: list[str]
    nodes: dict[tuple[str, int], str]  # (executionId, step index) -> the step's nodeId

    @property
    def name(self) -> str:
        return f"{self.shape} {self.mode}"


@dataclass
class ScenarioResult:
    kind: str
    web: int  # web (ASGI server) processes
    scenario: Scenario
    starts: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # executionId -> sent, answered, HTTP
    start_web: dict[str, int] = field(default_factory=dict)  # executionId -> the web process its start went to
    node_web: dict[str, int] = field(default_factory=dict)  # nodeId -> the web process its daemon is connected to
    done: dict[str, tuple[str, float]] = field(default_factory=dict)  # executionId -> status, NOTIFY time
    finished: bool = False
    window_s: float = 0.0
    # Seconds over the scenario per process group ("server" is the N web processes' sum), and
    # "server <i>" per web process.
    cpu: dict[str, float] = field(default_factory=dict)
    loop_threads_s: list[float] = field(default_factory=list)  # per web process: its event loop (main) thread
    steps_done: int = 0
    wall_s: float = float("nan")
    overhead: list[float] = field(default_factory=list)
    # The overhead split by path: the step's command created in the web process that holds its
    # daemon's socket ("same") or in another one (Redis pub/sub to the other's listener, "cross").
    overhead_same: list[float] = field(default_factory=list)
    overhead_cross: list[float] = field(default_factory=list)
    starts_cross: int = 0  # step 0's command created (by the start request) in another web process
    start_latency_same: list[float] = field(default_factory=list)  # start -> 1st command, split the same way
    start_latency_cross: list[float] = field(default_factory=list)
    first_child: list[float] = field(default_factory=list)  # fan-out: the earlier child of each parent
    second_child: list[float] = field(default_factory=list)
    start_latency: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The server kind and its web process count, e.g. "daphne x2"."""
        return f"{self.kind} x{self.web}"

    @property
    def steps_per_s(self) -> float:
        return self.steps_done / self.wall_s if self.wall_s > 0 else float("nan")

    def cpu_ms_per_step(self, name: str) -> float:
        return 1000 * self.cpu.get(name, float("nan")) / self.steps_done if self.steps_done else float("nan")

    @property
    def ok(self) -> bool:
        return self.finished and all(ok for _, ok in self.checks)


@dataclass
class Baseline:
    name: str
    what: str
    rtts: list[float]


REDIS_CLAIM = "aiwm-bench-dispatch-claim"


def pick_redis_db(url: str, highest: int = 13) -> int:
    """The highest-numbered empty Redis database up to `highest` (the test suite flushes 14 and 15),
    claimed with a key so that another benchmark picking at the same time sees it in use."""
    import redis

    for db in range(highest, 0, -1):
        client = redis.Redis.from_url(f"{url}/{db}")
        try:
            if client.dbsize() == 0 and client.set(REDIS_CLAIM, "1", nx=True, ex=6 * 3600):
                return db
        finally:
            client.close()
    raise RuntimeError("no empty Redis database among 1..13")


def reset_redis(url: str) -> None:
    """Flush the run's Redis database and claim it again."""
    import redis

    flush_redis(url)
    client = redis.Redis.from_url(url)
    try:
        client.set(REDIS_CLAIM, "1", ex=6 * 3600)
    finally:
        client.close()


def redis_baseline(url: str, env: dict[str, str], logdir: Path, samples: int, gap: float, cleanup: Cleanup) -> Baseline:
    import redis

    key = f"aiwm-bench-dispatch-{secrets.token_hex(4)}"
    pong = Child("redis-pong", [sys.executable, __file__, "_redis_pong", url, key], env, logdir)
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
    server = Server(kind, ECHO_APPS[target], env, logdir, target)
    label = f"server-{target}-{kind}"
    cleanup.add(label, server.stop)
    try:
        server.start()
        server.wait_ready(STARTUP_TIMEOUT_S)
        cfg = {"url": f"http://{HOST}:{server.port}", "samples": samples, "warmup": 50, "gap": gap}
        client = ScriptProcess("echo", 0, cfg, env, logdir)
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


def create_executions(plan: list[tuple[str, str, int]], nodes: list[dict[str, Any]], org: str) -> list[Scenario]:
    """The run's executions, pending, in the template database (Django set up against it)."""
    from aiwm_project.auth import Principal
    from executions.services import execution_create

    actor = Principal(user_id="0" * 24, org_id=org, username="bench", roles=("organization.owner",))
    scenarios = []
    serial = 0
    for shape, mode, count in plan:
        ids, pks, step_nodes = [], [], {}
        for i in range(count):
            execution_id = f"bench-{shape}-{mode}-{i:04d}"
            steps = [
                {
                    "index": k,
                    "name": f"step {k}",
                    "command": {
                        "type": COMMAND,
                        "resource": {"type": "model", "id": f"bench-model-{k}"},
                        "data": {"modelName": f"bench-model-{k}", "url": "https://example.invalid/bench.gguf"},
                    },
                    "nodeId": nodes[(STEPS * serial + k) % len(nodes)]["nodeId"],
                    "dependsOn": SHAPES[shape][k],
                }
                for k in range(STEPS)
            ]
            data = {
                "execution_id": execution_id,
                "name": f"Dispatch benchmark {shape} {mode} {i}",
                "category": "model",
                "type": f"bench-{shape}",
                "max_retries": 0,
                "steps": steps,
            }
            execution = execution_create(data=data, actor=actor)
            ids.append(execution_id)
            pks.append(execution.pk)
            step_nodes.update({(execution_id, k): step["nodeId"] for k, step in enumerate(execution.steps)})
            serial += 1
        scenarios.append(Scenario(shape, mode, ids, pks, step_nodes))
    return scenarios


async def start_executions(
    token: str, requests: list[tuple[str, str, str]], *, rate: float | None, concurrency: int, timeout: float
) -> dict[str, tuple[float, float, int]]:
    """POST {url}/api/executions/:id/start for each (executionId, pk, url): at `rate` per second (open
    loop), or all at once when `rate` is None. Returns executionId -> (sent, answered, HTTP status or -1)."""
    import aiohttp

    out: dict[str, tuple[float, float, int]] = {}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def start(execution_id: str, pk: str, url: str, at: float) -> None:
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with limit:
                sent = time.monotonic()
                try:
                    async with session.post(f"{url}/api/executions/{pk}/start", data=b"{}", headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    status = -1
                out[execution_id] = (sent, time.monotonic(), status)

        t0 = time.monotonic() + 0.05
        ats = [t0 + (i / rate if rate else 0.0) for i in range(len(requests))]
        await asyncio.gather(*(start(eid, pk, url, at) for (eid, pk, url), at in zip(requests, ats, strict=True)))
    return out


def established(port: int) -> int:
    """TCP connections established to a local listening port (/proc/net/tcp, the server's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def start_web(i: int, web: int) -> int:
    """The web process the i-th start request goes to: round-robin, shifted by one each round (every
    N consecutive requests still go to the N processes once each). Plain round-robin (i mod N)
    would tie it to step 0's daemon: step 0 of execution i is on node 3i mod --nodes, connected to
    process (3i mod nodes) mod N, which for N = 2 and an even node count is i mod 2, the start's
    own process every time, and the start -> command path would never cross processes."""
    return (i + i // web) % web


class ServiceRun:
    """One server kind and web process count N: a fresh database clone, N servers, Celery worker
    and beat, the daemons (spread over the N servers)."""

    def __init__(
        self,
        kind: str,
        web: int,
        args: argparse.Namespace,
        env: dict[str, str],
        logdir: Path,
        nodes: list[dict[str, Any]],
        token: str,
        dsn: str,
        cleanup: Cleanup,
    ):
        self.kind, self.web, self.args, self.env, self.logdir = kind, web, args, env, logdir
        self.nodes, self.token, self.dsn, self.cleanup = nodes, token, dsn, cleanup
        self.label = f"{kind} x{web}"
        self.tag = f"-{kind}-{web}w"  # the log directory's files of this run
        app = TRACED_APP if args.trace else SERVICE_APP
        self.servers: list[Server] = []
        self.trace_paths: list[Path] = []
        self.profile_paths: list[Path] = []
        for i in range(web):
            # Files of each process's own: the lines of several processes appended to one file could
            # interleave, and each process dumps its profile statistics whole.
            self.trace_paths.append(logdir / f"trace{self.tag}-{i}.jsonl")
            self.profile_paths.append(logdir / f"profile{self.tag}-{i}")
            server_env = {**env, "AIWM_BENCH_TRACE": str(self.trace_paths[-1])} if args.trace else dict(env)
            if args.profile:
                server_env["AIWM_BENCH_PROFILE"] = str(self.profile_paths[-1])
            server = Server(kind, app, server_env, logdir, f"service-{i}")
            # free_port() lets its socket go: two calls can name the same port.
            while any(server.port == other.port for other in self.servers):
                server = Server(kind, app, server_env, logdir, f"service-{i}")
            self.servers.append(server)
        # Sticky load balancing: daemon j stays on web process j mod N for the whole run.
        self.node_web = {node["nodeId"]: j % web for j, node in enumerate(nodes)}
        self.worker: Child | None = None
        self.beat: Child | None = None
        self.daemons: list[ScriptProcess] = []
        self.listener: CompletionListener | None = None
        self.urls: list[str] = []

    def start(self) -> None:
        self.cleanup.add("service", self.stop)
        for server in self.servers:
            server.start()
        celery = [sys.executable, "-m", "celery", "-A", "aiwm_project"]
        name = f"dispatch-bench-{secrets.token_hex(3)}@%h"
        self.worker = Child(
            f"celery-worker{self.tag}",
            [*celery, "worker", "--pool", "solo", "-n", name, "-l", "info"],
            self.env,
            self.logdir,
        )
        schedule = str(self.logdir / f"beat-schedule{self.tag}")
        self.beat = Child(
            f"celery-beat{self.tag}", [*celery, "beat", "-l", "info", "--schedule", schedule], self.env, self.logdir
        )
        for server in self.servers:
            server.wait_ready(STARTUP_TIMEOUT_S)
        self.urls = [f"http://{HOST}:{server.port}" for server in self.servers]
        self.worker.wait_log(" ready.", STARTUP_TIMEOUT_S)
        self.beat.wait_log("beat: Starting", STARTUP_TIMEOUT_S)
        nodes = [{**node, "url": self.urls[self.node_web[node["nodeId"]]]} for node in self.nodes]
        procs = self.args.daemon_procs
        for index in range(procs):
            cfg = {"concurrency": max(1, 10 // procs), "max_seconds": 3 * 3600, "nodes": nodes[index::procs]}
            self.daemons.append(
                ScriptProcess("daemons", index, cfg, {**os.environ, "PYTHONPATH": str(REPO)}, self.logdir, self.tag)
            )
        for d in self.daemons:
            d.expect("prepared", 120)
        for d in self.daemons:
            d.send("go")
        for d in self.daemons:
            connected = d.expect("connected", PHASE_TIMEOUT_S + 30)
            if connected["failures"]:
                raise RuntimeError(f"daemons {d.index}: connect failures {connected['failures']}\n{d.err_tail()}")
        # The spread as the servers see it: nothing but the daemons' websockets is connected yet.
        expected = [sum(1 for w in self.node_web.values() if w == i) for i in range(self.web)]
        seen = [established(server.port) for server in self.servers]
        # A warning, not a failure: a stray connection to a port would not make the figures wrong.
        log(
            f"{self.label}: daemons' websockets per web process {' / '.join(map(str, seen))} (expected "
            f"{' / '.join(map(str, expected))})" + ("" if seen == expected else ": WARNING, not the intended spread")
        )
        self.listener = CompletionListener(self.dsn)
        self.listener.start()

    def log_tail(self) -> str:
        return "\n".join(f"--- {server.log_path.name}\n{server.log_tail()}" for server in self.servers)

    def cpu_now(self) -> dict[str, float]:
        assert self.worker is not None and self.beat is not None
        per_server = [cpu_seconds(server.pid) for server in self.servers]
        out = {f"server {i}": seconds for i, seconds in enumerate(per_server)}
        out["server"] = sum(per_server)
        out["celery"] = cpu_seconds(self.worker.pid) + cpu_seconds(self.beat.pid)
        out["daemons"] = sum(cpu_seconds(d.proc.pid) for d in self.daemons)
        out["bench"] = time.process_time()
        return out

    def loop_threads(self) -> list[float]:
        """CPU seconds so far of each server's event loop thread (its main thread: its id is the pid)."""
        return [thread_cpu_seconds(server.pid).get(server.pid, 0.0) for server in self.servers]

    def run(self, scenario: Scenario, rate: float | None) -> ScenarioResult:
        assert self.listener is not None
        result = ScenarioResult(self.kind, self.web, scenario, node_web=self.node_web)
        requests = []
        for i, (execution_id, pk) in enumerate(zip(scenario.ids, scenario.pks, strict=True)):
            result.start_web[execution_id] = start_web(i, self.web)
            requests.append((execution_id, pk, self.urls[result.start_web[execution_id]]))
        n = len(scenario.ids)
        timeout = 120.0 + n * (1 / rate if rate else 0.0) + 0.5 * n
        concurrency = self.args.burst_concurrency if rate is None else 64
        pg0 = pg_backend_cpu(self.dsn, self.args.db, self.listener.backend_pid)
        cpu0, loop0, t0 = self.cpu_now(), self.loop_threads(), time.monotonic()
        result.starts = asyncio.run(
            start_executions(self.token, requests, rate=rate, concurrency=concurrency, timeout=60.0)
        )
        # Only what was started can finish: a refused start request is reported, not waited for.
        started = [i for i in scenario.ids if result.starts.get(i, (0.0, 0.0, -1))[2] == 200]
        result.finished = self.listener.wait_for(started, t0 + timeout) and len(started) == n
        t1 = time.monotonic()
        cpu1, loop1 = self.cpu_now(), self.loop_threads()
        pg1 = pg_backend_cpu(self.dsn, self.args.db, self.listener.backend_pid)
        result.window_s = t1 - t0
        result.cpu = {name: cpu1[name] - cpu0[name] for name in cpu0}
        result.cpu["postgres"] = sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items())
        result.loop_threads_s = [after - before for before, after in zip(loop0, loop1, strict=True)]
        result.done = {i: self.listener.done[i] for i in scenario.ids if i in self.listener.done}
        return result

    def collect(self) -> dict[str, Any]:
        """Stop the daemons; what they recorded, merged."""
        merged: dict[str, Any] = {"records": [], "duplicates": 0, "other_events": {}, "errors": {}, "disconnects": 0}
        for d in self.daemons:
            d.send("stop")
        for d in self.daemons:
            done = d.expect("done", 120)
            merged["records"] += done["records"]
            merged["duplicates"] += done["duplicates"]
            merged["disconnects"] += done["disconnects"]
            for key in ("other_events", "errors"):
                for name, count in done[key].items():
                    merged[key][name] = merged[key].get(name, 0) + count
        for d in self.daemons:
            with contextlib.suppress(subprocess.TimeoutExpired):
                d.proc.wait(timeout=30)
        return merged

    def stop(self) -> None:
        if self.listener is not None and self.listener.is_alive():
            self.listener.stop()
        for d in self.daemons:
            d.kill()
        for child in (self.beat, self.worker):
            if child is not None:
                child.stop()
        for server in self.servers:
            try:
                server.stop()
            except Exception as exc:  # the other servers are still to be stopped
                log(f"stopping {server.log_path.name}: {type(exc).__name__}: {exc}")


def analyse(result: ScenarioResult, by_step: dict[tuple[str, int], list[Any]]) -> None:
    """Latencies of one scenario from the daemons' records (index 4: received, 6: result sent)."""
    deps = SHAPES[result.scenario.shape]
    node_of = result.scenario.nodes  # (executionId, step) -> nodeId
    for execution_id in result.scenario.ids:
        start = result.starts.get(execution_id)
        first = by_step.get((execution_id, 0))
        start_same = result.start_web.get(execution_id) == result.node_web[node_of[(execution_id, 0)]]
        if not start_same:
            result.starts_cross += 1
        if start and first:
            result.start_latency.append(first[4] - start[0])
            (result.start_latency_same if start_same else result.start_latency_cross).append(first[4] - start[0])
        if start and execution_id in result.done:
            result.durations.append(result.done[execution_id][1] - start[0])
        children = []
        for k in range(1, STEPS):
            child, parent = by_step.get((execution_id, k)), by_step.get((execution_id, deps[k][0]))
            if child and parent:
                overhead = child[4] - parent[6]
                result.overhead.append(overhead)
                children.append(overhead)
                # Step k's command is created where its dependency's result was handled: the web
                # process of the dependency's daemon.
                parent_web = result.node_web[node_of[(execution_id, deps[k][0])]]
                same = parent_web == result.node_web[node_of[(execution_id, k)]]
                (result.overhead_same if same else result.overhead_cross).append(overhead)
        if result.scenario.shape == "fanout" and len(children) == 2:
            result.first_child.append(min(children))
            result.second_child.append(max(children))
    sent = [s[0] for s in result.starts.values()]
    done = [d[1] for d in result.done.values()]
    if sent and done and result.finished:
        result.wall_s = max(done) - min(sent)


def check_database(
    dsn: str, results: list[ScenarioResult], by_step: dict[tuple[str, int], list[Any]], daemons: dict[str, Any]
) -> None:
    """What the service stored and delivered, per scenario (appended to each result's checks)."""
    import psycopg

    from executions.models import Execution
    from nodes.models import NodeCommand

    executions, commands = Execution._meta.db_table, NodeCommand._meta.db_table
    received_per_id: dict[str, int] = {}
    for record in daemons["records"]:
        received_per_id[record[0]] = received_per_id.get(record[0], 0) + 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        for r in results:
            ids = r.scenario.ids
            n = len(ids)
            statuses: dict[str, int] = dict(
                conn.execute(
                    f"SELECT status, count(*) FROM {executions} WHERE execution_id = ANY(%s) GROUP BY status",
                    [ids],
                ).fetchall()
            )
            steps = conn.execute(
                f"SELECT count(*) FILTER (WHERE s->>'status' = 'completed'), count(*) "
                f"FROM {executions} e, jsonb_array_elements(e.steps) s WHERE e.execution_id = ANY(%s)",
                [ids],
            ).fetchone()
            assert steps is not None
            r.steps_done = int(steps[0])
            rows = conn.execute(
                f"SELECT type, status, count(*), max(attempts), count(DISTINCT metadata->>'executionId' || ':' || "
                f"(metadata->>'stepIndex')) FROM {commands} WHERE metadata->>'executionId' = ANY(%s) GROUP BY 1, 2",
                [ids],
            ).fetchall()
            command_rows = {(row[0], row[1]): row for row in rows}
            ok_row = command_rows.get((COMMAND, "succeeded"))
            others = {f"{t}/{s}": row[2] for (t, s), row in command_rows.items() if (t, s) != (COMMAND, "succeeded")}
            stored = ok_row[2] if ok_row else 0
            wrong_node = sum(
                1
                for i in ids
                for k in range(STEPS)
                if (rec := by_step.get((i, k))) is not None and rec[3] != r.scenario.nodes[(i, k)]
            )
            mids = [by_step[(i, k)][0] for i in ids for k in range(STEPS) if (i, k) in by_step]
            r.checks = [
                (
                    f"executions completed {statuses.get('completed', 0)}/{n} {dict(statuses)}",
                    statuses.get("completed") == n,
                ),
                (f"steps completed {r.steps_done}/{STEPS * n}", r.steps_done == STEPS * n),
                (
                    f"commands stored and succeeded {stored}/{STEPS * n} (one per step: "
                    f"{ok_row[4] if ok_row else 0}), max attempts {ok_row[3] if ok_row else '-'}, other commands "
                    f"{others or 'none'}",
                    stored == STEPS * n
                    and ok_row is not None
                    and ok_row[4] == stored
                    and ok_row[3] == 1
                    and not others,
                ),
                (
                    f"commands received by the daemons {len(mids)}/{STEPS * n}, each once: "
                    f"{all(received_per_id.get(m) == 1 for m in mids)}, on the step's node: {wrong_node == 0}",
                    len(mids) == STEPS * n and all(received_per_id.get(m) == 1 for m in mids) and wrong_node == 0,
                ),
                (
                    f"start requests answered 200: {sum(1 for s in r.starts.values() if s[2] == 200)}/{n}",
                    all(s[2] == 200 for s in r.starts.values()) and len(r.starts) == n,
                ),
            ]


def trace_breakdown(
    paths: list[Path], results: list[ScenarioResult], by_step: dict[tuple[str, int], list[Any]]
) -> None:
    """Per-segment p50/p99 of the overhead from the traced service (`--trace`), its web processes'
    traces merged (a record names its message, whichever process wrote it)."""
    handle: dict[tuple[str, str], list[float]] = {}
    apply: dict[tuple[str, str], list[float]] = {}
    deliver_command: dict[str, list[float]] = {}
    publish: dict[str, list[float]] = {}
    deliver: dict[str, list[float]] = {}
    starts: dict[str, list[float]] = {}
    sql_texts: dict[tuple[str, int], list[str]] = {}  # (message type, statement count) -> one sample
    for path in paths:
        if not path.exists():
            continue
        with path.open() as lines:
            for line in lines:
                rec = json.loads(line)
                if rec[0] == "handle":
                    handle[(rec[1], rec[2])] = rec[3:]
                elif rec[0] == "apply":
                    apply[(rec[1], rec[2])] = rec[3:]
                elif rec[0] == "deliver_command" and rec[2]:
                    deliver_command[rec[2]] = rec[3:]
                elif rec[0] == "publish":
                    publish[rec[1]] = rec[2:]
                elif rec[0] == "deliver":
                    deliver[rec[1]] = rec[2:]
                elif rec[0] == "start":
                    starts[rec[1]] = rec[2:]
                elif rec[0] == "sql":
                    sql_texts.setdefault((rec[1], len(rec[2])), rec[2])
    segments = [
        "daemon result sent -> handler starts (transport in; waits for the ack's handling)",
        "  of which: the ack's handling (event loop -> thread -> transaction -> back)",
        "handler -> worker thread starts the result's transaction",
        "transaction: ledger, locks, CAS, engine, outbox INSERT, COMMIT",
        "after commit: deliver_command (re-read, node connected?, CAS sent)",
        "Socket.IO RedisManager PUBLISH",
        "PUBLISH done -> daemon receives (pub/sub, listener, emit, websocket)",
        "  Channels group_send after the PUBLISH (holds the thread)",
        "total (the overhead)",
        "SQL statements: the result's handling (count)",
        "  time in them",
        "  worker thread CPU of the result's handling",
        "SQL statements: the ack's handling (count)",
        "  time in them",
        "  worker thread CPU of the ack's handling",
        "REST start action, per execution: wall",
        "  its SQL statements (count)",
        "  its worker thread CPU",
    ]
    counts = {9, 12, 16}
    columns: list[list[list[float]]] = []
    for r in results:
        cols: list[list[float]] = [[] for _ in segments]
        deps = SHAPES[r.scenario.shape]
        for pk in r.scenario.pks:
            if pk in starts:
                t_in, t_out, queries, _, cpu = starts[pk]
                cols[15].append(t_out - t_in)
                cols[16].append(queries)
                cols[17].append(cpu)
        for i in r.scenario.ids:
            for k in range(1, STEPS):
                child, parent = by_step.get((i, k)), by_step.get((i, deps[k][0]))
                if not child or not parent:
                    continue
                pid, cid = parent[0], child[0]
                h, a = handle.get(("command.result", pid)), apply.get(("command.result", pid))
                h_ack, a_ack = handle.get(("command.ack", pid)), apply.get(("command.ack", pid))
                dc, pub, dv = deliver_command.get(cid), publish.get(cid), deliver.get(cid)
                if not (h and a and dc and pub and dv and h_ack and a_ack):
                    continue
                values = [
                    h[0] - parent[6],
                    h_ack[1] - h_ack[0],
                    a[0] - h[0],
                    dc[0] - a[0],
                    pub[0] - dc[0],
                    pub[1] - pub[0],
                    child[4] - pub[1],
                    dv[1] - pub[1],
                    child[4] - parent[6],
                    a[2],
                    a[3],
                    a[4],
                    a_ack[2],
                    a_ack[3],
                    a_ack[4],
                ]
                for col, value in zip(cols, values, strict=False):
                    col.append(value)
        columns.append(cols)

    def cell(index: int, values: list[float]) -> str:
        if not values:
            return "-"
        if index in counts:
            return f"{pct(values, 0.5):.0f} / {pct(values, 0.99):.0f}"
        return p50_p99(values)

    log("\nTraced overhead per step, by segment (p50 / p99 ms; counts: p50 / p99):\n")
    log("| segment | " + " | ".join(f"{r.label} {r.scenario.name}" for r in results) + " |")
    log("|---|" + "---:|" * len(results))
    for index, name in enumerate(segments):
        log(f"| {name} | " + " | ".join(cell(index, col[index]) for col in columns) + " |")
    for (label, count), texts in sorted(sql_texts.items()):
        if label in ("command.result", "command.ack", "start"):
            log(f"\nSQL of one {label} handling ({count} statements, in order; shortened):")
            for text in texts:
                log(f"    {text[:150]}")


PSYCOPG = "psycopg (C: send, wait for PostgreSQL, receive)"
SERVICE_CODE = "the service's own code (nodes, executions, aiwm_project)"
OTHER = "other (stdlib, C functions)"
# (category, markers in the function's file name); the first match wins.
PROFILE_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (PSYCOPG, ("/psycopg",)),
    ("Django SQL compiler (building the SQL)", ("/django/db/models/sql/",)),
    ("Django models, querysets, fields, expressions", ("/django/db/models/",)),
    ("Django DB layer (cursor wrappers, transactions, savepoints)", ("/django/db/",)),
    ("json, datetime, uuid (stdlib)", ("/json/", "/datetime.py", "/_strptime.py", "/uuid.py")),
    ("delivery (socketio, redis, channels, asgiref)", ("/socketio/", "/redis/", "/channels", "/asgiref/")),
    ("DRF", ("/rest_framework/",)),
    ("Django, other", ("/django/",)),
)


def profile_category(filename: str, name: str) -> str:
    if filename == "~":  # a C function: its name says whose
        return PSYCOPG if "psycopg" in name else OTHER
    for category, markers in PROFILE_CATEGORIES:
        if any(m in filename for m in markers):
            return category
    return SERVICE_CODE if filename.startswith(str(REPO)) and "/.venv/" not in filename else OTHER


def profile_summary(prefixes: list[Path]) -> None:
    """Where the worker thread's time goes per message (cProfile's own time per function, grouped),
    the web processes' statistics merged."""
    counts: dict[str, int] = {}
    written = [prefix for prefix in prefixes if Path(f"{prefix}.calls.json").exists()]
    if not written:
        log(f"\nprofile: no statistics written ({', '.join(f'{prefix}.calls.json' for prefix in prefixes)} missing)")
        return
    for prefix in written:
        for label, count in json.loads(Path(f"{prefix}.calls.json").read_text()).items():
            counts[label] = counts.get(label, 0) + count
    files = {
        label: [f"{prefix}.{label}.prof" for prefix in written if Path(f"{prefix}.{label}.prof").exists()]
        for label in ("command.result", "command.ack", "start")
    }
    labels = [label for label, paths in files.items() if paths]
    categories = [PSYCOPG, *(c for c, _ in PROFILE_CATEGORIES[1:]), SERVICE_CODE, OTHER]
    per: dict[str, dict[str, float]] = {}
    top: dict[str, list[tuple[float, str]]] = {}
    for label in labels:
        stats: Any = pstats.Stats(*files[label])
        n = max(1, counts.get(label, 1))
        sums: dict[str, float] = {}
        cumulative = []
        for (filename, line, name), (_, _, tottime, cumtime, _) in stats.stats.items():
            category = profile_category(filename, name)
            sums[category] = sums.get(category, 0.0) + 1000 * tottime / n
            if category == SERVICE_CODE and "/bench/" not in filename:
                cumulative.append((1000 * cumtime / n, f"{Path(filename).relative_to(REPO)}:{line} {name}"))
        per[label] = sums
        top[label] = sorted(cumulative, reverse=True)[:12]
    log(
        "\nProfile of the worker thread's handling (cProfile on the thread's CPU clock; own CPU time per function,"
        f" grouped; ms per message; profiled calls: {counts}):\n"
    )
    log("| where | " + " | ".join(labels) + " |")
    log("|---|" + "---:|" * len(labels))
    for category in categories:
        log(f"| {category} | " + " | ".join(f"{per[label].get(category, 0.0):.2f}" for label in labels) + " |")
    log("| total | " + " | ".join(f"{sum(per[label].values()):.2f}" for label in labels) + " |")
    for label in labels:
        log(f"\n{label}: the service's functions by cumulative time, ms per message")
        for cumtime, where in top[label]:
            log(f"    {cumtime:7.2f}  {where}")


def print_report(
    results: list[ScenarioResult],
    baselines: list[Baseline],
    args: argparse.Namespace,
    daemons: dict[str, dict[str, Any]],
) -> bool:
    log("")
    log(
        f"{args.executions} executions of {STEPS} steps per scenario; {args.nodes} daemons in {args.daemon_procs} "
        f"process(es); paced: {args.rate:g} executions/s ({STEPS * args.rate:g} steps/s offered), burst: all at once, "
        f"{args.burst_concurrency} start requests in flight; warm-up {args.warmup} executions per shape; "
        f"web processes: {', '.join(map(str, args.webs))} (run one after the other; daemons sticky round-robin over "
        f"them, start requests round-robin)"
        + ("; SERVICE TRACED (--trace): not the goals' figures" if args.trace else "")
    )
    log("")
    log(
        "| server | web procs | shape | start | executions | steps done | wall s | steps/s "
        "| overhead p50 / p99 / max ms | fan-out 1st / 2nd child p50 ms | start -> 1st command p50 / p99 ms "
        "| execution p50 / p99 ms | CPU ms/step server / PG / Celery / daemons | server event loop % |"
    )
    log("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s = r.scenario
        fan = f"{ms(pct(r.first_child, 0.5))} / {ms(pct(r.second_child, 0.5))}" if s.shape == "fanout" else ""
        cpu = " / ".join(f"{r.cpu_ms_per_step(name):.1f}" for name in ("server", "postgres", "celery", "daemons"))
        loops = " / ".join(f"{100 * seconds / r.window_s:.0f}" for seconds in r.loop_threads_s)
        log(
            f"| {r.kind} | {r.web} | {s.shape} | {s.mode} | {len(s.ids)} | {r.steps_done} | {r.wall_s:.2f} | "
            f"**{r.steps_per_s:.0f}** | **{p50_p99(r.overhead)}** / {ms(max(r.overhead, default=float('nan')))} "
            f"| {fan} | {p50_p99(r.start_latency)} | {p50_p99(r.durations)} | {cpu} | {loops} |"
        )
    log("")
    log(
        "overhead: a daemon received step k's command minus the time the daemon of k's dependency sent that "
        "dependency's command.result (its command.ack went just before); fan-out: both children from the parent's "
        "result, 1st/2nd = the earlier/later of the two. steps/s: steps completed / (last completion NOTIFY - first "
        "start request); paced runs show the offered rate. start -> 1st command: start request sent -> step 0's "
        "command at the daemon. execution: start request sent -> completion NOTIFY. CPU ms/step: CPU of the "
        "process(es) over the scenario / steps completed (server: the web processes' sum; PG: backends connected "
        "at the scenario's end). server event loop %: of one core, per web process."
    )
    if any(r.web > 1 for r in results):
        log("")
        log("Commands by path: created in the web process holding the daemon's socket (same) or in another (cross):")
        log("")
        log(
            "| server | web procs | shape | start | steps 1-2 cross / all | overhead same p50 / p99 ms "
            "| overhead cross p50 / p99 ms | step 0 cross / all | start -> 1st command same p50 / p99 ms "
            "| start -> 1st command cross p50 / p99 ms |"
        )
        log("|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            s = r.scenario
            log(
                f"| {r.kind} | {r.web} | {s.shape} | {s.mode} "
                f"| {len(r.overhead_cross)} / {len(r.overhead_same) + len(r.overhead_cross)} "
                f"| {p50_p99(r.overhead_same)} | {p50_p99(r.overhead_cross)} | {r.starts_cross} / {len(s.ids)} "
                f"| {p50_p99(r.start_latency_same)} | {p50_p99(r.start_latency_cross)} |"
            )
        log("")
        log(
            "A step's command is created where its dependency's command.result was handled (the web process of "
            "the dependency's daemon), step 0's where its start request went; either way it is PUBLISHed to Redis "
            "and emitted by the listener of the process that holds the daemon's socket."
        )
    if len(args.webs) > 1:
        log("")
        log(f"Web processes {' / '.join(map(str, args.webs))}, the same run (ratio: to {args.webs[0]}):")
        log("")
        log("| server | shape | start | steps/s | ratio | CPU ms/step server | overhead p50 ms |")
        log("|---|---|---|---:|---:|---:|---:|")
        for kind in args.servers:
            for mode in args.modes:
                for shape in args.shapes:
                    row = [r for r in results if (r.kind, r.scenario.mode, r.scenario.shape) == (kind, mode, shape)]
                    if not row:
                        continue
                    first = row[0].steps_per_s or float("nan")
                    rates = " / ".join(f"{r.steps_per_s:.0f}" for r in row)
                    ratios = " / ".join(f"{r.steps_per_s / first:.2f}" for r in row)
                    cpu = " / ".join(f"{r.cpu_ms_per_step('server'):.1f}" for r in row)
                    p50s = " / ".join(ms(pct(r.overhead, 0.5)) for r in row)
                    log(f"| {kind} | {shape} | {mode} | {rates} | {ratios} | {cpu} | {p50s} |")
    log("")
    log("Baselines (one message at a time, the same machine, the same run):")
    log("")
    log("| baseline | what | round trips | p50 ms | p99 ms |")
    log("|---|---|---:|---:|---:|")
    for b in baselines:
        log(f"| {b.name} | {b.what} | {len(b.rtts)} | {ms(pct(b.rtts, 0.5))} | {ms(pct(b.rtts, 0.99))} |")
    if baselines:
        log("")
        log("Engine overhead / baseline of the same server kind, p50 ratio (p99 ratio):")
        log("")
        log("| server | web procs | shape | start | redis | echo | echo-redis |")
        log("|---|---:|---|---|---:|---:|---:|")
        by_name = {base.name: base for base in baselines}
        for r in results:
            cells = []
            for name in ("redis", f"echo ({r.kind})", f"echo-redis ({r.kind})"):
                base = by_name.get(name)
                if base is None:
                    cells.append("-")
                    continue
                p50 = pct(r.overhead, 0.5) / pct(base.rtts, 0.5)
                p99 = pct(r.overhead, 0.99) / pct(base.rtts, 0.99)
                cells.append(f"{p50:.0f}x ({p99:.0f}x)")
            log(f"| {r.kind} | {r.web} | {r.scenario.shape} | {r.scenario.mode} | " + " | ".join(cells) + " |")
    log("")
    ok = True
    for r in results:
        per_web = " / ".join(f"{100 * r.cpu[f'server {i}'] / r.window_s:.0f}" for i in range(r.web))
        loops = " / ".join(f"{100 * seconds / r.window_s:.0f}" for seconds in r.loop_threads_s)
        log(
            f"{r.label} {r.scenario.name}: {r.window_s:.1f} s window; CPU % of one core: server "
            f"{100 * r.cpu['server'] / r.window_s:.0f} (per web process {per_web}; event loop threads {loops}), "
            f"PostgreSQL backends {100 * r.cpu['postgres'] / r.window_s:.0f}, Celery worker+beat "
            f"{100 * r.cpu['celery'] / r.window_s:.0f}, daemons {100 * r.cpu['daemons'] / r.window_s:.0f}, "
            f"bench process (starts, LISTEN) {100 * r.cpu['bench'] / r.window_s:.0f}"
        )
        if not r.finished:
            log(f"    NOT FINISHED: {len(r.done)}/{len(r.scenario.ids)} executions reached a terminal status in time")
        for text, met in r.checks:
            log(f"    check {'ok' if met else 'FAILED'}: {text}")
        ok &= r.ok
    for kind, d in daemons.items():
        fine = d["duplicates"] == 0 and not d["errors"] and d["disconnects"] == 0 and not d["other_events"]
        log(
            f"{kind} daemons: duplicates {d['duplicates']}, error replies {d['errors'] or 'none'}, unexpected "
            f"disconnects {d['disconnects']}, other events {d['other_events'] or 'none'}: {'ok' if fine else 'FAILED'}"
        )
        ok &= fine
    log("")
    paced = [r for r in results if r.scenario.mode == "paced"]
    burst = [r for r in results if r.scenario.mode == "burst"]
    for r in paced:
        p50, p99 = 1000 * pct(r.overhead, 0.5), 1000 * pct(r.overhead, 0.99)
        for text, met, bound in (
            (f"overhead p50 {p50:.1f} ms", p50 < GOAL_P50_MS, f"< {GOAL_P50_MS:g}"),
            (f"overhead p99 {p99:.1f} ms", p99 < GOAL_P99_MS, f"< {GOAL_P99_MS:g}"),
        ):
            log(f"goal  {r.label:10}  {r.scenario.name:13}  {text} {bound}: {'met' if met else 'MISSED'}")
            ok &= met
    for r in burst:
        met = r.steps_per_s >= GOAL_STEPS_PER_S
        log(
            f"goal  {r.label:10}  {r.scenario.name:13}  {r.steps_per_s:.0f} steps/s >= {GOAL_STEPS_PER_S:g}: "
            f"{'met' if met else 'MISSED'}"
        )
        ok &= met
    if not paced:
        log("goal  latency: not judged (no paced scenario; --start paced)")
    if not burst:
        log("goal  steps/s: not judged (no burst scenario; --start burst)")
    return ok


def versions(redis_url: str) -> str:
    from importlib.metadata import version

    import redis

    extra = ("celery", "redis", "channels", "channels-redis", "psycopg")
    client = redis.Redis.from_url(redis_url)
    try:
        server = client.info("server").get("redis_version", "?")
    except Exception:
        server = "?"
    finally:
        client.close()
    return f"{swarm_versions()}, " + ", ".join(f"{n} {version(n)}" for n in extra) + f"; Redis server {server}"


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return "git: unavailable"
    return f"git HEAD {head}, {len(dirty)} changed/untracked paths in the working tree"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--executions", type=int, default=200, help="executions per scenario (shape x start mode)")
    parser.add_argument("--shape", default="chain,fanout", help="chain, fanout, or both (comma-separated)")
    parser.add_argument("--start", default="paced,burst", help="paced, burst, or both (comma-separated)")
    parser.add_argument("--rate", type=float, default=10.0, help="paced: executions started per second")
    parser.add_argument("--burst-concurrency", type=int, default=10, help="burst: start requests in flight")
    parser.add_argument("--nodes", type=int, default=20, help="simulated daemons (nodes)")
    parser.add_argument("--daemon-procs", type=int, default=1, help="OS processes the daemons are spread over")
    parser.add_argument("--server", default="daphne", help="daphne, uvicorn, or both (comma-separated)")
    parser.add_argument(
        "--web-processes",
        default="1",
        help="server processes per server kind (daemons and start requests spread over them); several "
        "comma-separated counts (1,2) run one after the other in the same run",
    )
    parser.add_argument("--warmup", type=int, default=10, help="executions per shape run first, not measured")
    parser.add_argument("--baselines", default="redis,echo,echo-redis", help="redis, echo, echo-redis, or none")
    parser.add_argument("--baseline-samples", type=int, default=1000, help="round trips per baseline")
    parser.add_argument("--baseline-gap-ms", type=float, default=5.0, help="pause between baseline round trips")
    parser.add_argument("--trace", action="store_true", help="experiment: instrument the service, print a breakdown")
    parser.add_argument(
        "--profile", action="store_true", help="experiment: --trace plus cProfile of each message's handling"
    )
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL")
    parser.add_argument("--db", default="aiwm_dispatch", help="database to create (and drop) for the run")
    parser.add_argument("--keep-db", action="store_true", help="keep the databases and the logs")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL (no database number)")
    parser.add_argument("--redis-db", type=int, default=None, help="Redis database number (default: an empty one)")
    args = parser.parse_args(argv)
    args.trace = args.trace or args.profile
    args.shapes = [s.strip() for s in args.shape.split(",") if s.strip()]
    args.modes = [s.strip() for s in args.start.split(",") if s.strip()]
    args.servers = [s.strip() for s in args.server.split(",") if s.strip()]
    try:
        args.webs = [int(w) for w in args.web_processes.split(",") if w.strip()]
    except ValueError:
        parser.error("--web-processes: counts 1..8, comma-separated (1,2)")
    args.baseline_kinds = [s.strip() for s in args.baselines.split(",") if s.strip() and s.strip() != "none"]
    if not args.shapes or any(s not in SHAPES for s in args.shapes):
        parser.error("--shape: chain, fanout or chain,fanout")
    if not args.modes or any(m not in ("paced", "burst") for m in args.modes):
        parser.error("--start: paced, burst or paced,burst")
    if not args.servers or any(s not in ("daphne", "uvicorn") for s in args.servers):
        parser.error("--server: daphne, uvicorn or daphne,uvicorn")
    if not args.webs or any(not 1 <= w <= 8 for w in args.webs) or len(set(args.webs)) != len(args.webs):
        parser.error("--web-processes: counts 1..8, comma-separated (1,2), each once")
    if any(b not in ("redis", "echo", "echo-redis") for b in args.baseline_kinds):
        parser.error("--baselines: redis, echo, echo-redis (comma-separated) or none")
    if not 1 <= args.executions <= 5000 or not 0 <= args.warmup <= 1000 or not 0 < args.rate <= 1000:
        parser.error("--executions 1..5000, --warmup 0..1000, --rate 0..1000")
    if not 1 <= args.nodes <= 2000 or not 1 <= args.daemon_procs <= 8 or not 1 <= args.burst_concurrency <= 200:
        parser.error("--nodes 1..2000, --daemon-procs 1..8, --burst-concurrency 1..200")
    if not 10 <= args.baseline_samples <= 100_000 or not 0 <= args.baseline_gap_ms <= 1000:
        parser.error("--baseline-samples 10..100000, --baseline-gap-ms 0..1000")
    if not all(c.islower() or c.isdigit() or c == "_" for c in args.db) or args.db in ("postgres", "template1"):
        parser.error("--db: a plain lower-case database name of the benchmark's own")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a plain `kill` cleans up too
    started = time.monotonic()
    pg = args.pg.rstrip("/")
    admin_dsn, template, dsn = f"{pg}/postgres", f"{args.db}_tpl", f"{pg}/{args.db}"
    logdir = Path(tempfile.mkdtemp(prefix="aiwm-dispatch-"))
    cleanup = Cleanup()
    ok = False
    try:
        redis_db = args.redis_db if args.redis_db is not None else pick_redis_db(args.redis)
        redis_url = f"{args.redis}/{redis_db}"
        cleanup.add("redis", lambda: flush_redis(redis_url))
        env = service_env(
            dsn=dsn,
            logdir=logdir,
            # The service's defaults are what is measured.
            drop=("AIWM_NODE_RATE", "AIWM_COMMAND_", "AIWM_SWEEP", "CELERY_", "LOG_LEVEL"),
            REDIS_URL=redis_url,
            # Redis pub/sub ignores database numbers: a channel of the run's own.
            AIWM_SOCKETIO_CHANNEL=f"aiwm-bench-dispatch-{secrets.token_hex(6)}",
            DJANGO_SETTINGS_MODULE="aiwm_project.settings",
            PYTHONUNBUFFERED="1",
        )
        os.environ.clear()
        os.environ.update({**env, "DATABASE_URL": f"{pg}/{template}", "REDIS_URL": ""})

        import psycopg

        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            pg_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        log(f"command: .venv/bin/python bench/dispatch.py {shlex.join(argv)}".rstrip())
        log(f"databases {template}, {args.db} on {pg}; Redis {redis_url}; logs in {logdir}")
        log(
            f"machine: {os.cpu_count()} CPUs, load average {load} at start; Python {platform.python_version()}, "
            f"PostgreSQL {pg_version}; {versions(redis_url)}; {git_state()}"
        )

        cleanup.add("template", lambda: drop_database(admin_dsn, template))
        recreate_database(admin_dsn, template)
        t_setup = time.monotonic()
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=REPO,
            env={**env, "DATABASE_URL": f"{pg}/{template}", "REDIS_URL": ""},
            check=True,
            timeout=600,
        )
        import django

        django.setup()
        from django.db import connection

        from aiwm_project.auth import issue_user_token
        from bench.node_swarm import org_id
        from executions.models import Execution

        with psycopg.connect(f"{pg}/{template}", autocommit=True) as conn:
            conn.execute(NOTIFY_SQL.format(table=Execution._meta.db_table).encode())
        nodes = seed_nodes(args.nodes, 1)
        org = org_id(0)
        plan = [(shape, "warmup", args.warmup) for shape in args.shapes if args.warmup]
        plan += [(shape, mode, args.executions) for mode in args.modes for shape in args.shapes]
        scenarios = create_executions(plan, nodes, org)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        connection.close()
        token = issue_user_token(
            user_id="0" * 24, username="bench", org_id=org, roles=["organization.owner"], expires_in=6 * 3600
        )
        log(
            f"template migrated and seeded in {time.monotonic() - t_setup:.1f}s: {args.nodes} nodes with tokens, "
            f"{sum(len(s.ids) for s in scenarios)} pending executions "
            f"({', '.join(f'{s.name} {len(s.ids)}' for s in scenarios)})"
        )

        gap = args.baseline_gap_ms / 1000
        baselines: list[Baseline] = []
        if "redis" in args.baseline_kinds:
            baselines.append(redis_baseline(redis_url, env, logdir, args.baseline_samples, gap, cleanup))
            log(f"baseline {baselines[-1].name}: p50 {ms(pct(baselines[-1].rtts, 0.5))} ms")
        for kind in args.servers:
            for target in ("echo", "echo-redis"):
                if target in args.baseline_kinds:
                    reset_redis(redis_url)
                    baselines.append(echo_baseline(kind, target, env, logdir, args.baseline_samples, gap, cleanup))
                    log(f"baseline {baselines[-1].name}: p50 {ms(pct(baselines[-1].rtts, 0.5))} ms")

        results: list[ScenarioResult] = []
        daemon_reports: dict[str, dict[str, Any]] = {}
        # Every (server kind, web process count) gets its own topology and database clone; the
        # scenarios' executions are the template's, so each run starts the same pending ones.
        for kind, web in [(kind, web) for kind in args.servers for web in args.webs]:
            reset_redis(redis_url)
            cleanup.add("database", lambda: drop_database(admin_dsn, args.db))
            recreate_database(admin_dsn, args.db, template=template)
            run = ServiceRun(kind, web, args, env, logdir, nodes, token, dsn, cleanup)
            label = run.label
            log(f"{label}: starting {web} server process(es), Celery worker and beat, {args.nodes} daemons")
            run.start()
            run_results = []
            for s in scenarios:
                if s.mode == "warmup":
                    warm = run.run(s, args.rate)
                    log(f"{label}: warm-up {s.shape}: {len(warm.done)}/{len(s.ids)} done")
                    if not warm.finished or any(status != "completed" for status, _ in warm.done.values()):
                        statuses = sorted({str(v[2]) for v in warm.starts.values()})
                        raise RuntimeError(
                            f"{label}: the warm-up did not complete (start answers {statuses}); server logs:\n"
                            + run.log_tail()
                        )
                    continue
                time.sleep(1.0)
                r = run.run(s, args.rate if s.mode == "paced" else None)
                run_results.append(r)
                log(
                    f"{label}: {s.name}: {len(r.done)}/{len(s.ids)} executions done in {r.window_s:.1f}s"
                    + ("" if r.finished else " (NOT all finished in time)")
                )
            report = run.collect()
            daemon_reports[label] = report
            by_step: dict[tuple[str, int], list[Any]] = {}
            for rec in report["records"]:
                by_step.setdefault((rec[1], rec[2]), rec)
            for r in run_results:
                analyse(r, by_step)
            check_database(dsn, run_results, by_step, report)
            results += run_results
            cleanup.run("service")
            if args.trace:
                trace_breakdown(run.trace_paths, run_results, by_step)
            if args.profile:
                profile_summary(run.profile_paths)
            if not args.keep_db:
                cleanup.run("database")
        ok = print_report(results, baselines, args, daemon_reports)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        log(f"\nload average {load} at the end; total wall time {time.monotonic() - started:.0f}s")
        return 0 if ok else 1
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if args.keep_db:
            cleanup.remove("template")
            cleanup.remove("database")
        cleanup.run()
        if args.keep_db or not ok:
            kept = f"databases {template}, {args.db} and " if args.keep_db else ""
            log(f"kept {kept}logs in {logdir}")
        else:
            shutil.rmtree(logdir, ignore_errors=True)


def _role_main(role: str, config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    asyncio.run(daemons(cfg) if role == "_daemons" else echo_client(cfg))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] in ("_daemons", "_echo"):
        _role_main(sys.argv[1], sys.argv[2])
    elif len(sys.argv) > 3 and sys.argv[1] == "_redis_pong":
        redis_pong(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main(sys.argv[1:]))

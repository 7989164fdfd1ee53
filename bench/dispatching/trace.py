"""The instrumented service (`--trace`, `--profile`): `aiwm_project.asgi:application` with the per-step
path wrapped in timestamps, served as `bench.dispatching.trace:traced_service_application`.

What it wraps (TRACED, resolved by `--smoke` before anything starts, so a rename in the service
fails there by name; `--smoke` also runs traced and checks every wrapper wrote its records):
the protocol handler and the worker thread's transaction (gateway.protocol), the outbox's
after-commit delivery (nodes.commands.deliver_command), the node bus's publish and its Socket.IO
Redis emitter (aiwm_project.node_bus), and the REST start action (executions.views).
"""

from __future__ import annotations

import atexit
import cProfile
import functools
import json
import os
import pstats
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness.apps import LazyApp

TRACED = (
    "gateway.protocol.handle_message",
    "gateway.protocol.apply_message",
    "nodes.commands.deliver_command",
    "aiwm_project.node_bus.publish",
    "aiwm_project.node_bus._redis_emitter",
    "executions.views.ExecutionViewSet.start",
)
# The record kinds the wrappers write (trace_report reads them; --smoke wants every one).
RECORDS = ("handle", "apply", "deliver_command", "publish", "deliver", "start", "sql")
# --trace: the SQL text of these calls (1-based, per message type) is written to the trace (a
# smoke run, with fewer calls, names earlier ones).
SQL_SAMPLES = tuple(int(n) for n in os.environ.get("AIWM_BENCH_SQL_SAMPLES", "50,51,52").split(","))


def _load_service() -> Any:
    from aiwm_project.asgi import application

    return application


def install_trace() -> None:
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

    def traced_deliver_command(*, command_pk: str, command: Any = None, connection_hint: str | None = None) -> bool:
        t_in = time.monotonic()
        local.delivered = None
        try:
            return deliver_command(command_pk=command_pk, command=command, connection_hint=connection_hint)
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


traced_service_application = LazyApp(_load_service, install_trace)

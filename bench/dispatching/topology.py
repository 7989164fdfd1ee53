"""The production topology of one dispatch run: N ASGI server processes of one kind, a Celery worker
and beat, the daemons (spread over the N servers), and the listener of execution completions."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.dispatching.scenarios import NOTIFY_CHANNEL, Scenario, ScenarioResult, start_executions, start_web
from bench.harness.daemon import PHASE_TIMEOUT_S
from bench.harness.databases import pg_backend_cpu
from bench.harness.env import REPO
from bench.harness.processes import Child, Cleanup, LineProcess
from bench.harness.procfs import cpu_seconds, established, thread_cpu_seconds
from bench.harness.report import log
from bench.harness.servers import SERVICE_APP, Server, kind_for_app

TRACED_APP = "bench.dispatching.trace:traced_service_application"
STARTUP_TIMEOUT_S = 90.0


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
            if args.smoke:
                server_env["AIWM_BENCH_SQL_SAMPLES"] = "2,3,4"  # a smoke run's few messages
            server = Server(kind_for_app(kind, app), app, server_env, logdir, f"service-{i}")
            # free_port() lets its socket go: two calls can name the same port.
            while any(server.port == other.port for other in self.servers):
                server = Server(kind_for_app(kind, app), app, server_env, logdir, f"service-{i}")
            self.servers.append(server)
        # Sticky load balancing: daemon j stays on web process j mod N for the whole run.
        self.node_web = {node["nodeId"]: j % web for j, node in enumerate(nodes)}
        self.worker: Child | None = None
        self.beat: Child | None = None
        self.daemons: list[LineProcess] = []
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
        self.urls = [server.url for server in self.servers]
        self.worker.wait_log(" ready.", STARTUP_TIMEOUT_S)
        self.beat.wait_log("beat: Starting", STARTUP_TIMEOUT_S)
        nodes = [{**node, "url": self.urls[self.node_web[node["nodeId"]]]} for node in self.nodes]
        procs = self.args.daemon_procs
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for index in range(procs):
            cfg = {"concurrency": max(1, 10 // procs), "max_seconds": 3 * 3600, "nodes": nodes[index::procs]}
            self.daemons.append(
                LineProcess("bench.dispatching.daemons", "daemons", index, cfg, env, self.logdir, self.tag)
            )
        for d in self.daemons:
            d.expect("prepared", 120)
        for d in self.daemons:
            d.send("go")
        for d in self.daemons:
            connected = d.expect("connected", PHASE_TIMEOUT_S + 30)
            if connected["failures"]:
                raise RuntimeError(
                    f"daemons {d.index}: connect failures {connected['failures']}\n{d.err_tail()}\n"
                    f"server logs:\n{self.log_tail()}"
                )
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

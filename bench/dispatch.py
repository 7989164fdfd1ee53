"""Execution dispatch: per-step overhead and steps/s of the engine against daemons that answer at once.

    .venv/bin/python bench/dispatch.py [--executions 200] [--shape chain,fanout] [--start paced,burst]
        [--rate 10] [--nodes 20] [--server serve|daphne|uvicorn|serve,daphne] [--web-processes 1|2|1,2]
        [--keep-db] [--trace]
    .venv/bin/python bench/dispatch.py --smoke    # seconds: every step and check, the figures not judged

What it does, in order:

1. creates its own PostgreSQL database (`aiwm_dispatch_tpl`, migrated with `manage.py migrate`),
   seeds it through the ORM with `--nodes` nodes of one organization, each with a node token from
   `nodes.services.node_issue_token` (`bench.harness.fleet.seed_nodes`), and creates every
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
4. per server kind (`serve` by default: `manage.py serve`, `make run`'s command; daphne; plain uvicorn;
   `--trace`/`--profile` run the instrumented service on plain uvicorn where `serve` was asked, since
   `serve` hosts only the service's own application, and so do the echo baselines of `serve`)
   and per web process count N of `--web-processes` (default 1; `1,2` runs both, one after the
   other, in the same run) starts the production topology: N ASGI server processes of that kind on
   N ports serving `aiwm_project.asgi:application` with the same DATABASE_URL, REDIS_URL, Socket.IO
   channel and secrets (ARCHITECTURE.md's "N web processes behind a load balancer"), one Celery
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
`bench.dispatching.trace:traced_service_application`, so its figures are a little worse):

- `--trace`: timestamps of the protocol handler, the worker thread's transaction, the outbox's
  after-commit delivery and the Redis PUBLISH, with each message's SQL statement count, SQL time
  and thread CPU time; prints the overhead per segment, and the SQL of one ack, one result and
  one start as the ORM sent it;
- `--profile`: `--trace` plus cProfile (on the thread's CPU clock) of each ack, result and start
  handling, grouped by library; the raw statistics stay in the log directory.

The log directory (server, Celery, daemons, trace) is removed after a run that meets every goal
and check, and kept otherwise (and with `--keep-db`).

This file is the command line and the order of the steps; the steps are in bench/dispatching/
(scenarios, topology, daemons, baselines, the traced service, checks, report) and bench/harness/
(what every benchmark shares). `--smoke` runs 3 executions per scenario on 4 daemons, the
baselines at 10 round trips, 2 web processes, traced and profiled (`--trace --profile`); it judges
the checks (every execution completed, every command stored and delivered once, every daemon
fine, every trace wrapper called, the profiles written) and not the goals.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# After the path above: the repository has to be on sys.path first.
from bench.dispatching.baselines import Baseline, echo_baseline, redis_baseline  # noqa: E402
from bench.dispatching.checks import check_database  # noqa: E402
from bench.dispatching.messages import SHAPES  # noqa: E402
from bench.dispatching.report import print_report, run_versions  # noqa: E402
from bench.dispatching.scenarios import NOTIFY_SQL, Scenario, ScenarioResult, analyse, create_executions  # noqa: E402
from bench.dispatching.topology import ServiceRun  # noqa: E402
from bench.dispatching.trace import TRACED  # noqa: E402
from bench.dispatching.trace_report import profile_summary, trace_breakdown, trace_checks  # noqa: E402
from bench.harness.cli import add_database_flags, add_redis_flags, check_database_name  # noqa: E402
from bench.harness.databases import (  # noqa: E402
    close_django_connections,
    drop_database,
    migrate,
    recreate_database,
    server_version,
)
from bench.harness.env import service_env, use_env  # noqa: E402
from bench.harness.fleet import org_id, seed_nodes  # noqa: E402
from bench.harness.processes import Cleanup  # noqa: E402
from bench.harness.redis_db import flush_redis, reset_redis, run_redis_url  # noqa: E402
from bench.harness.report import git_state, load_average, log, machine_line  # noqa: E402
from bench.harness.smoke import Check, add_smoke_flag, judge, require  # noqa: E402
from bench.harness.stats import ms, pct  # noqa: E402

SMOKE = {
    "executions": 3,
    "rate": 20.0,
    "nodes": 4,
    "warmup": 1,
    "baseline_samples": 10,
    "web_processes": "2",
    # daphne: the profile statistics are dumped at exit, which a SIGTERMed plain uvicorn (what the
    # traced service runs on in place of serve) did not get to in the smoke's short run.
    "server": "daphne",
    "trace": True,
    "profile": True,
    "db": "aiwm_smoke_dispatch",
    "redis_db": 11,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--executions", type=int, default=200, help="executions per scenario (shape x start mode)")
    parser.add_argument("--shape", default="chain,fanout", help="chain, fanout, or both (comma-separated)")
    parser.add_argument("--start", default="paced,burst", help="paced, burst, or both (comma-separated)")
    parser.add_argument("--rate", type=float, default=10.0, help="paced: executions started per second")
    parser.add_argument("--burst-concurrency", type=int, default=10, help="burst: start requests in flight")
    parser.add_argument("--nodes", type=int, default=20, help="simulated daemons (nodes)")
    parser.add_argument("--daemon-procs", type=int, default=1, help="OS processes the daemons are spread over")
    parser.add_argument(
        "--server", default="serve", help="serve (make run's server), daphne, uvicorn, or several (comma-separated)"
    )
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
    add_database_flags(parser, "aiwm_dispatch", "keep the databases and the logs")
    add_redis_flags(parser)
    add_smoke_flag(parser, argv, SMOKE, "3 executions per scenario on 4 daemons, 2 web processes, traced and profiled")
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
    if not args.servers or any(s not in ("serve", "daphne", "uvicorn") for s in args.servers):
        parser.error("--server: serve, daphne, uvicorn, comma-separated")
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
    check_database_name(parser, args.db)
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
        redis_url = run_redis_url(args.redis, args.redis_db)
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
        use_env(env, DATABASE_URL=f"{pg}/{template}", REDIS_URL="")
        log(f"command: .venv/bin/python bench/dispatch.py {shlex.join(argv)}".rstrip())
        log(f"databases {template}, {args.db} on {pg}; Redis {redis_url}; logs in {logdir}")
        log(machine_line(server_version(admin_dsn), run_versions(redis_url), git_state()))

        cleanup.add("template", lambda: drop_database(admin_dsn, template))
        nodes, scenarios, token = prepare_template(args, env, admin_dsn, f"{pg}/{template}")
        baselines = run_baselines(args, env, logdir, redis_url, cleanup)

        results: list[ScenarioResult] = []
        daemon_reports: dict[str, dict[str, Any]] = {}
        smoke_checks: list[Check] = []
        # Every (server kind, web process count) gets its own topology and database clone; the
        # scenarios' executions are the template's, so each run starts the same pending ones.
        for kind, web in [(kind, web) for kind in args.servers for web in args.webs]:
            reset_redis(redis_url)
            cleanup.add("database", lambda: drop_database(admin_dsn, args.db))
            recreate_database(admin_dsn, args.db, template=template)
            run = ServiceRun(kind, web, args, env, logdir, nodes, token, dsn, cleanup)
            run_results, report, by_step = run_scenarios(run, scenarios, args)
            daemon_reports[run.label] = report
            check_database(dsn, run_results, by_step, report)
            results += run_results
            cleanup.run("service")
            if args.trace:
                trace_breakdown(run.trace_paths, run_results, by_step)
            if args.profile:
                profile_summary(run.profile_paths)
            if args.smoke and args.trace:
                smoke_checks += [
                    (f"{run.label}: {text}", held)
                    for text, held in trace_checks(run.trace_paths, run.profile_paths if args.profile else [])
                ]
            if not args.keep_db:
                cleanup.run("database")
        ok = print_report(results, baselines, args, daemon_reports)
        if smoke_checks:
            log("\nthe traced service (--smoke):")
            ok = judge(smoke_checks) and ok
        log(f"\nload average {load_average()} at the end; total wall time {time.monotonic() - started:.0f}s")
        return 0 if ok else 1
    finally:
        close_django_connections()
        if args.keep_db:
            cleanup.remove("template")
            cleanup.remove("database")
        cleanup.run()
        if args.keep_db or not ok:
            kept = f"databases {template}, {args.db} and " if args.keep_db else ""
            log(f"kept {kept}logs in {logdir}")
        else:
            shutil.rmtree(logdir, ignore_errors=True)


def prepare_template(
    args: argparse.Namespace, env: dict[str, str], admin_dsn: str, template_dsn: str
) -> tuple[list[dict[str, Any]], list[Scenario], str]:
    """The template database migrated and seeded (Django set up against it): the nodes with their
    tokens, every scenario's pending executions, the completion trigger; and a user token."""
    import psycopg

    recreate_database(admin_dsn, template_dsn.rsplit("/", 1)[1])
    t_setup = time.monotonic()
    migrate(template_dsn, env)
    import django

    django.setup()
    from django.db import connection

    from aiwm_project.auth import issue_user_token
    from executions.models import Execution

    if args.trace:
        require(TRACED, "--trace (bench/dispatching/trace.py)")
    with psycopg.connect(template_dsn, autocommit=True) as conn:
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
    return nodes, scenarios, token


def run_baselines(
    args: argparse.Namespace, env: dict[str, str], logdir: Path, redis_url: str, cleanup: Cleanup
) -> list[Baseline]:
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
    return baselines


def run_scenarios(
    run: ServiceRun, scenarios: list[Scenario], args: argparse.Namespace
) -> tuple[list[ScenarioResult], dict[str, Any], dict[tuple[str, int], list[Any]]]:
    """Start the topology, run the warm-ups then every scenario on it, stop the daemons; returns the
    scenarios' results (analysed), the daemons' merged report and their records by (execution, step)."""
    label = run.label
    log(f"{label}: starting {run.web} server process(es), Celery worker and beat, {args.nodes} daemons")
    run.start()
    results = []
    for s in scenarios:
        if s.mode == "warmup":
            warm = run.run(s, args.rate)
            log(f"{label}: warm-up {s.shape}: {len(warm.done)}/{len(s.ids)} done")
            if not warm.finished or any(status != "completed" for status, _ in warm.done.values()):
                statuses = sorted({str(v[2]) for v in warm.starts.values()})
                raise RuntimeError(
                    f"{label}: the warm-up did not complete (start answers {statuses}); server logs:\n" + run.log_tail()
                )
            continue
        time.sleep(1.0)
        r = run.run(s, args.rate if s.mode == "paced" else None)
        results.append(r)
        log(
            f"{label}: {s.name}: {len(r.done)}/{len(s.ids)} executions done in {r.window_s:.1f}s"
            + ("" if r.finished else " (NOT all finished in time)")
        )
    report = run.collect()
    by_step: dict[tuple[str, int], list[Any]] = {}
    for rec in report["records"]:
        by_step.setdefault((rec[1], rec[2]), rec)
    for r in results:
        analyse(r, by_step)
    return results, report, by_step


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

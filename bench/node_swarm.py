"""Node swarm: N simulated daemons against the real gateway and a minimal Socket.IO echo server.

    .venv/bin/python bench/node_swarm.py [--nodes 2000] [--duration S] [--server serve|daphne|uvicorn|serve,daphne]
    .venv/bin/python bench/node_swarm.py --smoke    # seconds: every step and check, the figures not judged

What it does, in order:

1. creates its own PostgreSQL database (`aiwm_swarm_tpl`, migrated with `manage.py migrate`), seeds
   it through the ORM with N nodes (plus a few for the warm-up) spread over a few organizations,
   and issues each node its token with `nodes.services.node_issue_token` (the same
   AIWM_NODE_TOKEN_SECRET is given to the server). Each service run gets a fresh clone of it
   (`aiwm_swarm`); everything is dropped at the end unless `--keep-db`;
2. picks an empty Redis database (the highest of 1..13: the test suite uses 14 and 15) and flushes it
   before each run and at the end;
3. for each ASGI server (`serve` by default: `manage.py serve`; daphne; plain uvicorn; the echo
   baseline of `serve` runs on plain uvicorn, which `serve` configures), runs two targets one
   after the other in ONE server process each, with the same server flags: the real service
   (`aiwm_project.asgi:application`, PostgreSQL and Redis configured) and the baseline
   `bench/echo_server.py` (python-socketio only);
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

This file is the command line and the order of the steps; the steps are in bench/swarm/ (the
swarm's processes, one run, the report) and bench/harness/ (what every benchmark shares).
`--smoke` runs 20 nodes on `serve` for a 3 s window; it judges the checks (every node up and
staying, telemetry acknowledged, every sampled heartbeat in the database, what the service wrote)
and not the goals, and also exercises every variant of bench/swarm_experiments.py.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# After the path above: the repository has to be on sys.path first.
from bench.harness.cli import add_database_flags, add_redis_flags, check_database_name  # noqa: E402
from bench.harness.databases import (  # noqa: E402
    end_run,
    migrate,
    recreate_database,
    server_version,
)
from bench.harness.env import use_env  # noqa: E402
from bench.harness.fleet import seed_nodes  # noqa: E402
from bench.harness.processes import open_files_limit  # noqa: E402
from bench.harness.redis_db import reset_redis, run_redis_url  # noqa: E402
from bench.harness.report import SOCKET_STACK, log, machine_line, versions  # noqa: E402
from bench.harness.smoke import add_smoke_flag, judge  # noqa: E402
from bench.harness.stats import ms, pct  # noqa: E402
from bench.swarm.report import print_results  # noqa: E402
from bench.swarm.run import NOTIFY_SQL, WARMUP_NODES, RunResult, run_target, swarm_service_env  # noqa: E402

SMOKE = {
    "nodes": 20,
    "duration": 3.0,
    "settle": 0.5,
    "server": "serve",
    "swarm_procs": 1,
    "ramp_concurrency": 10,
    "sample": 10,
    "db": "aiwm_smoke_swarm",
    "redis_db": 10,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=2000, help="simulated daemons")
    parser.add_argument("--duration", type=float, default=60.0, help="steady window, seconds per run")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds between the last register and the window")
    parser.add_argument(
        "--server", default="serve", help="serve (make run's server), daphne, uvicorn, or several (comma-separated)"
    )
    parser.add_argument("--targets", default="echo,service", help="echo, service, or both (comma-separated)")
    parser.add_argument("--swarm-procs", type=int, default=2, help="OS processes the daemons are spread over")
    parser.add_argument("--ramp-concurrency", type=int, default=100, help="connects in flight (all processes)")
    parser.add_argument("--sample", type=int, default=200, help="nodes whose heartbeats are timed")
    parser.add_argument("--orgs", type=int, default=4, help="organizations the nodes belong to")
    parser.add_argument("--seed", type=int, default=1, help="random seed (phases, jitter, payloads, sample)")
    add_database_flags(parser, "aiwm_swarm", "do not drop the databases at the end")
    add_redis_flags(parser)
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
    add_smoke_flag(parser, argv, SMOKE, "20 nodes, serve, a 3 s window")
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.server.split(",") if s.strip()]
    if not args.servers or any(s not in ("serve", "daphne", "uvicorn") for s in args.servers):
        parser.error("--server: serve, daphne, uvicorn, comma-separated")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not args.targets or any(t not in ("echo", "service") for t in args.targets):
        parser.error("--targets: echo, service or echo,service")
    if not 1 <= args.nodes <= 20000 or not 1 <= args.swarm_procs <= 16 or not 1 <= args.ramp_concurrency <= 2000:
        parser.error("--nodes 1..20000, --swarm-procs 1..16, --ramp-concurrency 1..2000")
    if not 0 < args.duration <= 1800 or not 0 <= args.settle <= 120 or args.sample < 1:
        parser.error("--duration 0..1800 s, --settle 0..120 s, --sample >= 1")
    check_database_name(parser, args.db)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # A plain `kill` runs the clean-up too (servers, swarm processes, databases).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    pg = args.pg.rstrip("/")
    admin_dsn = f"{pg}/postgres"
    template = f"{args.db}_tpl"
    dsn = f"{pg}/{args.db}"
    redis_url = run_redis_url(args.redis, args.redis_db)
    logdir = Path(tempfile.mkdtemp(prefix="aiwm-swarm-"))
    env = swarm_service_env(dsn=dsn, logdir=logdir, redis_url=redis_url, name="swarm")
    use_env(env, DATABASE_URL=f"{pg}/{template}", REDIS_URL="")

    import psycopg

    log(f"databases {template}, {args.db} on {pg}; Redis {redis_url}; logs in {logdir}")
    log(machine_line(server_version(admin_dsn), versions(*SOCKET_STACK)))
    results: list[RunResult] = []
    experiments_ok = True
    try:
        with open_files_limit(4 * args.nodes + 1024):
            recreate_database(admin_dsn, template)
            migrate(f"{pg}/{template}", env)
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
            if args.smoke:
                experiments_ok = check_experiments()
            # Alternate which target goes first from one server to the next.
            plan = []
            for i, kind in enumerate(args.servers):
                targets = ["echo", "service"] if i % 2 == 0 else ["service", "echo"]
                plan += [(kind, t) for t in targets if t in args.targets]
            for kind, target in plan:
                reset_redis(redis_url)
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
        ok = print_results(results, args) and experiments_ok
        log(f"\ntotal wall time {time.monotonic() - started:.0f}s")
        return 0 if ok else 1
    finally:
        end_run(
            admin_dsn=admin_dsn, databases=[args.db, template], redis_url=redis_url, logdir=logdir, keep=args.keep_db
        )


def check_experiments() -> bool:
    """--smoke: bench/swarm_experiments.py's variants, each loaded and its patch exercised against the
    template database, in a process of its own (it leaves no connection to the template behind)."""
    log("bench/swarm_experiments.py variants (bench/swarm/experiments_check.py):")
    done = subprocess.run(
        [sys.executable, "-m", "bench.swarm.experiments_check"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    for line in done.stdout.splitlines():
        log(f"    {line}")
    if done.returncode:
        log("    its stderr ends:\n" + "\n".join(done.stderr.splitlines()[-20:]))
    return judge([(f"bench/swarm/experiments_check.py exit {done.returncode}", done.returncode == 0)], "    ")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

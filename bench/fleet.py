"""A 10,000-node fleet: simulated daemons at the contract's rate on one web process, then spread over
several, and the control plane's lists while they report against an idle service, in one run.

    .venv/bin/python bench/fleet.py [--nodes 10000] [--web-processes 1,4] [--duration 90] [--settle 30]
    .venv/bin/python bench/fleet.py --smoke    # seconds: every step and check, the figures not judged

What it does, in order:

1. creates its own PostgreSQL databases: a template migrated with `manage.py migrate` (`aiwm_fleet_tpl`,
   with bench/swarm/run.py's NOTIFY trigger), cloned twice and seeded through the ORM, each in ONE
   organization: `aiwm_fleet_fleet` with `--nodes` nodes and `aiwm_fleet_idle` with `--idle-nodes`
   (both plus a few for the warm-up in an organization of their own, each node with its node token from
   `nodes.services.node_issue_token`), and a running deployment per `--deployments-every` nodes (at
   least one) of a model of its own held by its node. Each run gets a fresh clone of one of them
   (`aiwm_fleet`); everything is dropped at the end unless `--keep-db`;
2. picks an empty Redis database (the highest of 1..13) and flushes it before each run and at the
   end: every run has REDIS_URL, which `--workers` above 1 needs, so the runs differ in nothing else;
3. runs, one after the other: the idle service (`--idle-nodes` nodes on one web process), then the
   fleet on each number of `--web-processes` (1: `manage.py serve`; N: `manage.py serve --workers N`,
   N processes accepting on one socket, the kernel spreading the connections);
4. per run (bench.swarm.run's steps): the service answers both lists with the seeded totals; the
   lists are requested a few times per web process and a few daemons connect, send telemetry and
   leave (the one-time costs paid); the idle RSS is read; the swarm's processes connect and register
   every node (bounded concurrency); every node then sends `telemetry.heartbeat` every
   `--heartbeat-s` (30 s, the contract's) and `telemetry.metrics` every `--metrics-s` (60 s) at a
   random phase with +-5% jitter; after `--settle` seconds (one heartbeat interval by default: every
   node has heartbeated once) the steady window of `--duration` seconds is measured. 90 s by
   default: three heartbeats and one or two metrics per node, so every node writes in the window;
5. in the window, a prober in this process sends GET /api/nodes and GET /api/deployments (the
   default page, an owner's token of the organization) alternately, one at a time, every
   `--probe-interval` (100 ms), each on a new connection; it records their latencies;
6. measures on the web processes (summed over the workers, found as the master's children in
   /proc): RSS idle, after connecting and at the end of the window (KiB per connection above idle),
   CPU over the window (per process too), the connections each holds; heartbeat->DB latency of a
   sample of nodes (`--sample`) through the NOTIFY listener; messages in per second, disconnects and
   error replies;
7. prints one table, the goals and the checks: every node registered, stayed and heartbeated in the
   window, every sampled heartbeat and metric point in the database, every node marked
   disconnected after the swarm left, both lists answered 200 with the seeded totals, every web
   process held nodes. Goals: the fleet on ONE web process with heartbeat->DB p99 < 200 ms; each
   list's p50 with the fleet reporting <= 1.2x the idle service's, on every number of web processes.
   Exit status 1 when a goal is missed or a check fails.

The open-files limit is raised for the web process's sockets (one per node) within the hard limit;
below `--nodes` + 1024 the run stops before it starts.

This file is the command line and the order of the steps; the steps are in bench/fleetbench/ (the
prober, one run, the report), bench/swarm/ (the swarm's processes, a run's steps) and bench/harness/
(what every benchmark shares). `--smoke` runs 30 nodes (the idle service 10) at a heartbeat every
1 s and metrics every 2 s, a 3 s window, on 1 and 2 web processes; it judges the checks and not the goals.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# After the path above: the repository has to be on sys.path first.
from bench.fleetbench.report import print_results  # noqa: E402
from bench.fleetbench.run import FleetResult, run_fleet  # noqa: E402
from bench.harness.cli import add_database_flags, add_redis_flags, check_database_name  # noqa: E402
from bench.harness.databases import (  # noqa: E402
    close_django_connections,
    end_run,
    migrate,
    point_django_at,
    recreate_database,
    server_version,
)
from bench.harness.env import use_env  # noqa: E402
from bench.harness.fleet import org_id, seed_deployments, seed_nodes  # noqa: E402
from bench.harness.processes import open_files_limit  # noqa: E402
from bench.harness.redis_db import redis_server_version, reset_redis, run_redis_url  # noqa: E402
from bench.harness.report import SOCKET_STACK, git_state, log, machine_line, versions  # noqa: E402
from bench.harness.smoke import add_smoke_flag  # noqa: E402
from bench.harness.stats import p50_p99  # noqa: E402
from bench.swarm.clients import CONTRACT_HEARTBEAT_S, CONTRACT_METRICS_S, JITTER  # noqa: E402
from bench.swarm.run import NOTIFY_SQL, WARMUP_NODES, swarm_service_env  # noqa: E402

SMOKE = {
    "nodes": 30,
    "idle_nodes": 10,
    "web_processes": "1,2",
    "duration": 3.0,
    "settle": 1.0,
    "heartbeat_s": 1.0,
    "metrics_s": 2.0,
    "swarm_procs": 2,
    "ramp_concurrency": 20,
    "sample": 10,
    "db": "aiwm_smoke_fleet",
    "redis_db": 12,
}
OPEN_FILES_SPARE = 1024  # beyond one socket per node: database connections, logs, the listener


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=10_000, help="simulated daemons of the fleet")
    parser.add_argument("--idle-nodes", type=int, default=10, help="simulated daemons of the idle service")
    parser.add_argument(
        "--web-processes", default="1,4", help="web processes the fleet runs on, each a run (comma-separated)"
    )
    parser.add_argument("--duration", type=float, default=90.0, help="steady window, seconds per run")
    parser.add_argument(
        "--settle", type=float, default=CONTRACT_HEARTBEAT_S, help="seconds between telemetry's start and the window"
    )
    parser.add_argument("--heartbeat-s", type=float, default=CONTRACT_HEARTBEAT_S, help="heartbeat interval, s")
    parser.add_argument("--metrics-s", type=float, default=CONTRACT_METRICS_S, help="metrics interval, s")
    parser.add_argument("--deployments-every", type=int, default=10, help="a deployment per this many nodes")
    parser.add_argument("--probe-interval", type=float, default=0.1, help="seconds between two list requests")
    parser.add_argument("--swarm-procs", type=int, default=4, help="OS processes the daemons are spread over")
    parser.add_argument("--ramp-concurrency", type=int, default=100, help="connects in flight (all processes)")
    parser.add_argument("--sample", type=int, default=500, help="nodes whose heartbeats are timed")
    parser.add_argument("--seed", type=int, default=1, help="random seed (phases, jitter, payloads)")
    add_database_flags(parser, "aiwm_fleet", "do not drop the databases at the end")
    add_redis_flags(parser)
    add_smoke_flag(parser, argv, SMOKE, "30 nodes, a heartbeat every 1 s, a 3 s window, 1 and 2 web processes")
    args = parser.parse_args(argv)
    try:
        args.web_processes = sorted({int(n) for n in args.web_processes.split(",") if n.strip()})
    except ValueError:
        parser.error("--web-processes: numbers, comma-separated (1,4)")
    if not args.web_processes or not all(1 <= n <= 16 for n in args.web_processes):
        parser.error("--web-processes: 1..16 each")
    if not 1 <= args.nodes <= 20000 or not 1 <= args.idle_nodes <= args.nodes:
        parser.error("--nodes 1..20000, --idle-nodes 1..--nodes")
    if not 1 <= args.swarm_procs <= 16 or not 1 <= args.ramp_concurrency <= 2000 or args.sample < 1:
        parser.error("--swarm-procs 1..16, --ramp-concurrency 1..2000, --sample >= 1")
    if not 0 < args.heartbeat_s <= args.metrics_s or args.deployments_every < 1 or not 0 < args.probe_interval <= 10:
        parser.error("0 < --heartbeat-s <= --metrics-s, --deployments-every >= 1, --probe-interval 0..10 s")
    # Every node must heartbeat inside the window (a check): longer than the longest interval drawn.
    if not args.heartbeat_s * (1 + JITTER) < args.duration <= 1800 or not 0 <= args.settle <= 300:
        parser.error("--duration above --heartbeat-s (+5% jitter) and up to 1800 s, --settle 0..300 s")
    check_database_name(parser, args.db)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # A plain `kill` runs the clean-up too (servers, swarm processes, databases).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    pg = args.pg.rstrip("/")
    admin_dsn = f"{pg}/postgres"
    template, templates = f"{args.db}_tpl", {"idle": f"{args.db}_idle", "fleet": f"{args.db}_fleet"}
    dsn = f"{pg}/{args.db}"
    redis_url = run_redis_url(args.redis, args.redis_db)
    logdir = Path(tempfile.mkdtemp(prefix="aiwm-fleet-"))
    env = swarm_service_env(dsn=dsn, logdir=logdir, redis_url=redis_url, name="fleet")
    use_env(env, DATABASE_URL=f"{pg}/{template}", REDIS_URL="")

    import psycopg

    log(
        f"databases {template}, {', '.join(templates.values())}, {args.db} on {pg}; Redis {redis_url}; logs in {logdir}"
    )
    log(machine_line(server_version(admin_dsn), f"Redis {redis_server_version(redis_url)}", versions(*SOCKET_STACK)))
    log(git_state())
    # Enough warm-up daemons that the kernel hands some to every web process.
    warmup = WARMUP_NODES * max(args.web_processes)
    results: list[FleetResult] = []
    try:
        with open_files_limit(args.nodes + OPEN_FILES_SPARE):
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if soft < args.nodes + OPEN_FILES_SPARE:
                raise RuntimeError(
                    f"open files limit {soft} (the hard limit): {args.nodes} nodes need {args.nodes + OPEN_FILES_SPARE}"
                )
            recreate_database(admin_dsn, template)
            migrate(f"{pg}/{template}", env)
            with psycopg.connect(f"{pg}/{template}", autocommit=True) as conn:
                conn.execute(NOTIFY_SQL)
            for name in templates.values():
                recreate_database(admin_dsn, name, template=template)
            import django

            django.setup()
            from aiwm_project.auth import issue_user_token

            org = org_id(0)  # the fleet's; the warm-up's daemons are in another, out of its lists
            token = issue_user_token(
                user_id="0" * 24, username="bench", org_id=org, roles=["organization.owner"], expires_in=6 * 3600
            )
            fleets = {}
            for label, count in (("idle", args.idle_nodes), ("fleet", args.nodes)):
                t_seed = time.monotonic()
                point_django_at(templates[label])
                seeded = seed_nodes(count, 1, warmup, min(args.sample, count), warmup_org=org_id(1))
                deployments = seed_deployments(org, [n["nodeId"] for n in seeded[:count]], args.deployments_every)
                fleets[label] = (seeded[:count], seeded[count:], deployments)
                log(
                    f"{label}: seeded {count} nodes (+{warmup} for the warm-up) and {deployments} deployment(s) in "
                    f"{templates[label]}, with a node token each, in {time.monotonic() - t_seed:.1f}s"
                )
            close_django_connections()

            plan = [("idle", 1)] + [("fleet", n) for n in args.web_processes]
            for label, web_processes in plan:
                reset_redis(redis_url)
                recreate_database(admin_dsn, args.db, template=templates[label])
                log(f"{label} x{web_processes}: starting ({time.monotonic() - started:.0f}s into the run)")
                result = run_fleet(label, web_processes, args, env, logdir, fleets[label], dsn, token)
                results.append(result)
                s = result.swarm
                log(
                    f"{result.name}: {s.connected}/{s.nodes} connected in {s.ramp_s:.1f}s ({s.connect_rate:.0f}/s); "
                    f"RSS {s.rss_idle // 1024} -> {s.rss_connected // 1024} -> {s.rss_end // 1024} MiB; "
                    f"CPU {s.cpu_pct:.1f}%; heartbeat->DB p50/p99 {p50_p99(s.db_latency)} ms; "
                    + "; ".join(f"GET {route} p50/p99 {p50_p99(v)} ms" for route, v in result.lists.items())
                )
        ok = print_results(results, args)
        log(f"\ntotal wall time {time.monotonic() - started:.0f}s")
        return 0 if ok else 1
    finally:
        names = [args.db, *templates.values(), template]
        end_run(admin_dsn=admin_dsn, databases=names, redis_url=redis_url, logdir=logdir, keep=args.keep_db)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

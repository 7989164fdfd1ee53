"""The operator portal at 1,000 nodes: the admin's dashboard and nodes changelist against the same
pages at 10 nodes in the same run, and the live events' fan-out to 1,000 subscribers.

    .venv/bin/python bench/portal.py [--nodes 1000] [--small-nodes 10] [--requests 200] [--subscribers 1000]
    .venv/bin/python bench/portal.py --smoke    # seconds: every step and check, the figures not judged

What it does, in order:

1. creates its own PostgreSQL databases: a template migrated with `manage.py migrate` with the
   operator in it (`manage.py create_iam_user --admin`, a staff user and an organization owner),
   cloned and seeded: `<db>_small` with `--small-nodes` nodes, `<db>_middle` with `--middle-nodes`
   (a size past one full page of the lists: the growth from there on is the fleet's, not the page
   filling up; reported, not judged) and `<db>_large` with `--nodes`,
   all in the operator's organization, online, 8 GPUs each; `<db>_large` also holds a week
   (`--metric-days`) of one-minute metric points (8 GPUs each) of `--metric-nodes` nodes, generated
   by PostgreSQL (INSERT ... SELECT over generate_series), and a node token for each of the
   `--senders` nodes that heartbeat in step 4. Everything is dropped at the end unless `--keep-db`;
2. picks an empty Redis database (the highest of 1..13), flushed before each service and at the end:
   the services run with REDIS_URL (the production layout: live events through a Redis stream);
3. serves every database at once, each with `manage.py serve` (ONE web process each); a client
   logs in to each through the admin's form and requests `/admin/` (the fleet dashboard) and
   `/admin/nodes/node/` (the nodes changelist), one request at a time on one kept-alive connection
   per service, `--warmup` rounds then `--requests` timed ones, a round asking every fleet for both
   pages in turn (interleaved: the machine's drift during the run touches every fleet alike):
   p50/p99 per page and size, and the ratio of the p50s; then only the large service is kept;
4. on the large service: `--subscribers` `GET /api/events` streams (the operator's accessToken from
   `POST /auth/login`) in `--subscriber-procs` aiohttp processes, all subscribed before the window
   (subscribers arriving together at a cold process share one stream reader: a check counts
   duplicate events, which a second reader would cause);
   then `--senders` simulated daemons (bench.harness.daemon.SimNode, in this process) send
   `telemetry.heartbeat` round robin, one every `--interval` for `--fanout-duration` seconds; each
   carries its send time as `uptimeSeconds`, which the `node.heartbeat` event echoes; each
   subscriber records when each event arrived. A heartbeat's latency is from its send to the LAST
   subscriber that got it. With `--fanout-modes redis,memory` the large service is then restarted
   without REDIS_URL (the embedded layout: events handed over in the process) and measured again;
5. prints the tables, the goals and the checks: every page request answered 200, the changelist
   counts the seeded nodes, every subscriber subscribed and stayed, every heartbeat reached every
   subscriber exactly once, the daemons got no error. Goals: each page's p50 at `--nodes` <= 1.5x
   its p50 at `--small-nodes`; fan-out p99 < 250 ms with every heartbeat delivered to every subscriber. Exit
   status 1 when a goal is missed or a check fails.

`--smoke` runs 20 nodes (the small service 5), a day of metrics for 2 of them, 20 requests of each
page, 20 subscribers in 2 processes and 2 daemons for 2 s, in both event modes.
"""

from __future__ import annotations

import argparse
import secrets
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
from bench.harness.cli import add_database_flags, add_redis_flags, check_database_name  # noqa: E402
from bench.harness.databases import (  # noqa: E402
    close_django_connections,
    end_run,
    migrate,
    point_django_at,
    recreate_database,
    server_version,
)
from bench.harness.env import service_env, use_env  # noqa: E402
from bench.harness.fleet import org_id  # noqa: E402
from bench.harness.processes import open_files_limit  # noqa: E402
from bench.harness.redis_db import redis_server_version, reset_redis, run_redis_url  # noqa: E402
from bench.harness.report import SOCKET_STACK, git_state, log, machine_line, versions  # noqa: E402
from bench.harness.servers import SERVICE_APP, Server  # noqa: E402
from bench.harness.smoke import add_smoke_flag  # noqa: E402
from bench.harness.stats import p50_p99  # noqa: E402
from bench.portalbench.fanout import FanoutResult, run_fanout  # noqa: E402
from bench.portalbench.pages import PAGES, PageTimes, admin_login, api_login, time_pages  # noqa: E402
from bench.portalbench.report import print_results  # noqa: E402
from bench.portalbench.seed import create_operator, seed_metrics, seed_nodes  # noqa: E402

SMOKE = {
    "nodes": 20,
    "small_nodes": 5,
    "middle_nodes": 10,
    "metric_nodes": 2,
    "metric_days": 1.0,
    "requests": 20,
    "warmup": 2,
    "subscribers": 20,
    "subscriber_procs": 2,
    "senders": 2,
    "interval": 0.2,
    "fanout_duration": 2.0,
    "db": "aiwm_smoke_portal",
    "redis_db": 9,
}
USERNAME, PASSWORD = "portal-operator", "portal-Pass_123"
OPEN_FILES_SPARE = 1024
MODES = {"redis": "Redis stream", "memory": "in-process"}
TELEMETRY_FLUSH_S = 0.05  # AIWM_TELEMETRY_FLUSH_MS's default: a node heartbeating faster is coalesced


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1000, help="nodes of the large fleet")
    parser.add_argument("--small-nodes", type=int, default=10, help="nodes of the small fleet (the baseline)")
    parser.add_argument(
        "--middle-nodes",
        type=int,
        default=100,
        help="a middle fleet, measured too (0: none): past one full page of a list, its growth is the fleet's",
    )
    parser.add_argument("--metric-nodes", type=int, default=50, help="nodes of the large fleet with metrics")
    parser.add_argument("--metric-days", type=float, default=7.0, help="days of one-minute metric points")
    parser.add_argument("--requests", type=int, default=200, help="timed requests of each page per size")
    parser.add_argument("--warmup", type=int, default=20, help="untimed rounds of both pages first")
    parser.add_argument("--subscribers", type=int, default=1000, help="SSE subscribers of /api/events")
    parser.add_argument("--subscriber-procs", type=int, default=2, help="processes the subscribers are spread over")
    parser.add_argument("--subscribe-concurrency", type=int, default=50, help="streams being opened at once (all)")
    parser.add_argument("--senders", type=int, default=5, help="simulated daemons that heartbeat")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between two heartbeats (all daemons)")
    parser.add_argument("--fanout-duration", type=float, default=30.0, help="seconds of heartbeats")
    parser.add_argument("--fanout-modes", default="redis,memory", help="event transports measured: redis, memory")
    parser.add_argument("--seed", type=int, default=1, help="random seed (payloads)")
    add_database_flags(parser, "aiwm_portal", "do not drop the databases at the end")
    add_redis_flags(parser)
    add_smoke_flag(parser, argv, SMOKE, "20 nodes, 20 requests, 20 subscribers, 2 s of heartbeats")
    args = parser.parse_args(argv)
    args.fanout_modes = [m.strip() for m in args.fanout_modes.split(",") if m.strip()]
    if not all(m in MODES for m in args.fanout_modes):
        parser.error(f"--fanout-modes: comma-separated, of {', '.join(MODES)}")
    if not 1 <= args.small_nodes < args.nodes <= 20000 or not 0 <= args.metric_nodes <= args.nodes:
        parser.error("1 <= --small-nodes < --nodes <= 20000, --metric-nodes 0..--nodes")
    if args.middle_nodes and not args.small_nodes < args.middle_nodes < args.nodes:
        parser.error("--middle-nodes between --small-nodes and --nodes (or 0)")
    if not 0 < args.metric_days <= 31 or not 1 <= args.requests <= 100000 or args.warmup < 0:
        parser.error("--metric-days 0..31, --requests >= 1, --warmup >= 0")
    if not 1 <= args.subscriber_procs <= 32 or not args.subscriber_procs <= args.subscribers <= 20000:
        parser.error("--subscriber-procs 1..32, --subscribers --subscriber-procs..20000")
    if not 1 <= args.senders <= args.nodes or not 0 < args.interval <= 10 or not 0 < args.fanout_duration <= 1800:
        parser.error("--senders 1..--nodes, --interval 0..10 s, --fanout-duration 0..1800 s")
    # Each daemon's heartbeats further apart than a telemetry flush: each one an event of its own.
    if args.senders * args.interval <= 2 * TELEMETRY_FLUSH_S:
        parser.error("--senders x --interval must exceed 0.1 s (two telemetry flushes)")
    if args.subscribe_concurrency < args.subscriber_procs:
        parser.error("--subscribe-concurrency at least --subscriber-procs")
    check_database_name(parser, args.db)
    return args


def start_service(env: dict[str, str], logdir: Path, label: str) -> Server:
    server = Server("serve", SERVICE_APP, env, logdir, label)
    server.start()
    server.wait_ready()
    return server


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    pg = args.pg.rstrip("/")
    admin_dsn = f"{pg}/postgres"
    template = f"{args.db}_tpl"
    sizes = {args.small_nodes: "small", args.middle_nodes: "middle", args.nodes: "large"}
    databases = {count: f"{args.db}_{size}" for count, size in sizes.items() if count}  # middle 0: none
    redis_url = run_redis_url(args.redis, args.redis_db)
    logdir = Path(tempfile.mkdtemp(prefix="aiwm-portal-"))
    org = org_id(0)
    env = service_env(
        dsn=f"{pg}/{template}",
        logdir=logdir,
        # The service's own telemetry, events and edge defaults are what is measured; plain HTTP.
        drop=("AIWM_NODE_RATE", "AIWM_TELEMETRY", "AIWM_EVENTS", "AIWM_HTTPS", "AIWM_SSL"),
        REDIS_URL=redis_url,
        AIWM_SOCKETIO_CHANNEL=f"aiwm-bench-portal-{secrets.token_hex(6)}",
        DJANGO_SETTINGS_MODULE="aiwm_project.settings",
        # The operator logs in with the service's own login (POST /auth/login), tokens signed with
        # the run's IAM_JWT_SECRET: a set secret turns the local login off by default.
        AIWM_LOCAL_LOGIN="true",
    )
    use_env(env, REDIS_URL="")

    log(f"databases {template}, {', '.join(databases.values())} on {pg}; Redis {redis_url}; logs in {logdir}")
    log(machine_line(server_version(admin_dsn), f"Redis {redis_server_version(redis_url)}", versions(*SOCKET_STACK)))
    log(git_state())
    pages: dict[int, PageTimes] = {}
    fanouts: list[FanoutResult] = []
    seeded = {"metrics": 0}
    try:
        with open_files_limit(args.subscribers + OPEN_FILES_SPARE):
            recreate_database(admin_dsn, template)
            migrate(f"{pg}/{template}", env)
            create_operator(env, f"{pg}/{template}", USERNAME, PASSWORD, org)
            for name in databases.values():
                recreate_database(admin_dsn, name, template=template)
            import django

            django.setup()
            daemons: list[dict[str, Any]] = []  # the large fleet's heartbeating nodes, with their tokens
            for count, name in databases.items():
                t_seed = time.monotonic()
                point_django_at(name)
                large = count == args.nodes
                seeded_nodes = seed_nodes(count, org, args.senders if large else 0)
                if large:
                    daemons = seeded_nodes
                metrics = ""
                if large and args.metric_nodes:
                    t_metrics = time.monotonic()
                    node_ids = [f"portal-{i:05d}" for i in range(args.metric_nodes)]
                    seeded["metrics"] = seed_metrics(org, node_ids, args.metric_days)
                    metrics = f", {seeded['metrics']:,} metric points in {time.monotonic() - t_metrics:.1f}s"
                log(f"seeded {count} nodes into {name}{metrics}; {time.monotonic() - t_seed:.1f}s in all")
            close_django_connections()

            # Every fleet's service at once (one web process each), timed interleaved (pages.time_pages);
            # then the fan-out on the large fleet's alone.
            reset_redis(redis_url)
            servers: dict[int, Server] = {}
            try:
                for count, name in databases.items():
                    log(f"{count} nodes: serving {name} ({time.monotonic() - started:.0f}s into the run)")
                    served = {**env, "DATABASE_URL": f"{pg}/{name}"}
                    servers[count] = start_service(served, logdir, f"portal-{count}")
                targets = {count: (srv, admin_login(srv, USERNAME, PASSWORD)) for count, srv in servers.items()}
                pages = time_pages(targets, args.warmup, args.requests)
                for count, times in pages.items():
                    log(
                        f"{count} nodes: "
                        + "; ".join(f"GET {page} p50/p99 {p50_p99(times.latencies[page])} ms" for page in PAGES)
                    )
                for count in [c for c in servers if c != args.nodes]:
                    servers.pop(count).stop()
                server = servers[args.nodes]
                served = {**env, "DATABASE_URL": f"{pg}/{databases[args.nodes]}"}
                for mode in args.fanout_modes:
                    if mode != args.fanout_modes[0] or mode == "memory":
                        server.stop()
                        reset_redis(redis_url)
                        served = {**served, "REDIS_URL": redis_url if mode == "redis" else ""}
                        server = servers[args.nodes] = start_service(served, logdir, f"portal-{args.nodes}-{mode}")
                    token = api_login(server, USERNAME, PASSWORD)
                    log(f"fan-out ({MODES[mode]}): {args.subscribers} subscribers")
                    result = run_fanout(MODES[mode], server, args, served, logdir, token, daemons)
                    fanouts.append(result)
                    log(
                        f"fan-out ({result.mode}): {result.subscribed} subscribed in {result.subscribe_s:.1f}s; "
                        f"{result.delivered_all}/{len(result.sent)} heartbeats to all; send -> last p50/p99 "
                        f"{p50_p99(result.latency)} ms"
                    )
            finally:
                for server in servers.values():
                    server.stop()
        ok = print_results(pages, fanouts, args, seeded)
        log(f"\ntotal wall time {time.monotonic() - started:.0f}s")
        return 0 if ok else 1
    finally:
        names = [*databases.values(), template]
        end_run(admin_dsn=admin_dsn, databases=names, redis_url=redis_url, logdir=logdir, keep=args.keep_db)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

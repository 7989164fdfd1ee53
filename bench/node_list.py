"""Node list at scale: the service's `GET /api/nodes` against a bare Django view and a near-limit,
framework-free app, in one run.

    .venv/bin/python bench/node_list.py [--rows 10000,100000,1000000] [--duration S] [--concurrency C]
    .venv/bin/python bench/node_list.py --smoke    # seconds: every step and check, the figures not judged

What it does, in order:

1. creates its own PostgreSQL databases on 127.0.0.1:5432 (`aiwm_bench`, migrated with
   `manage.py migrate`, and one clone of it per row count, `aiwm_bench_<rows>`; all dropped at the
   end unless `--keep-db`);
2. seeds each clone in SQL (`INSERT ... SELECT generate_series`): 100 organizations of skewed
   sizes (0.7% to 4.6% of the rows), a third of the rows soft-deleted, mixed statuses, creation
   dates spread over two years; then VACUUM ANALYZE (the visibility map is what lets COUNT(*) be an
   index-only scan);
3. starts, per row count, three servers on loopback: with the command of `make run`
   (`manage.py serve`) the real service and the bare baseline (`bench.bare_settings`: the same
   settings and middleware, one view that runs the same SQL through a raw cursor and writes the
   same JSON), the middle point; and under the same uvicorn the near-limit baseline
   (`bench/limit_app.py`: no framework, a psycopg connection pool, the same SQL and JSON), what
   this machine can do for the request;
4. checks that the bare view's SQL is the SQL Django generates for the service, that all three
   servers answer the same JSON, and, after measuring, that the data set is unchanged (the servers
   run with the in-process sweep off);
5. drives each server with a load generator in a separate process (keep-alive HTTP/1.1 clients,
   fixed concurrency, warm-up, bounded duration and request count). The rounds interleave row
   counts and rotate the order of the three targets, so a noisy neighbour on the shared machine hurts every
   configuration alike instead of whichever happened to run at the time;
6. prints requests/s, p50/p99 latency and server CPU per request, the service/limit and
   service/bare throughput ratios per row count, the ratio of the service's median latency at the
   largest vs the smallest row count, and EXPLAIN (ANALYZE, BUFFERS) of the service's two queries (captured from Django)
   at the largest row count. Exit status 1 when a goal is missed.

The organization whose requests are measured is the one whose share of the rows is closest to 1%.

This file is the command line and the order of the steps; the steps are in bench/nodelist/ (the data
set, the three servers, the SQL and JSON checks, the load generator, the report) and bench/harness/
(what every benchmark shares). `--smoke` runs 5,000 rows, one 1 s round per target, and also
bench/profile_node_list.py for a few requests; it judges the checks (identical SQL and JSON, the
data set unchanged, every request answered 200) and not the goals.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# After the path above: the repository has to be on sys.path first.
from bench.harness.cli import add_database_flags, check_database_name  # noqa: E402
from bench.harness.databases import (  # noqa: E402
    close_django_connections,
    drop_database,
    migrate,
    recreate_database,
    server_version,
)
from bench.harness.env import service_env, use_env  # noqa: E402
from bench.harness.report import log, machine_line  # noqa: E402
from bench.harness.smoke import Check, add_smoke_flag, judge  # noqa: E402
from bench.nodelist.compare import (  # noqa: E402
    bare_queries,
    capture_service_queries,
    check_identical,
    db_time_ms,
    explain,
    normalize_sql,
)
from bench.nodelist.dataset import org_counts, org_id, seed, typical_org_index  # noqa: E402
from bench.nodelist.loadgen import Run, merge, run_load  # noqa: E402
from bench.nodelist.report import TARGETS, SizeResult, fmt_int, print_table, runs, summarize  # noqa: E402
from bench.nodelist.servers import servers  # noqa: E402

SMOKE = {"rows": "5000", "duration": 1.0, "rounds": 1, "warmup": 0.3, "db": "aiwm_smoke_list"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", default="10000,100000,1000000", help="comma-separated row counts (ascending)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per target per row count")
    parser.add_argument("--concurrency", type=int, default=4, help="keep-alive connections of the load generator")
    parser.add_argument("--rounds", type=int, default=4, help="alternating service/bare rounds per row count")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each round")
    add_database_flags(parser, "aiwm_bench", "do not drop the database at the end")
    parser.add_argument(
        "--no-db-pool",
        action="store_true",
        help="service and bare view open a connection per request (DB_POOL_MAX_SIZE=0), as before the pool",
    )
    add_smoke_flag(parser, argv, SMOKE, "5,000 rows, one 1 s round")
    args = parser.parse_args(argv)
    args.sizes = sorted({int(x.replace("_", "")) for x in args.rows.split(",") if x.strip()})
    if not args.sizes or args.sizes[0] < 1000:
        parser.error("--rows: give row counts of at least 1000")
    check_database_name(parser, args.db)
    if not 1 <= args.concurrency <= 256 or args.duration <= 0 or args.duration > 600 or args.rounds < 1:
        parser.error("--concurrency 1..256, --duration 0..600 s, --rounds >= 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    pg = args.pg.rstrip("/")
    admin_dsn = f"{pg}/postgres"
    # One database per row count, all cloned from a migrated template, so that every size is
    # served at once and the rounds can interleave sizes as well as service/bare.
    db_names = {rows: f"{args.db}_{rows}" for rows in args.sizes}
    dsns = {rows: f"{pg}/{name}" for rows, name in db_names.items()}
    all_dbs = [args.db, *db_names.values()]
    logdir = Path(tempfile.mkdtemp(prefix="aiwm-bench-"))
    env = service_env(
        dsn=dsns[args.sizes[-1]],
        logdir=logdir,
        drop=("REDIS_URL",),  # the embedded default's single process: what the bare view is compared with
        **({"DB_POOL_MAX_SIZE": "0"} if args.no_db_pool else {}),
    )
    use_env(env, DJANGO_SETTINGS_MODULE="aiwm_project.settings")

    org_index = typical_org_index()
    org = org_id(org_index)
    log(f"databases {', '.join(all_dbs)} on {pg}; logs in {logdir}")
    pooling = "opened per request (--no-db-pool)" if args.no_db_pool else "from the psycopg pool (DB_POOL_MAX_SIZE)"
    log(
        machine_line(
            server_version(admin_dsn),
            f"manage.py serve (service, bare) and uvicorn (limit app, pool of 4); Django's connections {pooling}",
            f"load generator: {args.concurrency} keep-alive connections",
            f"{args.rounds} rounds x {args.duration / args.rounds:g}s (+{args.warmup:g}s warm-up) per target",
        )
    )
    try:
        recreate_database(admin_dsn, args.db)
        migrate(f"{pg}/{args.db}", env)
        import django

        django.setup()
        from django.db import connection

        from aiwm_project.auth import issue_user_token

        token = issue_user_token(
            user_id="0" * 24, username="bench", org_id=org, roles=["organization.viewer"], expires_in=3 * 3600
        )
        results: dict[int, SizeResult] = {}
        for rows in args.sizes:
            t0 = time.monotonic()
            recreate_database(admin_dsn, db_names[rows], template=args.db)
            visible = seed(dsns[rows], 1, rows)
            counts = org_counts(dsns[rows], org)
            log(
                f"{fmt_int(rows):>9} rows: seeded + VACUUM ANALYZE in {time.monotonic() - t0:.1f}s "
                f"({100 * visible:.1f}% of heap pages all-visible); measured org "
                f"#{org_index} {org}: {fmt_int(counts[0])} rows ({100 * counts[0] / rows:.2f}%), "
                f"{fmt_int(counts[1])} live, {fmt_int(counts[2])} live+online"
            )
            results[rows] = SizeResult(rows, *counts, 0.0, 0.0, Run(), Run(), Run(), [])

        # The service's SQL, captured from Django (against the largest database), is the bare view's.
        service_sql = capture_service_queries(token)
        bare_sql = bare_queries(org, connection.connection)
        if [normalize_sql(q) for q in service_sql] != [normalize_sql(q) for q in bare_sql]:
            log("service SQL:\n    " + "\n    ".join(service_sql))
            log("bare SQL:\n    " + "\n    ".join(bare_sql))
            raise RuntimeError("the bare view's SQL is not the service's")
        connection.close()
        log(f"SQL of service and bare view identical ({len(service_sql)} statements: the page, then COUNT(*))")
        for rows in args.sizes:
            results[rows].db_page_ms = db_time_ms(dsns[rows], service_sql[0])
            results[rows].db_count_ms = db_time_ms(dsns[rows], service_sql[1]) if len(service_sql) > 1 else 0.0

        with contextlib.ExitStack() as stack:
            trios = {rows: stack.enter_context(servers(env, dsns[rows], rows, token, logdir)) for rows in args.sizes}
            for rows, (service, bare, limit) in trios.items():
                body, byte_identical = check_identical(service, [bare, limit], token)
                log(
                    f"{fmt_int(rows):>9} rows: JSON of service, bare view and limit app identical "
                    f"({len(body['data'])} rows, "
                    f"total {body['pagination']['total']}; byte-identical: "
                    f"{'yes' if byte_identical else 'no, same values (gpuDevices key order differs)'})"
                )
            per_round = args.duration / args.rounds
            for rnd in range(args.rounds):
                shift = rnd % len(args.sizes)
                line = []
                for rows in args.sizes[shift:] + args.sizes[:shift]:
                    targets = dict(zip(TARGETS, trios[rows], strict=True))
                    # The order rotates every round, so no target always runs first or last.
                    order = list(targets.items())
                    order = order[rnd % 3 :] + order[: rnd % 3]
                    got = {label: run_load(server, env, token, args, per_round) for label, server in order}
                    for label, run in runs(results[rows]).items():
                        merge(run, got[label])
                    to_limit = got["service"].rps / got["limit"].rps if got["limit"].rps else float("nan")
                    results[rows].round_ratios.append(to_limit)
                    line.append(
                        f"{fmt_int(rows)}: {got['service'].rps:.0f}/{got['bare'].rps:.0f}/{got['limit'].rps:.0f}"
                        f" req/s, service/limit {to_limit:.2f}"
                    )
                log(f"round {rnd + 1} (service/bare/limit): " + ";  ".join(line))

        for rows in args.sizes:
            after = org_counts(dsns[rows], org)
            before = (results[rows].org_rows, results[rows].org_live, results[rows].org_online)
            if after != before:
                raise RuntimeError(f"{rows} rows: the data changed during the run ({before} -> {after}): discard it")
        log("data set unchanged by the run (measured org's rows, live rows, live online rows)")
        ordered = [results[rows] for rows in args.sizes]
        print_table(ordered, args)
        if args.smoke:
            log("\ngoals not judged (--smoke: tiny sizes)")
            ok = judge(smoke_checks(ordered, dsns[args.sizes[-1]]))
        else:
            ok = summarize(ordered)
        largest = args.sizes[-1]
        log(f"\nEXPLAIN (ANALYZE, BUFFERS) of the service's queries at {fmt_int(largest)} rows:")
        for sql in service_sql:
            log(f"\n{sql}")
            for line_ in explain(dsns[largest], sql):
                log(f"    {line_}")
        log(f"\ntotal wall time {time.monotonic() - started:.0f}s")
        return 0 if ok else 1
    finally:
        close_django_connections()
        if args.keep_db:
            log(f"kept databases {', '.join(all_dbs)} and server logs in {logdir}")
        else:
            for name in reversed(all_dbs):
                drop_database(admin_dsn, name)
            shutil.rmtree(logdir, ignore_errors=True)


def smoke_checks(results: list[SizeResult], dsn: str) -> list[Check]:
    """--smoke: every measured request answered 200, and bench/profile_node_list.py still runs."""
    checks: list[Check] = []
    for r in results:
        for label, run in runs(r).items():
            checks.append(
                (
                    f"{fmt_int(r.rows)} rows, {label}: {len(run.latencies)} requests answered 200, "
                    f"others {run.errors or 'none'}",
                    bool(run.latencies) and not run.errors,
                )
            )
    profile = subprocess.run(
        [sys.executable, str(REPO / "bench" / "profile_node_list.py"), "--database-url", dsn, "--requests", "3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = [line.strip("= ") for line in profile.stdout.splitlines() if line.startswith("== ")]
    tail = "\n".join((profile.stdout + profile.stderr).splitlines()[-15:])
    checks.append(
        (
            f"bench/profile_node_list.py: exit {profile.returncode}; "
            + ("; ".join(summary) if profile.returncode == 0 else f"its output ends:\n{tail}"),
            profile.returncode == 0 and len(summary) == 2,
        )
    )
    return checks


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

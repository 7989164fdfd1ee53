"""Node list at scale: the service's `GET /api/nodes` against a bare Django view, in one run.

    .venv/bin/python bench/node_list.py [--rows 10000,100000,1000000] [--duration S] [--concurrency C]

What it does, in order:

1. creates its own PostgreSQL databases on 127.0.0.1:5432 (`aiwm_bench`, migrated with
   `manage.py migrate`, and one clone of it per row count, `aiwm_bench_<rows>`; all dropped at the
   end unless `--keep-db`);
2. seeds each clone in SQL (`INSERT ... SELECT generate_series`): 100 organizations of skewed
   sizes (0.7% to 4.6% of the rows), a third of the rows soft-deleted, mixed statuses, creation
   dates spread over two years; then VACUUM ANALYZE (the visibility map is what lets COUNT(*) be an
   index-only scan);
3. starts, per row count, two daphne servers on loopback, both with the command of `make run`:
   the real service, and the bare baseline (`bench.bare_settings`: the same settings and
   middleware, one view that runs the same SQL through a raw cursor and writes the same JSON);
4. checks that the bare view's SQL is the SQL Django generates for the service, that both
   servers answer the same JSON, and, after measuring, that the data set is unchanged (the servers
   run with the in-process sweep off and DB_CONN_MAX_AGE=0: see the comments in main());
5. drives each server with a load generator in a separate process (keep-alive HTTP/1.1 clients,
   fixed concurrency, warm-up, bounded duration and request count). The rounds interleave row
   counts and alternate service/bare, so a noisy neighbour on the shared machine hurts every
   configuration alike instead of whichever happened to run at the time;
6. prints requests/s, p50/p99 latency and server CPU per request, the service/bare throughput
   ratio per row count, the ratio of the service's median latency at the largest vs the smallest
   row count, and EXPLAIN (ANALYZE, BUFFERS) of the service's two queries (captured from Django)
   at the largest row count. Exit status 1 when a goal is missed.

The organization whose requests are measured is the one whose share of the rows is closest to 1%.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import log_tail, service_env, stop_group  # noqa: E402  (after the path above)

HOST = "127.0.0.1"
ORGS = 100
ORG_SKEW = 1.5  # org index = floor(100 * random() ** 1.5): sizes from ~0.7% to ~4.6% of the rows
QUERY = "limit=10&sort=-createdAt&filter[status]=online"
BENCH_PATH = "/api/nodes?limit=10&sort=-createdAt&filter%5Bstatus%5D=online"
MAX_REQUESTS_PER_RUN = 200_000  # hard bound on one load-generator run, whatever the duration
REQUEST_TIMEOUT_S = 30.0
CLIENT_ERRORS = (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError)

# --------------------------------------------------------------------------------------------
# Load generator (runs in its own process: `node_list.py _loadgen '<json config>'`)
# --------------------------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length: int | None = None
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()
        close = True
    return status, close


async def _client(
    cfg: dict[str, Any], start_measure: float, end: float, out: dict[str, Any], budget: list[int]
) -> None:
    request = (
        f"GET {cfg['path']} HTTP/1.1\r\nHost: {HOST}:{cfg['port']}\r\n"
        f"Authorization: Bearer {cfg['token']}\r\nAccept: application/json\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    try:
        while time.perf_counter() < end and budget[0] > 0:
            budget[0] -= 1
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, cfg["port"])
            assert reader is not None
            t0 = time.perf_counter()
            try:
                writer.write(request)
                status, close = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT_S)
                kind = f"HTTP {status}"
            except CLIENT_ERRORS as exc:
                status, close, kind = -1, True, type(exc).__name__
            t1 = time.perf_counter()
            if start_measure <= t0 and t1 <= end:
                if status == 200:
                    out["latencies"].append(t1 - t0)
                else:
                    out["errors"][kind] = out["errors"].get(kind, 0) + 1
            if close:
                writer.close()
                writer = reader = None
    finally:
        if writer is not None:
            writer.close()


async def _loadgen(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"latencies": [], "errors": {}}
    start_measure = time.perf_counter() + cfg["warmup"]
    end = start_measure + cfg["duration"]
    budget = [MAX_REQUESTS_PER_RUN]
    await asyncio.gather(*(_client(cfg, start_measure, end, out, budget) for _ in range(cfg["concurrency"])))
    return {"latencies": out["latencies"], "errors": out["errors"], "window": cfg["duration"]}


def loadgen_main(raw: str) -> None:
    cfg = json.loads(raw)
    cfg["token"] = os.environ["BENCH_TOKEN"]
    print(json.dumps(asyncio.run(_loadgen(cfg))))


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Measurements of one target (service or bare) at one row count, pooled over rounds."""

    latencies: list[float] = field(default_factory=list)
    window: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0
    round_rps: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.window if self.window else 0.0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_s / len(self.latencies) if self.latencies else float("nan")


@dataclass
class SizeResult:
    rows: int
    org_rows: int
    org_live: int
    org_online: int
    db_page_ms: float
    db_count_ms: float
    service: Run
    bare: Run
    round_ratios: list[float]


def log(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def admin_connect(admin_dsn: str) -> Any:
    import psycopg

    return psycopg.connect(admin_dsn, autocommit=True)


def recreate_database(admin_dsn: str, name: str, template: str | None = None) -> None:
    from psycopg import sql

    with admin_connect(admin_dsn) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if template:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
            )
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_dsn: str, name: str) -> None:
    from psycopg import sql

    with admin_connect(admin_dsn) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def org_id(index: int) -> str:
    import hashlib

    return hashlib.md5(f"aiwm-bench-org-{index}".encode()).hexdigest()[:24]


def typical_org_index() -> int:
    """The organization whose expected share of the rows is closest to 1%."""
    shares = [((k + 1) / ORGS) ** (1 / ORG_SKEW) - (k / ORGS) ** (1 / ORG_SKEW) for k in range(ORGS)]
    return min(range(ORGS), key=lambda k: abs(shares[k] - 0.01))


GPU_VARIANTS = [
    [],
    [{"deviceId": "GPU-0", "model": "NVIDIA RTX 4090", "memoryTotal": 24576, "memoryFree": 20000,
      "utilization": 45.5, "temperature": 65.0}],
    [{"deviceId": f"GPU-{i}", "model": "NVIDIA A100 80GB", "memoryTotal": 81920, "memoryFree": 40960 - 1024 * i,
      "utilization": 72.25, "temperature": 70.5} for i in range(2)],
    [{"deviceId": f"GPU-{i}", "model": "NVIDIA H100", "memoryTotal": 81920, "memoryFree": 8192 * i,
      "utilization": 91.0, "temperature": 77.5} for i in range(4)],
]  # fmt: skip
ROLE_VARIANTS = [["worker"], ["worker"], ["worker", "storage"], ["controller"], ["proxy"]]

SEED_SQL = """
INSERT INTO nodes_node (
    _id, owner_org_id, owner_user_id, owner_group_id, created_by, updated_by, created_at, updated_at,
    is_deleted, deleted_at, node_id, name, role, status, is_local, vpn_ip, websocket_connected,
    last_heartbeat, cpu_cores, ram_total, ram_free, gpu_devices /*EXTRA_COLUMNS*/
)
SELECT
    lpad(to_hex(extract(epoch FROM s.created)::bigint), 8, '0') || lpad(to_hex(s.i), 16, '0'),
    substr(md5('aiwm-bench-org-' || s.org), 1, 24),
    substr(md5('aiwm-bench-user-' || s.org || '-' || s.i %% 7), 1, 24),
    '',
    substr(md5('aiwm-bench-user-' || s.org || '-' || s.i %% 7), 1, 24),
    substr(md5('aiwm-bench-user-' || s.org || '-' || s.i %% 5), 1, 24),
    s.created,
    s.created + s.rx * interval '30 days',
    s.rd < 1.0 / 3,
    CASE WHEN s.rd < 1.0 / 3 THEN s.created + s.rx * interval '60 days' END,
    'node-gpu-' || s.i,
    'GPU Server ' || s.i,
    (%(roles)s::text[])[1 + s.i %% 5]::jsonb,
    CASE WHEN s.rs < 0.5 THEN 'online' WHEN s.rs < 0.85 THEN 'offline' ELSE 'maintenance' END,
    s.i %% 10 = 0,
    '10.' || (s.i >> 16 & 255) || '.' || (s.i >> 8 & 255) || '.' || (s.i & 255),
    s.rs < 0.5,
    CASE
        WHEN s.rs < 0.5 THEN now() - s.rx * interval '60 seconds'
        WHEN s.rs < 0.85 THEN now() - interval '1 day' - s.rx * interval '30 days'
    END,
    (ARRAY[16, 32, 64, 128])[1 + s.i %% 4],
    (ARRAY[65536, 131072, 262144, 524288])[1 + s.i %% 4],
    ((ARRAY[65536, 131072, 262144, 524288])[1 + s.i %% 4] * (0.2 + 0.6 * s.rx))::bigint,
    (%(gpus)s::text[])[1 + (s.i / 7) %% 4]::jsonb /*EXTRA_VALUES*/
FROM (
    SELECT
        i,
        floor(%(orgs)s::int * power(random(), %(skew)s::float8))::int AS org,
        %(anchor)s::timestamptz - random() * interval '730 days' AS created,
        random() AS rd,
        random() AS rs,
        random() AS rx
    FROM generate_series(%(lo)s::int, %(hi)s::int) AS i
) AS s
"""


def seed_sql() -> tuple[str, dict[str, Any]]:
    """SEED_SQL plus every other Node column, filled with the model's default (a constant).

    The Node model grows (daemon-reported fields, ...); its columns have Python-side defaults only,
    so an INSERT that omits them would fail on NOT NULL. Columns without a default fail loudly.
    """
    from django.db import connection

    from nodes.models import Node

    seeded = set(re.findall(r"\w+", SEED_SQL[SEED_SQL.index("(") : SEED_SQL.index(")")]))
    columns, values, params = [], [], {}
    for n, f in enumerate(Node._meta.concrete_fields):
        if f.column in seeded:
            continue
        default = f.get_default()
        if default is None and not f.null:
            raise RuntimeError(f"bench seed: nodes_node.{f.column} has no default; give it a value in SEED_SQL")
        columns.append(f.column)
        values.append(f"%(extra{n})s::{f.db_type(connection)}")
        params[f"extra{n}"] = f.get_db_prep_save(default, connection)
    sql = SEED_SQL.replace("/*EXTRA_COLUMNS*/", "".join(f", {c}" for c in columns))
    return sql.replace("/*EXTRA_VALUES*/", "".join(f", {v}" for v in values)), params


def seed(dsn: str, first: int, last: int) -> float:
    """Insert rows `first..last` (1-based, inclusive), then VACUUM ANALYZE; returns the all-visible share.

    The commit is synchronous on purpose: VACUUM marks a page all-visible only once the hint bits
    of its rows can be set, which waits for the commit record to be flushed. With an asynchronous
    commit, the pages VACUUM reached first stayed not-all-visible and COUNT(*) had to visit the heap.
    """
    import psycopg

    sql, extra = seed_sql()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT setseed(%s)", [(first % 1000) / 1000.0])
        conn.execute(
            sql,
            {
                "roles": [json.dumps(r) for r in ROLE_VARIANTS],
                "gpus": [json.dumps(g) for g in GPU_VARIANTS],
                "orgs": ORGS,
                "skew": ORG_SKEW,
                "anchor": "2026-11-01T00:00:00+00:00",
                "lo": first,
                "hi": last,
                **extra,
            },
        )
        conn.execute("VACUUM (ANALYZE) nodes_node")
        row = conn.execute("SELECT relallvisible, relpages FROM pg_class WHERE relname = 'nodes_node'").fetchone()
    assert row is not None
    return row[0] / row[1] if row[1] else 1.0


def org_counts(dsn: str, org: str) -> tuple[int, int, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT is_deleted),"
            " count(*) FILTER (WHERE NOT is_deleted AND status = 'online') FROM nodes_node WHERE owner_org_id = %s",
            [org],
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


class Server:
    """One daphne process (the `make run` command, on loopback and a free port), killed on exit."""

    def __init__(self, label: str, env: dict[str, str], logdir: Path):
        self.label = label
        self.port = free_port()
        self.env = env
        self.log_path = logdir / f"{label}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        daphne = REPO / ".venv" / "bin" / "daphne"
        command = [str(daphne if daphne.exists() else shutil.which("daphne") or "daphne")]
        command += ["-b", HOST, "-p", str(self.port), "aiwm_project.asgi:application"]
        with self.log_path.open("wb") as logfile:
            self.proc = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        stop_group(self.proc, grace=10)

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def get(self, token: str, path: str = BENCH_PATH) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def wait_ready(self, token: str, timeout: float = 90.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} server exited ({self.proc.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, body = self.get(token)
                if status == 200:
                    return
                raise RuntimeError(f"{self.label} answered {status}: {body[:500]!r}")
            time.sleep(0.3)
        raise RuntimeError(f"{self.label} server not ready after {timeout:.0f}s:\n{self.log_tail()}")


@contextlib.contextmanager
def servers(env: dict[str, str], dsn: str, rows: int, token: str, logdir: Path) -> Iterator[tuple[Server, Server]]:
    env = {**env, "DATABASE_URL": dsn}
    service_settings = "bench.pool_settings" if env.get("AIWM_BENCH_DB_POOL") == "1" else "aiwm_project.settings"
    service = Server(f"service-{rows}", {**env, "DJANGO_SETTINGS_MODULE": service_settings}, logdir)
    bare = Server(f"bare-{rows}", {**env, "DJANGO_SETTINGS_MODULE": "bench.bare_settings"}, logdir)
    try:
        service.start()
        bare.start()
        service.wait_ready(token)
        bare.wait_ready(token)
        yield service, bare
    finally:
        for server in (service, bare):
            server.stop()


def run_load(server: Server, env: dict[str, str], token: str, args: argparse.Namespace, duration: float) -> Run:
    cfg = {
        "port": server.port,
        "path": BENCH_PATH,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "duration": duration,
    }
    assert server.proc is not None
    cpu_before = process_cpu_seconds(server.proc.pid)
    done = subprocess.run(
        [sys.executable, __file__, "_loadgen", json.dumps(cfg)],
        env={**env, "BENCH_TOKEN": token},
        capture_output=True,
        timeout=args.warmup + duration + REQUEST_TIMEOUT_S + 30,
        check=True,
    )
    cpu_after = process_cpu_seconds(server.proc.pid)
    result = json.loads(done.stdout)
    run = Run(latencies=result["latencies"], window=result["window"], errors=result["errors"])
    # The CPU time of the server process over the warm-up too; scaled to the measured window.
    run.cpu_s = (cpu_after - cpu_before) * duration / (duration + args.warmup)
    run.round_rps.append(run.rps)
    return run


def merge(total: Run, part: Run) -> None:
    total.latencies.extend(part.latencies)
    total.window += part.window
    for kind, n in part.errors.items():
        total.errors[kind] = total.errors.get(kind, 0) + n
    total.cpu_s += part.cpu_s
    total.round_rps.extend(part.round_rps)


def capture_service_queries(token: str) -> list[str]:
    """The SQL the service runs for the benchmarked request, captured from Django itself."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        response = Client().get(BENCH_PATH, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content[:500]
    return [q["sql"] for q in ctx.captured_queries if "nodes_node" in q["sql"]]


def bare_queries(org: str, conn: Any) -> list[str]:
    import psycopg

    from bench.bare_urls import COUNT_SQL, PAGE_SQL

    cursor = psycopg.ClientCursor(conn)
    return [cursor.mogrify(PAGE_SQL, [org, "online", 10]), cursor.mogrify(COUNT_SQL, [org, "online"])]


def explain(dsn: str, sql: str) -> list[str]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return [row[0] for row in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql).fetchall()]


def db_time_ms(dsn: str, sql: str, repeat: int = 9) -> float:
    """Median server-side execution time of one statement, warm cache.

    TIMING OFF: per-node timing calls the clock twice per row, which on this kind of VM costs more
    than counting an index entry, so EXPLAIN's own timing would inflate the COUNT several-fold.
    """
    import psycopg

    times = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(repeat):
            row = conn.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + sql).fetchone()
            assert row is not None
            plan = row[0]
            times.append((json.loads(plan) if isinstance(plan, str) else plan)[0]["Execution Time"])
    return statistics.median(times)


def check_identical(service: Server, bare: Server, token: str) -> tuple[dict[str, Any], bool]:
    s_status, s_body = service.get(token)
    b_status, b_body = bare.get(token)
    if s_status != 200 or b_status != 200:
        raise RuntimeError(f"service {s_status} {s_body[:300]!r} / bare {b_status} {b_body[:300]!r}")
    s_json, b_json = json.loads(s_body), json.loads(b_body)
    if s_json["data"] != b_json["data"] or s_json["pagination"] != b_json["pagination"]:
        for s_row, b_row in zip(s_json["data"], b_json["data"], strict=False):
            if s_row != b_row:
                log(f"  first differing row:\n    service {s_row}\n    bare    {b_row}")
                break
        raise RuntimeError("service and bare view answer different JSON")
    return s_json, s_body == b_body


def normalize_sql(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def fmt_int(n: int) -> str:
    return f"{n:,}"


def print_table(results: list[SizeResult], args: argparse.Namespace) -> None:
    log("")
    log(f"GET /api/nodes?{QUERY}  (concurrency {args.concurrency}, {args.duration:g}s per target per size)")
    log("")
    header = (
        "| rows | org rows (live, online) | target | req/s | p50 ms | p99 ms | server CPU ms/req "
        "| service/bare req/s (per round) | DB ms page + count |"
    )
    log(header)
    log("|---:|---|---|---:|---:|---:|---:|---|---|")
    for r in results:
        ratio = r.service.rps / r.bare.rps if r.bare.rps else float("nan")
        rounds = ", ".join(f"{x:.2f}" for x in r.round_ratios)
        org = f"{fmt_int(r.org_rows)} ({fmt_int(r.org_live)}, {fmt_int(r.org_online)})"
        for label, run in (("service", r.service), ("bare", r.bare)):
            extra = f"**{ratio:.2f}** ({rounds})" if label == "service" else ""
            db = f"{r.db_page_ms:.2f} + {r.db_count_ms:.2f}" if label == "service" else ""
            log(
                f"| {fmt_int(r.rows)} | {org} | {label} | {run.rps:.0f} | {run.pct(0.5):.1f} | {run.pct(0.99):.1f} "
                f"| {run.cpu_ms_per_request:.2f} | {extra} | {db} |"
            )


def summarize(results: list[SizeResult]) -> bool:
    log("")
    ok = True
    for r in results:
        ratio = r.service.rps / r.bare.rps
        met = ratio >= 0.5
        ok &= met
        log(f"goal 1  rows={fmt_int(r.rows):>9}  service/bare throughput = {ratio:.2f}  (>= 0.50: {_yes(met)})")
        if r.service.errors or r.bare.errors:
            log(f"        non-200 or failed requests: service {r.service.errors}, bare {r.bare.errors}")
    small, large = results[0], results[-1]
    if len(results) > 1:
        lat = large.service.pct(0.5) / small.service.pct(0.5)
        bare_lat = large.bare.pct(0.5) / small.bare.pct(0.5)
        met = lat <= 1.5
        ok &= met
        log(
            f"goal 2  service p50 at {fmt_int(large.rows)} / p50 at {fmt_int(small.rows)} = {lat:.2f}  "
            f"(<= 1.50: {_yes(met)});  bare: {bare_lat:.2f}"
        )
    return ok


def _yes(flag: bool) -> str:
    return "met" if flag else "MISSED"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", default="10000,100000,1000000", help="comma-separated row counts (ascending)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per target per row count")
    parser.add_argument("--concurrency", type=int, default=4, help="keep-alive connections of the load generator")
    parser.add_argument("--rounds", type=int, default=4, help="alternating service/bare rounds per row count")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each round")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL")
    parser.add_argument("--db", default="aiwm_bench", help="database to create (and drop) for the run")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    parser.add_argument(
        "--db-pool",
        action="store_true",
        help="experiment: both servers borrow connections from psycopg's pool (needs psycopg_pool importable)",
    )
    args = parser.parse_args(argv)
    args.sizes = sorted({int(x.replace("_", "")) for x in args.rows.split(",") if x.strip()})
    if not args.sizes or args.sizes[0] < 1000:
        parser.error("--rows: give row counts of at least 1000")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", args.db) or args.db in ("postgres", "template0", "template1"):
        parser.error("--db: a plain lower-case database name of the benchmark's own")
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
        AIWM_BENCH_DB_POOL="1" if args.db_pool else "0",
    )
    os.environ.clear()
    os.environ.update({**env, "DJANGO_SETTINGS_MODULE": "aiwm_project.settings"})

    org_index = typical_org_index()
    org = org_id(org_index)
    log(f"databases {', '.join(all_dbs)} on {pg}; logs in {logdir}")
    with admin_connect(admin_dsn) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    log(
        f"machine: {os.cpu_count()} CPUs, load average {load} at start; Python {platform.python_version()}, "
        f"PostgreSQL {pg_version}; daphne for every server, database connections "
        f"{'from a psycopg pool (--db-pool)' if args.db_pool else 'opened per request (DB_CONN_MAX_AGE=0)'}; "
        f"load generator: {args.concurrency} keep-alive "
        f"connections; {args.rounds} rounds x {args.duration / args.rounds:g}s (+{args.warmup:g}s warm-up) per target"
    )
    if args.db_pool:
        probe = subprocess.run([sys.executable, "-c", "import psycopg_pool"], env=env, capture_output=True)
        if probe.returncode:
            raise SystemExit("--db-pool needs psycopg_pool importable (e.g. on PYTHONPATH)")
    try:
        recreate_database(admin_dsn, args.db)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=REPO,
            env={**env, "DATABASE_URL": f"{pg}/{args.db}"},
            check=True,
        )
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
            results[rows] = SizeResult(rows, *counts, 0.0, 0.0, Run(), Run(), [])

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
            pairs = {rows: stack.enter_context(servers(env, dsns[rows], rows, token, logdir)) for rows in args.sizes}
            for rows, (service, bare) in pairs.items():
                body, byte_identical = check_identical(service, bare, token)
                log(
                    f"{fmt_int(rows):>9} rows: JSON of service and bare view identical ({len(body['data'])} rows, "
                    f"total {body['pagination']['total']}; byte-identical: "
                    f"{'yes' if byte_identical else 'no, same values (gpuDevices key order differs)'})"
                )
            per_round = args.duration / args.rounds
            for rnd in range(args.rounds):
                shift = rnd % len(args.sizes)
                line = []
                for rows in args.sizes[shift:] + args.sizes[:shift]:
                    service, bare = pairs[rows]
                    order = [("service", service), ("bare", bare)]
                    if rnd % 2:
                        order.reverse()
                    got = {label: run_load(server, env, token, args, per_round) for label, server in order}
                    merge(results[rows].service, got["service"])
                    merge(results[rows].bare, got["bare"])
                    ratio = got["service"].rps / got["bare"].rps if got["bare"].rps else float("nan")
                    results[rows].round_ratios.append(ratio)
                    line.append(f"{fmt_int(rows)}: {got['service'].rps:.0f}/{got['bare'].rps:.0f} req/s = {ratio:.2f}")
                log(f"round {rnd + 1} (service/bare): " + ";  ".join(line))

        for rows in args.sizes:
            after = org_counts(dsns[rows], org)
            before = (results[rows].org_rows, results[rows].org_live, results[rows].org_online)
            if after != before:
                raise RuntimeError(f"{rows} rows: the data changed during the run ({before} -> {after}): discard it")
        log("data set unchanged by the run (measured org's rows, live rows, live online rows)")
        ordered = [results[rows] for rows in args.sizes]
        print_table(ordered, args)
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
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if args.keep_db:
            log(f"kept databases {', '.join(all_dbs)} and server logs in {logdir}")
        else:
            for name in reversed(all_dbs):
                drop_database(admin_dsn, name)
            shutil.rmtree(logdir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_loadgen":
        loadgen_main(sys.argv[2])
    else:
        sys.exit(main(sys.argv[1:]))

"""What `--trace` and `--profile` print: the overhead per segment from the traced service's records
(bench.dispatching.trace), and where the worker thread's CPU goes per message (cProfile)."""

from __future__ import annotations

import json
import pstats
from pathlib import Path
from typing import Any

from bench.dispatching.messages import SHAPES, STEPS
from bench.dispatching.scenarios import ScenarioResult
from bench.dispatching.trace import RECORDS
from bench.harness.env import REPO
from bench.harness.report import log
from bench.harness.smoke import Check
from bench.harness.stats import p50_p99, pct


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
        "after commit: deliver_command (CAS sent while the node is on its connection)",
        "node bus hand-off (Redis PUBLISH, or to this process's loop for its own socket)",
        "hand-off done -> daemon receives (pub/sub and listener or the loop, emit, websocket)",
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


def trace_checks(paths: list[Path], profile_prefixes: list[Path]) -> list[Check]:
    """--smoke: every wrapper of the traced service wrote its records (a wrapper the service no
    longer calls through writes none), and with --profile every process dumped its statistics."""
    kinds: dict[str, int] = {}
    for path in paths:
        if path.exists():
            with path.open() as lines:
                for line in lines:
                    kind = json.loads(line)[0]
                    kinds[kind] = kinds.get(kind, 0) + 1
    missing = [kind for kind in RECORDS if not kinds.get(kind)]
    checks: list[Check] = [
        (f"trace records by kind {kinds}; missing: {', '.join(missing) or 'none'}", not missing),
    ]
    if profile_prefixes:
        written = [p for p in profile_prefixes if Path(f"{p}.calls.json").exists()]
        checks.append(
            (f"profile statistics of {len(written)}/{len(profile_prefixes)} web processes", written == profile_prefixes)
        )
    return checks

"""The node list benchmark's results: the table, the goals."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bench.harness.report import log
from bench.nodelist import QUERY
from bench.nodelist.loadgen import Run


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
    limit: Run
    round_ratios: list[float]  # service / near-limit, per round


def fmt_int(n: int) -> str:
    return f"{n:,}"


TARGETS = ("service", "bare", "limit")


def runs(r: SizeResult) -> dict[str, Run]:
    return {"service": r.service, "bare": r.bare, "limit": r.limit}


def ratio(a: Run, b: Run) -> float:
    return a.rps / b.rps if b.rps else float("nan")


def print_table(results: list[SizeResult], args: argparse.Namespace) -> None:
    log("")
    log(f"GET /api/nodes?{QUERY}  (concurrency {args.concurrency}, {args.duration:g}s per target per size)")
    log("targets: service = the product; bare = one Django view (same settings and middleware, raw SQL);")
    log("         limit = no framework, psycopg pool, same SQL and JSON (bench/limit_app.py)")
    log("")
    header = (
        "| rows | org rows (live, online) | target | req/s | p50 ms | p99 ms | server CPU ms/req "
        "| service/limit req/s (per round) | service/bare | DB ms page + count |"
    )
    log(header)
    log("|---:|---|---|---:|---:|---:|---:|---|---:|---|")
    for r in results:
        rounds = ", ".join(f"{x:.2f}" for x in r.round_ratios)
        org = f"{fmt_int(r.org_rows)} ({fmt_int(r.org_live)}, {fmt_int(r.org_online)})"
        for label, run in runs(r).items():
            first = label == "service"
            to_limit = f"**{ratio(r.service, r.limit):.2f}** ({rounds})" if first else ""
            to_bare = f"{ratio(r.service, r.bare):.2f}" if first else ""
            db = f"{r.db_page_ms:.2f} + {r.db_count_ms:.2f}" if first else ""
            log(
                f"| {fmt_int(r.rows)} | {org} | {label} | {run.rps:.0f} | {run.pct(0.5):.1f} | {run.pct(0.99):.1f} "
                f"| {run.cpu_ms_per_request:.2f} | {to_limit} | {to_bare} | {db} |"
            )


# The goals of the performance issue: a third of what the machine can do, fast, and flat in size.
LIMIT_RATIO_GOAL = 0.3
P50_GOAL_MS = 10.0
FLATNESS_GOAL = 1.5


def summarize(results: list[SizeResult]) -> bool:
    log("")
    ok = True
    for r in results:
        to_limit = ratio(r.service, r.limit)
        met = to_limit >= LIMIT_RATIO_GOAL
        ok &= met
        log(
            f"goal 1  rows={fmt_int(r.rows):>9}  service/limit throughput = {to_limit:.2f}  "
            f"(>= {LIMIT_RATIO_GOAL:.2f}: {_yes(met)});  service/bare = {ratio(r.service, r.bare):.2f}"
        )
        p50 = r.service.pct(0.5)
        met = p50 <= P50_GOAL_MS
        ok &= met
        log(f"goal 2  rows={fmt_int(r.rows):>9}  service p50 = {p50:.1f} ms  (<= {P50_GOAL_MS:g} ms: {_yes(met)})")
        errors = {label: run.errors for label, run in runs(r).items() if run.errors}
        if errors:
            ok = False
            log(f"        non-200 or failed requests: {errors}")
    small, large = results[0], results[-1]
    if len(results) > 1:
        lat = large.service.pct(0.5) / small.service.pct(0.5)
        limit_lat = large.limit.pct(0.5) / small.limit.pct(0.5)
        met = lat <= FLATNESS_GOAL
        ok &= met
        log(
            f"goal 3  service p50 at {fmt_int(large.rows)} / p50 at {fmt_int(small.rows)} = {lat:.2f}  "
            f"(<= {FLATNESS_GOAL:.2f}: {_yes(met)});  limit: {limit_lat:.2f}"
        )
    return ok


def _yes(flag: bool) -> str:
    return "met" if flag else "MISSED"

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
    round_ratios: list[float]


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

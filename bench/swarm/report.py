"""The swarm's results: one table (both targets of each server), the details, the goals."""

from __future__ import annotations

import argparse

from bench.harness.report import log
from bench.harness.smoke import Check, judge
from bench.harness.stats import ms, pct
from bench.swarm.clients import HEARTBEAT_S, METRICS_S
from bench.swarm.run import RunResult

GOAL_KIB_PER_CONN = 100.0
GOAL_P99_MS = 100.0
GOAL_CPU_RATIO = 2.0


def cpu_ratio(service: RunResult, echo: RunResult) -> float:
    """The service's CPU share over the echo's (NaN when the echo used no measurable CPU: a tiny run)."""
    echo_share = echo.cpu_s / echo.window_s
    return (service.cpu_s / service.window_s) / echo_share if echo_share else float("nan")


def print_results(results: list[RunResult], args: argparse.Namespace) -> bool:
    log("")
    log(
        f"{args.nodes} nodes; heartbeat every {HEARTBEAT_S:g} s, metrics every {METRICS_S:g} s; steady window "
        f"{args.duration:g} s after {args.settle:g} s of settling; swarm in {args.swarm_procs} processes; "
        f"ramp concurrency {args.ramp_concurrency}"
    )
    log("")
    log(
        "| server | target | connects/s | connect p50/p99 ms | CPU ms per connect | RSS idle MiB | RSS connected"
        " / end MiB | KiB/conn connected / end | msgs/s in | CPU % | CPU service/echo | PG backends CPU % "
        "| heartbeat->DB p50/p99 ms | ack RTT p50/p99 ms | disconnects, errors |"
    )
    log("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    by = {(r.kind, r.target): r for r in results}
    ok = True
    for r in results:
        echo = by.get((r.kind, "echo"))
        ratio = cpu_ratio(r, echo) if echo and r.target == "service" else None
        pg = f"{100 * r.pg_cpu_s / r.window_s:.1f}" if r.target == "service" else ""
        db = f"{ms(pct(r.db_latency, 0.5))} / {ms(pct(r.db_latency, 0.99))}" if r.target == "service" else ""
        problems = f"{r.disconnects}, {sum(r.errors.values())}"
        if r.connect_failures:
            problems += f", connect failures {r.connect_failures}"
        log(
            f"| {r.kind} | {r.target} | {r.connect_rate:.0f} | {ms(pct(r.connect_latency, 0.5))} / "
            f"{ms(pct(r.connect_latency, 0.99))} | {1000 * r.ramp_cpu_s / max(r.connected, 1):.2f} "
            f"| {r.rss_idle / 1024:.0f} | {r.rss_connected / 1024:.0f} / {r.rss_end / 1024:.0f} "
            f"| {r.kib_per_conn(r.rss_connected):.0f} / {r.kib_per_conn(r.rss_end):.0f} "
            f"| {r.hb_rate + r.metrics_rate:.0f} | {r.cpu_pct:.1f} | {f'**{ratio:.2f}**' if ratio else ''} | {pg} "
            f"| {db} | {ms(pct(r.rtt, 0.5))} / {ms(pct(r.rtt, 0.99))} | {problems} |"
        )
    log("")
    for r in results:
        log(
            f"{r.kind} {r.target}: {r.connected}/{r.nodes} registered in {r.ramp_s:.1f} s; server CPU "
            f"{r.cpu_s:.1f} s in {r.window_s:.1f} s (event loop thread {100 * r.main_thread_cpu_s / r.window_s:.0f} %, "
            f"other threads {100 * (r.cpu_s - r.main_thread_cpu_s) / r.window_s:.0f} %); "
            f"swarm processes CPU {100 * r.swarm_cpu_s / r.window_s:.0f} % "
            f"(of one core, all processes), client send lag p50/p99 {ms(pct(r.lag, 0.5))}/{ms(pct(r.lag, 0.99))} ms; "
            f"heartbeats {r.hb_rate:.0f}/s, metrics {r.metrics_rate:.0f}/s sent in the window"
            + (
                f"; heartbeat->DB matched {len(r.db_latency)}/{r.db_expected} sampled heartbeats "
                f"({r.db_missing} never seen); bench process CPU {100 * r.bench_cpu_s / r.window_s:.0f} %, "
                f"its listening PostgreSQL backend {100 * r.poller_pg_cpu_s / r.window_s:.0f} %"
                if r.target == "service"
                else ""
            )
        )
        log(f"    ack RTT p50 per slice of the window, ms: {', '.join(ms(x) for x in r.rtt_slices)}")
        if r.disconnect_offsets:
            log(f"    {disconnect_timing(r.disconnect_offsets, r.window_s)}")
        for text, _ in r.checks:
            log(f"    {text}")
        if r.errors:
            log(f"    error replies: {r.errors}")
    log("")
    for r in results:
        if r.target != "service":
            continue
        echo = by.get((r.kind, "echo"))
        kib = max(r.kib_per_conn(r.rss_connected), r.kib_per_conn(r.rss_end))
        p99 = 1000 * pct(r.db_latency, 0.99)
        goals = [
            (f"all {r.nodes} nodes connected and stayed", r.connected == r.nodes and r.disconnects == 0, ""),
            (f"RSS per connection above idle {kib:.0f} KiB", kib < GOAL_KIB_PER_CONN, f"< {GOAL_KIB_PER_CONN:g}"),
            (f"heartbeat->DB p99 {p99:.1f} ms", p99 < GOAL_P99_MS and r.db_missing == 0, f"< {GOAL_P99_MS:g}"),
        ]
        if echo is not None:
            ratio = cpu_ratio(r, echo)
            goals.append((f"CPU service/echo {ratio:.2f}", ratio <= GOAL_CPU_RATIO, f"<= {GOAL_CPU_RATIO:g}"))
        for text, met, bound in goals:
            ok &= met
            log(f"goal  {r.kind:7}  {text} {bound}: {'met' if met else 'MISSED'}")
    if args.smoke:
        log("\ngoals not judged (--smoke: tiny sizes); the checks are:")
        ok = judge(check for r in results for check in swarm_checks(r))
    return ok


def swarm_checks(r: RunResult, who: str = "") -> list[Check]:
    """What a swarm run must show (judged by --smoke): every node came up, stayed and got no error
    reply; telemetry flowed and was acknowledged; for the service (any target but the echo
    baseline, which stores nothing), every sampled heartbeat reached the database and it wrote
    what check_database checks. `who` names the run in each line (bench/fleet.py's runs judge
    these too)."""
    who = who or f"{r.kind} {r.target}:"
    checks: list[Check] = [
        (
            f"{who} {r.connected}/{r.nodes} nodes registered, failures {r.connect_failures or 'none'}",
            r.connected == r.nodes,
        ),
        (
            f"{who} unexpected disconnects {r.disconnects}, error replies {r.errors or 'none'}",
            not r.disconnects and not r.errors,
        ),
        (
            f"{who} heartbeats {r.hb_rate:.1f}/s sent in the window, {len(r.rtt)} acknowledged",
            r.hb_rate > 0 and bool(r.rtt),
        ),
    ]
    if r.target != "echo":
        checks.append(
            (
                f"{who} sampled heartbeats seen in the database {len(r.db_latency)}/{r.db_expected}",
                r.db_expected > 0 and r.db_missing == 0,
            )
        )
        checks += [(f"{who} {text}", held) for text, held in r.checks]
    return checks


def disconnect_timing(offsets: list[float], window_s: float) -> str:
    """When the unexpected disconnects happened, relative to the steady window."""
    before = [x for x in offsets if x < 0]
    inside = [x for x in offsets if 0 <= x < window_s]
    return (
        f"unexpected disconnects: {len(before)} before the window (ramp and settling), {len(inside)} in it, "
        f"{len(offsets) - len(before) - len(inside)} after; first at {offsets[0]:+.1f} s, last at {offsets[-1]:+.1f} s"
    )

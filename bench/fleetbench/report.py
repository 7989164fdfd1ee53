"""bench/fleet.py's results: one table (the idle service, the fleet on each number of web
processes), the details, the goals and the checks."""

from __future__ import annotations

import argparse

from bench.fleetbench.probe import ROUTES
from bench.fleetbench.run import FleetResult
from bench.harness.report import log
from bench.harness.smoke import Check, judge, judge_goals
from bench.harness.stats import ms, p50_p99, pct
from bench.swarm.report import disconnect_timing, swarm_checks

GOAL_P99_MS = 200.0  # heartbeat -> database, every node on one web process
GOAL_LIST_RATIO = 1.2  # a list's p50 with the fleet reporting, over the idle service's


def list_ratio(r: FleetResult, idle: FleetResult | None, route: str) -> float:
    return r.p50(route) / idle.p50(route) if idle is not None and idle.p50(route) else float("nan")


def print_results(results: list[FleetResult], args: argparse.Namespace) -> bool:
    idle = next((r for r in results if r.label == "idle"), None)
    log("")
    log(
        f"{args.nodes} nodes (idle service: {args.idle_nodes}) in one organization, a deployment per "
        f"{args.deployments_every} nodes; heartbeat every {args.heartbeat_s:g} s, metrics every {args.metrics_s:g} s; "
        f"steady window {args.duration:g} s after {args.settle:g} s of settling; swarm in {args.swarm_procs} "
        f"processes; ramp concurrency {args.ramp_concurrency}; lists probed every {1000 * args.probe_interval:g} ms"
    )
    log("")
    log(
        "| run | nodes connected | connects/s | RSS idle MiB | RSS connected / end MiB | KiB/conn connected / end "
        "| CPU % (per process) | msgs/s in | heartbeat->DB p50/p99 ms "
        + "".join(f"| GET {route} p50/p99 ms | x idle p50 " for route in ROUTES)
        + "| disconnects, errors |"
    )
    log("|---|---:|---:|---:|---:|---:|---:|---:|---:" + "|---:|---:" * len(ROUTES) + "|---|")
    for r in results:
        s = r.swarm
        per = f" ({' + '.join(f'{100 * c / s.window_s:.0f}' for c in s.process_cpu_s)})" if r.web_processes > 1 else ""
        lists = "".join(
            f"| {p50_p99(r.lists.get(route, []))} | {'' if r is idle else f'**{list_ratio(r, idle, route):.2f}**'} "
            for route in ROUTES
        )
        problems = f"{s.disconnects}, {sum(s.errors.values())}"
        if s.connect_failures:
            problems += f", connect failures {s.connect_failures}"
        log(
            f"| {r.name} | {s.connected}/{s.nodes} | {s.connect_rate:.0f} | {s.rss_idle / 1024:.0f} "
            f"| {s.rss_connected / 1024:.0f} / {s.rss_end / 1024:.0f} "
            f"| {s.kib_per_conn(s.rss_connected):.0f} / {s.kib_per_conn(s.rss_end):.0f} | {s.cpu_pct:.1f}{per} "
            f"| {s.hb_rate + s.metrics_rate:.0f} | {p50_p99(s.db_latency)} {lists}| {problems} |"
        )
    log("")
    for r in results:
        s = r.swarm
        log(
            f"{r.name}: {s.connected}/{s.nodes} registered in {s.ramp_s:.1f} s (connect p50/p99 "
            f"{p50_p99(s.connect_latency)} ms, server CPU {1000 * s.ramp_cpu_s / max(s.connected, 1):.2f} ms per "
            f"connect); connections per web process {s.process_connections}; server CPU {s.cpu_s:.1f} s in "
            f"{s.window_s:.1f} s (event loop threads {100 * s.main_thread_cpu_s / s.window_s:.0f} %), PostgreSQL "
            f"backends {100 * s.pg_cpu_s / s.window_s:.0f} %, swarm processes {100 * s.swarm_cpu_s / s.window_s:.0f} %"
            f" (of one core); client send lag p50/p99 {ms(pct(s.lag, 0.5))}/{ms(pct(s.lag, 0.99))} ms; heartbeats "
            f"{s.hb_rate:.0f}/s, metrics {s.metrics_rate:.0f}/s sent in the window; heartbeat->DB matched "
            f"{len(s.db_latency)}/{s.db_expected} sampled heartbeats; lists answered 200: "
            + ", ".join(f"{route} {len(r.lists.get(route, []))}" for route in ROUTES)
        )
        log(f"    ack RTT p50 per slice of the window, ms: {', '.join(ms(x) for x in s.rtt_slices)}")
        if s.disconnect_offsets:
            log(f"    {disconnect_timing(s.disconnect_offsets, s.window_s)}")
    log("")
    ok = judge_goals(goals(results, idle, args) if not args.smoke else [], args.smoke)
    log("\nchecks:")
    return judge(check for r in results for check in checks(r)) and ok


def goals(
    results: list[FleetResult], idle: FleetResult | None, args: argparse.Namespace
) -> list[tuple[str, bool, str]]:
    """Every node on ONE web process with heartbeat->DB p99 < 200 ms; each list's p50 with the fleet
    reporting within 1.2x of the idle service's, on every number of web processes run."""
    out: list[tuple[str, bool, str]] = []
    one = next((r for r in results if r.label == "fleet" and r.web_processes == 1), None)
    if one is None:
        out.append(("fleet x1: heartbeat->DB p99 not measured (--web-processes without 1)", False, ""))
    else:
        s = one.swarm
        p99 = 1000 * pct(s.db_latency, 0.99)
        stayed = s.connected == s.nodes and s.disconnects == 0
        out.append((f"fleet x1: all {s.nodes} nodes connected and stayed", stayed, ""))
        met = p99 < GOAL_P99_MS and s.db_expected > 0 and s.db_missing == 0
        out.append((f"fleet x1: heartbeat->DB p99 {p99:.1f} ms", met, f"< {GOAL_P99_MS:g}"))
    for r in results:
        if r.label != "fleet":
            continue
        for route in ROUTES:
            ratio = list_ratio(r, idle, route)
            base = ms(idle.p50(route)) if idle else "-"
            text = f"{r.name}: GET {route} p50 {ms(r.p50(route))} ms = {ratio:.2f} x the idle service's {base} ms"
            out.append((text, ratio <= GOAL_LIST_RATIO, f"<= {GOAL_LIST_RATIO:g}"))
    return out


def checks(r: FleetResult) -> list[Check]:
    """What must hold of every run, judged always: every node came up, stayed, got no error reply
    and heartbeated; every sampled heartbeat reached the database; what the service wrote
    (bench.swarm.run.check_database); the lists saw the whole organization and answered every
    probe 200; with several web processes, every one of them held nodes."""
    who = f"{r.name}:"
    out = swarm_checks(r.swarm, who) + [(f"{who} {text}", held) for text, held in r.checks]
    for route in ROUTES:
        answered, errors = len(r.lists.get(route, [])), r.list_errors.get(route, {})
        out.append(
            (
                f"{who} GET {route}: {answered} probes answered 200, others {errors or 'none'}",
                answered > 0 and not errors,
            )
        )
    if r.web_processes > 1:
        out.append(
            (
                f"{who} connections held by each of the {r.web_processes} web processes: {r.swarm.process_connections}",
                len(r.swarm.process_connections) == r.web_processes and all(r.swarm.process_connections),
            )
        )
    return out

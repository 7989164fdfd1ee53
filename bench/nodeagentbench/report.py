"""bench/node_agent.py's results: the throughput, the kill, the idle agent, the goals and the checks."""

from __future__ import annotations

import argparse

from bench.harness.report import log
from bench.harness.smoke import Check, judge, judge_goals
from bench.harness.stats import pct
from bench.nodeagentbench.downloads import CLIENTS, MIB, KillResult, Run
from bench.nodeagentbench.fileserver import SERVERS
from bench.nodeagentbench.idle import IdleResult

GOAL_THROUGHPUT_RATIO = 0.9  # the agent's median MiB/s over curl's, from the same server in the same run
GOAL_REFETCH_PERCENT = 1.0  # bytes fetched twice after a kill at 50 %, of the file's size
GOAL_IDLE_CPU_PERCENT = 1.0  # of one core, over the idle window
GOAL_IDLE_RSS_MIB = 80.0

Goal = tuple[str, bool, str]


def median(values: list[float]) -> float:
    return pct(values, 0.5)


def _runs(runs: list[Run], server: str, client: str) -> list[Run]:
    return [r for r in runs if r.server == server and r.client == client]


def ratio(runs: list[Run], server: str, client: str = "agent", *, body: bool = False) -> float:
    """`client`'s median MiB/s over curl's (`body`: over the time after the first byte)."""

    def speeds(name: str) -> list[float]:
        rs = _runs(runs, server, name)
        return [s for s in ((r.body_mib_s if body else r.mib_s) for r in rs) if s is not None]

    base = median(speeds("curl"))
    return median(speeds(client)) / base if base == base and base > 0 else float("nan")


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def print_throughput(runs: list[Run], servers: list[str], size: int, rounds: int) -> None:
    log("")
    log(
        f"{size / MIB:.0f} MiB file of random bytes, {rounds} round{'s' if rounds != 1 else ''} of each client from "
        "each server, interleaved "
        "(the order rotated round by round); MiB/s over each process's wall time (its start to its exit); "
        "'after the first byte': over the time from the response's headers on (the agent's first "
        "progress line, curl's time_starttransfer); 'first byte s' includes the agent's interpreter start"
    )
    log("")
    log(
        "| server | client | MiB/s per round | median MiB/s | x curl | after the first byte: median MiB/s | x curl "
        "| first byte s | client CPU s | server CPU s |"
    )
    log("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for server in servers:
        for client in CLIENTS:
            rs = sorted(_runs(runs, server, client), key=lambda r: r.round)
            if not rs:
                continue
            body = [s for s in (r.body_mib_s for r in rs) if s is not None]
            first = [r.first_byte_s for r in rs if r.first_byte_s is not None]
            shown = (
                f"**{ratio(runs, server, client):.2f}**" if client == "agent" else f"{ratio(runs, server, client):.2f}"
            )
            per_round = ", ".join(f"{r.mib_s:.0f}" for r in rs)
            log(
                f"| {server} | {client} | {per_round} | {median([r.mib_s for r in rs]):.0f} "
                f"| {shown} | {_fmt(median(body) if body else None)} | {ratio(runs, server, client, body=True):.2f} "
                f"| {_fmt(median(first) if first else None, 2)} | {median([r.cpu_s for r in rs]):.2f} "
                f"| {median([r.server_cpu_s for r in rs]):.2f} |"
            )
    log("")
    for server in servers:
        log(f"server {server}: {SERVERS[server]}")


def print_kills(kills: list[KillResult], fraction: float) -> None:
    log("")
    log(
        f"killed (SIGKILL) once the partial file held {100 * fraction:g} % of the file, then started again to the end; "
        "byte counts from the server's counters (body bytes written to sockets)"
    )
    log("")
    log(
        "| server | client | in the file at the kill | sent to the killed process | lost in flight "
        "| re-fetched in all | re-fetched % of the file | resume s |"
    )
    log("|---|---|---:|---:|---:|---:|---:|---:|")
    for k in kills:
        log(
            f"| {k.server} | {k.client} | {k.killed_at / MIB:.1f} MiB ({100 * k.killed_at / k.size:.1f} %) "
            f"| {k.first_sent / MIB:.1f} MiB | {k.lost_in_flight / 1024:.0f} KiB | {k.refetched / 1024:.0f} KiB "
            f"| **{100 * k.refetched / k.size:.3f}** | {k.resume_seconds:.1f} |"
        )


def print_idle(idle: IdleResult) -> None:
    log("")
    log(
        f"idle agent: `python -m aiwm_node run` registered to `manage.py serve` (SQLite) in {idle.register_s:.1f} s, "
        f"heartbeat every {idle.heartbeat_ms / 1000:g} s, metrics every {idle.metrics_ms / 1000:g} s "
        f"(register.ack's, from the service's settings); {idle.window_s:.0f} s window, RSS sampled every second"
    )
    log("")
    log("| process | CPU s | CPU % of a core | CPU ms per minute | RSS median MiB | RSS max MiB |")
    log("|---|---:|---:|---:|---:|---:|")
    rows = [
        ("agent (`python -m aiwm_node run`)", idle.agent),
        ("baseline: the agent's imports, asleep", idle.baseline),
    ]
    for label, s in rows:
        rss = [kib / 1024 for kib in s.rss_kib]
        share = s.cpu_s / idle.window_s
        log(
            f"| {label} | {s.cpu_s:.3f} | **{100 * share:.3f}** | {60000 * share:.0f} "
            f"| {_fmt(median(rss) if rss else None, 1)} | {_fmt(max(rss) if rss else None, 1)} |"
        )
    log(
        f"| control plane (`manage.py serve`, this one node) | {idle.server_cpu_s:.3f} "
        f"| {100 * idle.server_cpu_s / idle.window_s:.3f} | {60000 * idle.server_cpu_s / idle.window_s:.0f} | | |"
    )


def goals(runs: list[Run], servers: list[str], kills: list[KillResult], idle: IdleResult | None) -> list[Goal]:
    out: list[Goal] = []
    for server in servers:
        r = ratio(runs, server)
        n = len(_runs(runs, server, "agent"))
        out.append(
            (
                f"agent download throughput from {server} = {r:.2f} x curl's (medians of {n} rounds)",
                r >= GOAL_THROUGHPUT_RATIO,
                f">= {GOAL_THROUGHPUT_RATIO:g}",
            )
        )
    for k in kills:
        if k.client != "agent":
            continue
        share = 100 * k.refetched / k.size
        out.append(
            (
                f"re-fetched after a kill at {100 * k.killed_at / k.size:.0f} % from {k.server} = {share:.3f} % of the "
                f"file ({k.refetched / MIB:.2f} MiB)",
                share < GOAL_REFETCH_PERCENT,
                f"< {GOAL_REFETCH_PERCENT:g} %",
            )
        )
    if idle is not None:
        cpu = 100 * idle.agent.cpu_s / idle.window_s
        rss = max(idle.agent.rss_kib) / 1024 if idle.agent.rss_kib else float("inf")
        out.append(
            (f"idle agent CPU over {idle.window_s:.0f} s = {cpu:.3f} % of a core", cpu < GOAL_IDLE_CPU_PERCENT, "< 1 %")
        )
        out.append((f"idle agent RSS max = {rss:.1f} MiB", rss < GOAL_IDLE_RSS_MIB, f"< {GOAL_IDLE_RSS_MIB:g} MiB"))
    return out


def print_results(
    runs: list[Run], kills: list[KillResult], idle: IdleResult | None, args: argparse.Namespace, size: int
) -> bool:
    if runs:
        print_throughput(runs, args.servers, size, args.rounds)
    if kills:
        print_kills(kills, args.kill_at)
    if idle is not None:
        print_idle(idle)
    log("")
    ok = judge_goals(goals(runs, args.servers, kills, idle), args.smoke)
    log("\nchecks:")
    checks: list[Check] = [c for r in runs for c in r.checks] + [c for k in kills for c in k.checks]
    if idle is not None:
        checks += idle.checks
    return judge(checks) and ok

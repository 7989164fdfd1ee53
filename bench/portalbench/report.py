"""bench/portal.py's results: the pages at both sizes, the fan-out, the goals and the checks."""

from __future__ import annotations

import argparse

from bench.harness.report import log
from bench.harness.smoke import Check, judge, judge_goals
from bench.harness.stats import ms, p50_p99, pct
from bench.portalbench.fanout import FanoutResult
from bench.portalbench.pages import PAGES, PageTimes

GOAL_PAGE_RATIO = 1.5  # a page's p50 at --nodes over its p50 at --small-nodes
GOAL_FANOUT_P99_MS = 250.0  # a heartbeat's send -> its event at the last subscriber
PAGE_NAMES = {"/admin/": "dashboard `/admin/`", "/admin/nodes/node/": "nodes changelist `/admin/nodes/node/`"}


def ratio(small: PageTimes, large: PageTimes, page: str) -> float:
    base = pct(small.latencies[page], 0.5)
    return pct(large.latencies[page], 0.5) / base if base == base and base > 0 else float("nan")


def print_results(
    pages: dict[int, PageTimes], fanouts: list[FanoutResult], args: argparse.Namespace, seeded: dict[str, int]
) -> bool:
    small, large = pages.get(args.small_nodes), pages.get(args.nodes)
    log("")
    log(
        f"{args.nodes} nodes with 8 GPUs each (and {args.small_nodes} in the same run), {seeded['metrics']:,} metric "
        f"points ({args.metric_nodes} nodes x {args.metric_days:g} days x 1/min); one logged-in admin client, "
        f"{args.requests} requests of each page after {args.warmup} warm-up rounds, the fleets interleaved "
        "round by round, one request at a time"
    )
    log("")
    middle = pages.get(args.middle_nodes) if args.middle_nodes else None
    between = f" | {args.middle_nodes} nodes p50 / p99 ms" if middle else ""
    log(
        f"| page | {args.small_nodes} nodes p50 / p99 ms{between} | {args.nodes} nodes p50 / p99 ms | x p50 "
        f"| {'x p50 over the middle | ' if middle else ''}KiB |"
    )
    log("|---|---:|---:|---:|---:|" + ("---:|---:|" if middle else ""))
    for page in PAGES:
        if small is None or large is None:
            break
        sizes = f"{small.sizes.get(page, 0) / 1024:.0f} / {large.sizes.get(page, 0) / 1024:.0f}"
        mid = f" | {p50_p99(middle.latencies[page])}" if middle else ""
        over_middle = f"{ratio(middle, large, page):.2f} | " if middle else ""
        log(
            f"| {PAGE_NAMES[page]} | {p50_p99(small.latencies[page])}{mid} | {p50_p99(large.latencies[page])} "
            f"| **{ratio(small, large, page):.2f}** | {over_middle}{sizes} |"
        )
    if fanouts:
        log("")
        log(
            f"/api/events fan-out on one web process, {args.nodes} nodes: {args.subscribers} SSE subscribers in "
            f"{args.subscriber_procs} processes; {args.senders} daemons heartbeating round robin, one heartbeat every "
            f"{1000 * args.interval:g} ms for {args.fanout_duration:g} s"
        )
        log("")
        log(
            "| events via | subscribed | heartbeats | to every subscriber | send -> first p50 / p99 ms "
            "| send -> last p50 / p99 ms | max ms | server CPU % | subscribers' CPU % |"
        )
        log("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for f in fanouts:
            window = max(f.window_s + 3.0, 1e-9)  # the window and the drain after it
            log(
                f"| {f.mode} | {f.subscribed}/{f.subscribers} (in {f.subscribe_s:.1f} s) | {len(f.sent)} "
                f"| {100 * f.share_all:.1f} % | {p50_p99(f.first)} | **{p50_p99(f.latency)}** "
                f"| {ms(max(f.latency)) if f.latency else '-'} | {100 * f.server_cpu_s / window:.0f} "
                f"| {100 * f.subscribers_cpu_s / window:.0f} |"
            )
    log("")
    ok = judge_goals(goals(small, large, fanouts) if not args.smoke else [], args.smoke)
    log("\nchecks:")
    checks: list[Check] = []
    for nodes, times in sorted(pages.items()):
        checks += [(f"{nodes} nodes: {text}", held) for text, held in times.checks]
    for f in fanouts:
        checks += f.checks
    return judge(checks) and ok


def goals(small: PageTimes | None, large: PageTimes | None, fanouts: list[FanoutResult]) -> list[tuple[str, bool, str]]:
    out: list[tuple[str, bool, str]] = []
    if small is not None and large is not None:
        for page in PAGES:
            r = ratio(small, large, page)
            out.append(
                (
                    f"{PAGE_NAMES[page]} p50 at the large fleet = {r:.2f} x the small's",
                    r <= GOAL_PAGE_RATIO,
                    f"<= {GOAL_PAGE_RATIO:g}",
                )
            )
    for f in fanouts:
        p99 = 1000 * pct(f.latency, 0.99)
        met = p99 < GOAL_FANOUT_P99_MS and f.delivered_all == len(f.sent) > 0
        text = (
            f"fan-out ({f.mode}): send -> last of {f.subscribers} subscribers p99 {p99:.1f} ms, every heartbeat to all"
        )
        out.append((text, met, f"< {GOAL_FANOUT_P99_MS:g}"))
    return out

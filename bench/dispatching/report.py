"""The dispatch benchmark's report: the scenarios' table, the paths across web processes, the web
process counts compared, the baselines and the ratios to them, the checks, the goals."""

from __future__ import annotations

import argparse
from typing import Any

from bench.dispatching.baselines import Baseline
from bench.dispatching.messages import STEPS
from bench.dispatching.scenarios import ScenarioResult
from bench.harness.redis_db import redis_server_version
from bench.harness.report import SOCKET_STACK, log, versions
from bench.harness.smoke import judge
from bench.harness.stats import ms, p50_p99, pct

GOAL_P50_MS = 20.0
GOAL_P99_MS = 100.0
GOAL_STEPS_PER_S = 100.0


def print_report(
    results: list[ScenarioResult],
    baselines: list[Baseline],
    args: argparse.Namespace,
    daemons: dict[str, dict[str, Any]],
) -> bool:
    log("")
    log(
        f"{args.executions} executions of {STEPS} steps per scenario; {args.nodes} daemons in {args.daemon_procs} "
        f"process(es); paced: {args.rate:g} executions/s ({STEPS * args.rate:g} steps/s offered), burst: all at once, "
        f"{args.burst_concurrency} start requests in flight; warm-up {args.warmup} executions per shape; "
        f"web processes: {', '.join(map(str, args.webs))} (run one after the other; daemons sticky round-robin over "
        f"them, start requests round-robin)"
        + ("; SERVICE TRACED (--trace): not the goals' figures" if args.trace else "")
    )
    log("")
    log(
        "| server | web procs | shape | start | executions | steps done | wall s | steps/s "
        "| overhead p50 / p99 / max ms | fan-out 1st / 2nd child p50 ms | start -> 1st command p50 / p99 ms "
        "| execution p50 / p99 ms | CPU ms/step server / PG / Celery / daemons | server event loop % |"
    )
    log("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s = r.scenario
        fan = f"{ms(pct(r.first_child, 0.5))} / {ms(pct(r.second_child, 0.5))}" if s.shape == "fanout" else ""
        cpu = " / ".join(f"{r.cpu_ms_per_step(name):.1f}" for name in ("server", "postgres", "celery", "daemons"))
        loops = " / ".join(f"{100 * seconds / r.window_s:.0f}" for seconds in r.loop_threads_s)
        log(
            f"| {r.kind} | {r.web} | {s.shape} | {s.mode} | {len(s.ids)} | {r.steps_done} | {r.wall_s:.2f} | "
            f"**{r.steps_per_s:.0f}** | **{p50_p99(r.overhead)}** / {ms(max(r.overhead, default=float('nan')))} "
            f"| {fan} | {p50_p99(r.start_latency)} | {p50_p99(r.durations)} | {cpu} | {loops} |"
        )
    log("")
    log(
        "overhead: a daemon received step k's command minus the time the daemon of k's dependency sent that "
        "dependency's command.result (its command.ack went just before); fan-out: both children from the parent's "
        "result, 1st/2nd = the earlier/later of the two. steps/s: steps completed / (last completion NOTIFY - first "
        "start request); paced runs show the offered rate. start -> 1st command: start request sent -> step 0's "
        "command at the daemon. execution: start request sent -> completion NOTIFY. CPU ms/step: CPU of the "
        "process(es) over the scenario / steps completed (server: the web processes' sum; PG: backends connected "
        "at the scenario's end). server event loop %: of one core, per web process."
    )
    if any(r.web > 1 for r in results):
        log("")
        log("Commands by path: created in the web process holding the daemon's socket (same) or in another (cross):")
        log("")
        log(
            "| server | web procs | shape | start | steps 1-2 cross / all | overhead same p50 / p99 ms "
            "| overhead cross p50 / p99 ms | step 0 cross / all | start -> 1st command same p50 / p99 ms "
            "| start -> 1st command cross p50 / p99 ms |"
        )
        log("|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            s = r.scenario
            log(
                f"| {r.kind} | {r.web} | {s.shape} | {s.mode} "
                f"| {len(r.overhead_cross)} / {len(r.overhead_same) + len(r.overhead_cross)} "
                f"| {p50_p99(r.overhead_same)} | {p50_p99(r.overhead_cross)} | {r.starts_cross} / {len(s.ids)} "
                f"| {p50_p99(r.start_latency_same)} | {p50_p99(r.start_latency_cross)} |"
            )
        log("")
        log(
            "A step's command is created where its dependency's command.result was handled (the web process of "
            "the dependency's daemon), step 0's where its start request went; either way it is PUBLISHed to Redis "
            "and emitted by the listener of the process that holds the daemon's socket."
        )
    if len(args.webs) > 1:
        log("")
        log(f"Web processes {' / '.join(map(str, args.webs))}, the same run (ratio: to {args.webs[0]}):")
        log("")
        log("| server | shape | start | steps/s | ratio | CPU ms/step server | overhead p50 ms |")
        log("|---|---|---|---:|---:|---:|---:|")
        for kind in args.servers:
            for mode in args.modes:
                for shape in args.shapes:
                    row = [r for r in results if (r.kind, r.scenario.mode, r.scenario.shape) == (kind, mode, shape)]
                    if not row:
                        continue
                    first = row[0].steps_per_s or float("nan")
                    rates = " / ".join(f"{r.steps_per_s:.0f}" for r in row)
                    ratios = " / ".join(f"{r.steps_per_s / first:.2f}" for r in row)
                    cpu = " / ".join(f"{r.cpu_ms_per_step('server'):.1f}" for r in row)
                    p50s = " / ".join(ms(pct(r.overhead, 0.5)) for r in row)
                    log(f"| {kind} | {shape} | {mode} | {rates} | {ratios} | {cpu} | {p50s} |")
    log("")
    log("Baselines (one message at a time, the same machine, the same run):")
    log("")
    log("| baseline | what | round trips | p50 ms | p99 ms |")
    log("|---|---|---:|---:|---:|")
    for b in baselines:
        log(f"| {b.name} | {b.what} | {len(b.rtts)} | {ms(pct(b.rtts, 0.5))} | {ms(pct(b.rtts, 0.99))} |")
    if baselines:
        log("")
        log("Engine overhead / baseline of the same server kind, p50 ratio (p99 ratio):")
        log("")
        log("| server | web procs | shape | start | redis | echo | echo-redis |")
        log("|---|---:|---|---|---:|---:|---:|")
        by_name = {base.name: base for base in baselines}
        for r in results:
            cells = []
            for name in ("redis", f"echo ({r.kind})", f"echo-redis ({r.kind})"):
                base = by_name.get(name)
                if base is None:
                    cells.append("-")
                    continue
                p50 = pct(r.overhead, 0.5) / pct(base.rtts, 0.5)
                p99 = pct(r.overhead, 0.99) / pct(base.rtts, 0.99)
                cells.append(f"{p50:.0f}x ({p99:.0f}x)")
            log(f"| {r.kind} | {r.web} | {r.scenario.shape} | {r.scenario.mode} | " + " | ".join(cells) + " |")
    log("")
    ok = True
    for r in results:
        per_web = " / ".join(f"{100 * r.cpu[f'server {i}'] / r.window_s:.0f}" for i in range(r.web))
        loops = " / ".join(f"{100 * seconds / r.window_s:.0f}" for seconds in r.loop_threads_s)
        log(
            f"{r.label} {r.scenario.name}: {r.window_s:.1f} s window; CPU % of one core: server "
            f"{100 * r.cpu['server'] / r.window_s:.0f} (per web process {per_web}; event loop threads {loops}), "
            f"PostgreSQL backends {100 * r.cpu['postgres'] / r.window_s:.0f}, Celery worker+beat "
            f"{100 * r.cpu['celery'] / r.window_s:.0f}, daemons {100 * r.cpu['daemons'] / r.window_s:.0f}, "
            f"bench process (starts, LISTEN) {100 * r.cpu['bench'] / r.window_s:.0f}"
        )
        if not r.finished:
            log(f"    NOT FINISHED: {len(r.done)}/{len(r.scenario.ids)} executions reached a terminal status in time")
        judge(r.checks, "    ")
        ok &= r.ok
    for kind, d in daemons.items():
        fine = d["duplicates"] == 0 and not d["errors"] and d["disconnects"] == 0 and not d["other_events"]
        log(
            f"{kind} daemons: duplicates {d['duplicates']}, error replies {d['errors'] or 'none'}, unexpected "
            f"disconnects {d['disconnects']}, other events {d['other_events'] or 'none'}: {'ok' if fine else 'FAILED'}"
        )
        ok &= fine
    log("")
    checks_ok, ok = ok, True
    paced = [r for r in results if r.scenario.mode == "paced"]
    burst = [r for r in results if r.scenario.mode == "burst"]
    for r in paced:
        p50, p99 = 1000 * pct(r.overhead, 0.5), 1000 * pct(r.overhead, 0.99)
        for text, met, bound in (
            (f"overhead p50 {p50:.1f} ms", p50 < GOAL_P50_MS, f"< {GOAL_P50_MS:g}"),
            (f"overhead p99 {p99:.1f} ms", p99 < GOAL_P99_MS, f"< {GOAL_P99_MS:g}"),
        ):
            log(f"goal  {r.label:10}  {r.scenario.name:13}  {text} {bound}: {'met' if met else 'MISSED'}")
            ok &= met
    for r in burst:
        met = r.steps_per_s >= GOAL_STEPS_PER_S
        log(
            f"goal  {r.label:10}  {r.scenario.name:13}  {r.steps_per_s:.0f} steps/s >= {GOAL_STEPS_PER_S:g}: "
            f"{'met' if met else 'MISSED'}"
        )
        ok &= met
    if not paced:
        log("goal  latency: not judged (no paced scenario; --start paced)")
    if not burst:
        log("goal  steps/s: not judged (no burst scenario; --start burst)")
    if args.smoke:
        log("goals not judged (--smoke: tiny sizes): the checks above are")
        return checks_ok
    return checks_ok and ok


def run_versions(redis_url: str) -> str:
    """The versions the run's line names: the socket stack, Celery, Redis, Channels, psycopg, the Redis server."""
    extra = ("celery", "redis", "channels", "channels-redis", "psycopg")
    return f"{versions(*SOCKET_STACK, *extra)}; Redis server {redis_server_version(redis_url)}"

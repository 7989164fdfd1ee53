"""One run of bench/fleet.py: the service (`manage.py serve`, on one or several web processes), the
swarm at the contract's rate through bench.swarm.run's steps, and the prober timing the lists in
the steady window."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fleetbench.probe import ROUTES, ListProber, list_total
from bench.harness.servers import SERVICE_APP, Server
from bench.harness.smoke import Check
from bench.harness.stats import pct
from bench.swarm.run import RunResult, SwarmRun

WARM_REQUESTS_PER_PROCESS = 4  # of each list, per web process, before the idle RSS


@dataclass
class FleetResult:
    label: str  # "idle" or "fleet"
    web_processes: int
    swarm: RunResult
    lists: dict[str, list[float]] = field(default_factory=dict)  # route -> latencies (s) of the 200s in the window
    list_errors: dict[str, dict[str, int]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)  # the lists' totals; the swarm's are in swarm.checks

    @property
    def name(self) -> str:
        return f"{self.label} x{self.web_processes}"

    def p50(self, route: str) -> float:
        return pct(self.lists.get(route, []), 0.5)


def run_fleet(
    label: str,
    web_processes: int,
    args: argparse.Namespace,
    env: dict[str, str],
    logdir: Path,
    fleet: tuple[list[dict[str, Any]], list[dict[str, Any]], int],
    dsn: str,
    token: str,
) -> FleetResult:
    """One run on a fresh database: `fleet` is (nodes, warm-up nodes, deployments) as seeded."""
    nodes, warmup_nodes, deployments = fleet
    tag = f"-{label}-x{web_processes}"
    server = Server("serve", SERVICE_APP, env, logdir, tag[1:], workers=web_processes)
    result = FleetResult(
        label, web_processes, RunResult(kind="serve", target=f"{label} x{web_processes}", nodes=len(nodes))
    )
    intervals = {"heartbeat_s": args.heartbeat_s, "metrics_s": args.metrics_s}
    run = SwarmRun(server, result.swarm, args, logdir, dsn, service=True, swarm_cfg=intervals, tag=tag)
    prober = ListProber(server.port, token, args.probe_interval)
    try:
        server.start()
        server.wait_ready(probe=lambda: list_total(server, token, ROUTES[0])[0] == 200)
        # The lists see the whole organization: every node (not the warm-up's) and every deployment.
        expected = {ROUTES[0]: len(nodes), ROUTES[1]: deployments}
        for route, want in expected.items():
            status, total = list_total(server, token, route)
            result.checks.append((f"GET {route}: HTTP {status}, total {total} (seeded {want})", total == want))
        prober.warm(WARM_REQUESTS_PER_PROCESS * web_processes)
        run.prepare(nodes, warmup_nodes)
        run.ramp()
        run.settle()
        t_end = run.open_window()
        prober.start()
        time.sleep(max(0.0, t_end - time.monotonic()))
        prober.stop()
        run.close_window()
        run.finish()
    finally:
        prober.stop()
        run.close()
        server.stop()
    result.lists, result.list_errors = prober.latencies, prober.errors
    return result

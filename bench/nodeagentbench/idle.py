"""The idle agent: the real `python -m aiwm_node run`, connected and registered to a real control
plane, doing nothing but its telemetry, its CPU time and RSS sampled over a window.

The control plane is the embedded default (`manage.py serve`, SQLite, no Redis), the node is
enrolled with the service's own `nodes.services.local_node_enroll` (its record and a node token,
what `make run` does for this machine), and the heartbeat and metrics intervals are the service's
settings (AIWM_HEARTBEAT_INTERVAL_MS, AIWM_METRICS_INTERVAL_MS), which register.ack hands the
agent: 30 s and 60 s by default, the contract's rates.

The baseline, sampled in the same window: a process of the same interpreter that imports what the
agent imports and sleeps — the floor under the agent's RSS (the interpreter and its libraries) and
the noise floor of the CPU reading. What is above it is the agent's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.databases import migrate
from bench.harness.env import REPO, service_env
from bench.harness.procfs import cpu_seconds, rss_kib
from bench.harness.servers import SERVICE_APP, Server
from bench.harness.smoke import Check
from bench.nodeagentbench.downloads import agent_env
from tests.support.agent import AgentProcess

ORG = "org-agent-bench"
NODE_ID = "bench-idle-agent"
REGISTER_TIMEOUT_S = 60.0
SAMPLE_S = 1.0
# The agent's imports (aiwm_node.cli runs aiwm_node.agent, which loads the commands, the
# supervisor, the downloader, psutil, socketio, httpx and NVML's binding).
BASELINE_CODE = (
    "import aiwm_node.cli, aiwm_node.agent, aiwm_node.commands, aiwm_node.download, aiwm_node.supervisor, time; "
    "print('ready', flush=True); time.sleep(86400)"
)
ENROL_CODE = (
    "import json, django; django.setup(); from nodes.services import local_node_enroll; "
    f"node, token = local_node_enroll(org_id={ORG!r}, node_id={NODE_ID!r}, name='Idle agent (benchmark)'); "
    "print(json.dumps({'token': token}))"
)
# What the control plane stored of the window: the node's last heartbeat and its metric points.
STORED_CODE = """
import json, sys, django
django.setup()
from datetime import UTC, datetime
from nodes.models import Node, NodeMetric
org, node_id, since = sys.argv[1], sys.argv[2], datetime.fromtimestamp(float(sys.argv[3]), tz=UTC)
node = Node.objects.for_org(org).get(node_id=node_id)
points = NodeMetric.objects.filter(owner_org_id=org, node_id=node_id, received_at__gte=since).count()
print(json.dumps({
    "lastHeartbeat": node.last_heartbeat.timestamp() if node.last_heartbeat else None,
    "connected": node.websocket_connected, "status": node.status, "metricPoints": points,
}))
"""


@dataclass
class Sampled:
    cpu_s: float = 0.0
    rss_kib: list[int] = field(default_factory=list)


@dataclass
class IdleResult:
    window_s: float
    heartbeat_ms: int
    metrics_ms: int
    agent: Sampled
    baseline: Sampled
    server_cpu_s: float
    register_s: float  # the agent's start -> its register.ack
    stored: dict[str, object]
    checks: list[Check] = field(default_factory=list)


def _python(code: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode:
        raise RuntimeError(f"python -c failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def run_idle(workdir: Path, window: float, settle: float, heartbeat_ms: int, metrics_ms: int) -> IdleResult:
    var = workdir / "var"
    var.mkdir(parents=True, exist_ok=True)
    env = service_env(
        dsn=f"sqlite:///{var / 'aiwm.sqlite3'}",
        logdir=workdir,
        # What `make run` has: no Redis and no IAM secret; the telemetry settings are the service's
        # defaults unless the benchmark sets the two intervals (below).
        drop=("REDIS_URL", "IAM_JWT_SECRET", "AIWM_TELEMETRY", "AIWM_NODE_RATE", "AIWM_HTTPS", "AIWM_SSL"),
        DJANGO_SETTINGS_MODULE="aiwm_project.settings",
        AIWM_HEARTBEAT_INTERVAL_MS=str(heartbeat_ms),
        AIWM_METRICS_INTERVAL_MS=str(metrics_ms),
    )
    migrate(env["DATABASE_URL"], env)
    token = json.loads(_python(ENROL_CODE, env))["token"]
    server = Server("serve", SERVICE_APP, env, workdir, "control-plane")
    agent: AgentProcess | None = None
    baseline: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        server.wait_ready()
        # The operator's reconnect settings (AgentProcess's own are quick ones, for tests).
        agent = AgentProcess(
            server=server.url,
            token=token,
            data_dir=workdir / "agent",
            reconnect_base_seconds=1.0,
            reconnect_cap_seconds=60.0,
        )
        baseline = subprocess.Popen(
            [sys.executable, "-c", BASELINE_CODE], cwd=REPO, env=agent_env(), stdout=subprocess.PIPE
        )
        started = time.monotonic()
        agent.start()
        session = agent.data_dir / "session.json"
        while not session.exists():
            if not agent.alive() or time.monotonic() - started > REGISTER_TIMEOUT_S:
                raise RuntimeError(
                    f"the agent did not register within {REGISTER_TIMEOUT_S:.0f}s:\n{agent.log()[-3000:]}"
                )
            time.sleep(0.05)
        register_s = time.monotonic() - started
        assert baseline.stdout is not None
        baseline.stdout.readline()  # its imports are done
        time.sleep(settle)  # past register's own work (the machine's facts, the outbox's first round)

        window_start = time.time()
        cpu0 = (cpu_seconds(agent.pid), cpu_seconds(baseline.pid), cpu_seconds(server.pid))
        agent_s, baseline_s = Sampled(), Sampled()
        t0 = time.monotonic()
        alive = True
        while (elapsed := time.monotonic() - t0) < window:
            alive &= agent.alive()
            if not alive:
                break
            agent_s.rss_kib.append(rss_kib(agent.pid))
            baseline_s.rss_kib.append(rss_kib(baseline.pid))
            time.sleep(min(SAMPLE_S, max(window - elapsed, 0.0)))
        measured = time.monotonic() - t0
        if alive:
            agent_s.cpu_s = cpu_seconds(agent.pid) - cpu0[0]
            agent_s.rss_kib.append(rss_kib(agent.pid))
        baseline_s.cpu_s = cpu_seconds(baseline.pid) - cpu0[1]
        server_cpu = cpu_seconds(server.pid) - cpu0[2]
        # The telemetry buffer's flush (AIWM_TELEMETRY_FLUSH_MS, 50 ms) before the points are counted.
        time.sleep(0.5)
        stored = json.loads(_python(STORED_CODE, env, ORG, NODE_ID, str(window_start)))
        stop_code = agent.stop()
        checks = _checks(alive, stored, window_start, measured, heartbeat_ms, metrics_ms, stop_code, agent_s)
        return IdleResult(
            measured, heartbeat_ms, metrics_ms, agent_s, baseline_s, server_cpu, register_s, stored, checks
        )
    finally:
        if agent is not None and agent.alive():
            agent.kill()
        if baseline is not None:
            baseline.kill()
            baseline.wait(10)
        server.stop()


def _checks(
    alive: bool,
    stored: dict[str, object],
    window_start: float,
    window: float,
    heartbeat_ms: int,
    metrics_ms: int,
    stop_code: int,
    agent: Sampled,
) -> list[Check]:
    last = stored.get("lastHeartbeat")
    # Every metrics interval in the window sends one point; one may fall just outside its edges.
    expected = max(1, int(window * 1000 // metrics_ms) - 1)
    points = stored.get("metricPoints")
    return [
        (f"the agent ran through the {window:.0f} s window ({len(agent.rss_kib)} RSS samples)", alive),
        (
            f"the control plane has it connected and {stored.get('status')}, its last heartbeat "
            f"{'never' if last is None else f'{float(str(last)) - window_start:.1f} s into the window'} "
            f"(one every {heartbeat_ms / 1000:g} s)",
            stored.get("connected") is True
            and last is not None
            and float(str(last)) >= window_start + window - heartbeat_ms / 1000 - 5,
        ),
        (
            f"{points} metric points stored during the window (at least {expected}: one every {metrics_ms / 1000:g} s)",
            isinstance(points, int) and points >= expected,
        ),
        (f"the agent stopped on SIGTERM with exit {stop_code}", stop_code == 0),
    ]

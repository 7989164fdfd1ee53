"""The dispatch benchmark's scenarios: the executions it creates (pending, in the template database),
how they are started (REST, paced or in a burst, round-robin over the web processes), and what a
scenario's latencies are, from the daemons' records."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bench.dispatching.messages import COMMAND, SHAPES, STEPS
from bench.harness.smoke import Check

NOTIFY_CHANNEL = "dispatch_bench"

NOTIFY_SQL = """
CREATE FUNCTION dispatch_bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dispatch_bench', NEW.execution_id || ' ' || NEW.status);
    RETURN NULL;
END $$;
CREATE TRIGGER dispatch_bench_notify AFTER UPDATE ON {table} FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('completed', 'failed', 'timeout', 'cancelled'))
    EXECUTE FUNCTION dispatch_bench_notify();
"""


@dataclass
class Scenario:
    shape: str
    mode: str  # "paced", "burst" or "warmup"
    ids: list[str]  # executionId
    pks: list[str]
    nodes: dict[tuple[str, int], str]  # (executionId, step index) -> the step's nodeId

    @property
    def name(self) -> str:
        return f"{self.shape} {self.mode}"


@dataclass
class ScenarioResult:
    kind: str
    web: int  # web (ASGI server) processes
    scenario: Scenario
    starts: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # executionId -> sent, answered, HTTP
    start_web: dict[str, int] = field(default_factory=dict)  # executionId -> the web process its start went to
    node_web: dict[str, int] = field(default_factory=dict)  # nodeId -> the web process its daemon is connected to
    done: dict[str, tuple[str, float]] = field(default_factory=dict)  # executionId -> status, NOTIFY time
    finished: bool = False
    window_s: float = 0.0
    # Seconds over the scenario per process group ("server" is the N web processes' sum), and
    # "server <i>" per web process.
    cpu: dict[str, float] = field(default_factory=dict)
    loop_threads_s: list[float] = field(default_factory=list)  # per web process: its event loop (main) thread
    steps_done: int = 0
    wall_s: float = float("nan")
    overhead: list[float] = field(default_factory=list)
    # The overhead split by path: the step's command created in the web process that holds its
    # daemon's socket ("same") or in another one (Redis pub/sub to the other's listener, "cross").
    overhead_same: list[float] = field(default_factory=list)
    overhead_cross: list[float] = field(default_factory=list)
    starts_cross: int = 0  # step 0's command created (by the start request) in another web process
    start_latency_same: list[float] = field(default_factory=list)  # start -> 1st command, split the same way
    start_latency_cross: list[float] = field(default_factory=list)
    first_child: list[float] = field(default_factory=list)  # fan-out: the earlier child of each parent
    second_child: list[float] = field(default_factory=list)
    start_latency: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The server kind and its web process count, e.g. "daphne x2"."""
        return f"{self.kind} x{self.web}"

    @property
    def steps_per_s(self) -> float:
        return self.steps_done / self.wall_s if self.wall_s > 0 else float("nan")

    def cpu_ms_per_step(self, name: str) -> float:
        return 1000 * self.cpu.get(name, float("nan")) / self.steps_done if self.steps_done else float("nan")

    @property
    def ok(self) -> bool:
        return self.finished and all(ok for _, ok in self.checks)


def create_executions(plan: list[tuple[str, str, int]], nodes: list[dict[str, Any]], org: str) -> list[Scenario]:
    """The run's executions, pending, in the template database (Django set up against it)."""
    from aiwm_project.auth import Principal
    from executions.services import execution_create

    actor = Principal(user_id="0" * 24, org_id=org, username="bench", roles=("organization.owner",))
    scenarios = []
    serial = 0
    for shape, mode, count in plan:
        ids, pks, step_nodes = [], [], {}
        for i in range(count):
            execution_id = f"bench-{shape}-{mode}-{i:04d}"
            steps = [
                {
                    "index": k,
                    "name": f"step {k}",
                    "command": {
                        "type": COMMAND,
                        "resource": {"type": "model", "id": f"bench-model-{k}"},
                        "data": {"modelName": f"bench-model-{k}", "url": "https://example.invalid/bench.gguf"},
                    },
                    "nodeId": nodes[(STEPS * serial + k) % len(nodes)]["nodeId"],
                    "dependsOn": SHAPES[shape][k],
                }
                for k in range(STEPS)
            ]
            data = {
                "execution_id": execution_id,
                "name": f"Dispatch benchmark {shape} {mode} {i}",
                "category": "model",
                "type": f"bench-{shape}",
                "max_retries": 0,
                "steps": steps,
            }
            execution = execution_create(data=data, actor=actor)
            ids.append(execution_id)
            pks.append(execution.pk)
            step_nodes.update({(execution_id, k): step["nodeId"] for k, step in enumerate(execution.steps)})
            serial += 1
        scenarios.append(Scenario(shape, mode, ids, pks, step_nodes))
    return scenarios


async def start_executions(
    token: str, requests: list[tuple[str, str, str]], *, rate: float | None, concurrency: int, timeout: float
) -> dict[str, tuple[float, float, int]]:
    """POST {url}/api/executions/:id/start for each (executionId, pk, url): at `rate` per second (open
    loop), or all at once when `rate` is None. Returns executionId -> (sent, answered, HTTP status or -1)."""
    import aiohttp

    out: dict[str, tuple[float, float, int]] = {}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def start(execution_id: str, pk: str, url: str, at: float) -> None:
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with limit:
                sent = time.monotonic()
                try:
                    async with session.post(f"{url}/api/executions/{pk}/start", data=b"{}", headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    status = -1
                out[execution_id] = (sent, time.monotonic(), status)

        t0 = time.monotonic() + 0.05
        ats = [t0 + (i / rate if rate else 0.0) for i in range(len(requests))]
        await asyncio.gather(*(start(eid, pk, url, at) for (eid, pk, url), at in zip(requests, ats, strict=True)))
    return out


def start_web(i: int, web: int) -> int:
    """The web process the i-th start request goes to: round-robin, shifted by one each round (every
    N consecutive requests still go to the N processes once each). Plain round-robin (i mod N)
    would tie it to step 0's daemon: step 0 of execution i is on node 3i mod --nodes, connected to
    process (3i mod nodes) mod N, which for N = 2 and an even node count is i mod 2, the start's
    own process every time, and the start -> command path would never cross processes."""
    return (i + i // web) % web


def analyse(result: ScenarioResult, by_step: dict[tuple[str, int], list[Any]]) -> None:
    """Latencies of one scenario from the daemons' records (index 4: received, 6: result sent)."""
    deps = SHAPES[result.scenario.shape]
    node_of = result.scenario.nodes  # (executionId, step) -> nodeId
    for execution_id in result.scenario.ids:
        start = result.starts.get(execution_id)
        first = by_step.get((execution_id, 0))
        start_same = result.start_web.get(execution_id) == result.node_web[node_of[(execution_id, 0)]]
        if not start_same:
            result.starts_cross += 1
        if start and first:
            result.start_latency.append(first[4] - start[0])
            (result.start_latency_same if start_same else result.start_latency_cross).append(first[4] - start[0])
        if start and execution_id in result.done:
            result.durations.append(result.done[execution_id][1] - start[0])
        children = []
        for k in range(1, STEPS):
            child, parent = by_step.get((execution_id, k)), by_step.get((execution_id, deps[k][0]))
            if child and parent:
                overhead = child[4] - parent[6]
                result.overhead.append(overhead)
                children.append(overhead)
                # Step k's command is created where its dependency's result was handled: the web
                # process of the dependency's daemon.
                parent_web = result.node_web[node_of[(execution_id, deps[k][0])]]
                same = parent_web == result.node_web[node_of[(execution_id, k)]]
                (result.overhead_same if same else result.overhead_cross).append(overhead)
        if result.scenario.shape == "fanout" and len(children) == 2:
            result.first_child.append(min(children))
            result.second_child.append(max(children))
    sent = [s[0] for s in result.starts.values()]
    done = [d[1] for d in result.done.values()]
    if sent and done and result.finished:
        result.wall_s = max(done) - min(sent)

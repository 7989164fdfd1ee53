"""The inference gateway's cost: the same requests sent to a fast OpenAI-compatible server directly
and through AIWM (`/v1`), in the same run.

- latency: one request at a time, direct and through AIWM alternating in blocks; the added latency
  is the difference of their p50s and of their p99s (goal: p50 <= 2 ms, p99 <= 10 ms);
- time to first token: the same with `stream: true`, to the first body chunk (goal: added <= 2 ms);
- throughput: 64 concurrent clients for a few seconds, direct then through AIWM, twice, medians of
  requests per second (goal: AIWM >= 0.8x direct);
- open streams: 1,000 streams held open at once through one web process (an upstream that sends a
  token every half second), all completed, the web process's RSS before and while they are open
  (memory per stream).

The upstream is tests/support/fake_openai.py (aiohttp: fixed short answers) as a process; AIWM is
`manage.py serve` (SQLite, the embedded default), its model, running deployment and API key made by
the service's own code; the client is aiohttp in this process. All on one machine: the client, the
upstream and AIWM share its cores, as the ratios say.

    flock /tmp/aiwm-bench.lock .venv/bin/python bench/gateway.py
    .venv/bin/python bench/gateway.py --smoke        # seconds: in make bench-smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench.harness.databases import migrate
from bench.harness.env import REPO, service_env
from bench.harness.processes import open_files_limit
from bench.harness.procfs import rss_kib
from bench.harness.servers import SERVICE_APP, Server, free_port

ORG = "org-gateway-bench"
SEED = """
import json, sys, django
django.setup()
from aiwm_project.auth import Principal
from aiwm_project.services import entity_create
from deployments.models import Deployment
from inference.services import api_key_create
from models_registry.models import AIModel
from nodes.models import Node
actor = Principal(user_id="bench", org_id=sys.argv[1], roles=("organization.owner",))
entity_create(model=Node, data={"node_id": "node-1", "name": "n", "cpu_cores": 2, "ram_total": 1024}, actor=actor)
Node.objects.filter(node_id="node-1").update(status="online")
for model_id, endpoint in (("fast", sys.argv[2]), ("slow", sys.argv[3])):
    entity_create(model=AIModel, data={"model_id": model_id, "name": model_id, "node_id": "node-1"}, actor=actor)
    d = entity_create(model=Deployment, data={"deployment_id": "dep-" + model_id, "name": model_id,
                      "model_id": model_id, "node_id": "node-1"}, actor=actor)
    Deployment.objects.filter(pk=d.pk).update(
        status="running", is_running=True, endpoint=endpoint, health_status="healthy")
_, key = api_key_create(data={"name": "bench"}, actor=actor)
print(json.dumps({"key": key}))
"""
BODY = {"model": "fast", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}


def log(message: str) -> None:
    print(message, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one(session: aiohttp.ClientSession, url: str, headers: dict[str, str], stream: bool) -> tuple[float, float]:
    """(seconds to the whole answer, seconds to its first body chunk)."""
    started = time.perf_counter()
    async with session.post(url, json={**BODY, "stream": stream}, headers=headers) as response:
        first = None
        async for _chunk in response.content.iter_any():
            if first is None:
                first = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
    return time.perf_counter() - started, first or 0.0


async def latencies(session: aiohttp.ClientSession, targets: dict[str, tuple[str, dict[str, str]]], samples: int,
                    stream: bool) -> dict[str, list[float]]:  # fmt: skip
    out: dict[str, list[float]] = {name: [] for name in targets}
    block = 50
    for _ in range(20):  # warm-up: connections, caches
        for url, headers in targets.values():
            await one(session, url, headers, stream)
    for start in range(0, samples, block):
        for name, (url, headers) in targets.items():
            for _ in range(min(block, samples - start)):
                total, first = await one(session, url, headers, stream)
                out[name].append(first if stream else total)
    return out


async def throughput(url: str, headers: dict[str, str], clients: int, seconds: float) -> float:
    connector = aiohttp.TCPConnector(limit=0)
    done = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await one(session, url, headers, False)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return done / (time.perf_counter() - started)


async def open_streams(url: str, headers: dict[str, str], count: int, server_pid: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    before = rss_kib(server_pid)
    first_chunks = 0
    peak = before
    all_open = asyncio.Event()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def stream() -> bool:
            nonlocal first_chunks
            body = {**BODY, "model": "slow", "stream": True, "max_tokens": 40}
            async with session.post(url, json=body, headers=headers) as response:
                seen, got = False, b""
                async for chunk in response.content.iter_any():
                    got += chunk
                    if not seen:
                        seen = True
                        first_chunks += 1
                        if first_chunks == count:
                            all_open.set()
                return response.status == 200 and got.rstrip().endswith(b"data: [DONE]")

        started = time.perf_counter()
        tasks = [asyncio.ensure_future(stream()) for _ in range(count)]
        await asyncio.wait_for(all_open.wait(), 120)
        opened_s = time.perf_counter() - started
        for _ in range(5):
            peak = max(peak, rss_kib(server_pid))
            await asyncio.sleep(0.5)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    ok = sum(1 for r in results if r is True)
    return {"before_kib": before, "peak_kib": peak, "ok": ok, "opened_s": opened_s}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few requests of each kind: does it run")
    parser.add_argument("--samples", type=int, default=2000, help="sequential requests per target and kind")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput round")
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.smoke:
        args.samples, args.seconds, args.streams = 100, 1.0, 20
    workdir = Path(tempfile.mkdtemp(prefix="aiwm-gateway-bench-"))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    head = subprocess.getoutput("git rev-parse --short HEAD")
    log(f"working folder {workdir}; machine: {os.cpu_count()} CPUs, load average {load}; git {head}")
    fast_port, slow_port = free_port(), free_port()
    fake = [sys.executable, str(REPO / "tests" / "support" / "fake_openai.py")]
    upstreams = [
        subprocess.Popen([*fake, "--port", str(fast_port), "--tokens", "8"], cwd=REPO),
        subprocess.Popen([*fake, "--port", str(slow_port), "--tokens", "40", "--token-gap", "0.5"], cwd=REPO),
    ]
    env = service_env(
        dsn=f"sqlite:///{workdir / 'aiwm.sqlite3'}",
        logdir=workdir,
        drop=("REDIS_URL",),
        DJANGO_SETTINGS_MODULE="aiwm_project.settings",
        AIWM_GATEWAY_CONCURRENCY=str(max(2 * args.streams, 256)),
    )
    server = Server("serve", SERVICE_APP, env, workdir, "aiwm")
    try:
        migrate(env["DATABASE_URL"], env)
        seed = subprocess.run(
            [sys.executable, "-c", SEED, ORG, f"http://127.0.0.1:{fast_port}/v1", f"http://127.0.0.1:{slow_port}/v1"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if seed.returncode:
            raise RuntimeError(f"seeding failed:\n{seed.stderr[-3000:]}")
        key = json.loads(seed.stdout.strip().splitlines()[-1])["key"]
        server.start()
        server.wait_ready()
        via = {"Authorization": f"Bearer {key}"}
        targets = {
            "direct": (f"http://127.0.0.1:{fast_port}/v1/chat/completions", {}),
            "AIWM": (f"{server.url}/v1/chat/completions", via),
        }
        return asyncio.run(measure(args, targets, server))
    finally:
        server.stop()
        for upstream in upstreams:
            upstream.terminate()
            upstream.wait(10)


async def measure(args: argparse.Namespace, targets: dict[str, tuple[str, dict[str, str]]], server: Server) -> int:
    goals: list[tuple[str, bool]] = []
    async with aiohttp.ClientSession() as session:
        whole = await latencies(session, targets, args.samples, stream=False)
        first = await latencies(session, targets, args.samples, stream=True)
    log(
        "\n| requests, one at a time | direct p50 ms | AIWM p50 ms | added p50 ms"
        " | direct p99 ms | AIWM p99 ms | added p99 ms |"
    )
    log("|---|---:|---:|---:|---:|---:|---:|")
    added = {}
    for label, got in (("whole answer (not streamed)", whole), ("first token (streamed)", first)):
        d50, a50 = pct(got["direct"], 0.5) * 1000, pct(got["AIWM"], 0.5) * 1000
        d99, a99 = pct(got["direct"], 0.99) * 1000, pct(got["AIWM"], 0.99) * 1000
        added[label] = (a50 - d50, a99 - d99)
        log(f"| {label} | {d50:.2f} | {a50:.2f} | **{a50 - d50:.2f}** | {d99:.2f} | {a99:.2f} | **{a99 - d99:.2f}** |")
    goals.append(
        (
            f"added latency p50 {added['whole answer (not streamed)'][0]:.2f} ms <= 2",
            added["whole answer (not streamed)"][0] <= 2,
        )
    )
    goals.append(
        (
            f"added latency p99 {added['whole answer (not streamed)'][1]:.2f} ms <= 10",
            added["whole answer (not streamed)"][1] <= 10,
        )
    )
    goals.append(
        (
            f"added time to first token p50 {added['first token (streamed)'][0]:.2f} ms <= 2",
            added["first token (streamed)"][0] <= 2,
        )
    )

    rates: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(2):
        for name, (url, headers) in targets.items():
            rates[name].append(await throughput(url, headers, args.clients, args.seconds))
    direct, via = statistics.median(rates["direct"]), statistics.median(rates["AIWM"])
    log(f"\n| {args.clients} concurrent clients | requests/s per round | median |\n|---|---|---:|")
    for name in targets:
        log(f"| {name} | {', '.join(f'{r:.0f}' for r in rates[name])} | {statistics.median(rates[name]):.0f} |")
    goals.append((f"throughput through AIWM {via / direct:.2f} x direct >= 0.8", via / direct >= 0.8))

    with open_files_limit(4 * args.streams + 1024):
        streams = await open_streams(targets["AIWM"][0], targets["AIWM"][1], args.streams, server.pid)
    per_stream = (streams["peak_kib"] - streams["before_kib"]) / args.streams
    log(f"\n{args.streams} streams open at once through one web process: all open after {streams['opened_s']:.1f} s, "
        f"{streams['ok']} completed; web process RSS {streams['before_kib'] / 1024:.1f} MiB before, "
        f"{streams['peak_kib'] / 1024:.1f} MiB while open: **{per_stream:.1f} KiB per stream**")  # fmt: skip
    goals.append((f"{streams['ok']} of {args.streams} streams completed", streams["ok"] == args.streams))
    log("")
    for text, met in goals:
        log(f"goal  {text}: {'met' if met else 'MISSED'}")
    if args.smoke:
        return 0 if streams["ok"] == args.streams else 1
    return 0 if all(met for _, met in goals) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The embedded default under a mixed load: node lists and node creates from many clients on SQLite.

    .venv/bin/python bench/embedded_mix.py [--clients 20] [--duration 60] [--write-share 0.5]
    .venv/bin/python bench/embedded_mix.py --smoke    # seconds: every step and check, the figures not judged

What it does, in order:

1. makes a fresh var/ directory: SQLite there (`make run`'s default), `manage.py migrate`, an owner
   of one organization (`manage.py create_iam_user`), and `manage.py serve` with no Redis — the
   embedded default exactly as `make run` serves it (the in-process sweep off, so nothing but the
   load writes);
2. logs in over HTTP (`POST /auth/login`) and creates `--seed` nodes through `POST /api/nodes`;
3. the baseline, in the same run: the same mix from ONE client for `--baseline` seconds (the
   service's own latency, with nothing to wait for);
4. the load: `--clients` keep-alive HTTP/1.1 clients in a separate process, each sending, at random
   (`--write-share`), `POST /api/nodes` (a new node) or `GET /api/nodes?limit=10&sort=-createdAt`, for
   `--duration` seconds after a warm-up;
5. prints p50/p99/max per request kind and over all, requests/s, errors and the server's CPU, for the
   baseline and the load; then checks that every create answered 201 is in the database (nothing
   acknowledged is lost) and every list answered 200. Goal: p99 over all requests < 250 ms under the
   load, no error. Exit status 1 when the goal is missed or a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# After the path above: the repository has to be on sys.path first.
from bench.harness.env import service_env  # noqa: E402
from bench.harness.procfs import cpu_seconds  # noqa: E402
from bench.harness.report import load_average, log  # noqa: E402
from bench.harness.servers import HOST, Server  # noqa: E402
from bench.harness.smoke import Check, add_smoke_flag, judge  # noqa: E402
from bench.harness.stats import pct  # noqa: E402
from bench.nodelist.loadgen import CLIENT_ERRORS, REQUEST_TIMEOUT_S, read_response  # noqa: E402

P99_GOAL_MS = 250.0
LIST_PATH = "/api/nodes?limit=10&sort=-createdAt"
USER, PASSWORD, ORG = "mixer", "mix-Pass_123", "org-mix"
NODE_FACTS = {"cpuCores": 16, "ramTotal": 65536}
SMOKE = {"clients": 4, "duration": 2.0, "baseline": 1.0, "warmup": 0.3, "seed": 20}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=20, help="keep-alive clients of the load")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds of the load")
    parser.add_argument("--baseline", type=float, default=10.0, help="measured seconds of the one-client baseline")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each measured window")
    parser.add_argument("--write-share", type=float, default=0.5, help="share of requests that create a node")
    parser.add_argument("--seed", type=int, default=200, help="nodes created before measuring")
    parser.add_argument("--keep", action="store_true", help="keep the var/ directory and the server log")
    add_smoke_flag(parser, argv, SMOKE, "4 clients, a 2 s window")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 500 or not 0 < args.duration <= 1800 or not 0 <= args.write_share <= 1:
        parser.error("--clients 1..500, --duration 0..1800 s, --write-share 0..1")
    return args


def _request(method: str, path: str, token: str, body: dict[str, Any] | None = None) -> bytes:
    data = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n"
        f"Accept: application/json\r\nConnection: keep-alive\r\n"
    )
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    return (head + "\r\n").encode() + data


async def _client(cfg: dict[str, Any], index: int, start: float, end: float, out: dict[str, Any]) -> None:
    rng = random.Random(cfg["rng_seed"] * 1000 + index)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    n = 0
    try:
        while time.perf_counter() < end:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, cfg["port"])
            assert reader is not None
            write = rng.random() < cfg["write_share"]
            if write:
                n += 1
                node_id = f"{cfg['prefix']}-{index}-{n}"
                payload = {"nodeId": node_id, "name": node_id, "role": ["worker"], "status": "offline", **NODE_FACTS}
                request, kind, ok = _request("POST", "/api/nodes", cfg["token"], payload), "create", 201
            else:
                request, kind, ok = _request("GET", LIST_PATH, cfg["token"]), "list", 200
            t0 = time.perf_counter()
            try:
                writer.write(request)
                status, close = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT_S)
                outcome = f"HTTP {status}"
            except CLIENT_ERRORS as exc:
                status, close, outcome = -1, True, type(exc).__name__
            t1 = time.perf_counter()
            if write and status == 201:
                out["created"].append(node_id)  # acknowledged, whenever it happened
            if start <= t0 and t1 <= end:
                if status == ok:
                    out[kind].append(t1 - t0)
                else:
                    out["errors"][f"{kind} {outcome}"] = out["errors"].get(f"{kind} {outcome}", 0) + 1
            if close:
                writer.close()
                writer = reader = None
    finally:
        if writer is not None:
            writer.close()


async def _load(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"list": [], "create": [], "errors": {}, "created": []}
    start = time.perf_counter() + cfg["warmup"]
    end = start + cfg["duration"]
    await asyncio.gather(*(_client(cfg, i, start, end, out) for i in range(cfg["clients"])))
    return out


def run_load(server: Server, token: str, clients: int, duration: float, args: argparse.Namespace, label: str) -> dict:
    """One load run in a separate process (the load generator must not share the server's CPU
    accounting), with the server's CPU time over it."""
    cfg = {
        "port": server.port,
        "token": token,
        "clients": clients,
        "duration": duration,
        "warmup": args.warmup,
        "write_share": args.write_share,
        "prefix": f"mix-{label}",
        "rng_seed": 1,
    }
    cpu_before = cpu_seconds(server.pid)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--generate", json.dumps(cfg)],
        cwd=REPO,
        capture_output=True,
        timeout=args.warmup + duration + REQUEST_TIMEOUT_S + 60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    # The CPU time over the warm-up too, scaled to the measured window.
    result["cpu_s"] = (cpu_seconds(server.pid) - cpu_before) * duration / (duration + args.warmup)
    result["window"] = duration
    result["label"] = label
    result["clients"] = clients
    return result


def _http_json(method: str, url: str, body: dict[str, Any], token: str = "") -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _ms(values: list[float], q: float) -> str:
    return f"{1000 * pct(values, q):.1f}" if values else "-"


def print_results(results: list[dict[str, Any]]) -> None:
    log("\n| run | clients | kind | requests | req/s | p50 ms | p99 ms | max ms | server CPU ms/req |")
    log("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        everything = r["list"] + r["create"]
        for kind, values in (("list", r["list"]), ("create", r["create"]), ("all", everything)):
            cpu = f"{1000 * r['cpu_s'] / len(everything):.2f}" if kind == "all" and everything else ""
            log(
                f"| {r['label']} | {r['clients']} | {kind} | {len(values)} | {len(values) / r['window']:.0f} | "
                f"{_ms(values, 0.5)} | {_ms(values, 0.99)} | {_ms(values, 1.0)} | {cpu} |"
            )
        if r["errors"]:
            log(f"{r['label']}: errors {r['errors']}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--generate"]:
        print(json.dumps(asyncio.run(_load(json.loads(argv[1])))))
        return 0
    args = parse_args(argv)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="aiwm-mix-"))
    env = service_env(
        dsn=f"sqlite:///{workdir / 'var' / 'aiwm.sqlite3'}", logdir=workdir, drop=("REDIS_URL", "IAM_JWT_SECRET")
    )
    # What `make run` has: no Redis, and no IAM secret (the embedded default signs its own tokens).
    env["DJANGO_SETTINGS_MODULE"] = "aiwm_project.settings"
    manage = [sys.executable, str(REPO / "manage.py")]
    server = Server("serve", "", env, workdir, "mix")
    try:
        subprocess.run([*manage, "migrate", "--noinput"], env=env, cwd=REPO, check=True, capture_output=True)
        owner = ["--username", USER, "--password", PASSWORD, "--org-id", ORG, "--roles", "organization.owner"]
        subprocess.run(
            [*manage, "create_iam_user", *owner],
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        log(f"SQLite in {workdir / 'var'}; load average {load_average()} at start; {os.cpu_count()} CPUs")
        server.start()
        server.wait_ready()
        status, body = _http_json("POST", f"{server.url}/auth/login", {"username": USER, "password": PASSWORD})
        assert status == 200, (status, body)
        token = body["accessToken"]
        for i in range(args.seed):
            node = {"nodeId": f"seed-{i}", "name": f"seed-{i}", "role": ["worker"], "status": "offline", **NODE_FACTS}
            status, body = _http_json("POST", f"{server.url}/api/nodes", node, token)
            assert status == 201, (status, body)
        log(f"{args.seed} nodes created; the baseline (1 client) for {args.baseline:.0f}s, then {args.clients} clients")
        results = [
            run_load(server, token, 1, args.baseline, args, "baseline"),
            run_load(server, token, args.clients, args.duration, args, "load"),
        ]
        print_results(results)
        checks = lost_checks(env, results, args.seed)
        load = results[1]
        p99 = 1000 * pct(load["list"] + load["create"], 0.99) if load["list"] or load["create"] else float("inf")
        base_p99 = 1000 * pct(results[0]["list"] + results[0]["create"], 0.99) if results[0]["list"] else float("nan")
        log(f"\nload p99 / baseline p99 = {p99 / base_p99:.1f}x")
        ok = judge(checks)
        if args.smoke:
            log("goal not judged (--smoke: tiny sizes)")
        else:
            met = p99 < P99_GOAL_MS and not load["errors"]
            log(
                f"goal  p99 over all requests, {args.clients} clients = {p99:.0f} ms (< {P99_GOAL_MS:.0f}, no error): "
                + ("met" if met else "MISSED")
            )
            ok = ok and met
        log(f"load average {load_average()} at the end; total wall time {time.monotonic() - started:.0f}s")
        return 0 if ok else 1
    finally:
        server.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def lost_checks(env: dict[str, str], results: list[dict[str, Any]], seeded: int) -> list[Check]:
    """Every acknowledged create is a row; nothing else was added."""
    created = [node_id for r in results for node_id in r["created"]]
    script = (
        "import json, sys, django; django.setup(); from nodes.models import Node; "
        "print(json.dumps(list(Node.objects.values_list('node_id', flat=True))))"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    stored = set(json.loads(done.stdout))
    missing = [n for n in created if n not in stored]
    return [
        (f"{len(created)} creates answered 201, {len(missing)} of them missing from the database", not missing),
        (
            f"{len(stored)} nodes stored = {seeded} seeded + {len(created)} acknowledged",
            len(stored) == seeded + len(created),
        ),
    ]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

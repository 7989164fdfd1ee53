"""The node agent: its downloader's throughput against curl fetching the same 1 GiB file from the
same local server in the same run, the bytes it fetches twice after a kill at 50 %, and the idle
agent's CPU and RSS with its telemetry running.

    flock /tmp/aiwm-bench.lock .venv/bin/python bench/node_agent.py [--size-mib 1024] [--rounds 3] [--idle-window 120]
    .venv/bin/python bench/node_agent.py --smoke    # seconds: every step and check, the figures not judged

What it does, in order:

1. writes a file of `--size-mib` random bytes (incompressible, as weights are) into a temporary
   folder, hashing it as it goes; it stays in the page cache for the run;
2. serves it from each of `--servers`, each a process of its own (bench/nodeagentbench/fileserver.py:
   the client must not share a GIL or a CPU with the server): "range" is
   tests/support/range_server.py's RangeServer as the downloader's tests use it (an md5 of the
   whole file and a read of it into memory per request, the body written in 16 KiB pieces), and
   "sendfile" the same server answering from the file's metadata with sendfile(2), as a real file
   server does — where the client is the bottleneck;
3. downloads it `--rounds` times with each client from each server, interleaved (the order
   rotated round by round): `curl -sS --fail -o FILE URL` (the baseline), the agent's downloader
   as it ships (`python -m aiwm_node.download --models-dir DIR --model-id M --repository URL
   --file-name NAME --sha256 HEX --progress`), and curl followed by an fsync of its file and folder
   (what the agent does before its rename; reported, not judged). Each is timed as a process, from
   its start to its exit, its CPU from wait4(2); the file is deleted and the disk synced (untimed)
   between downloads; the first round's files are hashed on disk;
4. kills each client (SIGKILL) once its partial file holds `--kill-at` of the bytes, starts it again
   (the agent as before, curl with `-C -`) and lets it finish: bytes re-fetched = what the server
   sent for the file in all (its counters) - the file's size; curl's is the floor a kill costs any
   client (what was in the sockets' buffers);
5. serves the control plane as `make run` does (`manage.py serve`, SQLite, no Redis) with the
   heartbeat and metrics intervals at `--heartbeat-ms` / `--metrics-ms` (the service's defaults,
   30 s and 60 s), enrols a node (`nodes.services.local_node_enroll`), starts the real agent
   (`python -m aiwm_node run --server URL --data-dir DIR`, AIWM_NODE_TOKEN), waits for its
   register.ack, then samples its CPU time and RSS for `--idle-window` seconds beside a baseline
   process (the same interpreter with the agent's imports, asleep); the control plane must have
   its heartbeats and metric points of the window;
6. prints the tables, the goals and the checks. Goals: the agent's median MiB/s >= 0.9x curl's
   from each server; re-fetched after the kill < 1 % of the file; the idle agent < 1 % of a core
   and < 80 MiB RSS. Exit status 1 when a goal is missed or a check fails.

`--smoke` runs a 32 MiB file, one round, the kill with the server throttled to 64 MiB/s (so that
there is a 50 % to stop at), and a 10 s idle window with a 1 s heartbeat and 2 s metrics.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# After the path above: the repository has to be on sys.path first.
from bench.harness.report import git_state, log, machine_line, versions  # noqa: E402
from bench.harness.smoke import add_smoke_flag  # noqa: E402
from bench.nodeagentbench.downloads import (  # noqa: E402
    MIB,
    KillResult,
    Run,
    agent_env,
    kill_and_resume,
    make_source,
    throughput_rounds,
)
from bench.nodeagentbench.fileserver import SERVERS, FileServer  # noqa: E402
from bench.nodeagentbench.idle import IdleResult, run_idle  # noqa: E402
from bench.nodeagentbench.report import print_results  # noqa: E402

PARTS = ("throughput", "kill", "idle")
SMOKE = {
    "size_mib": 32,
    "rounds": 1,
    "kill_throttle_mib": 64.0,
    "idle_window": 10.0,
    "idle_settle": 1.0,
    "heartbeat_ms": 1000,
    "metrics_ms": 2000,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024, help="the file's size in MiB")
    parser.add_argument("--rounds", type=int, default=3, help="timed downloads of each client from each server")
    parser.add_argument("--servers", default="range,sendfile", help=f"file servers, of {', '.join(SERVERS)}")
    parser.add_argument("--kill-at", type=float, default=0.5, help="the share of the file at which it is killed")
    parser.add_argument(
        "--kill-throttle-mib",
        type=float,
        default=0.0,
        help="MiB/s the server sends at during the kill (0: as fast as it can)",
    )
    parser.add_argument("--idle-window", type=float, default=120.0, help="seconds the idle agent is sampled")
    parser.add_argument("--idle-settle", type=float, default=5.0, help="seconds after register.ack before the window")
    parser.add_argument("--heartbeat-ms", type=int, default=30000, help="AIWM_HEARTBEAT_INTERVAL_MS of the service")
    parser.add_argument("--metrics-ms", type=int, default=60000, help="AIWM_METRICS_INTERVAL_MS of the service")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"what to measure, of {', '.join(PARTS)}")
    parser.add_argument("--workdir", type=Path, default=None, help="where the files go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs; the big file is deleted)")
    add_smoke_flag(parser, argv, SMOKE, "a 32 MiB file, one round, a 10 s idle window")
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not args.servers or not all(s in SERVERS for s in args.servers):
        parser.error(f"--servers: comma-separated, of {', '.join(SERVERS)}")
    if not args.parts or not all(p in PARTS for p in args.parts):
        parser.error(f"--parts: comma-separated, of {', '.join(PARTS)}")
    if not 1 <= args.size_mib <= 65536 or not 1 <= args.rounds <= 50 or not 0.05 <= args.kill_at <= 0.95:
        parser.error("--size-mib 1..65536, --rounds 1..50, --kill-at 0.05..0.95")
    if not 1 <= args.idle_window <= 3600 or args.idle_settle < 0 or args.kill_throttle_mib < 0:
        parser.error("--idle-window 1..3600 s, --idle-settle >= 0, --kill-throttle-mib >= 0")
    if not 100 <= args.heartbeat_ms <= 600_000 or not 100 <= args.metrics_ms <= 600_000:
        parser.error("--heartbeat-ms and --metrics-ms 100..600000 (register.ack refuses less than 100)")
    return args


def curl_version() -> str:
    try:
        first = subprocess.run(["curl", "--version"], capture_output=True, text=True, timeout=10).stdout.split()
    except OSError:
        return ""
    return " ".join(first[:2])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if ("throughput" in args.parts or "kill" in args.parts) and not shutil.which("curl"):
        log("curl is not installed: it is the baseline of the downloads")
        return 1
    started = time.monotonic()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="aiwm-node-agent-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"working folder {workdir}")
    log(
        machine_line(
            "not used (the control plane on SQLite)",
            f"SQLite {sqlite3.sqlite_version}",
            curl_version(),
            versions("httpx", "python-socketio", "psutil", "uvicorn", "Django"),
        )
    )
    log(git_state())
    size = args.size_mib * MIB
    runs: list[Run] = []
    kills: list[KillResult] = []
    idle: IdleResult | None = None
    servers: list[FileServer] = []
    try:
        if "throughput" in args.parts or "kill" in args.parts:
            t = time.monotonic()
            source = make_source(workdir / "served", size)
            log(f"{args.size_mib} MiB of random bytes written in {time.monotonic() - t:.1f}s, sha256 {source.sha256}")
            for kind in args.servers:
                servers.append(FileServer(kind, source.root, agent_env(), workdir))
                log(f"server {kind}: {servers[-1].url} (pid {servers[-1].pid})")
            if "throughput" in args.parts:
                runs = throughput_rounds(servers, source, args.rounds, workdir)
            if "kill" in args.parts:
                for server in servers:
                    if args.kill_throttle_mib:
                        server.throttle(args.kill_throttle_mib * MIB)
                    for client in ("agent", "curl"):
                        kills.append(kill_and_resume(client, server, source, workdir, args.kill_at))
                        k = kills[-1]
                        log(
                            f"{server.kind} {client}: killed at {100 * k.killed_at / size:.1f} %, re-fetched "
                            f"{k.refetched / 1024:.0f} KiB ({100 * k.refetched / size:.3f} %), resumed in "
                            f"{k.resume_seconds:.1f}s"
                        )
                    server.throttle(0)
            for server in servers:
                server.stop()
            servers = []
            source.path.unlink()
        if "idle" in args.parts:
            log(
                f"idle agent: the control plane, the node, the agent; then a {args.idle_window:g} s window "
                f"({time.monotonic() - started:.0f}s into the run)"
            )
            idle = run_idle(workdir / "idle", args.idle_window, args.idle_settle, args.heartbeat_ms, args.metrics_ms)
        ok = print_results(runs, kills, idle, args, size)
        log(f"\ntotal wall time {time.monotonic() - started:.0f}s")
        return 0 if ok else 1
    finally:
        for server in servers:
            server.stop()
        if args.keep or args.workdir is not None:
            shutil.rmtree(workdir / "served", ignore_errors=True)  # the big file goes whatever is kept
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

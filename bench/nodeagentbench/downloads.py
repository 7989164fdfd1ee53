"""The downloads: the source file, the clients timed as processes, the interleaved throughput
rounds, and the kill at 50 % with its resume.

Every client is a real process, timed from its start to its exit (what someone waiting for the
file sees), its CPU time read from wait4(2):

- "curl": `curl -sS --fail -o FILE URL`, the baseline;
- "agent": the agent's downloader as it ships, `python -m aiwm_node.download ... --sha256 HEX
  --progress` (its JSON line says what it fetched; its first progress line arrives once the
  response's headers are in, which gives its time to the first byte);
- "curl + fsync": curl, then an fsync of the file and of its folder, timed together. The agent
  makes its file durable before it renames it into place (fsync, then the folder's fsync); curl
  does not, and on this machine's disk that alone can be seconds. Reported, not judged: the goal
  is against curl as it is;
- "curl + sha256sum": curl, then `sha256sum FILE`, timed together: curl doing the agent's work
  (the agent checks the file's digest before it puts it in place; curl checks nothing). Reported,
  not judged, for the same reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.harness.env import REPO
from bench.harness.procfs import cpu_seconds
from bench.harness.report import log
from bench.harness.smoke import Check
from bench.nodeagentbench.fileserver import FileServer, Request

MIB = 1 << 20
MODEL_ID = "bench-model"
CLIENTS = ("curl", "agent", "curl + fsync", "curl + sha256sum")
DOWNLOAD_TIMEOUT_S = 900.0
KILL_POLL_S = 0.005  # how often the partial file's size is read before the kill
SETTLE_S = 0.5  # after a kill: the server's thread notices the broken connection and stops counting


@dataclass(frozen=True)
class Source:
    root: Path
    name: str
    size: int
    sha256: str

    @property
    def path(self) -> Path:
        return self.root / self.name

    @property
    def url_path(self) -> str:
        return "/" + self.name


def make_source(root: Path, size: int, name: str = "model.bin") -> Source:
    """`size` random bytes (incompressible, like a model's weights) in `root/name`, hashed as written.
    Written once; it stays in the page cache, so no round reads it from the disk."""
    root.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    with (root / name).open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 8 * MIB))
            hasher.update(block)
            f.write(block)
            left -= len(block)
    return Source(root, name, size, hasher.hexdigest())


def sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 * MIB):
            hasher.update(block)
    return hasher.hexdigest()


def agent_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the agent knows nothing of Django
    return env


def agent_argv(server: FileServer, source: Source, models_dir: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "aiwm_node.download", "--models-dir", str(models_dir)),
        *("--model-id", MODEL_ID, "--repository", server.url + "/", "--file-name", source.name),
        *("--sha256", source.sha256, "--progress"),
    ]


def curl_argv(server: FileServer, source: Source, out: Path, *, resume: bool = False) -> list[str]:
    # -w: the status, the body's size and the time to the first byte, on stdout (the body goes to -o).
    argv = ["curl", "-sS", "--fail", "-o", str(out), "-w", "%{http_code} %{size_download} %{time_starttransfer}"]
    return [*argv, *(["-C", "-"] if resume else []), server.url + source.url_path]


@dataclass
class Timed:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    cpu_s: float  # the process's user + system time
    first_line_s: float | None  # seconds from the start to its first progress line on stderr


def _drain(stream: IO[bytes], into: list[bytes], first: list[float]) -> None:
    for line in stream:
        if not first and line.startswith(b'{"progress"'):
            first.append(time.perf_counter())
        into.append(line)


def run_timed(argv: list[str], env: dict[str, str], timeout: float = DOWNLOAD_TIMEOUT_S) -> Timed:
    """Run `argv` to its end; its wall time, its CPU time (from wait4: the child's own rusage)."""
    out: list[bytes] = []
    err: list[bytes] = []
    first_err: list[float] = []
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=_drain, args=(proc.stdout, out, []), daemon=True),
        threading.Thread(target=_drain, args=(proc.stderr, err, first_err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    for reader in readers:
        reader.join(timeout=10)
    return Timed(
        proc.returncode,
        b"".join(out).decode(errors="replace"),
        b"".join(err).decode(errors="replace"),
        seconds,
        usage.ru_utime + usage.ru_stime,
        first_err[0] - started if first_err else None,
    )


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Run:
    """One timed download."""

    server: str
    client: str
    round: int
    size: int
    seconds: float
    first_byte_s: float | None  # start -> the response's headers (None: not known)
    cpu_s: float
    server_cpu_s: float
    server_sent: int  # body bytes the server wrote for the file during the run
    checks: list[Check] = field(default_factory=list)

    @property
    def mib_s(self) -> float:
        return self.size / self.seconds / MIB

    @property
    def body_mib_s(self) -> float | None:
        """Over the time after the first byte (the server's time before it is the same for both)."""
        if self.first_byte_s is None or self.seconds <= self.first_byte_s:
            return None
        return self.size / (self.seconds - self.first_byte_s) / MIB


def _json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return {}


def download(
    client: str, server: FileServer, source: Source, workdir: Path, index: int, *, verify_on_disk: bool
) -> Run:
    """One download by `client`; its file deleted afterwards. `verify_on_disk`: the written file is
    hashed by the benchmark too (untimed)."""
    label = f"{server.kind} {client} round {index + 1}"
    sent_before = server.stats().sent.get(source.url_path, 0)
    server_cpu = cpu_seconds(server.pid)
    checks: list[Check] = []
    if client == "agent":
        models = workdir / "models"
        timed = run_timed(agent_argv(server, source, models), agent_env())
        result = _json_line(timed.stdout)
        target = models / MODEL_ID / source.name
        first_byte = timed.first_line_s
        checks.append(
            (
                f"{label}: exit {timed.returncode}, sha256 {str(result.get('sha256'))[:12]}…, fetched "
                f"{result.get('fetchedBytes')} of {source.size} bytes from 0",
                timed.returncode == 0
                and result.get("sha256") == source.sha256
                and result.get("fetchedBytes") == source.size
                and result.get("resumedFrom") == 0
                and result.get("reused") is False,
            )
        )
        outputs = [models]
    else:
        target = workdir / "curl.bin"
        timed = run_timed(curl_argv(server, source, target), dict(os.environ))
        seconds = timed.seconds
        if client == "curl + fsync" and timed.returncode == 0:
            started = time.perf_counter()
            fsync_path(target)
            fsync_path(target.parent)
            timed.seconds += time.perf_counter() - started
        if client == "curl + sha256sum" and timed.returncode == 0:
            started = time.perf_counter()
            summed = subprocess.run(["sha256sum", str(target)], capture_output=True, text=True, check=False)
            timed.seconds += time.perf_counter() - started
            digest = summed.stdout.split()[0] if summed.stdout else "?"
            checks.append((f"{label}: sha256sum says {digest[:12]}…", digest == source.sha256))
        fields = timed.stdout.split()
        first_byte = float(fields[2]) if len(fields) == 3 else None
        checks.append(
            (
                f"{label}: exit {timed.returncode}, HTTP {fields[0] if fields else '?'}, "
                f"{fields[1] if len(fields) > 1 else '?'} bytes in {seconds:.1f}s {timed.stderr.strip()[:200]}",
                timed.returncode == 0 and fields[:2] == ["200", str(source.size)],
            )
        )
        outputs = [target]
    server_cpu = cpu_seconds(server.pid) - server_cpu
    sent = server.stats().sent.get(source.url_path, 0) - sent_before
    checks.append((f"{label}: the server sent {sent} body bytes (the file's size)", sent == source.size))
    if verify_on_disk:
        on_disk = sha256_of(target) if target.is_file() else "missing"
        checks.append(
            (f"{label}: the file on disk has the source's sha256 ({on_disk[:12]}…)", on_disk == source.sha256)
        )
    for output in outputs:
        if output.is_dir():
            shutil.rmtree(output)
        else:
            output.unlink(missing_ok=True)
    # Each download starts with no dirty pages of the previous one left to write back (untimed).
    os.sync()
    run = Run(server.kind, client, index, source.size, timed.seconds, first_byte, timed.cpu_s, server_cpu, sent, checks)
    log(
        f"{label}: {run.mib_s:.0f} MiB/s ({run.seconds:.2f}s, first byte {first_byte or float('nan'):.2f}s, "
        f"CPU {run.cpu_s:.2f}s, server CPU {server_cpu:.2f}s)"
    )
    return run


def throughput_rounds(servers: list[FileServer], source: Source, rounds: int, workdir: Path) -> list[Run]:
    """`rounds` downloads by each client from each server, interleaved: within a round every
    server and every client in turn, the order rotated round by round, so the machine's drift
    (a neighbour's load, the page cache) touches every client alike."""
    runs: list[Run] = []
    for index in range(rounds):
        for s in range(len(servers)):
            server = servers[(s + index) % len(servers)]
            for c in range(len(CLIENTS)):
                client = CLIENTS[(c + index) % len(CLIENTS)]
                runs.append(download(client, server, source, workdir, index, verify_on_disk=index == 0))
    return runs


@dataclass
class KillResult:
    """A download killed (SIGKILL) once its file held `fraction` of the bytes, then started again."""

    server: str
    client: str
    size: int
    killed_at: int  # bytes in the partial file after the kill
    first_sent: int  # body bytes the server wrote to the killed process
    total_sent: int  # ... to both processes
    resume_seconds: float
    checks: list[Check] = field(default_factory=list)

    @property
    def refetched(self) -> int:
        return self.total_sent - self.size

    @property
    def lost_in_flight(self) -> int:
        """Sent to the killed process but not in its file: its buffers' and the sockets'."""
        return self.first_sent - self.killed_at


def _kill_when(proc: subprocess.Popen[bytes], partial: Path, threshold: int) -> str:
    """SIGKILL `proc` once `partial` holds `threshold` bytes; "" or what went wrong."""
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"it exited ({proc.returncode}) before the kill"
        with contextlib.suppress(FileNotFoundError):
            if partial.stat().st_size >= threshold:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return ""
        time.sleep(KILL_POLL_S)
    proc.kill()
    proc.wait(timeout=30)
    return "the partial file never reached the threshold"


def kill_and_resume(client: str, server: FileServer, source: Source, workdir: Path, fraction: float) -> KillResult:
    """`client` ("agent" or "curl") killed at `fraction`, then run to the end: the agent as it
    ships (its partial file, sidecar and lock left behind, resumed with Range + If-Range), curl
    resumed with `-C -` (its output file's size as the offset) — the baseline of what a kill costs
    a client that writes everything it receives at once."""
    label = f"{server.kind} {client} killed at {100 * fraction:g} %"
    stats = server.stats()
    before, seen = stats.sent.get(source.url_path, 0), len(stats.requests)
    threshold = int(source.size * fraction)
    checks: list[Check] = []
    if client == "agent":
        models = workdir / f"kill-{server.kind}"
        target = models / MODEL_ID / source.name
        partial = target.with_name(target.name + ".part")
        argv, env = agent_argv(server, source, models), agent_env()
        resume_argv = argv
    else:
        target = partial = workdir / f"kill-{server.kind}-curl.bin"
        argv, env = curl_argv(server, source, target), dict(os.environ)
        resume_argv = curl_argv(server, source, target, resume=True)
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    problem = _kill_when(proc, partial, threshold)
    killed_at = partial.stat().st_size if partial.exists() else 0
    checks.append(
        (
            f"{label}: killed with {killed_at} bytes ({100 * killed_at / source.size:.1f} %) in "
            f"{partial.name} {problem}",
            not problem and threshold <= killed_at < source.size,
        )
    )
    if client == "agent":
        left = [
            p.name
            for p in (partial, target.with_name(target.name + ".part.json"), target.with_name(target.name + ".lock"))
            if p.exists()
        ]
        checks.append((f"{label}: left behind {', '.join(left) or 'nothing'} (partial, sidecar, lock)", len(left) == 3))
    time.sleep(SETTLE_S)
    first_sent = server.stats().sent.get(source.url_path, 0) - before
    timed = run_timed(resume_argv, env)
    stats = server.stats()
    total_sent = stats.sent.get(source.url_path, 0) - before
    gets = [r for r in stats.requests[seen:] if r.method == "GET" and r.path == source.url_path]
    checks.append(_resume_request_check(label, client, gets, killed_at))
    if client == "agent":
        result = _json_line(timed.stdout)
        checks.append(
            (
                f"{label}: resumed from {result.get('resumedFrom')}, fetched {result.get('fetchedBytes')}, sha256 "
                f"{str(result.get('sha256'))[:12]}… (exit {timed.returncode})",
                timed.returncode == 0
                and result.get("resumedFrom") == killed_at
                and result.get("fetchedBytes") == source.size - killed_at
                and result.get("sha256") == source.sha256,
            )
        )
        leftovers = [p.name for p in target.parent.iterdir() if p != target] if target.parent.exists() else []
        checks.append((f"{label}: nothing but the file left in its folder ({leftovers or 'none'})", not leftovers))
    else:
        checks.append((f"{label}: the resumed curl exited {timed.returncode}", timed.returncode == 0))
    on_disk = sha256_of(target) if target.is_file() else "missing"
    checks.append((f"{label}: the resumed file has the source's sha256 ({on_disk[:12]}…)", on_disk == source.sha256))
    if client == "agent":
        shutil.rmtree(workdir / f"kill-{server.kind}", ignore_errors=True)
    else:
        target.unlink(missing_ok=True)
    os.sync()
    return KillResult(server.kind, client, source.size, killed_at, first_sent, total_sent, timed.seconds, checks)


def _resume_request_check(label: str, client: str, gets: list[Request], killed_at: int) -> Check:
    """Two GETs: the first without a range, the second from the partial file's end (the agent's
    with If-Range: the bytes it has must be those the server still serves)."""
    wanted = f"bytes={killed_at}-"
    shown = "; ".join(f"Range {g.range or '-'} If-Range {g.if_range or '-'}" for g in gets)
    held = (
        len(gets) == 2
        and not gets[0].range
        and gets[1].range == wanted
        and (bool(gets[1].if_range) or client != "agent")
    )
    return (f"{label}: the GETs were [{shown}], the second from {killed_at}", held)

"""A process's CPU time, threads, memory and TCP connections, read from /proc (Linux)."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path


def _stat_cpu(stat: str) -> float:
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime so far of a process (all its threads)."""
    return _stat_cpu(Path(f"/proc/{pid}/stat").read_text())


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds so far of each thread of `pid` (the main thread's id is the pid)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            out[int(tid)] = _stat_cpu(Path(f"/proc/{pid}/task/{tid}/stat").read_text())
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def steady_rss_kib(pid: int | Sequence[int], samples: int = 5, interval: float = 0.2) -> int:
    """The median of `samples` RSS readings `interval` seconds apart (of several processes: of
    their sums, each sum read at once)."""
    pids = [pid] if isinstance(pid, int) else list(pid)
    values = []
    for _ in range(samples):
        values.append(sum(rss_kib(p) for p in pids))
        time.sleep(interval)
    return int(statistics.median(values))


def children(pid: int) -> list[int]:
    """The child processes of `pid` (all its threads' children)."""
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return sorted(out)


def cmdline(pid: int) -> str:
    """The command line of `pid`, its arguments joined by spaces ("" once it has exited)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _established_inodes(port: int) -> list[str]:
    """The socket inodes of the TCP connections established to a local listening port
    (/proc/net/tcp, the server's side), one per connection: those still in the listen backlog
    all have inode 0."""
    inodes: list[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.append(fields[9])
    return inodes


def established_by_process(port: int, pids: Sequence[int]) -> dict[int, int]:
    """Of the TCP connections established to a local listening port, how many each of `pids` holds
    (the sockets among its open files)."""
    inodes = set(_established_inodes(port))
    out = {}
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    held += target.startswith("socket:[") and target[8:-1] in inodes
        out[pid] = held
    return out


def established(port: int) -> int:
    """TCP connections established to a local listening port (/proc/net/tcp, the server's side)."""
    return len(_established_inodes(port))

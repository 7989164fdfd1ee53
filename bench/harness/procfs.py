"""A process's CPU time, threads, memory and TCP connections, read from /proc (Linux)."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
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


def steady_rss_kib(pid: int, samples: int = 5, interval: float = 0.2) -> int:
    """The median of `samples` RSS readings `interval` seconds apart."""
    values = []
    for _ in range(samples):
        values.append(rss_kib(pid))
        time.sleep(interval)
    return int(statistics.median(values))


def established(port: int) -> int:
    """TCP connections established to a local listening port (/proc/net/tcp, the server's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count

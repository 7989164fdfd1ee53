"""The service's own Prometheus series: request latency by route, step dispatch latency,
telemetry flush lag, node sessions held by each process.

Several processes (web workers, Celery workers) each count what they do; prometheus-client's
multiprocess mode keeps each process's values in files under one folder, `AIWM_METRICS_DIR`, and
`/metrics` sums them (settings point PROMETHEUS_MULTIPROC_DIR at it before this module is
imported: the client picks its storage at import). Without that folder (the embedded default:
one process) the values live in this process's memory. The fleet's gauges (nodes, GPUs,
deployments, executions, outbox) are not counted here: they are read from the database at scrape
time (`console.metrics`), so every process answers the same figures.

Series names start with `aiwm_`; labels have bounded values (a route pattern, never a path).
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.registry import REGISTRY

MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

# Buckets from a fast API answer (2 ms) to a slow admin page or a `?wait=` request (30 s).
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUEST_LATENCY = Histogram(
    "aiwm_http_request_duration_seconds",
    "HTTP requests by route pattern, method and status class, from the first middleware to the response",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
STEP_DISPATCH_LATENCY = Histogram(
    "aiwm_step_dispatch_seconds",
    "From the transition that made an execution step ready to its command handed to the node's connection",
    buckets=LATENCY_BUCKETS,
)
TELEMETRY_FLUSH_LAG = Histogram(
    "aiwm_telemetry_flush_lag_seconds",
    "From a heartbeat or metric point reaching this process to its row written by the write-behind buffer",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
# One series per live process in multiprocess mode (a `pid` label is added); dead ones drop out.
CONNECTED_SESSIONS = Gauge(
    "aiwm_connected_sessions",
    "Node sessions (Socket.IO or plain WebSocket) this web process holds",
    multiprocess_mode="liveall",
)


def exposition() -> bytes:
    """This installation's service series in the text format, summed over its processes."""
    if MULTIPROCESS_DIR is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def process_exited(pid: int | None = None) -> None:
    """Drop a finished process's per-process gauges (its counters and histograms stay summed)."""
    if MULTIPROCESS_DIR is not None:
        multiprocess.mark_process_dead(pid or os.getpid())


def forget_dead_processes(*, counters: bool) -> None:
    """Remove the files of processes that are gone: their live gauges (a crashed process could not
    drop them), and with `counters` their counters and histograms too — `manage.py serve` does so
    when the web tier starts, a new run for Prometheus (which reads the drop as a counter reset),
    so the folder does not grow with every restart. Files of running processes are kept."""
    if MULTIPROCESS_DIR is None:
        return
    for file in Path(MULTIPROCESS_DIR).glob("*.db"):
        pid = file.stem.rsplit("_", 1)[-1]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if counters or file.name.startswith("gauge_live"):
            file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if MULTIPROCESS_DIR is not None:
    forget_dead_processes(counters=False)
    atexit.register(process_exited)

"""What the agent tells the control plane about its machine: the facts of `node.register` and the
readings of `telemetry.heartbeat` / `telemetry.metrics`, from psutil and NVML. Sizes in MB, as the
protocol has them."""

from __future__ import annotations

import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

import psutil

from aiwm_node import PROTOCOL_VERSION, __version__
from aiwm_node.gpus import Gpus

MB = 1024 * 1024


def os_name() -> str:
    """`Ubuntu 22.04`-style when /etc/os-release says, else the kernel's name and release."""
    try:
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        pretty = fields.get("PRETTY_NAME", "").strip('"')
        if pretty:
            return pretty
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def primary_address(server_url: str) -> str:
    """The local address this machine uses to reach the control plane (what the control plane can
    reach back, unless NAT): the source address of a UDP socket 'connected' to it (sends nothing)."""
    from urllib.parse import urlsplit

    parts = urlsplit(server_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class Machine:
    """Readings of one machine. `cpu_percent` is primed at creation: psutil's first reading of it
    compares against nothing and says 0.0, which is discarded."""

    def __init__(self, *, gpus: Gpus, data_dir: Path, server_url: str):
        self.gpus = gpus
        self.data_dir = data_dir
        self.server_url = server_url
        self.started = time.monotonic()
        psutil.cpu_percent(interval=None)  # the discarded first reading

    def facts(self, *, backends: list[str], deployments: list[dict[str, Any]]) -> dict[str, Any]:
        """node.register's data: what the machine is, and what it runs now."""
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(str(self.data_dir))
        return {
            "hostname": socket.gethostname(),
            "ipAddress": primary_address(self.server_url),
            "os": os_name(),
            "cpuCores": psutil.cpu_count(logical=True) or 1,
            "cpuModel": cpu_model(),
            "ramTotal": memory.total // MB,
            "ramFree": memory.available // MB,
            "diskTotal": disk.total // MB,
            "gpuDevices": [gpu.device() for gpu in self.gpus.read()],
            "daemonVersion": __version__,
            "protocolVersion": PROTOCOL_VERSION,
            "uptimeSeconds": int(time.time() - psutil.boot_time()),
            "containerRuntime": "process",  # model servers run as supervised processes, no container
            "backends": backends,
            "deployments": deployments,
        }

    def heartbeat(self, *, active_deployments: int) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        return {
            "status": "online",
            "uptimeSeconds": int(time.time() - psutil.boot_time()),
            "cpuUsage": psutil.cpu_percent(interval=None),
            "ramUsage": (memory.total - memory.available) // MB,
            "activeDeployments": active_deployments,
            "gpuStatus": [gpu.device() for gpu in self.gpus.read()],
        }

    def metrics(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(str(self.data_dir))
        net = psutil.net_io_counters()
        cpu: dict[str, Any] = {"usage": psutil.cpu_percent(interval=None), "cores": psutil.cpu_count(logical=True)}
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        if load is not None:
            cpu["loadAverage"] = [round(x, 2) for x in load]
        return {
            "cpu": cpu,
            "ram": {
                "total": memory.total // MB,
                "used": (memory.total - memory.available) // MB,
                "free": memory.available // MB,
                "usagePercent": memory.percent,
            },
            "disk": {
                "total": disk.total // MB,
                "used": disk.used // MB,
                "free": disk.free // MB,
                "usagePercent": disk.percent,
            },
            "gpu": [gpu.metric() for gpu in self.gpus.read()],
            "network": {
                "rxBytes": net.bytes_recv,
                "txBytes": net.bytes_sent,
                "rxPackets": net.packets_recv,
                "txPackets": net.packets_sent,
            },
        }

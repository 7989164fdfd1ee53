"""The contract's node -> server messages, as the simulated daemons send them (no Django here:
these are built in the daemons' processes)."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def heartbeat_message(sent_us: int, rng: random.Random) -> dict[str, Any]:
    """The contract's `telemetry.heartbeat`, with the send time as uptimeSeconds."""
    return {
        "type": "telemetry.heartbeat",
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "data": {
            "status": "online",
            "uptimeSeconds": sent_us,
            "cpuUsage": round(rng.uniform(5, 95), 1),
            "ramUsage": rng.randrange(8000, 60000),
            "activeDeployments": rng.randrange(0, 4),
            "gpuStatus": [
                {
                    "deviceId": "GPU-0",
                    "utilization": rng.randrange(0, 101),
                    "memoryUsed": rng.randrange(1000, 24000),
                    "temperature": rng.randrange(40, 85),
                }
            ],
        },
    }


def metrics_message(rng: random.Random) -> dict[str, Any]:
    """The contract's `telemetry.metrics`."""
    used = rng.randrange(8000, 60000)
    gpu_used = rng.randrange(1000, 24000)
    return {
        "type": "telemetry.metrics",
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "data": {
            "cpu": {"usage": round(rng.uniform(5, 95), 1), "cores": 16, "temperature": rng.randrange(40, 80)},
            "ram": {"total": 65536, "used": used, "free": 65536 - used, "usagePercent": round(100 * used / 65536, 1)},
            "disk": {"total": 2000000, "used": 500000, "free": 1500000, "usagePercent": 25},
            "gpu": [
                {
                    "deviceId": "GPU-0",
                    "model": "NVIDIA RTX 4090",
                    "utilization": rng.randrange(0, 101),
                    "memoryTotal": 24576,
                    "memoryUsed": gpu_used,
                    "memoryFree": 24576 - gpu_used,
                    "temperature": rng.randrange(40, 85),
                    "powerUsage": rng.randrange(100, 450),
                    "fanSpeed": rng.randrange(20, 100),
                }
            ],
            "network": {"rxBytes": 1000000000, "txBytes": 500000000, "rxPackets": 5000000, "txPackets": 3000000},
        },
    }


def register_message(node_id: str) -> dict[str, Any]:
    """The contract's `node.register`."""
    return {
        "type": "node.register",
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "data": {
            "hostname": node_id,
            "ipAddress": "10.10.0.101",
            "publicIpAddress": "203.0.113.10",
            "os": "Ubuntu 22.04",
            "cpuCores": 16,
            "cpuModel": "AMD EPYC 7763",
            "ramTotal": 65536,
            "diskTotal": 2000000,
            "gpuDevices": [
                {"deviceId": "GPU-0", "model": "NVIDIA RTX 4090", "memoryTotal": 24576, "memoryFree": 24000}
            ],
            "daemonVersion": "1.0.0",
            "uptimeSeconds": 0,
            "containerRuntime": "docker",
        },
    }

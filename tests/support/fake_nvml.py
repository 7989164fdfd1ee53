"""A stand-in for pynvml (nvidia-ml-py) with two GPUs: these machines have none, and the agent's
GPU readings and GPU assignment are still tested (aiwm_node.gpus reads NVML through it)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

MB = 1024 * 1024


class FakeNvml:
    """A stand-in for pynvml with two GPUs (no GPU on these machines)."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang

    def nvmlInit(self) -> None:
        if self.hang:
            time.sleep(60)

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return f"GPU-0000000{handle}-aaaa-bbbb-cccc-dddddddddddd".encode()

    def nvmlDeviceGetName(self, handle: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetPciInfo(self, handle: int) -> Any:
        return SimpleNamespace(busId=f"00000000:0{handle}:00.0")

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(total=81559 * MB, used=(1000 + handle) * MB, free=(80559 - handle) * MB)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=40 + handle)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 60

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 312_500

    def nvmlDeviceGetFanSpeed(self, handle: int) -> int:
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")  # passive cooling: left out

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        return [SimpleNamespace(pid=4242, usedGpuMemory=900 * MB)] if handle == 0 else []

"""The machine's NVIDIA GPUs through NVML (nvidia-ml-py): what they are and how busy they are.

A machine without NVML (no driver, no GPU, a container without the device) is a node without
GPUs, not an error; NVML's initialisation runs under a timeout because a wedged driver can hang
it. Any reading a device does not support is left out rather than failing the whole reading.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("aiwm_node.gpus")

MB = 1024 * 1024
INIT_TIMEOUT_SECONDS = 5.0


@dataclass
class GpuReading:
    uuid: str
    index: int
    model: str
    pci_bus_id: str = ""
    memory_total: int | None = None  # MB
    memory_used: int | None = None
    memory_free: int | None = None
    utilization: float | None = None  # %
    temperature: float | None = None  # °C
    power: float | None = None  # W
    fan_speed: float | None = None  # %
    processes: list[dict[str, int]] = field(default_factory=list)  # {pid, memoryUsed MB}

    def device(self) -> dict[str, Any]:
        """As the protocol's GpuDevice (node.register's gpuDevices, a heartbeat's gpuStatus)."""
        out: dict[str, Any] = {"deviceId": self.uuid, "model": self.model}
        for key, value in (
            ("memoryTotal", self.memory_total),
            ("memoryFree", self.memory_free),
            ("memoryUsed", self.memory_used),
            ("utilization", self.utilization),
            ("temperature", self.temperature),
        ):
            if value is not None:
                out[key] = value
        return out

    def metric(self) -> dict[str, Any]:
        """As an entry of telemetry.metrics' `gpu` list (the contract's example, plus processes)."""
        out = self.device()
        out["index"] = self.index
        if self.power is not None:
            out["powerUsage"] = self.power
        if self.fan_speed is not None:
            out["fanSpeed"] = self.fan_speed
        if self.processes:
            out["processes"] = self.processes
        return out


class Gpus:
    """Readings of every GPU NVML sees; `Gpus.none()` on a machine without it."""

    def __init__(self, nvml: Any | None, handles: list[Any]):
        self._nvml = nvml
        self._handles = handles

    @classmethod
    def none(cls) -> Gpus:
        return cls(None, [])

    @classmethod
    def open(cls, nvml: Any | None = None, timeout: float = INIT_TIMEOUT_SECONDS) -> Gpus:
        """Initialise NVML (the real `pynvml` unless a stand-in is given); no GPUs if it cannot."""
        if nvml is None:
            try:
                import pynvml

                nvml = pynvml
            except ImportError:  # the agent installed without nvidia-ml-py
                return cls.none()
        outcome: dict[str, Any] = {}

        def init() -> None:
            try:
                nvml.nvmlInit()
                outcome["handles"] = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ... all mean no GPUs
                outcome["error"] = exc

        thread = threading.Thread(target=init, name="nvml-init", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("NVML did not initialise within %.0f s: reporting no GPUs", timeout)
            return cls.none()
        if "error" in outcome:
            log.info("no NVIDIA GPUs: %s", outcome["error"])
            return cls.none()
        return cls(nvml, outcome["handles"])

    @property
    def count(self) -> int:
        return len(self._handles)

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):  # shutting down: nothing to do about a failure
                self._nvml.nvmlShutdown()

    def read(self) -> list[GpuReading]:
        return [self._read(index, handle) for index, handle in enumerate(self._handles)]

    def _read(self, index: int, handle: Any) -> GpuReading:
        nvml = self._nvml
        assert nvml is not None
        reading = GpuReading(
            uuid=_text(_try(nvml.nvmlDeviceGetUUID, handle)) or f"GPU-{index}",
            index=index,
            model=_text(_try(nvml.nvmlDeviceGetName, handle)) or "NVIDIA GPU",
        )
        pci = _try(nvml.nvmlDeviceGetPciInfo, handle)
        if pci is not None:
            reading.pci_bus_id = _text(getattr(pci, "busId", "")) or ""
        memory = _try(nvml.nvmlDeviceGetMemoryInfo, handle)
        if memory is not None:
            reading.memory_total = int(memory.total) // MB
            reading.memory_used = int(memory.used) // MB
            reading.memory_free = int(memory.free) // MB
        rates = _try(nvml.nvmlDeviceGetUtilizationRates, handle)
        if rates is not None:
            reading.utilization = float(rates.gpu)
        temperature = _try(nvml.nvmlDeviceGetTemperature, handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        if temperature is not None:
            reading.temperature = float(temperature)
        power = _try(nvml.nvmlDeviceGetPowerUsage, handle)
        if power is not None:
            reading.power = round(float(power) / 1000, 1)  # NVML reports milliwatts
        fan = _try(nvml.nvmlDeviceGetFanSpeed, handle)
        if fan is not None:
            reading.fan_speed = float(fan)
        for process in _try(nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []:
            used = getattr(process, "usedGpuMemory", None)
            reading.processes.append(
                {"pid": int(process.pid), "memoryUsed": int(used) // MB if isinstance(used, int) else 0}
            )
        return reading

    def memory_used_by(self, pids: set[int]) -> int:
        """MB of GPU memory the given processes hold, over every GPU (0 when NVML cannot tell)."""
        return sum(p["memoryUsed"] for gpu in self.read() for p in gpu.processes if p["pid"] in pids)


def _try(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except Exception:  # NVMLError_NotSupported and friends: this reading is left out
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)

"""`GET /metrics` for Prometheus: the fleet read from the database at scrape time, plus the
service's own series (`aiwm_project.metrics`: request latency, step dispatch, telemetry lag).

Fleet gauges come from the database, not from counters in memory, so every web process answers
the same figures however many there are, and a restart loses nothing. Every status of each
enumeration is exported (zero included) so a series never vanishes when its count reaches zero.
GPU series are exported for nodes that are not offline: an offline node's last reading is not a
current value. Labels: `org_id` (node ids are unique per organization), `node_id`, `device`.

Access (docs/decisions.md "Prometheus metrics"): with AIWM_METRICS_TOKEN every client needs
`Authorization: Bearer <token>` (401 otherwise, loopback too); with AIWM_METRICS_ALLOWED_IPS only
those addresses or networks are answered (403 otherwise); with neither, only loopback clients.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from functools import cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from aiwm_project import metrics
from aiwm_project.api.errors import error_response
from aiwm_project.selectors import counts_by_status
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from executions.choices import ExecutionStatus
from executions.models import Execution
from nodes.choices import CommandStatus, NodeStatus
from nodes.models import Node, NodeCommand

MIB = 1024 * 1024  # the contract's GPU memory figures are MB


class FleetCollector(Collector):
    """Five queries per scrape, whatever the fleet's size: four counts and one read of the GPU
    state of the nodes that are not offline."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, help_text, queryset, statuses in (
            ("aiwm_nodes", "Nodes by status", Node.objects.filter(is_deleted=False), NodeStatus.values),
            (
                "aiwm_deployments",
                "Deployments by status",
                Deployment.objects.filter(is_deleted=False),
                DeploymentStatus.values,
            ),
            (
                "aiwm_executions",
                "Executions by status",
                Execution.objects.filter(is_deleted=False),
                ExecutionStatus.values,
            ),
            ("aiwm_outbox_commands", "Node commands by status", NodeCommand.objects.all(), CommandStatus.values),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["status"])
            for status, count in counts_by_status(queryset, statuses).items():
                family.add_metric([status], count)
            yield family
        yield from self._gpus()

    def _gpus(self) -> Iterator[GaugeMetricFamily]:
        labels = ["org_id", "node_id", "device"]
        utilization = GaugeMetricFamily("aiwm_gpu_utilization_percent", "GPU utilization (0-100)", labels=labels)
        used = GaugeMetricFamily("aiwm_gpu_memory_used_bytes", "GPU memory in use", labels=labels)
        total = GaugeMetricFamily("aiwm_gpu_memory_total_bytes", "GPU memory in all", labels=labels)
        temperature = GaugeMetricFamily("aiwm_gpu_temperature_celsius", "GPU temperature", labels=labels)
        rows = (
            Node.objects.filter(is_deleted=False)
            .exclude(status=NodeStatus.OFFLINE)
            .order_by("owner_org_id", "node_id")
            .values_list("owner_org_id", "node_id", "gpu_devices")
        )
        for org_id, node_id, devices in rows.iterator(chunk_size=2000):
            for device in devices if isinstance(devices, list) else []:
                if not isinstance(device, dict) or not isinstance(device.get("deviceId"), str):
                    continue
                key = [org_id, node_id, device["deviceId"]]
                if _is_number(device.get("utilization")):
                    utilization.add_metric(key, device["utilization"])
                if _is_number(device.get("temperature")):
                    temperature.add_metric(key, device["temperature"])
                if _is_number(device.get("memoryTotal")):
                    total.add_metric(key, device["memoryTotal"] * MIB)
                    if _is_number(device.get("memoryFree")):
                        used.add_metric(key, max(device["memoryTotal"] - device["memoryFree"], 0) * MIB)
        yield from (utilization, used, total, temperature)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@cache
def _fleet_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector())
    return registry


def _allowed_networks() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in settings.AIWM_METRICS_ALLOWED_IPS)


def _client_allowed(address: str) -> bool:
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    networks = _allowed_networks()
    if networks:
        return any(client in network for network in networks)
    return client.is_loopback if not settings.AIWM_METRICS_TOKEN else True


def _token_matches(request: HttpRequest) -> bool:
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    expected = settings.AIWM_METRICS_TOKEN
    return scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(), expected.encode())


def metrics_view(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return error_response(request, 405, "Method not allowed")
    if settings.AIWM_METRICS_TOKEN and not _token_matches(request):
        response = error_response(request, 401, "A valid bearer token (AIWM_METRICS_TOKEN) is required")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not _client_allowed(request.META.get("REMOTE_ADDR", "")):
        return error_response(request, 403, "This address may not read the metrics")
    body = generate_latest(_fleet_registry()) + metrics.exposition()
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)

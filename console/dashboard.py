"""What the fleet dashboard shows (the admin's index page): reads only, a fixed number of queries
whatever the fleet's size (`tests/test_dashboard.py` counts them with 100 nodes).

Installation-wide, like the admin: every organization's nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Case, Count, Q, Sum, Value, When
from django.utils import timezone

from aiwm_project.selectors import counts_by_status
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from executions.choices import ExecutionStatus
from executions.models import Execution
from inference.models import InferenceRecord
from nodes.choices import UNACKNOWLEDGED_COMMAND_STATUSES, CommandStatus, NodeStatus
from nodes.models import Node, NodeCommand, NodeMetric
from nodes.selectors import gpu_rows

# The per-node table: the nodes that need a look first (offline, then in maintenance), then by id;
# the node list has them all. A page for an overview, not a list: its size (and time) stays bounded
# whatever the fleet (BENCHMARKS.md "The operator portal": 500 rows of 8 GPUs took 0.3 s to render).
NODE_ROWS = 25
FAILURES = 8  # latest failures of each kind
TOKEN_ROWS = 10  # the models that used the most tokens in the last 24 h
FAILED_EXECUTIONS = (ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT)
FAILED_COMMANDS = (CommandStatus.FAILED, CommandStatus.EXPIRED)
ATTENTION_FIRST = Case(
    When(status=NodeStatus.OFFLINE, then=Value(0)), When(status=NodeStatus.MAINTENANCE, then=Value(1)), default=Value(2)
)


def _gpu_totals() -> tuple[int, int, int]:
    """(GPUs, GPUs in use, free GPU memory in MB) over the nodes that are not offline: sums of each
    node's own figures (nodes.models.gpu_summary, stored with its gpuDevices)."""
    totals = (
        Node.objects.filter(is_deleted=False)
        .exclude(status=NodeStatus.OFFLINE)
        .aggregate(total=Sum("gpu_count"), busy=Sum("gpus_busy"), free=Sum("gpu_memory_free"))
    )
    return int(totals["total"] or 0), int(totals["busy"] or 0), int(totals["free"] or 0)


@dataclass
class FleetOverview:
    nodes: dict[str, int]
    connected: int
    gpus_total: int
    gpus_busy: int
    gpu_memory_free_mb: int
    deployments: dict[str, int]
    executions_running: int
    executions_failed_24h: int
    outbox_waiting: int
    node_rows: list[dict[str, Any]]
    node_rows_cut: bool
    failed_executions: list[Execution]
    failed_deployments: list[Deployment]
    failed_commands: list[NodeCommand]
    tokens_by_model: list[dict[str, Any]]


def fleet_overview(*, now: datetime | None = None) -> FleetOverview:
    now = now or timezone.now()
    live_nodes = Node.objects.filter(is_deleted=False)
    rows = list(
        live_nodes.order_by(ATTENTION_FIRST, "node_id", "owner_org_id").values(
            "id", "node_id", "name", "owner_org_id", "status", "websocket_connected", "last_heartbeat", "gpu_devices"
        )[: NODE_ROWS + 1]
    )
    node_rows = [{**row, "gpus": gpu_rows(row["gpu_devices"])} for row in rows[:NODE_ROWS]]
    gpus_total, gpus_busy, gpu_memory_free = _gpu_totals()
    executions = Execution.objects.filter(is_deleted=False)
    failed_recently = executions.filter(status__in=FAILED_EXECUTIONS, completed_at__gte=now - timedelta(hours=24))
    execution_counts = executions.aggregate(
        running=Count("pk", filter=Q(status=ExecutionStatus.RUNNING)),
        failed=Count("pk", filter=Q(pk__in=failed_recently.values("pk"))),
    )
    return FleetOverview(
        nodes=counts_by_status(live_nodes, NodeStatus.values),
        connected=live_nodes.filter(websocket_connected=True).count(),
        gpus_total=gpus_total,
        gpus_busy=gpus_busy,
        gpu_memory_free_mb=gpu_memory_free,
        deployments=counts_by_status(Deployment.objects.filter(is_deleted=False), DeploymentStatus.values),
        executions_running=execution_counts["running"],
        executions_failed_24h=execution_counts["failed"],
        outbox_waiting=NodeCommand.objects.filter(status__in=UNACKNOWLEDGED_COMMAND_STATUSES).count(),
        node_rows=node_rows,
        node_rows_cut=len(rows) > NODE_ROWS,
        failed_executions=list(executions.filter(status__in=FAILED_EXECUTIONS).order_by("-completed_at")[:FAILURES]),
        failed_deployments=list(
            Deployment.objects.filter(is_deleted=False, status=DeploymentStatus.FAILED).order_by("-updated_at")[
                :FAILURES
            ]
        ),
        failed_commands=list(NodeCommand.objects.filter(status__in=FAILED_COMMANDS).order_by("-updated_at")[:FAILURES]),
        tokens_by_model=list(
            InferenceRecord.objects.filter(created_at__gte=now - timedelta(hours=24))
            .values("owner_org_id", "model_id")
            .annotate(requests=Count("id"), tokens=Sum("total_tokens"))
            .order_by("-tokens", "model_id")[:TOKEN_ROWS]
        ),
    )


def summary(overview: FleetOverview) -> dict[str, Any]:
    """The dashboard's cards as JSON (what its live refresh fetches)."""
    return {
        "nodes": overview.nodes,
        "connected": overview.connected,
        "gpusTotal": overview.gpus_total,
        "gpusBusy": overview.gpus_busy,
        "gpuMemoryFreeMb": overview.gpu_memory_free_mb,
        "deployments": overview.deployments,
        "executionsRunning": overview.executions_running,
        "executionsFailed24h": overview.executions_failed_24h,
        "outboxWaiting": overview.outbox_waiting,
    }


MAX_CHART_POINTS = 360


def gpu_series(*, node: Node, seconds: int, now: datetime | None = None) -> dict[str, Any]:
    """A node's GPU utilization and memory use over the last `seconds` from its metric points,
    per device, thinned to at most MAX_CHART_POINTS points (every n-th point)."""
    now = now or timezone.now()
    points = list(
        NodeMetric.objects.filter(
            owner_org_id=node.owner_org_id, node_id=node.node_id, timestamp__gte=now - timedelta(seconds=seconds)
        )
        .order_by("timestamp")
        .values_list("timestamp", "data")
    )
    step = max(1, len(points) // MAX_CHART_POINTS)
    devices: dict[str, dict[str, list[Any]]] = {}
    for at, data in points[::step]:
        for gpu in data.get("gpu", []) if isinstance(data, dict) and isinstance(data.get("gpu"), list) else []:
            if not isinstance(gpu, dict) or not isinstance(gpu.get("deviceId"), str):
                continue
            series = devices.setdefault(gpu["deviceId"], {"t": [], "utilization": [], "memory": []})
            total, used = gpu.get("memoryTotal"), gpu.get("memoryUsed")
            share = (
                100 * used / total
                if isinstance(total, int | float) and isinstance(used, int | float) and total
                else None
            )
            series["t"].append(int(at.timestamp()))
            series["utilization"].append(gpu.get("utilization"))
            series["memory"].append(round(share, 1) if share is not None else None)
    return {
        "nodeId": node.node_id,
        "from": int((now - timedelta(seconds=seconds)).timestamp()),
        "to": int(now.timestamp()),
        "devices": devices,
    }

"""Deployment writes beyond plain CRUD (which the shared entity services handle)."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, Unpack

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from aiwm_project import live_events
from aiwm_project.datetimes import format_datetime, reported_time
from aiwm_project.exceptions import NotFoundError, ValidationFailed
from deployments.choices import DeploymentStatus, EventSeverity, LogLevel
from deployments.models import MAX_EVENTS, Deployment, DeploymentLog
from nodes.choices import NodeStatus
from nodes.models import Node


class StateChange(TypedDict):
    """What `deployment_change` is given, for the callers that name the deployment another way."""

    changes: dict[str, Any]
    event: str
    message: str
    severity: NotRequired[str]
    only_if_changed: NotRequired[bool]


def deployment_change(
    *,
    deployment: Deployment,
    changes: dict[str, Any],
    event: str,
    message: str,
    severity: str = EventSeverity.INFO,
    only_if_changed: bool = False,
) -> Deployment:
    """Change a deployment's runtime state and log why in its events, in one UPDATE of its row.

    Call holding the deployment's row lock (SELECT FOR UPDATE), with the instance read under that
    lock: the changed values are decided against it and the event is appended to its `events`
    (the newest MAX_EVENTS are kept), so nothing written since may be lost. With
    `only_if_changed`, nothing is written (no event either) when every value is already as
    given. Sends nothing to the node; live subscribers hear of it (`deployment.status`) once it
    commits. The writer of every runtime change: the node's reports
    (`deployment.status`), the engine's steps and the start/stop requests; REST writes only the
    fields a client may set (through the entity services).
    """
    if severity not in EventSeverity.values:
        raise ValueError(f"unknown event severity {severity!r}")
    changed = {k: v for k, v in changes.items() if getattr(deployment, k) != v}
    if only_if_changed and not changed:
        return deployment
    now = timezone.now()
    entry = {"timestamp": format_datetime(now), "event": event[:128], "message": message[:4000], "severity": severity}
    events = [*(deployment.events or []), entry][-MAX_EVENTS:]
    Deployment.objects.filter(pk=deployment.pk).update(**changed, events=events, updated_at=now)
    for key, value in {**changed, "events": events, "updated_at": now}.items():
        setattr(deployment, key, value)
    live_events.publish(
        deployment.owner_org_id,
        "deployment.status",
        {
            "_id": deployment.pk,
            "deploymentId": deployment.deployment_id,
            "nodeId": deployment.node_id,
            "status": deployment.status,
            **live_events.fields(changed),
            "event": entry,
        },
    )
    return deployment


def deployment_set_state(*, org_id: str, deployment_id: str, **change: Unpack[StateChange]) -> Deployment | None:
    """`deployment_change` on the deployment named by its business id, taking its row lock.

    Returns None when the deployment does not exist (an execution may name a resource id that
    was never a deployment).
    """
    with transaction.atomic():
        current = Deployment.objects.for_org(org_id).select_for_update().filter(deployment_id=deployment_id).first()
        if current is None:
            return None
        return deployment_change(deployment=current, **change)


# Health of a deployment whose node cannot tell (it went offline).
UNKNOWN_HEALTH = "unknown"
SWEEP_BATCH = 500


def deployments_flag_offline_nodes() -> int:
    """The sweep's pass: a running deployment whose node went offline says so — health `unknown` and a
    `node.offline` warning in its events, once (one already unknown is skipped). Nothing is stopped
    or changed otherwise: what runs on a node is the node's to say, and its next report
    (`deployment.status`) sets the health again. Each row is claimed with SKIP LOCKED, so sweeps in
    several processes share the work. Returns how many deployments it flagged."""
    offline_node = Node.objects.filter(
        owner_org_id=OuterRef("owner_org_id"), node_id=OuterRef("node_id"), is_deleted=False, status=NodeStatus.OFFLINE
    )
    candidates = (
        Deployment.objects.filter(is_deleted=False, is_running=True)
        .exclude(health_status=UNKNOWN_HEALTH)
        .filter(Exists(offline_node))
    )
    flagged = 0
    for pk in list(candidates.values_list("pk", flat=True)[:SWEEP_BATCH]):
        with transaction.atomic():
            deployment = candidates.select_for_update(skip_locked=True).filter(pk=pk).first()
            if deployment is None:
                continue
            deployment_change(
                deployment=deployment,
                changes={"health_status": UNKNOWN_HEALTH},
                event="node.offline",
                message=f"node {deployment.node_id} is offline: the deployment's state is unknown until it reports",
                severity=EventSeverity.WARNING,
            )
            flagged += 1
    return flagged


# --- what the node reports (deployment.status, deployment.logs) ---

NODE_STATUS = {
    "running": DeploymentStatus.RUNNING,
    "stopped": DeploymentStatus.STOPPED,
    "failed": DeploymentStatus.FAILED,
    "pending": DeploymentStatus.PENDING,
    "starting": DeploymentStatus.PENDING,
}
MAX_LOG_LINES_PER_MESSAGE = 1000


def _node_deployment(*, org_id: str, node_id: str, deployment_id: str, lock: bool = False) -> Deployment:
    """The deployment, if it runs on this node: a node can only report on its own deployments.
    With `lock`, read under its row lock (inside the caller's transaction)."""
    rows = Deployment.objects.for_org(org_id).filter(deployment_id=deployment_id, node_id=node_id)
    deployment = (rows.select_for_update() if lock else rows).first()
    if deployment is None:
        raise NotFoundError(f"deployment {deployment_id[:128]!r} is not on this node")
    return deployment


def deployment_apply_node_status(*, org_id: str, node_id: str, deployment_id: str, data: dict[str, Any]) -> Deployment:
    """`deployment.status`: status, containerId, endpoint, health and isRunning from the node, plus
    an entry in the deployment's events when something changed. Locks the deployment row."""
    status = NODE_STATUS.get(data.get("status"))  # type: ignore[arg-type]
    if status is None:
        raise ValidationFailed([f"data.status: must be one of: {', '.join(NODE_STATUS)}"])
    changes: dict[str, Any] = {"status": status, "is_running": status == DeploymentStatus.RUNNING}
    for key, field, limit in (
        ("containerId", "container_id", 128),
        ("endpoint", "endpoint", 2048),
        ("healthStatus", "health_status", 32),
    ):
        if isinstance(data.get(key), str):
            changes[field] = data[key][:limit]
    if "health_status" in changes:
        changes["last_health_check"] = timezone.now()
    described = ", ".join(f"{k}={v}" for k, v in changes.items() if k in ("status", "endpoint", "health_status"))
    if isinstance(data.get("message"), str) and data["message"]:
        described += f": {data['message'][:1000]}"  # the node's reason, e.g. how a server ended and when it retries
    with transaction.atomic():
        return deployment_change(
            deployment=_node_deployment(org_id=org_id, node_id=node_id, deployment_id=deployment_id, lock=True),
            changes=changes,
            event=f"node.{status}",
            message=f"node {node_id} reported {described}",
            severity=EventSeverity.ERROR if status == DeploymentStatus.FAILED else EventSeverity.INFO,
            only_if_changed=True,
        )


def deployment_append_logs(*, org_id: str, node_id: str, deployment_id: str, logs: Any) -> int:
    """`deployment.logs`: store each well-formed line (timestamp, level, message); returns how many."""
    if not isinstance(logs, list):
        raise ValidationFailed(["data.logs: must be a list"])
    if len(logs) > MAX_LOG_LINES_PER_MESSAGE:
        raise ValidationFailed([f"data.logs: at most {MAX_LOG_LINES_PER_MESSAGE} lines per message"])
    deployment = _node_deployment(org_id=org_id, node_id=node_id, deployment_id=deployment_id)
    now = timezone.now()
    rows = []
    for line in logs:
        if not isinstance(line, dict) or not isinstance(line.get("message"), str):
            continue
        level = str(line["level"]) if line.get("level") in LogLevel.values else LogLevel.INFO
        rows.append(
            DeploymentLog(
                owner_org_id=org_id,
                deployment_id=deployment.deployment_id,
                node_id=node_id,
                timestamp=reported_time(line.get("timestamp"), now),
                level=level,
                message=line["message"][:10_000],
                received_at=now,
            )
        )
    DeploymentLog.objects.bulk_create(rows)
    return len(rows)


# The deployments a node may report on one register (more is a malformed report).
MAX_REPORTED_DEPLOYMENTS = 256
RECONCILE_ACTOR = "system:reconcile"


def deployments_reconcile_node(*, org_id: str, node_id: str, reported: Any) -> dict[str, list[str]]:
    """What a node says it runs (node.register's `deployments`, from AIWM's agent) against the
    records, on every register — the node's word is the truth about its processes:

    - recorded on this node, live and not stopped, and reported: the reported state is applied
      (as a `deployment.status` would be);
    - reported but stopped, deleted, unknown or another node's: the node is told to stop it
      (`deployment.stop` through the command outbox; not again while one is on its way);
    - recorded running on this node but not reported: failed, with an event saying so.

    Heartbeats stopping changes none of this; only a register that says otherwise does. Locks each
    deployment it changes. Returns the ids {"applied", "stopped", "failed"}.
    """
    from nodes.choices import CommandStatus
    from nodes.commands import send_command
    from nodes.models import NodeCommand

    if not isinstance(reported, list):
        raise ValidationFailed(["data.deployments: must be a list"])
    reports = {
        item["deploymentId"][:128]: item
        for item in reported[:MAX_REPORTED_DEPLOYMENTS]
        if isinstance(item, dict) and isinstance(item.get("deploymentId"), str) and item["deploymentId"]
    }
    outcome: dict[str, list[str]] = {"applied": [], "stopped": [], "failed": []}
    live = {d.deployment_id: d for d in Deployment.objects.for_org(org_id).filter(node_id=node_id)}
    for deployment_id, report in reports.items():
        deployment = live.get(deployment_id)
        if deployment is not None and deployment.status != DeploymentStatus.STOPPED:
            if report.get("status") in NODE_STATUS:
                deployment_apply_node_status(org_id=org_id, node_id=node_id, deployment_id=deployment_id, data=report)
                outcome["applied"].append(deployment_id)
            continue
        on_its_way = NodeCommand.objects.filter(
            owner_org_id=org_id,
            node_id=node_id,
            type="deployment.stop",
            resource__id=deployment_id,
            status__in=(CommandStatus.QUEUED, CommandStatus.SENT, CommandStatus.ACKNOWLEDGED),
        ).exists()
        if not on_its_way:
            send_command(
                org_id=org_id,
                node_id=node_id,
                type="deployment.stop",
                resource={"type": "deployment", "id": deployment_id},
                data={"gracefulShutdown": True, "timeoutSeconds": 30},
                actor_id=RECONCILE_ACTOR,
            )
        outcome["stopped"].append(deployment_id)
    for deployment_id, deployment in live.items():
        if deployment_id in reports or not (deployment.status == DeploymentStatus.RUNNING or deployment.is_running):
            continue
        with transaction.atomic():
            locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
            if locked.status != DeploymentStatus.RUNNING and not locked.is_running:
                continue
            deployment_change(
                deployment=locked,
                changes={"status": DeploymentStatus.FAILED, "is_running": False, "health_status": "unhealthy"},
                event="node.reconcile",
                message=f"node {node_id} registered without it: its model server is not running there",
                severity=EventSeverity.ERROR,
            )
        outcome["failed"].append(deployment_id)
    return outcome
